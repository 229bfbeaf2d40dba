"""Every vrconvert command on S3D: list, torch2keras (detected from keys and shapes), keras2torch and both
round trips bit-exact, inspect, --pretrained against a local server, validate naming the first diverging
block, its own eval transform against torchvision's, and (slow) the plain-Keras reload and the CLI's
validate and predict at the native size."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, run_python, save_state
from test_s3d import ARCH, keras_model, small_variant, torch_model
from zoo_oracle import ZOO, keys, recipe_state_dict, rel_err

from vrconvert.converter.arch import families

# ---- its own eval transform: resize to 256x256, centre crop 224 (first: the commands below may switch the
# in-process Keras backend to the lightest one installed) ---------------------------------------------------


def _oracle_cases():
    with np.load(ZOO / "preprocess.oracle.npz") as z:
        ramp = np.linspace(0, 255, 4 * 240 * 320 * 3).reshape(4, 240, 320, 3).astype(np.uint8)[:2]
        return [(z["noise_frames_thwc"], z["s3d.noise_out_cthw"]), (ramp, z["s3d.ramp_out_cthw"])]


def test_numpy_and_torch_transforms_are_torchvisions(torch):
    from vrconvert.converter.video.preprocess import kinetics_eval
    from vrconvert.models_torch.preprocessing import KineticsPreprocessing

    transform = families.get(ARCH).preprocessing
    module = KineticsPreprocessing(transform)
    for frames, expected in _oracle_cases():
        with torch.no_grad():
            np.testing.assert_array_equal(module(torch.from_numpy(frames[None])).numpy()[0], expected)
        got = kinetics_eval(frames, transform, "NCTHW")[0]
        assert np.abs(got - expected).max() <= 1e-6


def test_keras_transform_is_torchvisions(keras):
    from vrconvert.models_tf.preprocessing import transform_model

    model = transform_model(families.get(ARCH).preprocessing)
    for frames, expected in _oracle_cases():
        got = np.asarray(model(frames[None]))[0].transpose(3, 0, 1, 2)
        differing = np.abs(got - expected) > 1e-5
        assert differing.mean() <= 1e-4 and np.abs(got - expected).max() <= 1 / 255 / 0.216989 + 1e-5


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s3d") / "s3d.pth"
    save_state(recipe_state_dict(ARCH), path)
    return path


def test_list_shows_s3d(capsys):
    code, out, _ = invoke(["list", "--json"], capsys)
    row = next(r for r in json.loads(out)["variants"] if r["arch"] == ARCH)
    assert code == 0 and row["num_params"] == 8_320_048 and row["acc1"] == 68.368


def test_round_trips_are_bit_exact_and_keys_torchvisions(recipe_file, tmp_path, capsys, torch):
    state = recipe_state_dict(ARCH)
    code, out, err = invoke(["torch2keras", recipe_file, tmp_path / "a.keras", "--no-validate"], capsys)
    assert code == 0 and "s3d" in out, err
    code, _, err = invoke(["keras2torch", tmp_path / "a.keras", tmp_path / "b.pth"], capsys)
    assert code == 0, err
    back = torch.load(tmp_path / "b.pth", weights_only=True)
    assert list(back) == [e["key"] for e in keys(ARCH)]
    for key, value in state.items():
        np.testing.assert_array_equal(back[key].numpy(), value)
    # keras -> torch -> keras: the Keras variables come back bit for bit
    code, _, err = invoke(["torch2keras", tmp_path / "b.pth", tmp_path / "c.weights.h5", "--no-validate"], capsys)
    assert code == 0, err
    from vrconvert.models_tf import weights as keras_weights

    variant_a, a = keras_weights.load_keras_model(tmp_path / "a.keras")
    variant_c, c = keras_weights.load_keras_model(tmp_path / "c.weights.h5")
    assert variant_a.name == variant_c.name == ARCH
    va, vc = keras_weights.variables_of(a), keras_weights.variables_of(c)
    assert va.keys() == vc.keys()
    for path, value in va.items():
        np.testing.assert_array_equal(vc[path], value)


def test_validate_train_refuses_the_zoo_in_one_line(recipe_file, tmp_path, capsys):
    """Training-step parity walks the ResNets' records; for S3D it said "no classifier head" before."""
    code, out, err = invoke(["validate", recipe_file, tmp_path / "never_read.keras", "--train"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "not supported yet" in err and "s3d" in err


def test_fine_tuned_head_is_detected(tmp_path, capsys):
    state = recipe_state_dict(ARCH)
    state["classifier.1.weight"], state["classifier.1.bias"] = (
        state["classifier.1.weight"][:7],
        state["classifier.1.bias"][:7],
    )
    save_state(state, tmp_path / "ft.pth")
    code, out, err = invoke(["inspect", tmp_path / "ft.pth", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["arch"] == ARCH and info["num_classes"] == 7, err


def test_validate_names_the_first_diverging_block(torch, keras):
    """A sabotaged BatchNorm in features.9 (a running variance off by half): the first record named is there."""
    from vrconvert.converter.parity import runtime
    from vrconvert.converter.parity import validate as validator

    variant, state = small_variant(), recipe_state_dict(ARCH)
    bad = dict(state)
    bad["features.9.branch2.1.0.1.running_var"] = state["features.9.branch2.1.0.1.running_var"] * np.float32(1.5)
    x = np.random.default_rng(2).standard_normal((1, 3, 5, 65, 63)).astype(np.float32)
    report = validator.check_models(
        variant, torch_model(variant, state), keras_model(variant, bad), {"small": x}, runtime.prepare("cpu")
    )
    assert not report.passed
    assert report.first_divergence.torch_module == "features.9.branch2.1.0.1"
    good = validator.check_models(
        variant, torch_model(variant, state), keras_model(variant, state), {"small": x}, runtime.prepare("cpu")
    )
    assert good.passed


def test_pretrained_from_a_local_server(tmp_path, capsys, monkeypatch):
    """torchvision's file name and hash prefix; served from 127.0.0.1, hash checked, cached."""
    import http.server
    import threading

    from vrconvert.converter.arch import s3d

    root = tmp_path / "www"
    root.mkdir()
    save_state(recipe_state_dict(ARCH), root / "tmp.pth")
    digest = hashlib.sha256((root / "tmp.pth").read_bytes()).hexdigest()
    filename = f"s3d-{digest[:8]}.pth"
    (root / "tmp.pth").rename(root / filename)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        arch = families.get(ARCH)
        assert arch.pretrained.sha256_prefix == "d76dad2f"  # torchvision's published file
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{filename}"
        moved = replace(arch, pretrained=replace(arch.pretrained, url=url))
        monkeypatch.setitem(families.VARIANTS, ARCH, moved)
        monkeypatch.setitem(s3d.VARIANTS, ARCH, moved)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
        code, _, err = invoke(["torch2keras", "--pretrained", ARCH, tmp_path / "p.weights.h5", "--no-validate"], capsys)
        assert code == 0, err
        assert (tmp_path / "torch_home" / "hub" / "checkpoints" / filename).is_file()
    finally:
        httpd.shutdown()


# ---- native size (slow) -------------------------------------------------------------------------------

RELOAD = """
    import sys, numpy as np, keras
    model = keras.models.load_model({keras_file!r}, compile=False, safe_mode=True)
    np.save({out!r}, keras.ops.convert_to_numpy(model(np.load({x!r}), training=False)))
    assert not any(m.split(".")[0] == "vrconvert" for m in sys.modules)
"""


@pytest.mark.slow
def test_keras_file_loads_in_plain_keras_on_tensorflow_and_torch(recipe_file, tmp_path, capsys, torch):
    code, _, err = invoke(["torch2keras", recipe_file, tmp_path / "s3d.keras", "--no-validate"], capsys)
    assert code == 0, err
    x = np.random.default_rng(3).standard_normal((1, 3, 14, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x.transpose(0, 2, 3, 4, 1))
    with torch.no_grad():
        expected = torch_model(families.get(ARCH), recipe_state_dict(ARCH))(torch.from_numpy(x)).numpy()
    for backend in ("tensorflow", "torch"):
        out = tmp_path / f"{backend}.npy"
        code = RELOAD.format(keras_file=str(tmp_path / "s3d.keras"), out=str(out), x=str(tmp_path / "x.npy"))
        run_python(code, backend=backend, timeout=600)
        assert rel_err(np.load(out), expected) <= 1e-5, backend


@pytest.mark.slow
def test_validate_and_predict_cli_at_native_size(recipe_file, tmp_path, capsys):
    from vrconvert.converter.conversion import convert

    # the library, not the CLI: the CLI may switch this process's Keras backend, and validate would re-run
    result = convert.torch_to_keras(recipe_file, tmp_path / "s3d.keras")  # checked at its own 224x224 crop
    assert result.parity.passed and "16x224x224" in result.parity.cases[0].input
    code, out, err = invoke(["validate", recipe_file, tmp_path / "s3d.keras", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["passed"] and len(report["cases"]) == 2, err
    assert "16x224x224" in report["cases"][0]["input"]
    from vrconvert.converter.video import SAMPLE_CLIP

    for model in (recipe_file, tmp_path / "s3d.keras"):
        code, out, err = invoke(["predict", SAMPLE_CLIP, model, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["arch"] == ARCH


def test_fixtures_are_where_the_readme_says():
    assert (Path(__file__).parent / "fixtures" / "zoo" / "s3d.oracle.npz").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".onnx", ".xml", ""])  # LiteRT refuses (test_s3d)
def test_export_keeps_the_bound_in_each_runtime(suffix, recipe_file, tmp_path):
    """Each format's own runtime on the oracle's 16x224x224 clip, against torch (float32)."""
    from zoo_oracle import oracle_input

    from vrconvert.converter.deploy.export import export

    clip = {"clip16": oracle_input(ARCH, "clip16")}
    result = export(recipe_file, tmp_path / f"s3d{suffix or '_savedmodel'}", frames=16, size=(224, 224), clips=clip)
    assert result.parity.passed and result.parity.worst.max_rel_diff <= 1e-5


@pytest.mark.slow
def test_export_with_its_own_transform_inside(recipe_file, tmp_path):
    """uint8 frames of any size in: the artifact resizes to 256x256 and crops 224 as S3D's transform does,
    checked against torch with that transform in front (random frames and the packaged real clip)."""
    from vrconvert.converter.deploy.export import export

    result = export(recipe_file, tmp_path / "s3d.onnx", include_preprocessing=True, frames=16)
    assert result.signature["dtype"] == "uint8" and result.signature["shape"][1] == 16
    assert result.parity.passed and result.parity.worst.max_rel_diff <= 1e-5
    assert any("vtest_clip" in case.input for case in result.parity.cases)
