"""torchvision's S3D: keys, recipe weights and parameter count against the oracle; both builders against
torch float64 on small inputs (its head pool shrunk to fit them) and, in the slow set, against torchvision's
own float64 logits and per-block means at 16x224x224 and at the oracle's odd size."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import run_python
from zoo_oracle import bound, keys, meta, oracle, oracle_input, recipe_state_dict, rel_err

from vrconvert.converter.arch import families, mapping
from vrconvert.converter.arch.layers import count_params, keras_name

ARCH = "s3d"
SMALL_HEAD = (1, 2, 2)  # a head pool that fits a 5x65x63 clip's 1x3x2 features; every other record as is


def small_variant():
    return replace(families.get(ARCH), head_pool=SMALL_HEAD)


def torch_model(variant, state, dtype=None):
    import torch

    from vrconvert import models_torch

    model = models_torch.build(variant, variant.num_classes).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.to(dtype) if dtype is not None else model


def keras_model(variant, state, **options):
    from vrconvert import models_tf

    model = models_tf.build(variant, **options)
    arrays = mapping.to_keras(variant, state)
    assert {v.path for v in model.weights} == set(arrays)
    for v in model.weights:
        v.assign(arrays[v.path])
    return model


def torch_run(model, x: np.ndarray, keep=()):
    import torch

    with torch.no_grad():
        values = model.run(torch.from_numpy(x).to(next(model.parameters()).dtype), keep=keep)
    return {k: v.numpy() for k, v in values.items()}


# ---- the description against torchvision's facts ------------------------------------------------------


def test_keys_and_shapes_are_torchvisions_in_order():
    expected = [(e["key"], tuple(e["shape"])) for e in keys(ARCH)]
    assert list(mapping.torch_shapes(families.get(ARCH)).items()) == expected


def test_torch_state_dict_is_torchvisions(torch):
    model = torch_model(families.get(ARCH), recipe_state_dict(ARCH))
    state = model.state_dict()
    assert [(k, tuple(v.shape), str(v.dtype)) for k, v in state.items()] == [
        (e["key"], tuple(e["shape"]), f"torch.{e['dtype']}") for e in keys(ARCH)
    ]
    assert sum(p.numel() for p in model.parameters()) == meta(ARCH)["num_params"]


def test_recipe_reproduces_the_oracle_checksum():
    sums = [float(v.astype(np.float64).sum()) for v in recipe_state_dict(ARCH).values()]
    np.testing.assert_array_equal(sums, oracle(ARCH)["weight_checksum"])


def test_parameter_count_and_metadata():
    variant = families.get(ARCH)
    published = meta(ARCH)["weights"]["KINETICS400_V1"]
    assert count_params(families.expand(variant)) == variant.num_params == meta(ARCH)["num_params"]
    assert variant.pretrained.filename == published["file"]
    assert variant.pretrained.acc1 == published["acc@1"] and variant.pretrained.acc5 == published["acc@5"]
    transform = published["transform"]
    assert variant.preprocessing.resize == tuple(transform["resize_size"])
    assert variant.preprocessing.crop == tuple(transform["crop_size"])
    assert variant.preprocessing.mean == tuple(transform["mean"]) and variant.preprocessing.std == tuple(
        transform["std"]
    )
    assert tuple(families.blocks(variant)) == tuple(meta(ARCH)["blocks"])


def test_batchnorm_is_s3ds(torch):
    bns = [r for r in families.expand(families.get(ARCH)) if r.op == "bn"]
    assert len(bns) == 77 and all((r.epsilon, r.momentum) == (1e-3, 1e-3) for r in bns)


# ---- both builders, small inputs ------------------------------------------------------------------------


def test_padded_max_pool_never_lets_padding_win(torch, keras):
    """All-negative inputs of odd and even sizes: zero padding would win every border window."""
    from vrconvert.converter.arch.layers import Layer
    from vrconvert.models_tf.build import padded_maxpool

    for kernel, stride, padding in (((1, 3, 3), (1, 2, 2), (0, 1, 1)), ((3, 3, 3), (2, 2, 2), (1, 1, 1))):
        layer = Layer(name="p", op="maxpool", inputs=("input",), kernel=kernel, stride=stride, padding=padding)
        for shape in ((1, 2, 5, 6, 7), (2, 3, 4, 9, 8)):
            x = -1.0 - np.random.default_rng(0).random(shape).astype(np.float32)
            expected = torch.nn.functional.max_pool3d(torch.from_numpy(x), kernel, stride, padding).numpy()
            inputs = keras.Input(shape[2:] + shape[1:2])
            model = keras.Model(inputs, padded_maxpool(layer, inputs))
            got = np.asarray(model(x.transpose(0, 2, 3, 4, 1))).transpose(0, 4, 1, 2, 3)
            np.testing.assert_array_equal(got, expected)


def test_keras_and_torch_float32_against_torch_float64_small(torch, keras):
    variant, state = small_variant(), recipe_state_dict(ARCH)
    x = np.random.default_rng(5).standard_normal((1, 3, 5, 65, 63)).astype(np.float32)
    reference = torch_run(torch_model(variant, state, torch.float64), x.astype(np.float64))
    expected = reference[variant_last(variant)]
    torch32 = rel_err(torch_run(torch_model(variant, state), x)[variant_last(variant)], expected)
    got = np.asarray(keras_model(variant, state)(x.transpose(0, 2, 3, 4, 1), training=False))
    assert got.shape == (1, 400)
    assert rel_err(got, expected) <= max(1e-5, 2 * torch32), (rel_err(got, expected), torch32)


def variant_last(variant) -> str:
    return families.expand(variant)[-1].name


TWIN = """
import json, sys
from dataclasses import replace
sys.path.insert(0, {tests!r})
import numpy as np, keras
from helpers import make_checkpoint
from vrconvert import models_tf
from vrconvert.converter.arch import families, mapping
from vrconvert.models_tf import layout, predictor

