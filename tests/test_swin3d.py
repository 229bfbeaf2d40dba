"""Swin3D (t, s, b) against torchvision 0.28's oracle: keys, parameter counts, recipe weights, the torch twin
and the Keras model (logits against float64 and per-block means), round trips, saving, free input sizes."""

from __future__ import annotations

import numpy as np
import pytest
import swin3d_oracle as so

from vrconvert.converter.arch import swin3d, swin3d_mapping


def _twin(arch: str, torch):
    from vrconvert.models_torch import swin3d as twin

    model = twin.build(arch).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in so.recipe_state_dict(arch).items()})
    return model


def _keras(arch: str | swin3d.Swin3D, state: dict[str, np.ndarray] | None = None):
    from vrconvert.models_tf import swin3d as builder

    variant = swin3d.get(arch) if isinstance(arch, str) else arch
    model = builder.build(variant)
    variables = {v.path: v for v in model.weights}
    arrays = swin3d_mapping.to_keras(variant, state if state is not None else so.recipe_state_dict(variant.name))
    assert set(variables) == set(arrays)
    for path, array in arrays.items():
        variables[path].assign(array)
    return model


@pytest.fixture(scope="module")
def keras_t():
    return _keras("swin3d_t")


# A two-stage Swin3D with torchvision's window and patch: every record kind, built in a second
TINY = swin3d.Swin3D(name="swin3d_tiny", embed_dim=12, depths=(2, 2), heads=(2, 4), num_classes=7)


def _tiny_state(torch) -> dict[str, np.ndarray]:
    """Random weights for TINY, every tensor drawn (norms and position tables included)."""
    from vrconvert.models_torch import swin3d as twin

    rng = np.random.default_rng(3)
    out = {}
    for key, value in twin.build(TINY, TINY.num_classes).state_dict().items():
        if value.dtype == torch.int64:
            out[key] = value.numpy()
        elif key.endswith("weight") and value.ndim == 1:
            out[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        else:
            out[key] = rng.normal(0.0, 0.3, value.shape).astype(np.float32)
    return out


# The oracle's block means are its float32 run's, averaged in float64: a float32 model's own error
BLOCK_BAR = 1e-5


def _block_means(values: dict, arch: str) -> dict[str, np.ndarray]:
    ends = swin3d.block_outputs(swin3d.get(arch))
    return {block: np.asarray(values[name], np.float64).mean(axis=(1, 2, 3)) for block, name in ends.items()}


@pytest.mark.parametrize("arch", so.ARCHS)
def test_keys_shapes_and_parameters(arch):
    """The records give torchvision's state_dict (keys, order, shapes) and its parameter count."""
    variant = swin3d.get(arch)
    expected = {e["key"]: tuple(e["shape"]) for e in so.keys(arch)}
    assert list(swin3d_mapping.torch_shapes(variant).items()) == list(expected.items())
    assert swin3d.count_params(variant) == so.meta()[arch]["num_params"] == variant.num_params
    files = {f["file"]: (f["acc@1"], f["acc@5"]) for f in so.meta()[arch]["weights"].values()}
    weights = [variant.pretrained, *(w for _, w in variant.more_weights)]
    assert {w.filename: (w.acc1, w.acc5) for w in weights} == files


def test_relative_position_index_is_torchvisions():
    index = swin3d_mapping.buffers(swin3d.get("swin3d_t"))["features.0.0.attn.relative_position_index"]
    assert index.dtype == np.int64 and np.array_equal(index, so.relative_position_index())


def test_recipe_reproduces_the_oracle_checksum():
    state = so.recipe_state_dict("swin3d_t")
    sums = np.array([np.asarray(v, np.float64).sum() for v in state.values()])
    assert np.array_equal(sums, so.oracle("swin3d_t")["weight_checksum"])


def test_torch_twin_keys_and_small_logits(torch):
    """The torch twin has torchvision's keys and buffers; float64 reproduces the oracle's float64 logits and
    block means; float32 is as close as torchvision's own float32 run."""
    model = _twin("swin3d_t", torch)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [
        (e["key"], tuple(e["shape"])) for e in so.keys("swin3d_t")
    ]
    assert sum(p.numel() for p in model.parameters()) == so.meta()["swin3d_t"]["num_params"]
    oracle, clip = so.oracle("swin3d_t"), torch.from_numpy(so.oracle_input("swin3d_t", "small"))
    with torch.no_grad():
        logits32 = model(clip).numpy()
        ends = swin3d.block_outputs(swin3d.get("swin3d_t"))
        values = model.double().run(clip.double(), keep=set(ends.values()))
    assert so.rel_err(values["head"].numpy(), oracle["small.logits64"]) < 1e-12
    assert so.rel_err(logits32, oracle["small.logits64"]) <= so.bound("swin3d_t", "small")
    for block, mean in _block_means({k: v.numpy() for k, v in values.items()}, "swin3d_t").items():
        assert so.rel_err(mean, oracle[f"small.{block}.mean"]) <= BLOCK_BAR, block


def _keras_block_means(model, arch: str, clip: np.ndarray) -> dict[str, np.ndarray]:
    import keras

    from vrconvert.models_tf import swin3d as builder

    nodes = {node.name: node for node in swin3d.expand(swin3d.get(arch))}
    ends = swin3d.block_outputs(swin3d.get(arch))
    probe = keras.Model(model.inputs, [model.get_layer(builder.output_layer(nodes[n])).output for n in ends.values()])
    outs = probe(clip)
    return {block: np.asarray(out, np.float64).mean(axis=(1, 2, 3)) for block, out in zip(ends, outs, strict=True)}


def _check_keras(model, arch: str, name: str) -> float:
    oracle = so.oracle(arch)
    clip = so.oracle_input(arch, name).transpose(0, 2, 3, 4, 1)
    logits = np.asarray(model(clip))
    err = so.rel_err(logits, oracle[f"{name}.logits64"])
    assert err <= so.bound(arch, name), f"{arch} {name}: {err:.3g} > {so.bound(arch, name):.3g}"
    for block, mean in _keras_block_means(model, arch, clip).items():
        assert so.rel_err(mean, oracle[f"{name}.{block}.mean"]) <= BLOCK_BAR, f"{arch} {name}: {block}"
    return err


def test_keras_small_against_float64(keras_t):
    """Keras (TensorFlow) on the oracle's small input: logits within the bar, every block's mean in place."""
    _check_keras(keras_t, "swin3d_t", "small")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip16", "odd"])
def test_keras_native_and_odd_sizes(keras_t, name):
    """16x224x224, and 10x200x232 where windows are padded and the shift masks cut through padding."""
    _check_keras(keras_t, "swin3d_t", name)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["swin3d_s", "swin3d_b"])
