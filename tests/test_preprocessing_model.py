"""Raw frames in, labels out: torchvision's Kinetics transform inside the Keras model and its torch twin.

Judged against torchvision's numbers (the oracle fixture) and against torchvision's tensor recipe
written out below with torch alone, never against vrconvert's numpy transform. Bound (issue 13): every
value within one uint8 level before normalisation, at most 1 value in 10,000 differing at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import random_state_dict, run_python
from oracle import ARCHS, keys, rel_err

FIXTURES = Path(__file__).parent / "fixtures"
MEAN = np.array((0.43216, 0.394666, 0.37645), np.float32)  # torchvision's VideoClassification
STD = np.array((0.22803, 0.22145, 0.216989), np.float32)
MAX_DIFFERING = 1e-4
HELD_OUT = ((240, 320), (360, 640), (480, 270), (97, 131))  # (H, W); none is the oracle's clip


# ---- torchvision's recipe, with torch alone --------------------------------------------------------


def torchvision_levels(frames_thwc: np.ndarray) -> np.ndarray:
    """torchvision's `VideoClassification` up to the uint8 crop: (T, H, W, 3) uint8 -> (T, 112, 112, 3).

    As torchvision 0.28 does it for a decoded video: `permute(0, 3, 1, 2)` of the THWC frames, `resize`
    (float32, `interpolate` bilinear, align_corners=False, antialias=False, `round`, back to uint8) and
    `center_crop` (offsets `int(round((in - out) / 2))`). Multi-threaded, as the oracle was made.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, os.cpu_count() or 2))
    try:
        video = torch.from_numpy(frames_thwc).permute(0, 3, 1, 2)
        resized = torch.nn.functional.interpolate(
            video.to(torch.float32), size=[128, 171], mode="bilinear", align_corners=False, antialias=False
        )
        resized = resized.round().to(torch.uint8)
    finally:
        torch.set_num_threads(threads)
    top, left = round((128 - 112) / 2.0), round((171 - 112) / 2.0)
    return resized[:, :, top : top + 112, left : left + 112].permute(0, 2, 3, 1).numpy()


def torchvision_clip(frames_thwc: np.ndarray) -> np.ndarray:
    """The whole transform: (1, 3, T, 112, 112) float32 for a torch model (/255, then (x - mean) / std)."""
    x = torchvision_levels(frames_thwc).astype(np.float32) / np.float32(255.0)
    return ((x - MEAN) / STD).transpose(3, 0, 1, 2)[None]


def oracle_levels(out_cthw: np.ndarray) -> np.ndarray:
    """The oracle's normalised output back to its uint8 levels (T, H, W, 3), checked to be integral."""
    levels = (out_cthw.transpose(1, 2, 3, 0) * STD + MEAN) * 255.0
    assert np.abs(levels - np.rint(levels)).max() < 1e-3
    return np.rint(levels)


def oracle_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """The oracle's (frames, normalised output) pairs: its noise clip, and the ramp it was fed."""
    with np.load(FIXTURES / "preprocess.oracle.npz") as z:
        ramp = np.linspace(0, 255, 4 * 240 * 320 * 3).reshape(4, 240, 320, 3).astype(np.uint8)
        return [(z["noise_frames_thwc"], z["noise_out_cthw"]), (ramp, z["ramp_out_cthw"])]


def clips(seed: int = 11, frames: int = 4) -> list[np.ndarray]:
    """Held-out uint8 clips: noise (the hardest case for rounding) and smooth moving gradients."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in HELD_OUT:
        out.append(rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        waves = [
            127.5 + 127.5 * np.sin(xx / rng.uniform(3, 40) + yy / rng.uniform(3, 40) + 0.7 * c + 0.3 * t)
            for t in range(frames)
            for c in range(3)
        ]
        out.append(np.rint(np.stack(waves, -1).reshape(h, w, frames, 3).transpose(2, 0, 1, 3)).astype(np.uint8))
    return out


def differing(actual: np.ndarray, expected: np.ndarray) -> tuple[int, int, float]:
    """(values differing, values, largest difference) of two arrays of uint8 levels."""
    diff = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    return int((diff > 0).sum()), diff.size, float(diff.max())


def assert_within_bound(counts: list[tuple[int, int, float]]) -> None:
    bad, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
    assert max(c[2] for c in counts) <= 1.0, counts
    assert bad <= MAX_DIFFERING * total, f"{bad} of {total} values differ ({bad / total:.2e})"


# ---- the transform ----------------------------------------------------------------------------------


def test_reference_recipe_is_torchvisions(torch):
    """The test's own torch recipe reproduces the oracle exactly, so it may judge held-out clips."""
    with np.load(FIXTURES / "preprocess.oracle.npz") as z:
        frames, out = z["noise_frames_thwc"], z["noise_out_cthw"]
    np.testing.assert_array_equal(torchvision_levels(frames), oracle_levels(out))
    assert np.abs(torchvision_clip(frames)[0] - out).max() <= 1e-6


