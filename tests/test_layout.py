"""The channels-first twin (models_tf.layout) and the per-backend predictor against the channels-last
model and torch. Keras fixes its backend at first import, so the torch and JAX cases run in fresh
interpreters (helpers.run_python); each prints one JSON line of measured differences."""

import json
from pathlib import Path

import pytest
from helpers import run_python

TESTS = Path(__file__).resolve().parent

# Small clips, odd sizes included, on all three variants: the twin (each rewrite on and off), its
# stage feature maps, the predictor's output, and a saved-and-reloaded .keras file on that backend.
SMALL = """
import json, sys, tempfile, os
sys.path.insert(0, {tests!r})
import numpy as np, keras, torch
from helpers import copy_to_keras, make_checkpoint
from oracle import rel_err
from vrconvert import models_tf
from vrconvert.converter.arch import layers, spec
from vrconvert.models_tf import layout, predictor

report = {{}}
for arch in {archs!r}:
    tmodel, state = make_checkpoint(arch, num_classes=10, seed=4)
    model = models_tf.build(arch, num_classes=10)
    copy_to_keras(model, state)
    x = np.random.default_rng(2).standard_normal((1, 3, 5, 33, 31)).astype(np.float32)
    nthwc = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1))
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    plain = keras.ops.convert_to_numpy(model(nthwc, training=False))
    row = {{"plain_vs_torch": rel_err(plain, expected)}}
    for fmt, split, merge in {variants!r}:
        twin = layout.derive(model, fmt, split_strided=split, merge_padding=merge)
        got = keras.ops.convert_to_numpy(twin(nthwc, training=False))
        row[f"{{fmt}}_{{split}}_{{merge}}_vs_torch"] = rel_err(got, expected)
        row[f"{{fmt}}_{{split}}_{{merge}}_vs_plain"] = rel_err(got, plain)
        row[f"{{fmt}}_{{split}}_{{merge}}_strided_pointwise"] = sum(
            isinstance(l, keras.layers.Conv3D) and l.kernel_size == (1, 1, 1) and max(l.strides) > 1
            for l in twin.layers
        )
        row[f"{{fmt}}_{{split}}_{{merge}}_pads"] = sum(isinstance(l, keras.layers.ZeroPadding3D) for l in twin.layers)
    row["original_pads"] = sum(isinstance(l, keras.layers.ZeroPadding3D) for l in model.layers)
    row["original_strided_pointwise"] = sum(
        isinstance(l, keras.layers.Conv3D) and l.kernel_size == (1, 1, 1) and max(l.strides) > 1 for l in model.layers
    )
    row["predictor_vs_torch"] = rel_err(predictor(model)(nthwc), expected)
    ends = layers.stage_outputs(layers.expand(spec.get(arch).with_classes(10)))
    probe = keras.Model(model.inputs, [model.get_layer(layers.keras_name(n)).output for n in ends.values()])
    maps = predictor(probe)(nthwc)
    with torch.no_grad():
        values = tmodel.run(torch.from_numpy(x), keep=ends.values())
    row["stage_shapes_match"] = all(
        m.shape == tuple(values[n].numpy().transpose(0, 2, 3, 4, 1).shape) for m, n in zip(maps, ends.values())
    )
    row["stages_vs_torch"] = max(
        rel_err(m, values[n].numpy().transpose(0, 2, 3, 4, 1)) for m, n in zip(maps, ends.values())
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        row["reloaded_input_shape"] = list(loaded.input_shape)
        row["reloaded_predictor_vs_torch"] = rel_err(predictor(loaded)(nthwc), expected)
    report[arch] = row
print(json.dumps(report))
"""


