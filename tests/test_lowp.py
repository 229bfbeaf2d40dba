"""`vrconvert export --int8` and `--precision bf16`: int8 artifacts calibrated on real clips and checked on
held-out ones against torch float32, each run by its own runtime in a fresh process without vrconvert;
the refusals (LiteRT's float CONV_3D, ONNX Runtime's missing bf16 Conv, OpenVINO's bf16 on a CPU without
bf16 units) in one line each; a failed check writes nothing.

Fast set: r2plus1d_18 with a 7-class head on 4-frame clips (the check's clips are the packaged real clip,
at the Kinetics crop); other variants at 16 frames are slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, make_checkpoint, save_state, torch_logits, write_video

from vrconvert.converter import parity, video
from vrconvert.converter.deploy import quality

ARCH = "r2plus1d_18"
FRAMES = 4
DESTINATIONS = {"openvino": "model.xml", "onnx": "model.onnx"}
pytestmark = pytest.mark.xdist_group("lowp")


def _checkpoint(folder: Path, arch: str, num_classes: int = 7):
    model, state = make_checkpoint(arch, num_classes=num_classes, seed=5)
    save_state(state, folder / f"{arch}.pth")
    return model, folder / f"{arch}.pth"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A checkpoint and two generated calibration videos; the packaged real clip is held out."""
    folder = tmp_path_factory.mktemp("lowp")
    model, ckpt = _checkpoint(folder, ARCH)
    calib = [folder / "calib_a.mp4", folder / "calib_b.mp4"]
    for seed, path in enumerate(calib):
        write_video(path, frames=12, size=(120, 160), seed=seed)
    return model, ckpt, calib


