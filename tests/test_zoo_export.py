"""`vrconvert export` for the transformer families: Swin3D and MViT in SavedModel, LiteRT, ONNX and OpenVINO,
each artifact run by its own runtime. The export flow's own check (against torch float32) must pass, and the
artifact's logits are judged against the torch twin in float64: at most max(1e-5, 2 x torch float32's own
error). Small networks of each family's description in the fast set (every tensor random); the native
networks, one export per format, in the slow set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import swin3d_oracle
import torch
import zoo_oracle
from test_mvit import _tiny as tiny_mvit
from test_swin3d import TINY as TINY_SWIN
from test_swin3d import _tiny_state as tiny_swin_state

from vrconvert.converter.arch import mapping
from vrconvert.converter.deploy.formats import FORMATS

SUFFIXES = {"saved_model": "", "litert": ".tflite", "onnx": ".onnx", "openvino": ".xml"}


def _export(monkeypatch, tmp_path: Path, variant, state, fmt: str, clip_nthwc: np.ndarray, **options):
    """The export flow on `variant` and `state` as if read from a checkpoint (a small network has no
    published name to detect), checked on `clip_nthwc`. Returns (result, the artifact's runner)."""
    from vrconvert.converter.deploy import export as ex

    monkeypatch.setattr(ex, "load_source", lambda src, arch=None: (variant, state, "pth"))
    src = tmp_path / "source.pth"
    src.write_bytes(b"\0")  # never read: load_source above gives the network
    dst = tmp_path / f"{variant.name}{SUFFIXES[fmt] or '_saved_model'}"
    clip = np.ascontiguousarray(clip_nthwc.transpose(0, 4, 1, 2, 3))
    result = ex.export(src, dst, clips={"clip": clip}, **options)
    return result, FORMATS[fmt].runner(dst)


def _twin_logits(variant, state, clip_nthwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The torch twin's float32 and float64 logits."""
    from vrconvert import models_torch

    model = models_torch.build(variant, variant.num_classes).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    x = torch.from_numpy(np.ascontiguousarray(clip_nthwc.transpose(0, 4, 1, 2, 3)))
    with torch.no_grad():
        return model(x).numpy(), model.double()(x.double()).numpy()


def _oracle(name: str):
    """The oracle's reader for `name`'s family (Swin3D's has its own)."""
    return swin3d_oracle if name.startswith("swin3d") else zoo_oracle


def _judge(result, runner, clip: np.ndarray, logits32: np.ndarray, logits64: np.ndarray) -> float:
    assert result.parity.passed, result.parity.worst
    bar = max(1e-5, 2 * zoo_oracle.rel_err(logits32, logits64))
    err = zoo_oracle.rel_err(runner(clip), logits64)
    assert err <= bar, (result.format, err, bar)
    return err


@pytest.mark.parametrize(
    "fmt", ["litert", *(pytest.param(f, marks=pytest.mark.slow) for f in ("onnx", "saved_model", "openvino"))]
)
def test_small_swin3d_exports_with_free_sizes(fmt, monkeypatch, tmp_path):
    """T, H and W left free; checked on a batch of two clips that pad, shift and mask windows."""
    state = tiny_swin_state(torch)
    clip = np.random.default_rng(4).standard_normal((2, 18, 60, 44, 3)).astype(np.float32)
    result, runner = _export(monkeypatch, tmp_path, TINY_SWIN, state, fmt, clip)
    assert result.input_shape == [None, None, None, None, 3]
    _judge(result, runner, clip, *_twin_logits(TINY_SWIN, state, clip))


def _tiny_mvit(version: int):
    arch = tiny_mvit(version)
    rng = np.random.default_rng(version + 10)
    state = {k: rng.normal(0.0, 0.3, s).astype(np.float32) for k, s in mapping.torch_shapes(arch).items()}
    clip = rng.standard_normal((1, *arch.clip, 3)).astype(np.float32)
    return arch, state, clip


@pytest.mark.parametrize(
    "version, fmt",
    [(2, "litert")]
    + [pytest.param(1, "litert", marks=pytest.mark.slow)]
    + [pytest.param(1, f, marks=pytest.mark.slow) for f in ("saved_model", "onnx", "openvino")]
    + [pytest.param(2, "onnx", marks=pytest.mark.slow)],  # v2's other formats: at native size below
)
def test_small_mvit_exports_at_its_one_size(version, fmt, monkeypatch, tmp_path):
    """The network's one input size is the artifact's (no --frames/--size needed); pooled attention, v2's
    relative terms and the skip max pool all run in the format's runtime."""
    arch, state, clip = _tiny_mvit(version)
    result, runner = _export(monkeypatch, tmp_path, arch, state, fmt, clip)
    assert result.input_shape == [None, *arch.clip, 3]
    _judge(result, runner, clip, *_twin_logits(arch, state, clip))


def test_mvit_refuses_another_export_size_in_one_line(monkeypatch, tmp_path):
    from vrconvert.converter.errors import InputError

    arch, state, clip = _tiny_mvit(2)
    with pytest.raises(InputError, match=r"^mvit_v2_tiny takes clips of exactly 4x32x32 \(T x H x W\), not 4x48x48$"):
        _export(monkeypatch, tmp_path, arch, state, "saved_model", clip, frames=4, size=(48, 48))
    assert not list(tmp_path.glob("mvit*"))


def test_gelu_is_torchs_exact_gelu():
    """The registered GELU (spelled with erf) against torch's exact GELU in float64, tails included."""
    from vrconvert.models_tf.swin3d_layers import Gelu

    x = np.concatenate([np.linspace(-12, 12, 4001), np.random.default_rng(0).standard_normal(4000) * 3])
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    got = np.asarray(Gelu()(x.astype(np.float32)[None]))[0]
    assert np.abs(got - expected).max() <= 4e-7 * np.abs(expected).max()


def test_depthwise_taps_match_the_grouped_convolution():
    """MViT's pool convolution tap by tap against Keras' grouped Conv3D and numpy float64, strided."""
    import keras

    from vrconvert.models_tf.mvit_layers import depthwise_conv, max_pool

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 11, 10, 8)).astype(np.float32)
    for stride in ((1, 1, 1), (1, 2, 2), (2, 4, 3)):
        conv = keras.layers.Conv3D(8, 3, strides=stride, groups=8, use_bias=False)
        conv.build(x.shape)
        w = rng.standard_normal(conv.kernel.shape).astype(np.float32)
        conv.kernel.assign(w)
        ref = np.asarray(conv(x.astype(np.float64).astype(np.float32)))
        got = np.asarray(
            depthwise_conv(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(w), (3, 3, 3), stride)
        )
        exact = np.asarray(
            keras.ops.convert_to_numpy(
                depthwise_conv(
                    keras.ops.convert_to_tensor(x.astype(np.float64)), w.astype(np.float64), (3, 3, 3), stride
                )
            )
        )
        assert got.shape == ref.shape == exact.shape
        assert np.abs(got - exact).max() <= 1e-6 * np.abs(exact).max()
        assert np.abs(ref - exact).max() <= 1e-6 * np.abs(exact).max()
        pooled = np.asarray(max_pool(keras.ops.convert_to_tensor(x), (3, 3, 3), stride))
        np.testing.assert_array_equal(pooled, np.asarray(keras.ops.max_pool(x, 3, stride, padding="valid")))