def _run(code: str, backend: str) -> dict:
    out = run_python(code, backend=backend, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


# (data_format, split_strided, merge_padding): each rewrite alone and together, in both layouts
VARIANTS = (
    ("channels_first", False, False),
    ("channels_first", True, False),
    ("channels_first", False, True),
    ("channels_last", True, True),
)


def _check_small(report: dict, variants: tuple) -> None:
    for arch, row in report.items():
        for key, value in row.items():
            if key.endswith(("_vs_torch", "_vs_plain")):
                assert value <= 1e-5, (arch, key, value)
        for fmt, split, merge in variants:
            assert row[f"{fmt}_{split}_{merge}_strided_pointwise"] == (
                0 if split else row["original_strided_pointwise"]
            )
            # merging leaves only the pads of strided convs, which Keras' "same" would pad unevenly
            pads = row[f"{fmt}_{split}_{merge}_pads"]
            assert (0 < pads < row["original_pads"]) if merge else pads == row["original_pads"], (arch, fmt, pads)
        assert row["original_strided_pointwise"] > 0, arch
        assert row["stage_shapes_match"], arch
        assert row["stages_vs_torch"] <= 1e-5, arch
        assert row["reloaded_input_shape"] == [None, None, None, None, 3], arch  # the file's contract


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_twin_and_predictor(backend):
    # The rewrites are the torch path's; JAX's predictor jits the model as it is (XLA picks its layouts),
    # and runs each rewrite op by op outside jit (slow on CPU): there, the model, predictor, stages and
    # reload only, on r2plus1d_18 (every layer kind; the oracle test runs all three variants on JAX)
    variants = VARIANTS if backend == "torch" else ()
    archs = ("r3d_18", "mc3_18", "r2plus1d_18") if backend == "torch" else ("r2plus1d_18",)
    _check_small(_run(SMALL.format(tests=str(TESTS), variants=variants, archs=archs), backend), variants)


def test_torch_kernels_stored_in_torch_order():
    code = """
    import json, keras, torch
    from vrconvert import models_tf
    from vrconvert.models_tf import infer, layout
    model = models_tf.build("r2plus1d_18", num_classes=5)
    twin = layout.derive(model, "channels_first")
    before = [l.get_weights()[0] for l in twin.layers if isinstance(l, keras.layers.Conv3D)]
    count = infer.torch_kernel_order(twin)
    convs = [l for l in twin.layers if isinstance(l, keras.layers.Conv3D)]
    twin.set_weights(twin.get_weights())  # Keras assigns in place: the layout survives set_weights
    print(json.dumps({
        "count": count,
        "convs": len(convs),
        "contiguous": all(l.kernel.value.permute(4, 3, 0, 1, 2).is_contiguous() for l in convs),
        "same_values": all((b == l.get_weights()[0]).all() for b, l in zip(before, convs)),
        "shapes": all(tuple(l.kernel.shape) == l.kernel_size + (l.kernel.shape[3], l.filters) for l in convs),
    }))
    """
    got = _run(code, "torch")
    assert got["count"] == got["convs"] > 0
    assert got["contiguous"] and got["same_values"] and got["shapes"]


def test_derive_refuses_unknown_layers(keras):
    from vrconvert.models_tf import layout

    inputs = keras.Input((None, None, None, 3))
    x = keras.layers.Conv3D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.LayerNormalization(name="norm")(x))
    with pytest.raises(ValueError, match="LayerNormalization"):
        layout.derive(model, "channels_first")
    flat = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    with pytest.raises(ValueError, match="Dense"):
        layout.derive(flat, "channels_first")


def test_conv_kernel_shape_does_not_depend_on_data_format(keras):
    last = keras.layers.Conv3D(7, (1, 3, 5))
    last.build((None, 4, 8, 8, 3))
    first = keras.layers.Conv3D(7, (1, 3, 5), data_format="channels_first")
    first.build((None, 3, 4, 8, 8))
    assert tuple(last.kernel.shape) == tuple(first.kernel.shape) == (1, 3, 5, 3, 7)


FULL = """
import json, sys
sys.path.insert(0, {tests!r})
from helpers import copy_to_keras
from oracle import ARCHS, oracle, oracle_input, recipe_state_dict, rel_err
from vrconvert import models_tf
from vrconvert.models_tf import predictor
out = {{}}
for arch in ARCHS:
    model = models_tf.build(arch)
    copy_to_keras(model, recipe_state_dict(arch))
    run, expected = predictor(model), oracle(arch)
    out[arch] = {{
        name: rel_err(run(oracle_input(name).transpose(0, 2, 3, 4, 1)), expected[name + ".logits"])
        for name in ("small", "clip16")
    }}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_predictor_matches_torchvision_oracle(backend):
    report = _run(FULL.format(tests=str(TESTS)), backend)
    for arch, errors in report.items():
        for name, value in errors.items():
            assert value <= 1e-5, (backend, arch, name, value)


@pytest.mark.slow  # about 30 s: two models built on the torch backend in a fresh interpreter
def test_twin_runs_in_torchs_default_layout_and_behind_the_transform():
    """A permutation alone leaves every later tensor in torch's channels-last 3-D strides (whose
    convolution backward made a training step about twice torch's), so the stem's output must be
    contiguous in (N, C, T, H, W). With the built-in transform, the transform stays channels-last and
    the twin starts after it."""
    code = """
    import json, keras, numpy as np, torch
    from vrconvert import models_tf
    from vrconvert.models_tf import layout
    keras.utils.set_random_seed(0)
    report = {}
    for name, transform, frames in (
        ("plain", False, np.random.default_rng(0).standard_normal((2, 4, 32, 32, 3)).astype(np.float32)),
        ("transform", True, np.random.default_rng(0).integers(0, 256, (2, 4, 130, 150, 3)).astype(np.uint8)),
    ):
        model = models_tf.build("r2plus1d_18", num_classes=3, include_preprocessing=transform, input_shape=(4, None, None, 3))
        twin = layout.derive(model, "channels_first", contiguous=True)
        plain = keras.ops.convert_to_numpy(model(frames, training=False))
        got = keras.ops.convert_to_numpy(twin(frames, training=False))
        stem = keras.Model(twin.inputs, twin.get_layer("stem_0").output)(frames, training=True)
        steps = [l.name for l in twin.layers if l.name.startswith("preprocess_") and l.name.endswith("channels_first")]
        report[name] = {
            "rel": float(np.abs(got - plain).max() / np.abs(plain).max()),
            "stem_channels": stem.shape[1],
            "contiguous": stem.is_contiguous(),
            "transform_unchanged": [l.get_config() for l in model.layers if l.name.startswith("preprocess_")]
            == [l.get_config() for l in twin.layers if l.name.startswith("preprocess_") and l.name not in steps],
        }
    print(json.dumps(report))
    """
    for name, got in _run(code, "torch").items():
        assert got["rel"] <= 1e-5, (name, got)
        assert got["stem_channels"] == 45 and got["contiguous"], (name, got)  # torch's default strides
        assert got["transform_unchanged"], (name, got)