def _export(args: list, timeout: int = 900) -> subprocess.CompletedProcess:
    """`vrconvert export` in a process of its own: tf2onnx's export alone peaks near 9 GB, freed on exit."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    cmd = [sys.executable, "-m", "vrconvert", "export", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """OpenVINO with the printed table, ONNX with the JSON document; both calibrated on the two videos."""
    _, ckpt, calib = data
    folder = tmp_path_factory.mktemp("int8")
    common = ["--int8", "--frames", FRAMES, "--size", "112x112", "--calibration-clips", "2"]
    common += ["--calibration", calib[0], "--calibration", calib[1]]
    xml, onnx_path = folder / DESTINATIONS["openvino"], folder / DESTINATIONS["onnx"]
    cli = _export([ckpt, xml, *common])
    doc = _export([ckpt, onnx_path, *common, "--json"])
    assert doc.returncode == 0, doc.stderr[-3000:]
    return {"cli": cli, "xml": xml, "onnx": json.loads(doc.stdout), "onnx_path": onnx_path}


def test_openvino_int8_through_the_cli_prints_the_check_table(exported):
    cli = exported["cli"]
    assert cli.returncode == 0, cli.stderr[-3000:]
    out = cli.stdout
    assert "int8 artifact run by openvino" in out and "calibrated on 2 clip(s) by nncf" in out
    assert "kept in float: " in out and "MatMul" in out  # the classifier
    rows = [line for line in out.splitlines() if line.startswith("vtest_clip.mp4[")]
    assert len(rows) == 2  # two held-out clips of the packaged real clip, none of the calibration videos
    assert "quality PASS: min cosine" in out and "top-1 agreement" in out
    assert "INFERENCE_PRECISION_HINT" in cli.stderr  # the default-precision trap, said once
    assert exported["xml"].is_file() and exported["xml"].with_suffix(".bin").is_file()


def test_openvino_int8_ir_holds_quantized_convolutions(exported, data):
    import openvino as ov

    model = ov.Core().read_model(str(exported["xml"]))
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert kinds.count("FakeQuantize") >= kinds.count("Convolution") > 0
    float_bytes = 4 * sum(p.numel() for p in data[0].parameters())
    assert exported["xml"].with_suffix(".bin").stat().st_size < 0.3 * float_bytes  # int8 weights


def test_onnx_int8_is_qdq_with_per_channel_int8_weights_and_passes_the_check(exported):
    import onnx

    doc = exported["onnx"]
    assert doc["precision"] == "int8" and doc["passed"] is True, doc["quality"]
    q = doc["quality"]
    assert [c["input"] for c in q["cases"]] == ["vtest_clip.mp4[0:4]", "vtest_clip.mp4[36:40]"]  # held out
    assert len(q["calibration"]) == 2 and all("calib_" in name for name in q["calibration"])
    assert q["summary"]["min_cosine"] >= quality.DEFAULT_MIN_COSINE["int8"] == q["bound"]
    assert len(q["kept_float"]) == 1 and "MatMul" in q["kept_float"][0]  # the classifier stayed float
    assert q["summary"]["top1_agreement"] == 1.0 and q["summary"]["max_rel_diff"] < 0.1
    graph = onnx.load(str(exported["onnx_path"])).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("DequantizeLinear") > ops.count("Conv") > 0 and "QuantizeLinear" in ops
    weights = {t.name: t for t in graph.initializer}
    int8_kernels = {name for name, t in weights.items() if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 5}
    assert len(int8_kernels) == ops.count("Conv")  # every conv's kernel is int8, the stem's too
    dequant = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_kernels]
    assert all(len(weights[n.input[1]].dims) == 1 for n in dequant)  # a scale per output channel


LOADERS = {
    "openvino": """
        import openvino as ov
        compiled = ov.Core().compile_model(PATH, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        out = compiled(x)[compiled.output(0)]
    """,
    "onnx": """
        import onnxruntime as ort
        session = ort.InferenceSession(PATH, providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
    """,
}


@pytest.mark.parametrize("fmt", list(DESTINATIONS))
def test_int8_artifact_runs_in_a_fresh_process_without_vrconvert(exported, data, tmp_path, fmt):
    clip = video.load_clips(video.SAMPLE_CLIP, frames=FRAMES, layout="NCTHW")[0].array
    np.save(tmp_path / "x.npy", np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1)))
    np.save(tmp_path / "expected.npy", torch_logits(data[0], clip))
    path = str(exported["xml"] if fmt == "openvino" else exported["onnx_path"])
    code = (
        f"import sys, numpy as np\nPATH = {path!r}\nx = np.load({str(tmp_path / 'x.npy')!r})\n"
        + textwrap.dedent(LOADERS[fmt])
        + f"\ne = np.load({str(tmp_path / 'expected.npy')!r}).astype(np.float64)\n"
        "cos = float((e * out).sum() / np.linalg.norm(e) / np.linalg.norm(out))\n"
        "print(cos, any(m.startswith('vrconvert') for m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cosine, vrconvert_loaded = proc.stdout.split()[-2:]
    assert float(cosine) >= quality.DEFAULT_MIN_COSINE["int8"] and vrconvert_loaded == "False"


def test_min_cosine_refuses_with_the_table_and_writes_nothing(data, tmp_path):
    """No int8 artifact reaches cosine 1 (its logits differ from float32's): the verdict path, end to end."""
    _, ckpt, calib = data
    dst = tmp_path / "model.xml"
    args = [ckpt, dst, "--int8", "--calibration", calib[0], "--calibration-clips", "1", "--check-clips", "1"]
    proc = _export([*args, "--frames", FRAMES, "--size", "112x112", "--min-cosine", "1"])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "quality FAIL" in proc.stderr and "held-out clip" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: quality check failed: int8 openvino") and "nothing was written" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_litert_int8_is_refused_in_one_line(data, tmp_path, capsys):
    _, ckpt, calib = data
    code, _, err = invoke(["export", ckpt, tmp_path / "m.tflite", "--int8", "--calibration", calib[0]], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "CONV_3D in float32" in err
    assert list(tmp_path.iterdir()) == []


def test_litert_converter_keeps_conv3d_in_float32_when_asked_for_int8():
    """What the LiteRT refusal rests on: with int8-only builtins and a representative dataset, TFLite's
    converter still emits a float32 CONV_3D between a DEQUANTIZE and a QUANTIZE."""
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    inputs = keras.Input((4, 8, 8, 3))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling3D()(keras.layers.Conv3D(4, 3)(inputs)))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.standard_normal((1, 4, 8, 8, 3), np.float32)] for _ in range(4))
    interpreter = Interpreter(model_content=converter.convert())
    ops = interpreter._get_ops_details()
    tensors = interpreter.get_tensor_details()
    (conv,) = [op for op in ops if op["op_name"] == "CONV_3D"]
    assert {np.dtype(tensors[i]["dtype"]).name for i in conv["inputs"]} == {"float32"}
    assert {"DEQUANTIZE", "QUANTIZE"} <= {op["op_name"] for op in ops}


def test_onnx_bf16_is_refused_in_one_line(data, tmp_path, capsys):
    code, _, err = invoke(["export", data[1], tmp_path / "m.onnx", "--precision", "bf16"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no bfloat16 Conv kernel" in err
    assert list(tmp_path.iterdir()) == []


def test_onnx_runtime_has_no_bfloat16_conv():
    """What the ONNX refusal rests on: a bfloat16 Conv (opset 22 allows the type) has no CPU kernel."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    bf16 = TensorProto.BFLOAT16
    weight = helper.make_tensor("w", bf16, [2, 3, 1, 1, 1], [0.0] * 6)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", bf16, [1, 3, 2, 4, 4])],
        [helper.make_tensor_value_info("y", bf16, [1, 2, 2, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)], ir_version=10)
    onnx.checker.check_model(model)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_bf16(data, tmp_path, capsys):
    """On a CPU without bf16 units OpenVINO runs a bf16 request in f32: refused, since the check would
    measure f32. On one with them, the artifact is checked at bf16 against its own bound."""
    args = ["export", data[1], tmp_path / "m.xml", "--precision", "bf16", "--frames", FRAMES, "--size", "112x112"]
    code, out, err = invoke([*args, "--check-clips", "1"], capsys)
    if not _cpu_has_bf16():
        assert code == 2 and len(err.strip().splitlines()) == 1 and "no bf16 units" in err
        assert list(tmp_path.iterdir()) == []
        return
    assert code == 0, err
    assert "inference precision bf16" in out and "quality PASS" in out
    assert f"bound {quality.DEFAULT_MIN_COSINE['bf16']:g}" in out


def test_openvino_reads_a_bf16_request_back_as_f32_on_a_cpu_without_bf16(exported):
    """The measurement behind the refusal (only meaningful where the CPU lacks bf16)."""
    import openvino as ov

    if _cpu_has_bf16():
        pytest.skip("this CPU has bf16 units")
    compiled = ov.Core().compile_model(str(exported["xml"]), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32", "float32")


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--int8 needs calibration videos"),
        (["--calibration", "CAL", "--video", "CAL"], "also a calibration video"),
        (["--calibration", "CAL", "--no-validate"], "written only after its check"),
        (["--calibration", "CAL", "--tolerance", "1e-3"], "judged by --min-cosine"),
        (["--calibration", "CAL", "--precision", "bf16"], "contradict"),
    ],
)
def test_int8_misuse_is_refused_before_any_work(data, tmp_path, capsys, extra, message):
    calib = str(data[2][0])
    args = ["export", data[1], tmp_path / "m.onnx", "--int8", *[calib if a == "CAL" else a for a in extra]]
    code, _, err = invoke(args, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_calibration_and_check_clips_come_from_predicts_sampling(data):
    from vrconvert.converter.deploy import calibration

    _, _, calib = data
    clips = calibration.calibration_clips(calib, clips=3, frames=FRAMES)
    expected = [
        c.array for p, n in zip(calib, (2, 1), strict=True) for c in video.load_clips(p, frames=FRAMES, clips=n)
    ]
    assert len(clips) == 3 and all(np.array_equal(a, b) for a, b in zip(clips.values(), expected, strict=True))
    raw = calibration.calibration_clips(calib[:1], clips=1, frames=FRAMES, raw=True)
    assert next(iter(raw.values())).dtype == np.uint8  # with --include-preprocessing, frames go in
    held = calibration.held_out_clips([], calib, clips=2, frames=FRAMES)
    assert list(held) == ["vtest_clip.mp4[0:4]", "vtest_clip.mp4[36:40]"]
    with pytest.raises(Exception, match="give --video"):
        calibration.held_out_clips([], [video.SAMPLE_CLIP], clips=1, frames=FRAMES)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18"])
@pytest.mark.parametrize("fmt", list(DESTINATIONS))
def test_other_variants_int8_at_16_frames(arch, fmt, tmp_path):
    from vrconvert.converter.deploy.export import export
    from vrconvert.converter.deploy.lowp import Options

    _, ckpt = _checkpoint(tmp_path, arch, num_classes=400)
    calib = tmp_path / "calib.mp4"
    write_video(calib, frames=24, size=(120, 160), seed=9)
    lower = Options(precision="int8", calibration=(calib,), calibration_clips=4)
    result = export(ckpt, tmp_path / DESTINATIONS[fmt], lower=lower)
    assert result.passed, json.dumps(result.quality.as_dict())[:2000]
    assert result.quality.summary()["top5_agreement"] == 1.0


def test_quality_table_and_verdict():
    def case(name, rel, cosine, top5):
        return parity.Case(
            input=name,
            max_abs_diff=rel,
            max_rel_diff=rel,
            cosine=cosine,
            top1_agree=True,
            top5_agree=top5,
            torch_seconds=1.0,
            keras_seconds=0.5,
        )

    cases = [case("a", 0.02, 0.9995, True), case("b", 0.05, 0.998, False)]
    q = quality.Quality(precision="int8", runtime="rt", min_cosine=0.999, cases=cases)
    assert not q.passed and q.worst.input == "b"
    lines = quality.table(q)
    assert "top-5 agreement 50%" in lines[-2] and lines[-1].startswith(
        "quality FAIL: min cosine 0.998000 < bound 0.999"
    )
    assert quality.Quality(precision="int8", runtime="rt", min_cosine=0.998, cases=cases).passed


@pytest.mark.slow
def test_int8_with_preprocessing_calibrates_on_uint8_frames(data, tmp_path):
    """With --include-preprocessing the artifact takes uint8 frames: calibration and check feed decoded
    frames, and torch gets torchvision's transform in front."""
    from vrconvert.converter.deploy.export import export
    from vrconvert.converter.deploy.lowp import Options

    _, ckpt, calib = data
    lower = Options(precision="int8", calibration=tuple(calib), calibration_clips=2)
    result = export(ckpt, tmp_path / "m.xml", frames=FRAMES, include_preprocessing=True, lower=lower)
    assert result.signature["dtype"] == "uint8" and result.passed, result.quality.as_dict()
