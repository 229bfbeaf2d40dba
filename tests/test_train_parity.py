"""Training parity (`validate --train`) and BatchNorm's training semantics on the Keras side."""

import numpy as np
import pytest
from helpers import invoke, make_checkpoint, save_state

ARCH = "r2plus1d_18"


def honest_pair(arch: str = ARCH):
    """(variant with 5 classes, its complete random state dict): the two sides start from these."""
    from vrconvert.converter.arch import mapping, spec

    _, state = make_checkpoint(arch, 5, seed=0)
    variant = spec.get(arch).with_classes(5)
    return variant, mapping.complete(variant, state)


@pytest.fixture(scope="module")
def pair(torch):
    return honest_pair()


def _run(pair, sabotage=None, data_format="channels_last"):
    from vrconvert.converter.parity import train
    from vrconvert.models_tf import layout
    from vrconvert.models_tf import weights as keras_weights

    variant, state = pair
    model = keras_weights.build_model(variant, state)
    if data_format == "channels_first":  # the twin finetune and validate --train train on Keras' torch backend
        model = layout.derive(model, data_format, contiguous=True)
    if sabotage:
        attribute, value = sabotage
        setattr(model.get_layer("layer2_0_conv1_0_1"), attribute, value)
    settings = train.Settings(steps=1, batch=2, frames=4, size=(32, 32))
    return train.compare_training(variant, state, model, settings)


def test_honest_pair_passes(pair):
    """Every tensor of an honest pair is within the bound: logits, loss, every gradient, every weight after
    the step and every BatchNorm statistic. (Until the float64 reference really took a float32 run's ReLU
    decisions at ties, one decision Keras took the other way moved every gradient below layer3 up to 113x
    over the bound, on TF and torch alike.)"""
    from vrconvert.converter.arch.layers import expand

    report = _run(pair)
    assert report.batchnorm == "keras"
    variant = pair[0]
    norms = sum(layer.op == "bn" for layer in expand(variant))
    params = sum(1 for key in pair[1] if not key.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert len(report.checks) == 2 + 2 * params + 2 * norms  # logits, loss, each grad and weight, statistics
    assert report.passed, report.as_dict()["failures"][:5]


HONEST_ELSEWHERE = """
import sys
sys.path.insert(0, {tests!r})
from test_train_parity import _run, honest_pair

report = _run(honest_pair({arch!r}), data_format={data_format!r})
print(report.passed, report.backend, len(report.checks), report.worst.name, report.worst.ratio)
"""


@pytest.mark.slow  # about 1 min each: one compare_training in a fresh process
@pytest.mark.parametrize(
    ("arch", "backend", "data_format"),
    [
        ("r2plus1d_18", "torch", "channels_first"),  # on torch, vrconvert trains the twin (finetune, validate --train)
        ("r2plus1d_18", "jax", "channels_last"),
        ("r3d_18", "tensorflow", "channels_last"),
        ("mc3_18", "tensorflow", "channels_last"),
    ],
)
def test_honest_pair_passes_elsewhere(arch, backend, data_format):
    from pathlib import Path

    from helpers import run_python

    code = HONEST_ELSEWHERE.format(tests=str(Path(__file__).parent), arch=arch, data_format=data_format)
    passed, ran_on, *_ = run_python(code, backend=backend, timeout=900).stdout.split()
    assert (passed, ran_on) == ("True", backend)


@pytest.mark.parametrize(
    ("attribute", "value", "what"), [("epsilon", 1e-3, "logits"), ("momentum", 0.8, "running_mean")]
)
def test_sabotaged_batchnorm_fails(pair, attribute, value, what):
    report = _run(pair, (attribute, value))
    assert not report.passed
    failed = {c.what for c in report.checks if not c.passed}
    assert what in failed
    if attribute == "momentum":  # the sabotaged layer's own statistics are named
        assert any(c.name == "layer2.0.conv1.0.1.running_mean" and not c.passed for c in report.checks)


def test_torch_rule_batchnorm_keeps_torchs_running_variance(keras, torch):
    """One training step on one BatchNorm: Keras' rule lands (n - 1)/n of the way; the opt-in torch's."""
    from vrconvert.models_tf.batchnorm import TorchBatchNormalization

    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 2, 3, 3, 4)).astype(np.float32)  # n = 36 per channel
    reference = torch.nn.BatchNorm3d(4, eps=1e-5, momentum=0.1).train()
    reference(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)))
    expected = reference.running_var.numpy()
    plain = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
    torch_rule = TorchBatchNormalization(epsilon=1e-5, momentum=0.9)
    for layer in (plain, torch_rule):
        layer(x, training=True)
    got = keras.ops.convert_to_numpy(torch_rule.moving_variance)
    assert np.abs(got - expected).max() / expected.max() < 1e-6
    batch_var = x.reshape(-1, 4).var(axis=0, ddof=0)
    assert np.allclose(keras.ops.convert_to_numpy(plain.moving_variance), 0.9 + 0.1 * batch_var, rtol=1e-5)