def test_crop_offsets_are_torchvisions_not_keras():
    from vrconvert.models_tf.preprocessing import crop_offsets

    assert crop_offsets(128, 112) == (8, 8)
    assert crop_offsets(171, 112) == (30, 29)  # Keras' CenterCrop: (171 - 112) // 2 = 29 before
    with pytest.raises(ValueError):
        crop_offsets(100, 112)


def test_short_side_size_at_run_time_is_torchvisions(keras):
    """Swin3D's and MViT's resize follows the frames' H x W at run time; its output size must be torchvision's
    `int(short * long / short_side)` for every size, ties and exact multiples included, in ops that every
    runtime has built in (a float64 version needed LiteRT's Flex ops)."""
    from vrconvert.models_tf.short_side import resized_size

    sizes = [(h, w) for h in (1, 2, 97, 240, 255, 256, 257, 360, 480, 1080, 4321) for w in (1, 3, 131, 256, 320, 640)]
    hs, ws = (keras.ops.convert_to_tensor(np.array(v, np.int32)) for v in zip(*sizes, strict=True))
    got_h, got_w = (keras.ops.convert_to_numpy(t) for t in resized_size(hs, ws, 256))
    for (h, w), gh, gw in zip(sizes, got_h, got_w, strict=True):
        side, long = (w, h) if w <= h else (h, w)
        new_long = int(256 * long / side)  # torchvision's _compute_resized_output_size
        assert (gh, gw) == ((new_long, 256) if w <= h else (256, new_long)), (h, w)