variant = replace(families.get("s3d"), head_pool={head!r})
_, state = make_checkpoint("s3d", seed=2)
model = models_tf.build(variant)
arrays = mapping.to_keras(variant, state)
for v in model.weights:
    v.assign(arrays[v.path])
twin = layout.derive(model, "channels_first", split_strided=True, merge_padding=True)  # raises if it cannot
x = np.random.default_rng(3).standard_normal((1, 5, 65, 63, 3)).astype(np.float32)
plain = keras.ops.convert_to_numpy(model(x, training=False))
rel = lambda a: float(np.abs(np.asarray(a) - plain).max() / np.abs(plain).max())
print(json.dumps({{"twin": rel(keras.ops.convert_to_numpy(twin(x, training=False))), "predictor": rel(predictor(model)(x))}}))
"""


def test_channels_first_twin_runs_on_the_torch_backend():
    """Keras' torch backend runs S3D through its channels-first twin (the Inception branches' concatenations
    and the classifier's Dropout re-laid), within float32 rounding of the channels-last model."""
    from pathlib import Path

    code = TWIN.format(tests=str(Path(__file__).resolve().parent), head=SMALL_HEAD)
    got = json.loads(run_python(code, backend="torch", timeout=600).stdout.strip().splitlines()[-1])
    assert got["twin"] <= 1e-5 and got["predictor"] <= 1e-5, got


def test_layers_are_builtin_named_and_configured(keras):
    model = keras_model(small_variant(), recipe_state_dict(ARCH))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds == {
        "InputLayer",
        "ZeroPadding3D",
        "Conv3D",
        "BatchNormalization",
        "ReLU",
        "MaxPooling3D",
        "Concatenate",
        "AveragePooling3D",
        "Dropout",
        "GlobalAveragePooling3D",
    }
    bn = model.get_layer("features_5_branch1_1_0_1")
    assert (bn.epsilon, bn.momentum) == (1e-3, 0.999)
    assert model.get_layer("classifier_0").rate == 0.2
    assert model.get_layer("features_7").strides == (2, 2, 2)
    assert model.get_layer("features_7_window").padding == "same"