@pytest.mark.parametrize("name", ["small", "clip16"])
def test_keras_larger_variants(arch, name):
    state = so.recipe_state_dict(arch)
    sums = np.array([np.asarray(v, np.float64).sum() for v in state.values()])
    assert np.array_equal(sums, so.oracle(arch)["weight_checksum"])
    _check_keras(_keras(arch), arch, name)


def test_round_trips_are_bit_exact(keras_t):
    """torch -> Keras -> torch and Keras -> torch -> Keras give back every array bit for bit."""
    import keras

    variant = swin3d.get("swin3d_t")
    state = so.recipe_state_dict("swin3d_t")
    model = keras_t
    variables = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    back = swin3d_mapping.to_torch(variant, variables)
    assert list(back) == list(state)
    for key, array in state.items():
        assert back[key].dtype == array.dtype and np.array_equal(back[key], array), key
    again = swin3d_mapping.to_keras(variant, back)
    for path, array in variables.items():
        assert np.array_equal(again[path], array), path


TINY_CLIPS = {  # (N, T, H, W, 3): whole windows; padded windows with shifts; axes shorter than the window
    "whole": (1, 16, 56, 56),
    "padded": (2, 18, 60, 44),
    "short": (1, 6, 20, 36),
}


def _tiny_reference(torch, state, shape):
    """The torch twin's float64 and float32 logits for a seeded clip of `shape` (N, T, H, W)."""
    from vrconvert.models_torch import swin3d as twin

    clip = np.random.default_rng(sum(shape)).standard_normal((*shape, 3)).astype(np.float32)
    model = twin.build(TINY, TINY.num_classes).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = torch.from_numpy(clip.transpose(0, 4, 1, 2, 3))
    with torch.no_grad():
        logits32 = model(x).numpy()
        logits64 = model.double()(x.double()).numpy()
    return clip, logits32, logits64


@pytest.mark.parametrize("case", TINY_CLIPS)
def test_tiny_keras_and_free_size_graph_against_twin(torch, case):
    """Against the (oracle-proven) torch twin in float64, on sizes that pad, shift, mask and shrink the window:
    the Keras model, and a TensorFlow graph traced with free T, H, W (as an export has), where windows,
    pads, shifts and masks are computed at run time."""
    import tensorflow as tf

    state = _tiny_state(torch)
    clip, logits32, logits64 = _tiny_reference(torch, state, TINY_CLIPS[case])
    bar = max(1e-5, 2 * so.rel_err(logits32, logits64))
    model = _keras(TINY, state)
    graph = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec((None, None, None, None, 3), tf.float32)])
    assert so.rel_err(model(clip).numpy(), logits64) <= bar
    assert so.rel_err(graph(clip).numpy(), logits64) <= bar


