"""`vrconvert validate` and `vrconvert predict`: verdicts, localisation, bad input, backends, devices."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from helpers import NO_TORCH, invoke, make_checkpoint, run_python, save_state

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.arch.layers import keras_name
from vrconvert.converter.video.decode import SAMPLE_CLIP

pytestmark = pytest.mark.xdist_group("validate")
ARCHS = ["r3d_18", "mc3_18", "r2plus1d_18"]  # torchvision's three (the family: test_family.py)
SMALL = ["--frames", "4", "--size", "64x64"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, torch):
    """For each variant: a random torch checkpoint and its Keras conversion."""
    from vrconvert.converter.conversion import convert

    root = tmp_path_factory.mktemp("pairs")
    out = {}
    for i, arch in enumerate(ARCHS):
        _, state = make_checkpoint(arch, seed=10 + i)
        save_state(state, root / f"{arch}.pth")
        convert.torch_to_keras(root / f"{arch}.pth", root / f"{arch}.keras", validate=False)
        out[arch] = (root / f"{arch}.pth", root / f"{arch}.keras", state)
    return out


def _json(out: str) -> dict:
    return json.loads(out)


@pytest.mark.parametrize("arch", ARCHS)
def test_faithful_pair_passes_on_real_and_random_clips(pairs, arch, capsys):
    torch_file, keras_file, _ = pairs[arch]
    code, out, err = invoke(["validate", torch_file, keras_file, "--random", "2", *SMALL, "--json"], capsys)
    assert code == 0, err
    doc = _json(out)
    assert doc["passed"] is True and doc["first_divergence"] is None and doc["tolerance"] == 1e-5
    assert (doc["device"], doc["keras_backend"], doc["dtype"], doc["tf32"]) == ("cpu", "tensorflow", "float32", False)
    inputs = [c["input"] for c in doc["cases"]]
    assert inputs == ["random(seed=0, 4x64x64)", "random(seed=1, 4x64x64)", "vtest_clip.mp4[18:22]"]
    for case in doc["cases"]:
        assert set(case) >= {"input", "max_abs_diff", "max_rel_diff", "cosine", "top1_agree", "top5_agree"}
        assert case["max_rel_diff"] <= 1e-5 and case["cosine"] > 0.999999 and case["top5_agree"] is True


def test_full_size_human_report(pairs, capsys):
    torch_file, keras_file, _ = pairs["r2plus1d_18"]
    code, out, err = invoke(["validate", torch_file, keras_file], capsys)
    assert code == 0, err
    assert "device cpu, Keras backend tensorflow, float32, TF32 off" in out
    assert "random(seed=0, 16x112x112)" in out and "vtest_clip.mp4[12:28]" in out
    assert "parity PASS: max relative difference" in out


def _first_bn_in_layer3(arch: str) -> str:
    """The module of layer3's first BatchNorm, read from the mapping (not typed in)."""
    variant = spec.get(arch)
    return next(
        e.torch_key
        for e in mapping.entries(variant)
        if e.torch_key.startswith("layer3.") and e.torch_key.endswith(".running_var")
    ).rsplit(".", 1)[0]


@pytest.mark.parametrize("arch", [a if a == "r2plus1d_18" else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS])
def test_scaled_batchnorm_variance_is_located(pairs, arch, tmp_path, capsys):
    _torch_file, keras_file, state = pairs[arch]
    module = _first_bn_in_layer3(arch)
    assert module.startswith("layer3.0.")
    bad = dict(state)
    bad[f"{module}.running_var"] = state[f"{module}.running_var"] * np.float32(1.5)
    save_state(bad, tmp_path / "bad.pth")

    code, out, err = invoke(["validate", tmp_path / "bad.pth", keras_file, *SMALL, "--json"], capsys)
    assert code == 1, err
    doc = _json(out)
    assert doc["passed"] is False
    first = doc["first_divergence"]
    assert first["torch_module"] == module and first["keras_layer"] == keras_name(module) and first["op"] == "bn"
    assert first["max_rel_diff"] > 1e-2
    assert all(layer["max_rel_diff"] <= 1e-5 for layer in first["before"]) and len(first["before"]) == 2
    assert first["after"] and first["after"][0]["max_rel_diff"] > 1e-5

    code, out, _ = invoke(["validate", tmp_path / "bad.pth", keras_file, *SMALL], capsys)
    assert code == 1 and "parity FAIL" in out
    assert f"torch module {module} <-> Keras layer {keras_name(module)}" in out