def test_applications_convention(keras):
    from vrconvert import models_tf

    backbone = models_tf.build(ARCH, include_top=False, pooling="avg")
    assert backbone.output.shape == (None, 1024) and backbone.layers[-2].name == "features_15_cat"
    model = models_tf.build(small_variant(), classes=7, classifier_activation="softmax")
    probabilities = np.asarray(model(np.zeros((1, 5, 65, 63, 3), np.float32)))
    assert probabilities.shape == (1, 7) and abs(float(probabilities.sum()) - 1) < 1e-5


def test_too_small_a_clip_is_one_line(torch):
    from vrconvert import models_torch
    from vrconvert.converter.errors import InputError

    model = models_torch.build(ARCH).eval()
    with pytest.raises(InputError, match=r"s3d: the clip is too small: avgpool .* receives 1x2x2"), torch.no_grad():
        model(torch.zeros(1, 3, 8, 64, 64))


# ---- the oracle at its own sizes (slow) -------------------------------------------------------------------


def _blocks_and_logits(values: dict[str, np.ndarray], ends: dict[str, str], channels_last: bool):
    axes = (1, 2, 3) if channels_last else (2, 3, 4)
    return {b: values[r].astype(np.float64).mean(axis=axes) for b, r in ends.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip16", "odd"])
def test_torch_builder_against_torchvision(name, torch):
    variant, o = families.get(ARCH), oracle(ARCH)
    ends = families.blocks(variant)
    values = torch_run(torch_model(variant, recipe_state_dict(ARCH)), oracle_input(ARCH, name), ends.values())
    logits = values[variant_last(variant)]
    assert rel_err(logits, o[f"{name}.logits64"]) <= bound(ARCH, name)
    for block, mean in _blocks_and_logits(values, ends, channels_last=False).items():
        assert rel_err(mean, o[f"{name}.{block}.mean"]) <= 1e-5, block


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip16", "odd"])
def test_keras_against_torchvision_float64(name, keras):
    variant, o = families.get(ARCH), oracle(ARCH)
    model = keras_model(variant, recipe_state_dict(ARCH))
    ends = families.blocks(variant)
    probe = keras.Model(model.inputs, [model.output] + [model.get_layer(keras_name(r)).output for r in ends.values()])
    outs = probe.predict(oracle_input(ARCH, name).transpose(0, 2, 3, 4, 1), verbose=0)
    means = _blocks_and_logits(dict(zip(ends.values(), outs[1:], strict=True)), ends, channels_last=True)
    for block, mean in means.items():  # the first block that goes wrong, named
        assert rel_err(mean, o[f"{name}.{block}.mean"]) <= 1e-5, block
    assert rel_err(outs[0], o[f"{name}.logits64"]) <= bound(ARCH, name)


KERAS_ON_BACKEND = """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    import keras
    from test_s3d import keras_model
    from zoo_oracle import oracle, oracle_input, recipe_state_dict, rel_err
    from vrconvert.converter.arch import families
    model = keras_model(families.get("s3d"), recipe_state_dict("s3d"))
    got = keras.ops.convert_to_numpy(model(oracle_input("s3d", "clip16").transpose(0, 2, 3, 4, 1), training=False))
    print(rel_err(got, oracle("s3d")["clip16.logits64"]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_keras_on_other_backends_against_torchvision_float64(backend):
    from pathlib import Path

    from helpers import run_python

    out = run_python(KERAS_ON_BACKEND.format(tests=str(Path(__file__).parent)), backend=backend)
    assert float(out.stdout.split()[-1]) <= bound(ARCH, "clip16")


def test_litert_refuses_in_one_line_naming_the_op(tmp_path, keras):
    """LiteRT has no builtin 3D max pool: one line, nothing written (the other formats run it)."""
    pytest.importorskip("ai_edge_litert")
    from helpers import save_state

    from vrconvert.converter.deploy.export import export
    from vrconvert.converter.errors import InputError

    save_state(recipe_state_dict(ARCH), tmp_path / "s3d.pth")
    with pytest.raises(InputError, match=r"^litert cannot run s3d: its runtime has no MaxPool3D \(3D max pooling\) op"):
        export(tmp_path / "s3d.pth", tmp_path / "s3d.tflite", validate=False)
    assert not (tmp_path / "s3d.tflite").exists()