def _levels_and_clip(model_levels, model_clip, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(model_levels(frames[None]))[0], np.asarray(model_clip(frames[None]))[0]


def test_keras_transform_against_oracle_and_held_out_clips(keras):
    from vrconvert.models_tf.preprocessing import transform_model

    levels, clip = transform_model(normalized=False), transform_model()
    counts = []
    for frames, out in oracle_cases():
        got_levels, got = _levels_and_clip(levels, clip, frames)
        counts.append(differing(got_levels, oracle_levels(out)))
        # normalised: float32 rounding where the levels agree, one level's worth where they do not
        step = (np.abs(got_levels - oracle_levels(out)) / 255.0 / STD).astype(np.float32)
        assert np.all(np.abs(got - out.transpose(1, 2, 3, 0)) <= step + 2e-6)
    assert_within_bound(counts)
    assert_within_bound([differing(levels(f[None])[0], torchvision_levels(f)) for f in clips()])


def test_keras_transform_rounds_ties_half_to_even(keras):
    """An exact 2:1 downscale: every resized value is a mean of four pixels, ties (x.5) abound."""
    from vrconvert.models_tf.preprocessing import transform_model

    frames = np.random.default_rng(3).integers(0, 256, (2, 256, 342, 3), dtype=np.uint8)
    got = np.asarray(transform_model(normalized=False)(frames[None]))[0]
    expected = torchvision_levels(frames)
    exact = frames.reshape(2, 128, 2, 171, 2, 3).astype(np.float64).mean(axis=(2, 4))[:, 8:120, 30:142]
    assert (exact % 1 == 0.5).mean() > 0.2  # the case is really tie-heavy
    np.testing.assert_array_equal(expected, np.rint(exact))  # torchvision: half to even
    np.testing.assert_array_equal(got, expected)


def test_torch_twin_against_oracle_and_held_out_clips(torch):
    from vrconvert.models_torch.preprocessing import KineticsPreprocessing

    module = KineticsPreprocessing()
    with np.load(FIXTURES / "preprocess.oracle.npz") as z:
        frames, out = z["noise_frames_thwc"], z["noise_out_cthw"]
    with torch.no_grad():
        got = module(torch.from_numpy(frames[None])).numpy()[0]
        assert got.shape == (3, 4, 112, 112)
        counts = [differing(np.rint((got.transpose(1, 2, 3, 0) * STD + MEAN) * 255), oracle_levels(out))]
        for f in clips(seed=13):
            levels = module.levels(torch.from_numpy(f[None])).permute(0, 2, 3, 1).numpy()
            counts.append(differing(levels, torchvision_levels(f)))
    assert_within_bound(counts)
    with pytest.raises(ValueError, match="uint8 frames"):
        module(torch.zeros(1, 4, 8, 8, 3))


def test_torch_model_keeps_torchvisions_state_dict(torch):
    from vrconvert import models_torch

    for arch in ARCHS:
        model = models_torch.build(arch, include_preprocessing=True)
        assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [
            (e["key"], tuple(e["shape"])) for e in keys(arch)
        ]


# ---- end to end -----------------------------------------------------------------------------------


def _pair(arch: str, seed: int = 5, frames: int | None = None):
    """(torch model with random weights, fed normalised clips; the Keras preprocessing model with the same)."""
    import torch

    from vrconvert import models_tf, models_torch
    from vrconvert.converter.arch import mapping, spec
    from vrconvert.models_tf import weights as keras_weights

    model = models_torch.build(arch).eval()
    state = random_state_dict(model, seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    variant = spec.get(arch)
    keras_model = models_tf.build(variant, include_preprocessing=True, input_shape=(frames, None, None, 3))
    keras_weights.assign(
        keras_model, mapping.iter_keras(variant, state), {e.keras_path for e in mapping.entries(variant)}
    )
    return model, state, keras_model


def _packaged_frames(count: int) -> np.ndarray:
    import av

    from vrconvert.converter import video

    with av.open(str(video.SAMPLE_CLIP)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    start = (len(decoded) - count) // 2
    return decoded[start : start + count]


def _assert_same_labels(logits: np.ndarray, reference: np.ndarray) -> None:
    assert rel_err(logits, reference) <= 1e-4
    np.testing.assert_array_equal(np.argsort(-logits[0])[:5], np.argsort(-reference[0])[:5])


def _end_to_end(arch: str, frames: int, sizes) -> None:
    import torch

    from vrconvert import models_torch

    model, state, keras_model = _pair(arch)
    twin = models_torch.build(arch, include_preprocessing=True).eval()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    rng = np.random.default_rng(21)
    cases = [_packaged_frames(frames)] + [rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8) for h, w in sizes]
    for raw in cases:
        with torch.no_grad():
            reference = model(torch.from_numpy(torchvision_clip(raw))).numpy()
            twin_logits = twin(torch.from_numpy(raw[None])).numpy()
        _assert_same_labels(np.asarray(keras_model(raw[None])), reference)
        _assert_same_labels(twin_logits, reference)


@pytest.mark.parametrize(("arch", "size"), list(zip(ARCHS, HELD_OUT[:3], strict=True)))
def test_end_to_end_short_clips(arch, size, keras, torch):
    """Every variant on the packaged clip and on frames of another size, 2 frames a clip (the network
    takes any T; the transform acts frame by frame)."""
    _end_to_end(arch, 2, [size])


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), list(zip(ARCHS, HELD_OUT[1:3] + HELD_OUT[:1], strict=True)))
def test_end_to_end_full_clips(arch, size, keras, torch):
    """16-frame clips: the packaged video and one more frame size per variant (the sizes rotate)."""
    _end_to_end(arch, 16, [size])