def test_torch_rule_model_saves_and_reloads(tmp_path, keras):
    from vrconvert import models_tf
    from vrconvert.models_tf.batchnorm import TorchBatchNormalization

    model = models_tf.build(ARCH, batchnorm="torch", num_classes=3)
    assert isinstance(model.get_layer("stem_1"), TorchBatchNormalization)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(again.get_layer("stem_1"), TorchBatchNormalization)


def test_freeze_like_torch_keeps_batch_statistics(keras):
    """Every weight frozen, BatchNorm still normalising by the batch and updating its statistics."""
    from vrconvert.models_tf.batchnorm import freeze_like_torch

    inputs = keras.Input((2, 4, 4, 3))
    x = keras.layers.Conv3D(4, 1, name="conv")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, outputs)
    freeze_like_torch(model)
    assert model.trainable_weights == []
    clip = np.random.default_rng(1).normal(5.0, 2.0, (2, 2, 4, 4, 3)).astype(np.float32)
    before = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean).copy()
    trained = keras.ops.convert_to_numpy(model(clip, training=True))
    assert abs(trained.mean()) < 1e-3  # batch statistics: normalised output
    assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean), before)


@pytest.mark.slow
def test_validate_train_cli_exit_codes(tmp_path, capsys, keras):
    """The CLI on files: a sabotaged epsilon exits 1 and names the worst tensor."""
    from vrconvert import models_tf

    _, state = make_checkpoint(ARCH, 5, seed=0)
    save_state(state, tmp_path / "t.pth")
    model = models_tf.build(ARCH, weights=str(tmp_path / "t.pth"))
    model.get_layer("stem_1").epsilon = 1e-2
    model.save(tmp_path / "k.keras")
    args = ["validate", tmp_path / "t.pth", tmp_path / "k.keras", "--train", "--steps", "1"]
    code, out, err = invoke([*args, "--frames", "4", "--size", "32x32"], capsys)
    assert code == 1 and err == "" and "training parity FAIL: worst step 0" in out


def test_validate_train_without_size_takes_the_training_default(tmp_path, capsys, monkeypatch):
    """`--size` defaults to the model's crop for inference; `--train` without it used to crash on None."""
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.parity import train

    seen = {}

    def stand_in(torch_file, keras_file, settings, head=None):
        seen["settings"] = settings
        raise InputError("stopped here")

    monkeypatch.setattr(train, "validate_training", stand_in)
    (tmp_path / "a.pth").write_bytes(b"")
    (tmp_path / "b.keras").write_bytes(b"")
    code, _, err = invoke(["validate", tmp_path / "a.pth", tmp_path / "b.keras", "--train"], capsys)
    assert (code, err.strip()) == (2, "error: stopped here")
    assert seen["settings"].size == train.Settings().size
