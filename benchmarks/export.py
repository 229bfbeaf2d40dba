"""Deployment benchmark (part of `make bench`): `vrconvert export` of r3d_18, mc3_18 and r2plus1d_18 to
every format, with and without --fold-bn, each artifact's parity against torch as the export reports
it (a seeded random 16x112x112 clip and the packaged real clip, OpenVINO at f32 and at its default
precision), and each artifact's time per clip at batch 1 against torch, the sides alternated call by
call, medians reported. Peers in the same run where they install: torch.onnx.export in onnxruntime,
and onnx2tf's .tflite of that ONNX (run from a side venv, see ONNX2TF_PYTHON); litert-torch is skipped
when it needs another torch than the tested one.

Weights are random but realistic (He-normal convs, BatchNorm statistics drawn around their trained
ranges, seeded in torch): pretrained weights are not downloaded. Usage:

    python benchmarks/export.py [--quick] [--arch r3d_18 ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")
FORMATS = {"saved_model": "model", "litert": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", KERAS_BACKEND="tensorflow")
# onnx2tf needs tf_keras, which pulls the full `tensorflow` wheel over tensorflow-cpu: it lives in a copy
# of the venv so the tested one stays as pinned.
ONNX2TF_PYTHON = os.environ.get("ONNX2TF_PYTHON", str(ROOT / ".venv-export" / "bin" / "python"))

CHECKPOINT = """
import sys, torch
from vrconvert import models_torch
torch.manual_seed(int(sys.argv[3]))
model = models_torch.build(sys.argv[1])
with torch.no_grad():
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if t.ndim > 1:
            torch.nn.init.kaiming_normal_(t, nonlinearity="relu")
        elif name.endswith("running_var") or name.endswith(".weight"):
            t.uniform_(0.5, 1.5)
        else:
            t.normal_(0.0, 0.1)
torch.save(model.state_dict(), sys.argv[2])
"""

TORCH_ONNX = """
import sys, torch
from vrconvert import models_torch
model = models_torch.build(sys.argv[1]).eval()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
x = torch.zeros(1, 3, 16, 112, 112)
torch.onnx.export(model, (x,), sys.argv[3], input_names=["input"], output_names=["logits"], dynamo=True)
"""

ONNX2TF = """
import sys, onnx2tf
onnx2tf.convert(input_onnx_file_path=sys.argv[1], output_folder_path=sys.argv[2], non_verbose=True)
"""


def run(cmd: list[str], env=None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return proc.stdout


def export_all(arch: str, ckpt: Path, folder: Path) -> list[dict]:
    rows = []
    for fold in (False, True):
        for fmt, name in FORMATS.items():
            dst = folder / ("folded" if fold else "plain") / name
            dst.parent.mkdir(exist_ok=True)
            start = time.perf_counter()
            doc = json.loads(
                run([PY, "-m", "vrconvert", "export", str(ckpt), str(dst), "--json"] + (["--fold-bn"] if fold else []))
            )
            wall = time.perf_counter() - start
            cases = doc["parity"]["cases"]
            rows.append(
                {
                    "arch": arch,
                    "format": fmt,
                    "fold_bn": fold,
                    "path": str(dst),
                    "passed": doc["passed"],
                    "export_wall_s": wall,
                    "mb": sum(doc["files"].values()) / 1e6,
                    "runtime": doc["runtime"],
                    "cases": {
                        c["input"]: {k: c[k] for k in ("max_rel_diff", "top1_agree", "top5_agree")} for c in cases
                    },
                    "max_rel_diff": max(c["max_rel_diff"] for c in cases),
                    "top5_agree": all(c["top5_agree"] for c in cases),
                    "default_precision": doc.get("default_precision"),
                }
            )
            print(f"  {arch} {fmt}{' --fold-bn' if fold else ''}: {rows[-1]['max_rel_diff']:.2e}", file=sys.stderr)
    return rows


def peers(arch: str, ckpt: Path, folder: Path) -> tuple[dict[str, str], list[str]]:
    """Peer artifacts that could be made here: name -> path, plus notes for those that could not."""
    made, notes = {}, []
    onnx_path = folder / "torch.onnx"
    try:
        run([PY, "-c", TORCH_ONNX, arch, str(ckpt), str(onnx_path)])
        made["torch.onnx.export + onnxruntime"] = str(onnx_path)
    except RuntimeError as exc:
        notes.append(f"torch.onnx.export failed: {str(exc).splitlines()[-1][:200]}")
        return made, notes
    if Path(ONNX2TF_PYTHON).exists():
        try:
            run([ONNX2TF_PYTHON, "-c", ONNX2TF, str(onnx_path), str(folder / "onnx2tf")])
            made["onnx2tf .tflite (from torch.onnx.export)"] = str(folder / "onnx2tf" / "torch_float32.tflite")
        except RuntimeError as exc:
            notes.append(f"onnx2tf failed: {str(exc).strip().splitlines()[-1][:200]}")
    else:
        notes.append(f"onnx2tf skipped: no {ONNX2TF_PYTHON} (it needs tf_keras, which pulls the full tensorflow wheel)")
    notes.append("litert-torch skipped: every release (<= 0.9.3) requires torch < 2.13, the tested torch is 2.13.0")
    return made, notes


TIMER = r"""
import json, os, statistics, sys, time
import numpy as np, torch
sys.path.insert(0, os.getcwd())
from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state
from vrconvert.converter.deploy.formats import FORMATS, Runner, Signature
from vrconvert.converter import parity

