"""The Keras builder against torchvision's numbers, and against the torch builder on odd sizes."""

import numpy as np
import pytest
from helpers import copy_to_keras, random_state_dict
from oracle import ARCHS, INPUTS, STAGES, oracle, oracle_input, recipe_state_dict, rel_err

from vrconvert.converter.arch import layers, spec


@pytest.fixture(scope="module", params=ARCHS)
def recipe_keras(request, keras):
    from vrconvert import models_tf

    arch = request.param
    model = models_tf.build(arch)
    copy_to_keras(model, recipe_state_dict(arch))
    ends = layers.stage_outputs(layers.expand(spec.get(arch)))
    probe = keras.Model(
        model.input, [model.get_layer(layers.keras_name(ends[s])).output for s in STAGES] + [model.output]
    )
    return arch, model, probe


@pytest.mark.parametrize("name", INPUTS)
def test_keras_matches_torchvision(recipe_keras, name):
    arch, _, probe = recipe_keras
    expected = oracle(arch)
    *stages, logits = probe.predict_on_batch(oracle_input(name).transpose(0, 2, 3, 4, 1))
    assert rel_err(logits, expected[f"{name}.logits"]) <= 1e-5
    for stage, out in zip(STAGES, stages, strict=True):
        assert rel_err(out.mean(axis=(1, 2, 3)), expected[f"{name}.{stage}_mean"]) <= 1e-5, stage


def test_trainable_parameter_count(recipe_keras):
    arch, model, _ = recipe_keras
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == spec.get(arch).num_params


def test_layers_are_builtin_named_and_bn_configured(recipe_keras, keras):
    _, model, _ = recipe_keras
    for layer in model.layers:
        assert "." not in layer.name
        assert type(layer).__module__.startswith("keras."), type(layer)
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-5 and layer.momentum == pytest.approx(0.9)
        if isinstance(layer, keras.layers.Conv3D):
            assert layer.padding == "valid"
    assert model.input_shape == (None, None, None, None, 3)


@pytest.mark.parametrize("arch", ARCHS)
def test_odd_sizes_match_torch(arch, torch, keras):
    from vrconvert import models_tf, models_torch

    tmodel = models_torch.build(arch, num_classes=10).eval()
    state = random_state_dict(tmodel, seed=3)
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    kmodel = models_tf.build(arch, num_classes=10)
    copy_to_keras(kmodel, state)
    ends = layers.stage_outputs(tmodel.layers)
    probe = keras.Model(kmodel.input, [kmodel.get_layer(layers.keras_name(ends[s])).output for s in STAGES])
    x = np.random.default_rng(5).standard_normal((1, 3, 5, 33, 33)).astype(np.float32)
    with torch.no_grad():
        values = tmodel.run(torch.from_numpy(x), keep=ends.values())
    kouts = probe.predict_on_batch(x.transpose(0, 2, 3, 4, 1))
    for stage, kout in zip(STAGES, kouts, strict=True):
        tout = values[ends[stage]].numpy().transpose(0, 2, 3, 4, 1)
        assert kout.shape == tout.shape, stage
        assert rel_err(kout, tout) <= 1e-5, stage
    assert rel_err(kmodel.predict_on_batch(x.transpose(0, 2, 3, 4, 1)), values["fc"].numpy()) <= 1e-5


def test_applications_convention(keras):
    from vrconvert import models_tf

    features = models_tf.build("r3d_18", include_top=False)
    assert features.output_shape == (None, None, None, None, 512)
    pooled = models_tf.build("r3d_18", include_top=False, pooling="max")
    assert pooled.output_shape == (None, 512)
    probs = models_tf.build("mc3_18", classes=7, classifier_activation="softmax", input_shape=(4, 32, 32, 3))
    assert probs.output_shape == (None, 7)
    out = probs.predict_on_batch(np.random.default_rng(0).standard_normal((2, 4, 32, 32, 3)).astype("float32"))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="disagree"):
        models_tf.build("r3d_18", num_classes=5, classes=6)
    with pytest.raises(ValueError, match="channels last"):
        models_tf.build("r3d_18", input_shape=(3, 16, 112, 112))