def test_bad_inputs_exit_2_with_one_line(pairs, tmp_path, capsys):
    torch_file, keras_file, _ = pairs["r3d_18"]
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    cases = [
        (["--video", tmp_path / "missing.mp4"], "no such file"),
        (["--video", text], "not a video file"),
        (["--video", SAMPLE_CLIP, "--frames", "41"], "too short for a 41-frame clip"),
        (["--device", "tpu"], "Invalid value for '--device'"),
        (["--size", "12y"], "expected HxW"),
    ]
    for extra, message in cases:
        code, out, err = invoke(["validate", torch_file, keras_file, *extra], capsys)
        assert code == 2 and message in err and out == "" and len(err.strip().splitlines()) == 1, (extra, err)
    code, out, err = invoke(["validate", torch_file, pairs["mc3_18"][1], *SMALL], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "different networks" in err and "r3d_18" in err and "mc3_18" in err
    code, _, err = invoke(["validate", tmp_path / "missing.pth", keras_file], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_cuda_without_gpu_is_a_clear_error(pairs, torch, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the GPU figures come from the device runs (README)")
    torch_file, keras_file, _ = pairs["r3d_18"]
    code, out, err = invoke(["validate", torch_file, keras_file, "--device", "cuda"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--device cuda" in err and "no CUDA GPU" in err


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_other_keras_backends_hold_parity(pairs, backend, capsys):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    torch_file, keras_file, _ = pairs["r2plus1d_18"]
    # this process runs Keras on TensorFlow already, so the command re-runs itself in a child
    code, out, err = invoke(["validate", torch_file, keras_file, *SMALL, "--keras-backend", backend, "--json"], capsys)
    assert code == 0, err
    doc = _json(out)
    assert doc["passed"] is True and doc["keras_backend"] == backend
    assert all(c["max_rel_diff"] <= 1e-5 for c in doc["cases"]) and len(doc["cases"]) == 2


def test_torch2keras_checks_the_real_clip(pairs, tmp_path, capsys):
    torch_file, _, _ = pairs["mc3_18"]
    code, out, err = invoke(["torch2keras", torch_file, tmp_path / "m.keras", *SMALL, "--json"], capsys)
    assert code == 0, err
    doc = _json(out)
    assert doc["passed"] is True and [c["input"] for c in doc["cases"]][-1] == "vtest_clip.mp4[18:22]"


def test_predict_agrees_across_frameworks(pairs, capsys):
    torch_file, keras_file, _ = pairs["r3d_18"]
    results = {}
    for model in (torch_file, keras_file):
        code, out, err = invoke(
            ["predict", SAMPLE_CLIP, model, "--clips", "2", "--frames", "8", "--top", "5", "--json"], capsys
        )
        assert code == 0, err
        results[model.suffix] = _json(out)
    torch_doc, keras_doc = results[".pth"], results[".keras"]
    assert torch_doc["framework"] == "torch" and keras_doc["framework"] == "keras (tensorflow)"
    assert torch_doc["clips"] == keras_doc["clips"] == ["vtest_clip.mp4[0:8]", "vtest_clip.mp4[32:40]"]
    names = spec.category_names("r3d_18")
    for t, k in zip(torch_doc["top"], keras_doc["top"], strict=True):
        assert t["index"] == k["index"] and t["label"] == names[t["index"]]
        assert abs(t["probability"] - k["probability"]) < 1e-5
    assert sum(p["probability"] for p in torch_doc["top"]) <= 1 + 1e-9

    code, out, _ = invoke(["predict", SAMPLE_CLIP, keras_file, "--frames", "4", "--top", "3"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 4 and " 1. " in out


def test_predict_other_head_prints_class_indices(tmp_path, torch, capsys):
    _, state = make_checkpoint("mc3_18", num_classes=7)
    save_state(state, tmp_path / "seven.pth")
    code, out, err = invoke(["predict", SAMPLE_CLIP, tmp_path / "seven.pth", "--frames", "4", "--json"], capsys)
    assert code == 0, err
    doc = _json(out)
    assert doc["num_classes"] == 7 and all(p["label"] == f"class {p['index']}" for p in doc["top"])


def test_predict_bad_inputs(pairs, tmp_path, capsys):
    _torch_file, keras_file, _ = pairs["r3d_18"]
    (tmp_path / "model.onnx").write_text("x")
    for args, message in [
        ([tmp_path / "missing.mp4", keras_file], "no such file"),
        ([SAMPLE_CLIP, tmp_path / "model.onnx"], "expected a Keras file"),
        ([SAMPLE_CLIP, tmp_path / "none.keras"], "no such file"),
    ]:
        code, out, err = invoke(["predict", *args], capsys)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err


def test_predict_keras_path_imports_no_torch(pairs):
    _, keras_file, _ = pairs["r3d_18"]
    result = run_python(f"""
        import sys
        exec({NO_TORCH!r})  # any import of torch now fails
        from vrconvert.converter.video.classify import classify
        p = classify({str(SAMPLE_CLIP)!r}, {str(keras_file)!r}, frames=4, top=2)
        print(p.framework, len(p.top))
    """)
    assert result.stdout.strip() == "keras (tensorflow) 2"


def test_validate_report_draws_the_layer_profile(pairs, tmp_path, capsys):
    """`validate --report` writes one offline page: the cases and the per-layer profile of the worst
    input, with the first diverging layer named when a BatchNorm is sabotaged."""
    pytest.importorskip("matplotlib")
    _torch_file, keras_file, state = pairs["r3d_18"]
    module = _first_bn_in_layer3("r3d_18")
    bad = dict(state)
    bad[f"{module}.running_var"] = state[f"{module}.running_var"] * np.float32(1.5)
    save_state(bad, tmp_path / "bad.pth")

    code, _, err = invoke(
        ["validate", tmp_path / "bad.pth", keras_file, *SMALL, "--no-sample", "--report", tmp_path / "bad.html"], capsys
    )
    assert code == 1, err
    page = (tmp_path / "bad.html").read_text()
    assert f"First diverging layer: <b>{module}</b>" in page
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page

    good_torch, _, _ = pairs["r3d_18"]
    code, _, err = invoke(
        ["validate", good_torch, keras_file, *SMALL, "--no-sample", "--report", tmp_path / "good.html"], capsys
    )
    assert code == 0, err
    page = (tmp_path / "good.html").read_text()
    assert "No layer exceeds the tolerance" in page and "parity PASS" in page

    code, _, err = invoke(["validate", good_torch, keras_file, *SMALL, "--report", tmp_path / "no" / "x.html"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_predict_takes_a_softmax_head_as_probabilities():
    """The builder's nets end in softmax: predict and evaluate average those outputs as they are, where
    torchvision's logits get a softmax (a second softmax would flatten the builder's probabilities)."""
    from vrconvert.converter.video.classify import probabilities

    builder = spec.get("builder_r18_3d")
    assert builder.head_activation == "softmax"
    outputs = np.array([[0.7, 0.2, 0.1]], dtype=np.float32)
    assert np.allclose(probabilities(outputs, builder), outputs)
    logits = np.array([[2.0, 0.0, -1.0]])
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(probabilities(logits, spec.get("r3d_18")), expected)