spec = json.loads(sys.argv[1])
torch.set_num_threads(os.cpu_count())
ckpt, variant = load_state(spec["checkpoint"])
model = torch_model_from_state(variant, ckpt.state).eval()
clip = parity.random_clip(7, 16, (112, 112))
with torch.no_grad():
    expected = model(torch.from_numpy(clip)).numpy()
nthwc = np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1))


def torch_side(x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


sides = {"torch": (torch_side, clip)}
for name, (fmt, path) in spec["ours"].items():
    sides[name] = (FORMATS[fmt].runner(path), nthwc)
for name, path in spec["peers"].items():
    if path.endswith(".onnx"):
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        sides[name] = (lambda x, s=session: s.run(None, {s.get_inputs()[0].name: x})[0], clip)
    else:
        from ai_edge_litert.interpreter import Interpreter
        it = Interpreter(model_path=path, num_threads=os.cpu_count())
        it.allocate_tensors()
        source, sink = it.get_input_details()[0], it.get_output_details()[0]
        x = nthwc if list(source["shape"][1:]) == list(nthwc.shape[1:]) else clip

        def tfl(x, it=it, source=source, sink=sink):
            it.set_tensor(source["index"], x)
            it.invoke()
            return it.get_tensor(sink["index"]).copy()

        sides[name] = (tfl, x)
parity_of = {}
for name, (fn, x) in sides.items():
    got = np.asarray(fn(x)).reshape(expected.shape)  # warm-up, and the side's parity on this clip
    parity_of[name] = parity.compare(name, expected, got).max_rel_diff
times = {name: [] for name in sides}
for _ in range(spec["reps"]):
    for name, (fn, x) in sides.items():  # alternate the sides call by call
        start = time.perf_counter()
        fn(x)
        times[name].append(time.perf_counter() - start)
print(json.dumps({name: {"median_s": statistics.median(t), "max_rel_diff": parity_of[name]} for name, t in times.items()}))
"""


def time_sides(ckpt: Path, rows: list[dict], peer_paths: dict[str, str], reps: int) -> dict:
    ours = {f"{r['format']}{' folded' if r['fold_bn'] else ''}": (r["format"], r["path"]) for r in rows}
    spec = {"checkpoint": str(ckpt), "ours": ours, "peers": peer_paths, "reps": reps}
    return json.loads(run([PY, "-c", TIMER, json.dumps(spec)]).strip().splitlines()[-1])


def markdown(results: dict) -> str:
    lines = [
        "| arch | format | --fold-bn | parity vs torch, rel. (random / packaged clip) | top-5 | s/clip | vs torch | MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arch, part in results["archs"].items():
        timing = part["timing"]
        torch_s = timing["torch"]["median_s"]
        lines.append(f"| {arch} | torch (reference) | | | | {torch_s:.3f} | 1.00 | |")
        for r in part["exports"]:
            key = f"{r['format']}{' folded' if r['fold_bn'] else ''}"
            rel = " / ".join(f"{c['max_rel_diff']:.1e}" for c in r["cases"].values())
            t = timing[key]["median_s"]
            lines.append(
                f"| {arch} | {r['format']} | {'yes' if r['fold_bn'] else ''} | {rel} | "
                f"{'same' if r['top5_agree'] else 'DIFF'} | {t:.3f} | {t / torch_s:.2f} | {r['mb']:.0f} |"
            )
        for name in part["peers"]:
            t = timing[name]
            lines.append(
                f"| {arch} | peer: {name} | | {t['max_rel_diff']:.1e} (random) | | {t['median_s']:.3f} | "
                f"{t['median_s'] / torch_s:.2f} | |"
            )
    lines.append("")
    ov = [
        (arch, r["fold_bn"], r["default_precision"])
        for arch, part in results["archs"].items()
        for r in part["exports"]
        if r["default_precision"]
    ]
    if ov:
        lines.append(
            "OpenVINO at its default precision (not pinned): "
            + "; ".join(
                f"{arch}{' folded' if fold else ''} {d['max_rel_diff']:.1e} ({d['runtime'].split('(')[-1].rstrip(')')})"
                for arch, fold, d in ov
            )
        )
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines)


def bench_export(quick: bool = False, archs=ARCHS) -> dict:
    results: dict = {"archs": {}, "notes": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(archs):
            folder = Path(tmp) / arch
            folder.mkdir()
            ckpt = folder / f"{arch}.pth"
            run([PY, "-c", CHECKPOINT, arch, str(ckpt), str(i)])
            print(f"exporting {arch} ...", file=sys.stderr, flush=True)
            rows = export_all(arch, ckpt, folder)
            peer_paths, notes = peers(arch, ckpt, folder)
            results["notes"] += [n for n in notes if n not in results["notes"]]
            timing = time_sides(ckpt, rows, peer_paths, 3 if quick else 7)
            results["archs"][arch] = {
                "exports": [{k: v for k, v in r.items() if k != "path"} for r in rows],
                "peers": list(peer_paths),
                "timing": timing,
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch", action="append", choices=ARCHS)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **bench_export(args.quick, args.arch or ARCHS),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "export.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