@pytest.mark.parametrize("backend", ["tensorflow", "torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_tiny_keras_file_on_every_backend(torch, tmp_path, backend):
    """A saved `.keras` reloads in a fresh process, safe mode on, after `import vrconvert`, on every backend,
    and stays within the bar against the twin in float64 (padded windows, shifts and masks included)."""
    from helpers import run_python

    state = _tiny_state(torch)
    clip, logits32, logits64 = _tiny_reference(torch, state, TINY_CLIPS["padded"])
    model = _keras(TINY, state)
    path = tmp_path / "tiny.keras"
    model.save(path)
    np.save(tmp_path / "clip.npy", clip)
    np.save(tmp_path / "ref.npy", logits64)
    bar = max(1e-5, 2 * so.rel_err(logits32, logits64))
    run_python(
        f"""
        import numpy as np, keras, vrconvert
        model = keras.models.load_model({str(path)!r}, safe_mode=True, compile=False)
        out = model.predict(np.load({str(tmp_path / "clip.npy")!r}), verbose=0)
        ref = np.load({str(tmp_path / "ref.npy")!r})
        err = np.abs(out - ref).max() / np.abs(ref).max()
        assert err <= {bar!r}, err
        """,
        backend=backend,
        timeout=900,
    )


def _preprocess_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, uint8 frames (1, 2, 240, 320, 3), torchvision's swin3d transform of them (3, 2, 224, 224))."""
    with np.load(so.FIXTURES.parent / "preprocess.oracle.npz") as z:
        noise = z["noise_frames_thwc"][:2]
    ramp = np.linspace(0, 255, 4 * 240 * 320 * 3).reshape(4, 240, 320, 3).astype(np.uint8)[:2]
    with np.load(so.FIXTURES / "swin3d.preprocess.npz") as z:
        return [("noise", noise[None], z["swin3d.noise_out_cthw"]), ("ramp", ramp[None], z["swin3d.ramp_out_cthw"])]


def test_torch_preprocessing_is_torchvisions(torch):
    """Short side to 256 (240x320 -> 256x341), centre crop 224, ImageNet mean and std: exactly the oracle's."""
    from vrconvert.models_torch.preprocessing import KineticsPreprocessing

    transform = KineticsPreprocessing(swin3d.get("swin3d_t").preprocessing)
    for name, frames, expected in _preprocess_cases():
        got = transform(torch.from_numpy(frames))[0].numpy()
        assert np.array_equal(got, expected), name


@pytest.mark.parametrize("count", [None, 2])
def test_keras_preprocessing_against_the_oracle(count):
    """The Keras transform (free or fixed T; H x W always free): at most one uint8 level off, on at most 1e-4
    of the values (torch fuses each multiply-add of the bilinear taps; plain ops round a half-way value either way)."""
    from vrconvert.models_tf.preprocessing import transform_model

    p = swin3d.get("swin3d_t").preprocessing
    for name, frames, expected in _preprocess_cases():
        model = transform_model(p, count)
        got = np.asarray(model(frames))[0].transpose(3, 0, 1, 2)
        level = 1.0 / 255.0 / min(p.std) + 1e-6
        off = np.abs(got - expected)
        assert off.max() <= level and (off > 1e-5).mean() <= 1e-4, (name, off.max(), (off > 1e-5).mean())


def test_preprocessing_models_agree_on_frames(torch):
    """Both builders' include_preprocessing on uint8 frames of a size the network never saw: validate's own
    comparison (torchvision's transform in front of the twin) passes at its frames tolerance."""
    from vrconvert import models_torch
    from vrconvert.converter.parity import runtime, validate
    from vrconvert.models_tf.build import build

    state = _tiny_state(torch)
    keras_model = build(TINY, include_preprocessing=True)
    variables = {v.path: v for v in keras_model.weights}
    for path, array in swin3d_mapping.to_keras(TINY, state).items():
        variables[path].assign(array)
    twin = models_torch.build(TINY, TINY.num_classes).eval()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    frames = np.random.default_rng(8).integers(0, 256, (1, 4, 180, 250, 3), dtype=np.uint8)
    report = validate.check_models(
        TINY, twin, keras_model, {"frames": frames}, runtime.prepare("cpu"), validate.default_tolerance(True)
    )
    assert report.passed, report.worst
