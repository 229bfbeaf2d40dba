"""`vrconvert export`: every format written by Keras' exporters, run by its own runtime (in this process
and in a fresh one that has only that runtime and numpy), compared with torch; hostile input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, make_checkpoint, save_state, torch_logits

from vrconvert.converter import parity
from vrconvert.converter.errors import InputError

ARCH = "mc3_18"  # the smallest of the three: every format's export stays within the test budget
DESTINATIONS = {"saved_model": "model", "litert": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}
pytestmark = pytest.mark.xdist_group("export")  # one worker exports everything once


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    model, state = make_checkpoint(ARCH, num_classes=7, seed=3)
    save_state(state, folder / f"{ARCH}.pth")
    return model, folder / f"{ARCH}.pth"


@pytest.fixture(scope="module")
def clips():
    """Two shapes: the artifacts keep T, H and W free."""
    return {
        "random(8x32x32)": parity.random_clip(0, 8, (32, 32)),
        "random(4x40x48)": parity.random_clip(1, 4, (40, 48)),
    }


@pytest.fixture(scope="module")
def exported(checkpoint, clips, tmp_path_factory):
    from vrconvert.converter.deploy.export import export

    folder = tmp_path_factory.mktemp("artifacts")
    return {name: export(checkpoint[1], folder / dst, clips=clips) for name, dst in DESTINATIONS.items()}


@pytest.mark.parametrize("fmt", list(DESTINATIONS))
def test_every_format_matches_torch_in_its_runtime(exported, fmt):
    result = exported[fmt]
    assert result.format == fmt
    assert result.passed, result.parity.as_dict()
    assert len(result.parity.cases) == 2 and all(c.top5_agree for c in result.parity.cases)
    assert result.parity.worst.max_rel_diff <= parity.DEFAULT_TOLERANCE
    sig = result.signature
    assert sig["input"].startswith(("input", "serving_default_input")), sig
    assert sig["dtype"] == "float32" and sig["shape"][-1] == 3 and sig["shape"][1:4] == [None, None, None], sig
    dst = Path(result.dst)
    assert dst.exists() and all(Path(p).exists() for p in result.files)
    assert not [p for p in dst.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_openvino_is_checked_at_f32_and_reports_its_default_precision(exported):
    result = exported["openvino"]
    assert "inference precision f32" in result.runtime
    assert result.default_precision is not None and "INFERENCE_PRECISION_HINT" in result.default_precision["pin_f32"]
    assert Path(result.dst).with_suffix(".bin").is_file()


def test_litert_artifact_has_builtin_ops_only(exported):
    from ai_edge_litert.interpreter import Interpreter

    ops = {op["op_name"] for op in Interpreter(model_path=exported["litert"].dst)._get_ops_details()}
    assert "CONV_3D" in ops and not [op for op in ops if op.startswith("Flex")], ops


# Each artifact in a fresh interpreter with only its runtime and numpy: what a deployment has.
LOADERS = {
    "saved_model": """
        import tensorflow as tf
        model = tf.saved_model.load(PATH)
        out = model.serve(tf.constant(x)).numpy()
    """,
    "litert": """
        from ai_edge_litert.interpreter import Interpreter
        it = Interpreter(model_path=PATH)
        source = it.get_input_details()[0]
        it.resize_tensor_input(source["index"], x.shape)
        it.allocate_tensors()
        it.set_tensor(source["index"], x)
        it.invoke()
        out = it.get_tensor(it.get_output_details()[0]["index"])
    """,
    "onnx": """
        import onnxruntime as ort
        session = ort.InferenceSession(PATH, providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
    """,
    "openvino": """
        import openvino as ov
        compiled = ov.Core().compile_model(PATH, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        out = compiled(x)[compiled.output(0)]
    """,
}


@pytest.mark.parametrize("fmt", list(DESTINATIONS))
def test_artifact_runs_in_a_fresh_process_without_vrconvert_or_keras(exported, checkpoint, clips, tmp_path, fmt):
    clip = clips["random(8x32x32)"]
    np.save(tmp_path / "x.npy", np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1)))
    np.save(tmp_path / "expected.npy", torch_logits(checkpoint[0], clip))
    code = (
        f"import sys, numpy as np\nPATH = {exported[fmt].dst!r}\nx = np.load({str(tmp_path / 'x.npy')!r})\n"
        + textwrap.dedent(LOADERS[fmt])
        + f"\nexpected = np.load({str(tmp_path / 'expected.npy')!r})\n"
        "rel = float(np.abs(out - expected).max() / np.abs(expected).max())\n"
        "print(rel, 'keras' in sys.modules, any(m.startswith('vrconvert') for m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rel, keras_loaded, vrconvert_loaded = proc.stdout.split()[-3:]
    assert float(rel) <= parity.DEFAULT_TOLERANCE
    assert vrconvert_loaded == "False"
    if fmt != "saved_model":  # TensorFlow 2.21's own `import tensorflow` imports Keras
        assert keras_loaded == "False"


# ---- through the CLI: failures leave nothing behind ---------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_cli_refuses_an_existing_destination_without_force(checkpoint, tmp_path, capsys):
    dst = tmp_path / "model.onnx"
    dst.write_bytes(b"precious")
    code, _, err = invoke(["export", checkpoint[1], dst], capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    assert dst.read_bytes() == b"precious"


def test_cli_refuses_the_bin_beside_an_openvino_xml(checkpoint, tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(b"precious")
    code, _, err = invoke(["export", checkpoint[1], tmp_path / "model.xml"], capsys)
    assert code == 2 and "model.bin: already exists" in err
    assert not (tmp_path / "model.xml").exists()


def test_cli_refuses_an_unknown_suffix(checkpoint, tmp_path, capsys):
    code, _, err = invoke(["export", checkpoint[1], tmp_path / "model.pb2"], capsys)
    assert code == 2 and "unknown export suffix '.pb2'" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_source_that_is_not_a_model(tmp_path, capsys):
    src = tmp_path / "notes.pth"
    src.write_text("not a checkpoint\n")
    code, _, err = invoke(["export", src, tmp_path / "model.tflite"], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pth"]


def test_cli_parity_failure_exits_1_and_writes_nothing(checkpoint, tmp_path, capsys):
    """A tolerance of 0 cannot be met by float32 rounding: the verdict path, end to end."""
    dst = tmp_path / "model"
    args = ["export", checkpoint[1], dst, "--frames", "4", "--size", "32x32", "--tolerance", "0"]
    code, _, err = invoke(args, capsys)
    assert code == 1 and "parity failed" in err and "nothing was written" in err
    assert not dst.exists() and _leftovers(tmp_path) == []


def test_cli_force_replaces_a_saved_model_with_a_fixed_shape_one(checkpoint, tmp_path, capsys):
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    code, out, err = invoke(
        ["export", checkpoint[1], dst, "--frames", "4", "--size", "32x32", "--force", "--json"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["passed"] is True and doc["format"] == "saved_model" and doc["input_shape"] == [None, 4, 32, 32, 3]
    assert (dst / "saved_model.pb").is_file() and not (dst / "stale.txt").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("blocked", ["onnxruntime", "tf2onnx"])
def test_cli_names_the_extra_when_a_runtime_is_missing(checkpoint, tmp_path, blocked):
    """The package is blocked in a child process, as if it were not installed."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from vrconvert.cli.main import main\n"
        f"sys.argv = ['vrconvert', 'export', {str(checkpoint[1])!r}, {str(tmp_path / 'model.onnx')!r}]\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert blocked in last and "pip install 'vrconvert[export]'" in last
    assert list(tmp_path.iterdir()) == []


def test_atomic_commit_restores_the_old_artifact_when_a_move_fails(tmp_path):
    from vrconvert.converter.formats import output as atomic

    old_bin, old_xml = tmp_path / "m.bin", tmp_path / "m.xml"
    old_bin.write_text("old bin")
    old_xml.write_text("old xml")
    with atomic.staging(old_xml) as folder:
        (folder / "m.bin").write_text("new bin")  # the .xml was never written: the second move fails
        with pytest.raises(FileNotFoundError):
            atomic.commit([folder / "m.bin", folder / "m.xml"], [old_bin, old_xml], force=True)
        (folder / "m.xml").write_text("new xml")
        with pytest.raises(InputError, match="appeared while exporting"):
            atomic.commit([folder / "m.bin", folder / "m.xml"], [old_bin, old_xml], force=False)
    assert (old_bin.read_text(), old_xml.read_text()) == ("old bin", "old xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
