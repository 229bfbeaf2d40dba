"""Every checkpoint form users have converts; every hostile input gives exit 2, one line, no output
file, and no code from the checkpoint runs."""

import pickle
import subprocess
import sys

import pytest
from helpers import invoke, make_checkpoint, save_state

SMALL = ["--frames", "4", "--size", "64"]


@pytest.fixture(scope="module")
def mc3(torch):
    return make_checkpoint("mc3_18", seed=21)


def _save_forms(state, tmp_path, torch):
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    forms = {}
    forms["zip.pth"] = tensors
    forms["legacy.pth"] = tensors
    forms["wrapped_model.pt"] = {"model": tensors, "optimizer": {"state": {}, "param_groups": []}, "epoch": 7}
    forms["wrapped_state_dict.pth"] = {"state_dict": tensors, "epoch": 3, "args": {"lr": 0.1, "arch": "mc3_18"}}
    forms["prefixed.pth"] = {f"module.{k}": v for k, v in tensors.items()}
    forms["fp16.pth"] = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    forms["bf16.pth"] = {k: v.bfloat16() if v.is_floating_point() else v for k, v in tensors.items()}
    forms["no_num_batches_tracked.pth"] = {k: v for k, v in tensors.items() if "num_batches" not in k}
    paths = {}
    for name, obj in forms.items():
        paths[name] = tmp_path / name
        torch.save(obj, paths[name], _use_new_zipfile_serialization=name != "legacy.pth")
    from safetensors.torch import save_file

    paths["st.safetensors"] = tmp_path / "st.safetensors"
    save_file(tensors, str(paths["st.safetensors"]))
    return paths


@pytest.mark.slow
def test_every_input_form_converts(mc3, tmp_path, torch, capsys):
    _, state = mc3
    for name, path in _save_forms(state, tmp_path, torch).items():
        dst = tmp_path / f"{name}.keras"
        code, out, err = invoke(["torch2keras", path, dst, *SMALL], capsys)
        assert code == 0, (name, err)
        assert "mc3_18, 400 classes" in out and "parity PASS" in out, name
        if name.startswith(("fp16", "bf16")):
            assert f"converted 102 {name[:4].replace('bf16', 'bfloat16').replace('fp16', 'float16')} tensors" in err
        if name == "prefixed.pth":
            assert "'module.'" in err
        if name.startswith("wrapped"):
            assert "took the state dict" in err


def test_fine_tuned_head_is_detected(tmp_path, torch, capsys):
    _, state = make_checkpoint("r2plus1d_18", num_classes=101, seed=2)
    save_state(state, tmp_path / "ucf.pth")
    code, out, _ = invoke(["torch2keras", tmp_path / "ucf.pth", tmp_path / "ucf.h5", *SMALL], capsys)
    assert code == 0 and "r2plus1d_18, 101 classes" in out
    code, out, _ = invoke(["inspect", tmp_path / "ucf.h5", "--json"], capsys)
    assert code == 0 and '"num_classes": 101' in out


def test_r3d_and_mc3_told_apart_by_shapes(tmp_path, torch, capsys):
    for arch in ("r3d_18", "mc3_18"):
        _, state = make_checkpoint(arch, seed=1)
        save_state(state, tmp_path / "x.pth")
        code, out, _ = invoke(["inspect", tmp_path / "x.pth"], capsys)
        assert code == 0 and f"arch         {arch}" in out


class RunsCode:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


MARKER = None


