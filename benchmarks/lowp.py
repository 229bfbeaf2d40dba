"""Lower-precision benchmark (part of `make bench`; alone: `benchmarks/run.py --only lowp`): for each
variant, `vrconvert export` at f32 and --int8 to OpenVINO and ONNX (and --precision bf16 to OpenVINO where
the CPU has bf16 units), then every artifact in its own runtime on held-out real clips against torch
float32: logit cosine, max relative error, top-1/top-5 agreement, time per clip at batch 1 (16x112x112)
against torch float32 and against the same runtime's f32 artifact, the sides alternated call by call,
medians reported; and each artifact's size.

Real footage: the packaged clip is the only real video here (40 frames). Its first 20 frames, cut into a
file of their own, calibrate; the clips measured come from its last 20 frames (another file), so no
measured frame was seen by the quantizer. Weights are random but realistic (benchmarks/export.py's
recipe): the figures are agreement with float32, not Kinetics accuracy. Usage:

    python benchmarks/lowp.py [--quick] [--arch r2plus1d_18 ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from export import CHECKPOINT, PY, run  # noqa: E402  (the same checkpoints and runner as the export bench)

ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")
CUT = """
import sys, av
from vrconvert.converter import video
frames = []
with av.open(str(video.SAMPLE_CLIP)) as src:
    frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
for name, part in (("calib.mp4", frames[:20]), ("check.mp4", frames[20:])):
    with av.open(sys.argv[1] + "/" + name, "w") as out:
        s = out.add_stream("libx264", rate=10, options={"crf": "12"})
        s.height, s.width, s.pix_fmt = part[0].shape[0], part[0].shape[1], "yuv420p"
        for f in part:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
"""

TIMER = r"""
import json, os, statistics, sys, time
import numpy as np, torch
from vrconvert.converter import parity, video
from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state
from vrconvert.converter.deploy.formats import FORMATS

spec = json.loads(sys.argv[1])
torch.set_num_threads(os.cpu_count())
ckpt, variant = load_state(spec["checkpoint"])
model = torch_model_from_state(variant, ckpt.state).eval()
clips = [c.array for c in video.load_clips(spec["check"], frames=16, clips=spec["clips"], layout="NCTHW")]
with torch.no_grad():
    expected = [model(torch.from_numpy(c)).numpy() for c in clips]
sides = {"torch f32": lambda x: model(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())).numpy()}
for name, (fmt, path, precision) in spec["artifacts"].items():
    sides[name] = FORMATS[fmt].runner(path, **({"precision": precision} if fmt == "openvino" else {}))
out = {}
for name, fn in sides.items():
    with torch.no_grad():
        cases = [parity.compare(name, e, fn(np.ascontiguousarray(c.transpose(0, 2, 3, 4, 1)))) for c, e in zip(clips, expected)]
    out[name] = {
        "min_cosine": min(c.cosine for c in cases),
        "max_rel_diff": max(c.max_rel_diff for c in cases),
        "top1": sum(c.top1_agree for c in cases) / len(cases),
        "top5": sum(c.top5_agree for c in cases) / len(cases),
        "times": [],
    }
x = np.ascontiguousarray(clips[0].transpose(0, 2, 3, 4, 1))
for _ in range(spec["reps"]):
    for name, fn in sides.items():  # alternate the sides call by call
        start = time.perf_counter()
        with torch.no_grad():
            fn(x)
        out[name]["times"].append(time.perf_counter() - start)
for row in out.values():
    row["median_s"] = statistics.median(row.pop("times"))