# ---- saved files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_saved_keras_file_in_plain_keras(backend, saved_pair, keras, torch, tmp_path):
    """A `.keras` preprocessing model loads in a fresh process with plain Keras (safe mode, no vrconvert):
    its transform's uint8 levels (cut out of the loaded model with plain Keras) are torchvision's on every
    backend, and its logits those of torchvision's transform followed by the torch model (on TensorFlow
    and torch: JAX runs an uncompiled model op by op, slowly; the network on JAX is tested elsewhere)."""
    from vrconvert import models_torch
    from vrconvert.models_tf.preprocessing import PREFIX

    pth, frames_file = saved_pair
    raw = np.random.default_rng(4).integers(0, 256, (1, 4, 150, 200, 3), dtype=np.uint8)
    np.save(tmp_path / "raw.npy", raw)
    np.savez(tmp_path / "clips.npz", *clips(seed=12, frames=2))
    run_python(
        f"""
        import sys, numpy as np, keras
        model = keras.models.load_model({str(frames_file)!r}, safe_mode=True)
        assert model.inputs[0].dtype == "uint8", model.inputs[0].dtype
        if {backend != "jax"}:
            np.save({str(tmp_path / "out.npy")!r}, keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "raw.npy")!r}))))
        levels = keras.Model(model.inputs, model.get_layer({PREFIX + "round_floor"!r}).output)
        with np.load({str(tmp_path / "clips.npz")!r}) as z:
            out = [keras.ops.convert_to_numpy(levels(z[k][None]))[0] for k in z.files]
        np.savez({str(tmp_path / "levels.npz")!r}, *out)
        assert not [m for m in sys.modules if m.startswith("vrconvert")]
        """,
        backend=backend,
    )
    with np.load(tmp_path / "clips.npz") as z_in, np.load(tmp_path / "levels.npz") as z_out:
        assert_within_bound([differing(z_out[k], torchvision_levels(z_in[k])) for k in z_in.files])
    if backend == "jax":
        return
    model = models_torch.build("r3d_18").eval()
    model.load_state_dict(torch.load(pth, weights_only=True))
    with torch.no_grad():
        reference = model(torch.from_numpy(torchvision_clip(raw[0]))).numpy()
    _assert_same_labels(np.load(tmp_path / "out.npy"), reference)
    if backend == "tensorflow":  # the backend of this process: the very numbers of the model before saving
        from vrconvert.models_tf import weights as keras_weights

        _, in_memory = keras_weights.load_keras_model(frames_file)
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.asarray(in_memory(raw)), rtol=0, atol=1e-5)


# ---- around it: decoding, inspect, predict -------------------------------------------------------------


def test_raw_frames_from_a_video_are_the_decoded_frames():
    from vrconvert.converter import video

    raw = video.load_clips(video.SAMPLE_CLIP, frames=4, start_frame=7, raw=True)[0]
    assert raw.array.dtype == np.uint8 and raw.array.shape == (1, 4, 240, 320, 3)
    np.testing.assert_array_equal(raw.array[0], _packaged_frames(40)[7:11])
    cooked = video.load_clips(video.SAMPLE_CLIP, frames=4, start_frame=7)[0]  # the transformed path is unchanged
    assert cooked.array.dtype == np.float32 and cooked.array.shape == (1, 4, 112, 112, 3)


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    """(torch checkpoint, the same weights as a preprocessing .keras) on disk."""
    from helpers import save_state

    _, state, keras_model = _pair("r3d_18", seed=9)
    folder = tmp_path_factory.mktemp("preprocessing")
    save_state(state, folder / "r3d_18.pth")
    keras_model.save(folder / "r3d_18_frames.keras")
    return folder / "r3d_18.pth", folder / "r3d_18_frames.keras"