def _hostile_files(tmp_path, torch, mc3_state):
    global MARKER
    MARKER = tmp_path / "pwned"
    files = {}
    files["evil.pth"] = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": torch.zeros(1), "payload": RunsCode()}, files["evil.pth"])
    files["evil_legacy.pth"] = tmp_path / "evil_legacy.pth"
    torch.save({"payload": RunsCode()}, files["evil_legacy.pth"], _use_new_zipfile_serialization=False)
    files["raw_pickle.pt"] = tmp_path / "raw_pickle.pt"
    files["raw_pickle.pt"].write_bytes(pickle.dumps(RunsCode()))
    good = tmp_path / "good.pth"
    save_state(mc3_state, good)
    data = good.read_bytes()
    files["truncated.pth"] = tmp_path / "truncated.pth"
    files["truncated.pth"].write_bytes(data[: len(data) // 2])
    files["empty.pth"] = tmp_path / "empty.pth"
    files["empty.pth"].write_bytes(b"")
    files["text.pth"] = tmp_path / "text.pth"
    files["text.pth"].write_text("this is not a checkpoint\n")
    files["image_model.pth"] = tmp_path / "image_model.pth"  # another model: a 2D image ResNet stem
    torch.save(
        {
            "conv1.weight": torch.zeros(64, 3, 7, 7),
            "bn1.weight": torch.ones(64),
            "fc.weight": torch.zeros(1000, 2048),
            "fc.bias": torch.zeros(1000),
        },
        files["image_model.pth"],
    )
    files["whole_module.pth"] = tmp_path / "whole_module.pth"
    torch.save(torch.nn.Linear(2, 2), files["whole_module.pth"])
    return files, good


def test_hostile_inputs_fail_cleanly(mc3, tmp_path, torch, capsys):
    files, good = _hostile_files(tmp_path, torch, mc3[1])
    for name, path in files.items():
        dst = tmp_path / f"out_{name}.keras"
        code, _out, err = invoke(["torch2keras", path, dst, *SMALL], capsys)
        assert code == 2, (name, code, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert "Traceback" not in err
        assert not dst.exists(), name
        assert not MARKER.exists(), f"{name} ran code"
    # a forced wrong --arch
    code, _, err = invoke(["torch2keras", good, tmp_path / "wrong.keras", "--arch", "r3d_18", *SMALL], capsys)
    assert code == 2 and "does not match r3d_18" in err and "mismatched" in err
    assert not (tmp_path / "wrong.keras").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_existing_output_is_left_alone_without_force(mc3, tmp_path, torch, capsys):
    src = tmp_path / "m.pth"
    save_state(mc3[1], src)
    dst = tmp_path / "exists.keras"
    dst.write_bytes(b"precious")
    code, _, err = invoke(["torch2keras", src, dst, *SMALL], capsys)
    assert code == 2 and "already exists" in err and dst.read_bytes() == b"precious"
    code, _, _ = invoke(["torch2keras", src, dst, "--force", "--no-validate"], capsys)
    assert code == 0 and dst.read_bytes() != b"precious"
    code, _, err = invoke(["keras2torch", dst, src], capsys)
    assert code == 2 and "already exists" in err
    code, _, err = invoke(["torch2keras", src, tmp_path / "out.onnx"], capsys)
    assert code == 2 and ".keras" in err


def test_bad_keras_inputs(tmp_path, capsys):
    (tmp_path / "junk.keras").write_text("junk")
    code, _, err = invoke(["keras2torch", tmp_path / "junk.keras", tmp_path / "o.pth"], capsys)
    assert code == 2 and err.startswith("error: ") and not (tmp_path / "o.pth").exists()
    code, _, err = invoke(["keras2torch", tmp_path / "missing.keras", tmp_path / "o.pth"], capsys)
    assert code == 2 and "no such file" in err


def test_parity_failure_exits_1_and_writes_nothing(mc3, tmp_path, torch, capsys, monkeypatch):
    from vrconvert.models_tf import weights as keras_weights

    src = tmp_path / "m.pth"
    save_state(mc3[1], src)
    build = keras_weights.build_model

    def sabotaged(arch, state, **options):
        model = build(arch, state, **options)
        var = model.get_layer("layer3_0_conv1_1").moving_variance
        var.assign(var.numpy() * 4)
        return model

    monkeypatch.setattr(keras_weights, "build_model", sabotaged)
    code, _, err = invoke(["torch2keras", src, tmp_path / "bad.keras", *SMALL], capsys)
    assert code == 1 and "parity failed" in err and not (tmp_path / "bad.keras").exists()


def test_real_subprocess_exit_codes_and_debug(tmp_path, torch):
    (tmp_path / "t.pth").write_text("text")
    exe = [sys.executable, "-m", "vrconvert"]
    run = subprocess.run(
        [*exe, "torch2keras", "t.pth", "o.keras"], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in run.stderr
    run = subprocess.run(
        [*exe, "torch2keras", "t.pth", "o.keras"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "VRCONVERT_DEBUG": "1"},
    )
    assert run.returncode != 0 and "Traceback" in run.stderr
    run = subprocess.run([*exe, "torch2keras", "--bogus"], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2


def test_mapping_command(capsys):
    code, out, _ = invoke(["mapping", "mc3_18"], capsys)
    assert code == 0 and "layer2.0.conv1.0.weight" in out and "layer2_0_conv1_0/kernel" in out
    code, out, _ = invoke(["mapping", "r2plus1d_18", "--json"], capsys)
    import json

    doc = json.loads(out)
    assert len(doc["entries"]) == 226 - 2  # every state_dict key of torchvision's r2plus1d_18
    code, _, err = invoke(["mapping", "resnet50"], capsys)
    assert code == 2 and "unknown architecture" in err


def test_json_output(mc3, tmp_path, torch, capsys):
    import json

    src = tmp_path / "m.pth"
    save_state(mc3[1], src)
    code, out, _ = invoke(["torch2keras", src, tmp_path / "m.keras", "--json", *SMALL], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["passed"] is True and doc["arch"] == "mc3_18"
    assert doc["cases"][0]["max_rel_diff"] <= 1e-5 and doc["cases"][0]["top5_agree"] is True