# One export per format, at the native size of the family's smallest network. mvit_v2_s to ONNX is left to a
# run by hand (README, "Export of the zoo"): tf2onnx takes tens of minutes on it, beyond the slow set's budget;
# the small MViT networks above go through the same ONNX path in the slow set.
NATIVE = {
    ("swin3d_t", "saved_model"),
    ("swin3d_t", "onnx"),
    ("swin3d_t", "openvino"),
    ("swin3d_t", "litert"),
    ("mvit_v2_s", "saved_model"),
    ("mvit_v2_s", "openvino"),
    ("mvit_v2_s", "litert"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name, fmt", sorted(NATIVE))
def test_native_export_keeps_the_bound(name, fmt, tmp_path):
    """Recipe weights from a checkpoint on disk (detected by name), the oracle's 16x224x224 clip, the
    artifact against torchvision's own float64 logits (the oracle)."""
    from vrconvert.converter.deploy.export import export

    src = tmp_path / f"{name}.pth"
    oracle = _oracle(name)
    torch.save({k: torch.from_numpy(v) for k, v in oracle.recipe_state_dict(name).items()}, src)
    clip = oracle.oracle_input(name, "clip16")
    dst = tmp_path / f"{name}{SUFFIXES[fmt] or '_saved_model'}"
    options = {} if name.startswith("mvit") else {"frames": 16, "size": (224, 224)}
    result = export(src, dst, clips={"clip16": clip}, **options)
    assert result.arch == name and result.parity.passed, result.parity.worst
    got = FORMATS[fmt].runner(dst)(np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1)))
    assert oracle.rel_err(got, oracle.oracle(name)["clip16.logits64"]) <= oracle.bound(name, "clip16")


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("litert", marks=pytest.mark.slow)])
def test_small_swin3d_exports_with_its_own_transform(fmt, monkeypatch, tmp_path):
    """`--include-preprocessing`: uint8 frames of any H x W in, Swin3D's transform (short side 256, centre
    crop 224, its mean and std) inside the artifact; checked by the export flow against torchvision's
    transform in front of the twin, at its frames tolerance, on frames the network never saw."""
    state = tiny_swin_state(torch)
    frames = np.random.default_rng(6).integers(0, 256, (1, 4, 180, 250, 3), dtype=np.uint8)
    from vrconvert.converter.deploy import export as ex

    monkeypatch.setattr(ex, "load_source", lambda src, arch=None: (TINY_SWIN, state, "pth"))
    src = tmp_path / "source.pth"
    src.write_bytes(b"\0")
    dst = tmp_path / f"tiny{SUFFIXES[fmt]}"
    result = ex.export(src, dst, clips={"frames": frames}, include_preprocessing=True, frames=4)
    assert result.parity.passed, result.parity.worst
    assert result.input_shape == [None, 4, None, None, 3] and result.signature["dtype"] == "uint8"