def test_input_contract_is_read_from_the_config_and_shown_by_inspect(saved_pair, keras, capsys, tmp_path):
    import json

    from helpers import invoke

    from vrconvert.converter.formats import keras_io

    pth, frames_file = saved_pair
    plain = keras.Sequential([keras.Input((None, None, None, 3)), keras.layers.Conv3D(1, 1, name="stem_0")])
    plain.save(tmp_path / "plain.keras")  # the config is all that is read
    assert keras_io.takes_frames(frames_file) and not keras_io.takes_frames(tmp_path / "plain.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    assert not keras_io.takes_frames(tmp_path / "junk.keras")  # loading it names the problem
    code, out, _ = invoke(["inspect", frames_file, "--json"], capsys)
    assert code == 0 and json.loads(out)["input"].startswith("uint8 frames (N, T, H, W, 3)")
    assert json.loads(out)["arch"] == "r3d_18"
    code, out, _ = invoke(["inspect", pth, "--json"], capsys)
    assert code == 0 and json.loads(out)["input"].startswith("normalised float32 clips")


def test_predict_feeds_raw_frames_to_a_preprocessing_model(saved_pair, capsys):
    """The same weights as a torch checkpoint (vrconvert's numpy transform) and as a preprocessing
    .keras (raw frames): the same labels, probabilities within float rounding."""
    import json

    from helpers import invoke

    from vrconvert.converter import video

    pth, frames_file = saved_pair
    results = []
    for model in (pth, frames_file):
        code, out, err = invoke(["predict", video.SAMPLE_CLIP, model, "--frames", "4", "--json"], capsys)
        assert code == 0, err
        results.append(json.loads(out))
    assert [t["index"] for t in results[0]["top"]] == [t["index"] for t in results[1]["top"]]
    np.testing.assert_allclose(
        [t["probability"] for t in results[1]["top"]], [t["probability"] for t in results[0]["top"]], atol=1e-5
    )


def test_a_wrapped_layer_other_than_the_resize_is_refused_before_loading(saved_pair, tmp_path):
    """TimeDistributed builds whatever it wraps: a file may wrap only the transform's Resizing."""
    import json
    import zipfile

    from vrconvert.converter.errors import InputError
    from vrconvert.models_tf import weights as keras_weights

    _, frames_file = saved_pair
    hostile = tmp_path / "wrapped.keras"
    with zipfile.ZipFile(frames_file) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "TimeDistributed":
                        layer["config"]["layer"] = {
                            "module": "keras.layers",
                            "class_name": "Dense",
                            "config": {"name": "huge", "units": 1 << 30},
                        }
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    with pytest.raises(InputError, match="wraps a layer"):
        keras_weights.load_keras_model(hostile)


# ---- conversion and validation ---------------------------------------------------------------------


def test_torch2keras_validate_keras2torch_with_preprocessing(saved_pair, tmp_path, capsys):
    import json

    import torch
    from helpers import invoke

    from vrconvert.converter.formats import keras_io

    pth = saved_pair[0]
    out = tmp_path / "frames.keras"
    code, stdout, err = invoke(
        ["torch2keras", pth, out, "--include-preprocessing", "--frames", "2", "--size", "240x320", "--json"], capsys
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["passed"] and result["cases"][0]["input"].startswith("random frames")
    assert keras_io.takes_frames(out)
    code, stdout, err = invoke(["validate", pth, out, "--frames", "2", "--size", "180x250", "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["passed"] and len(report["cases"]) == 2 and max(c["max_rel_diff"] for c in report["cases"]) <= 1e-4
    back = tmp_path / "back.pth"
    code, stdout, err = invoke(["keras2torch", out, back], capsys)
    assert code == 0 and "include_preprocessing=True" in err + stdout
    original, round_trip = torch.load(pth, weights_only=True), torch.load(back, weights_only=True)
    assert list(round_trip) == list(original)
    assert all(torch.equal(original[k], round_trip[k]) for k in original if not k.endswith("num_batches_tracked"))
    code, _, err = invoke(["torch2keras", pth, tmp_path / "w.weights.h5", "--include-preprocessing"], capsys)
    assert code == 2 and "--include-preprocessing" in err


def test_validation_fails_a_model_cropped_the_keras_way(keras, torch, monkeypatch):
    """Keras' CenterCrop offset (floor) instead of torchvision's (round): one column off, caught end to end
    by the validator's comparison on raw frames (the same one `validate` and `torch2keras` run)."""
    from vrconvert.converter.parity import runtime
    from vrconvert.converter.parity import validate as validator
    from vrconvert.models_tf import preprocessing

    monkeypatch.setattr(preprocessing, "crop_offsets", lambda n, c: ((n - c) // 2, n - c - (n - c) // 2))
    torch_model, _, wrong = _pair("mc3_18", seed=9)
    clips = validator.clips_for(frames=2, size=(120, 160), random=1, sample=False, raw=True)
    report = validator.check_models(torch_model.arch, torch_model, wrong, clips, runtime.prepare("cpu"))
    assert not report.passed and report.worst.max_rel_diff > 1e-3


# ---- export ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".tflite", ".onnx", ".xml"])
def test_exported_transform_against_oracle_and_held_out_clips(suffix, keras, tmp_path):
    """The transform as exported (explicit taps, not the runtime's RESIZE op), run by TensorFlow (the
    SavedModel), LiteRT, ONNX Runtime and OpenVINO (f32): the bound holds on the oracle's clips and the
    held-out ones, at free H x W."""
    from vrconvert.converter.deploy.formats import format_for
    from vrconvert.models_tf.preprocessing import FRAMES, transform_model

    path = tmp_path / f"levels{suffix}"
    fmt = format_for(path)
    signature = [keras.InputSpec(shape=(None, 4, None, None, 3), dtype="uint8", name=FRAMES)]
    fmt.export(transform_model(frames=4, normalized=False, resize="taps"), path, signature)
    run = fmt.runner(path)
    assert_within_bound([differing(run(f[None])[0], oracle_levels(out)) for f, out in oracle_cases()])
    assert_within_bound([differing(run(f[None])[0], torchvision_levels(f)) for f in clips()])


@pytest.fixture(scope="module")
def exported_frames(tmp_path_factory):
    """mc3_18 (the export tests' smallest variant, 7 classes) as .tflite and .onnx preprocessing artifacts:
    T fixed at 2, any frame size, checked by `export` itself on decoded frames before it writes."""
    from helpers import make_checkpoint, save_state

    from vrconvert.converter.deploy.export import export

    folder = tmp_path_factory.mktemp("export_frames")
    model, state = make_checkpoint("mc3_18", num_classes=7, seed=3)
    save_state(state, folder / "mc3_18.pth")
    results = {
        dst: export(folder / "mc3_18.pth", folder / dst, frames=2, include_preprocessing=True)
        for dst in ("frames.tflite", "frames.onnx")
    }
    return model, folder, results


@pytest.mark.parametrize("dst", ["frames.tflite", "frames.onnx"])
def test_exported_preprocessing_model_matches_torchvision_and_torch(exported_frames, dst, torch):
    """The artifact in its own runtime, on frames of a size it was not checked on: the logits of
    torchvision's transform followed by the torch model (LiteRT: builtin ops only, by the exporter)."""
    from vrconvert.converter.deploy.formats import format_for

    model, folder, results = exported_frames
    result = results[dst]
    assert result.passed and result.signature["dtype"] == "uint8" and result.input_shape == [None, 2, None, None, 3]
    assert any(c["input"].startswith("vtest_clip.mp4") for c in result.as_dict()["parity"]["cases"])
    run = format_for(folder / dst).runner(folder / dst)
    raw = np.random.default_rng(30).integers(0, 256, (2, 270, 480, 3), dtype=np.uint8)
    with torch.no_grad():
        reference = model(torch.from_numpy(torchvision_clip(raw))).numpy()
    _assert_same_labels(run(raw[None]), reference)


def test_evaluate_refuses_a_frames_model_in_one_line(saved_pair, tmp_path, capsys):
    """evaluate feeds normalised clips: a model that takes uint8 frames is refused before any work."""
    from helpers import invoke

    from vrconvert.converter import video

    pth, frames_file = saved_pair
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(video.SAMPLE_CLIP.read_bytes())
    args = ["evaluate", pth, frames_file, "--videos", tmp_path / "videos", "--out", tmp_path / "out", "--frames", "4"]
    code, _, err = invoke(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "takes uint8 frames" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--video", FIXTURES / "clips" / "tree_15fps.mp4"],
        ["--int8", "--calibration", FIXTURES / "clips" / "tree_15fps.mp4"],
    ],
)
def test_fixed_size_frames_export_refuses_videos_of_their_own_size(extra, tmp_path, capsys):
    """`--include-preprocessing --size HxW` fixes the frames' size; a check or calibration video comes at its
    own, which ONNX Runtime and OpenVINO only refused with an internal error after the export."""
    from helpers import invoke

    args = ["export", tmp_path / "m.pth", tmp_path / "a.onnx", "--include-preprocessing", "--frames", "8"]
    code, out, err = invoke([*args, "--size", "112x112", *extra], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "leave --size out" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # about 1 min: one export and its check
def test_fixed_size_frames_export_is_checked_on_frames_of_its_size(tmp_path, capsys):
    from helpers import invoke, make_checkpoint, save_state

    _, state = make_checkpoint("r2plus1d_18", 3, seed=0)
    save_state(state, tmp_path / "m.pth")
    args = ["export", tmp_path / "m.pth", tmp_path / "a.onnx", "--include-preprocessing", "--frames", "8"]
    code, out, err = invoke([*args, "--size", "112x112", "--json"], capsys)
    assert code == 0, err
    import json

    doc = json.loads(out)
    assert any("checked on the random clip only" in note for note in doc["notes"]), doc["notes"]
    assert (tmp_path / "a.onnx").is_file()