print(json.dumps(out))
"""


def export_artifacts(
    src: Path, folder: Path, *, calibration: list, common=(), bf16=False, bf16_args=(), label=""
) -> dict:
    """name -> (format, path, run-time precision, export document): `src` exported by `vrconvert export` at
    f32 and int8 (calibrated with the `calibration` arguments) to OpenVINO and ONNX, and at bf16 to OpenVINO
    when `bf16`; `common` goes to every export. The trained-model bench exports the same set."""
    plans = [
        ("openvino f32", "openvino", "f32.xml", []),
        ("openvino int8", "openvino", "int8.xml", ["--int8", *calibration]),
        ("onnx f32", "onnx", "f32.onnx", []),
        ("onnx int8", "onnx", "int8.onnx", ["--int8", *calibration]),
    ]
    if bf16:
        plans.append(("openvino bf16", "openvino", "bf16.xml", ["--precision", "bf16", *bf16_args]))
    made = {}
    for name, fmt, file, extra in plans:
        dst = folder / file
        start = time.perf_counter()
        doc = json.loads(run([PY, "-m", "vrconvert", "export", str(src), str(dst), "--json", *common, *extra]))
        doc["export_wall_s"] = time.perf_counter() - start
        made[name] = (fmt, str(dst), "bf16" if "bf16" in name else "f32", doc)
        print(f"  {label}{name}: exported in {doc['export_wall_s']:.0f} s", file=sys.stderr, flush=True)
    return made


def exports(arch: str, ckpt: Path, folder: Path, videos: Path, bf16: bool) -> dict:
    """Every artifact of `arch`, calibrated on calib.mp4 and checked on check.mp4."""
    check = ["--video", str(videos / "check.mp4")]
    calibration = ["--calibration", str(videos / "calib.mp4"), *check]
    return export_artifacts(ckpt, folder, calibration=calibration, bf16=bf16, bf16_args=check, label=f"{arch} ")


def cpu_has_bf16() -> bool:
    out = run(
        [PY, "-c", "import openvino as ov; print('BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))"]
    )
    return out.strip().endswith("True")


def bench_lowp(quick: bool = False, archs=ARCHS) -> dict:
    bf16 = cpu_has_bf16()
    results: dict = {"archs": {}, "bf16_units": bf16, "clips": 5}
    with tempfile.TemporaryDirectory() as tmp:
        videos = Path(tmp)
        run([PY, "-c", CUT, str(videos)])
        for i, arch in enumerate(archs):
            folder = videos / arch
            folder.mkdir()
            ckpt = folder / f"{arch}.pth"
            run([PY, "-c", CHECKPOINT, arch, str(ckpt), str(i)])
            print(f"exporting {arch} ...", file=sys.stderr, flush=True)
            made = exports(arch, ckpt, folder, videos, bf16)
            spec = {
                "checkpoint": str(ckpt),
                "check": str(videos / "check.mp4"),
                "clips": results["clips"],
                "artifacts": {name: (fmt, path, precision) for name, (fmt, path, precision, _) in made.items()},
                "reps": 3 if quick else 7,
            }
            timing = json.loads(run([PY, "-c", TIMER, json.dumps(spec)]).strip().splitlines()[-1])
            sizes = {name: sum(doc["files"].values()) / 1e6 for name, (_, _, _, doc) in made.items()}
            quality = {name: doc.get("quality") for name, (_, _, _, doc) in made.items()}
            results["archs"][arch] = {"timing": timing, "mb": sizes, "export_check": quality}
    return results


def markdown(results: dict, machine: str) -> str:
    lines = [
        f"Measured {results['date']} on {machine}; CPU bf16 units: {'yes' if results['bf16_units'] else 'no'}. "
        f"Agreement on {results['clips']} held-out real clips (16x112x112) against torch float32; time per clip "
        "at batch 1, medians of alternated calls.",
        "",
        "| arch | artifact | min cosine | max rel. error | top-1 | top-5 | s/clip | vs torch f32 | vs same runtime f32 | MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arch, part in results["archs"].items():
        timing = part["timing"]
        torch_s = timing["torch f32"]["median_s"]
        for name, row in timing.items():
            runtime = name.split()[0]
            own = timing.get(f"{runtime} f32", {}).get("median_s") if name != "torch f32" else None
            speed_own = f"{own / row['median_s']:.2f}x" if own and name != f"{runtime} f32" else ""
            mb = f"{part['mb'][name]:.0f}" if name in part["mb"] else ""
            lines.append(
                f"| {arch} | {name} | {row['min_cosine']:.6f} | {row['max_rel_diff']:.1e} | {100 * row['top1']:.0f}% | "
                f"{100 * row['top5']:.0f}% | {row['median_s']:.3f} | {torch_s / row['median_s']:.2f}x | {speed_own} | {mb} |"
            )
    lines += ["", "Speed columns are speed-ups (greater is faster)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch", action="append", choices=ARCHS)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    from run import describe, machine

    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **bench_lowp(args.quick, args.arch or ARCHS)}
    m = machine()
    results["machine"] = describe(m)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lowp.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, results["machine"])
    (args.out / "lowp.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
