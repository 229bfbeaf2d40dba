"""Accuracy after fine-tuning, per precision (part of `make bench`; alone: `benchmarks/run.py --only trained`).

No Kinetics clips or weights are downloaded here, so the accuracy figure comes from a model trained on
real footage: r2plus1d_18 (the export bench's random but realistic backbone) gets a linear head fine-tuned
by `vrconvert finetune` on three opencv-doc scenes as three classes (each clip's 64 frames split into 4
files; the split by file holds one file per class out). `model.pth` is then exported with the transform
inside (uint8 frames in) at f32 and `--int8` to OpenVINO and ONNX (and bf16 to OpenVINO where the CPU
has bf16 units), calibrated on the training files only. Every artifact, in its own runtime, classifies
the held-out files' clips; top-1 against their labels is reported beside torch float32's, with each
artifact's cosine against torch float32 on those clips. Usage:

    python benchmarks/trained.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from export import CHECKPOINT, PY, ROOT, run  # noqa: E402
from lowp import cpu_has_bf16, export_artifacts  # noqa: E402

ARCH = "r2plus1d_18"
SCENES = ("megamind_25fps", "tree_15fps", "vtest_10fps")
CLIPS = ROOT / "tests" / "fixtures" / "clips"
FRAMES, SIZE, CLIPS_PER_FILE, VAL_SPLIT = 8, 112, 4, 0.25
FINETUNE = ["--freeze-until", "layer4", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4"]


def class_folders(root: Path) -> Path:
    """Each scene's 64 frames as 4 files of 16 (H.264, 160x120) in a folder named after it."""
    import av

    for name in SCENES:
        (root / name).mkdir(parents=True)
        with av.open(str(CLIPS / f"{name}.mp4")) as src:
            frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
        for part in range(4):
            with av.open(str(root / name / f"part{part}.mp4"), "w") as out:
                stream = out.add_stream("libx264", rate=Fraction(10))
                stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
                for i, array in enumerate(frames[16 * part : 16 * (part + 1)]):
                    frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(160, 120, "yuv420p")
                    frame.pts, frame.time_base = i, Fraction(1, 10)
                    out.mux(stream.encode(frame))
                out.mux(stream.encode())
    return root


def held_out(videos: Path):
    """finetune's own split: (train paths, held-out (path, label) pairs, class names)."""
    from vrconvert.converter.training import dataset

    files = dataset.scan(videos)
    parts = dataset.split(files, VAL_SPLIT)
    return [videos / p for p, _ in parts.train], parts.val, tuple(files)


def artifacts(pth: Path, folder: Path, train: list[Path], check: list[Path], bf16: bool) -> dict:
    """name -> (format, path, run-time precision, export document): the lowp bench's set, with the transform
    inside (frames of any H x W), calibrated on the training files and checked on the held-out ones."""
    common = ["--include-preprocessing", "--frames", str(FRAMES)]
    common += [arg for path in check for arg in ("--video", str(path))]
    calib = [arg for path in train for arg in ("--calibration", str(path))] + ["--calibration-clips", "9"]
    return export_artifacts(pth, folder, calibration=calib, common=common, bf16=bf16)


SCORE = r"""
import json, sys
import numpy as np, torch
from vrconvert import models_torch
from vrconvert.converter import parity
from vrconvert.converter.deploy.formats import FORMATS
from vrconvert.converter.training import dataset
from vrconvert.converter.training.finetune import variant_for

spec = json.loads(sys.argv[1])
variant = variant_for(spec["arch"], len(spec["classes"]), spec["size"])
clips = dataset.decode(spec["videos"], tuple((p, l) for p, l in spec["val"]), frames=spec["frames"],
                       clips=spec["clips"], preprocessing=variant.preprocessing)
net = models_torch.build(variant, weights=spec["pth"], include_preprocessing=True).eval()
with torch.no_grad():
    expected = net(torch.from_numpy(clips.frames)).numpy()
out = {"clips": len(clips.labels), "torch f32": {"top1": float((expected.argmax(1) == clips.labels).mean())}}
for name, (fmt, path, precision) in spec["artifacts"].items():
    fn = FORMATS[fmt].runner(path, **({"precision": precision} if fmt == "openvino" else {}))
    got = np.concatenate([fn(clips.frames[i : i + 1]) for i in range(len(clips.labels))])
    cases = [parity.compare(name, e[None], g[None]) for e, g in zip(expected, got)]
    out[name] = {
        "top1": float((got.argmax(1) == clips.labels).mean()),
        "agree_top1": sum(c.top1_agree for c in cases) / len(cases),
        "min_cosine": min(c.cosine for c in cases),
        "max_rel_diff": max(c.max_rel_diff for c in cases),
    }
print(json.dumps(out))
"""


def bench_trained(quick: bool = False) -> dict:
    bf16 = cpu_has_bf16()
    with tempfile.TemporaryDirectory(prefix="vrconvert-trained-") as tmp:
        work = Path(tmp)
        videos = class_folders(work / "videos")
        train, val, classes = held_out(videos)
        ckpt = work / f"{ARCH}.pth"
        run([PY, "-c", CHECKPOINT, ARCH, str(ckpt), "0"])
        epochs = 3 if quick else 8
        print(f"fine-tuning {ARCH} for {epochs} epochs ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        command = [PY, "-m", "vrconvert", "finetune", str(videos), str(work / "run"), "--weights", str(ckpt)]
        command += ["--arch", ARCH, "--epochs", str(epochs), "--frames", str(FRAMES), "--size", str(SIZE)]
        command += ["--clips", str(CLIPS_PER_FILE), "--val-split", str(VAL_SPLIT), *FINETUNE, "--json"]
        tuned = json.loads(run(command))
        finetune_s = time.perf_counter() - start
        pth = work / "run" / "model.pth"
        made = artifacts(pth, work, train, [videos / p for p, _ in val], bf16)
        spec = {
            "arch": ARCH,
            "classes": classes,
            "size": SIZE,
            "frames": FRAMES,
            "clips": CLIPS_PER_FILE,
            "videos": str(videos),
            "val": val,
            "pth": str(pth),
            "artifacts": {k: v[:3] for k, v in made.items()},
        }
        scores = json.loads(run([PY, "-c", SCORE, json.dumps(spec)]))
    return {
        "arch": ARCH,
        "bf16_units": bf16,
        "epochs": tuned["epochs"],
        "finetune_s": finetune_s,
        "classes": list(classes),
        "held_out": [p for p, _ in val],
        "scores": scores,
        "export_checks": {name: (doc.get("quality") or {}).get("summary") for name, (_, _, _, doc) in made.items()},
    }


def markdown(doc: dict) -> str:
    s = doc["scores"]
    lines = [
        f"Measured {doc['date']} on {doc['machine']}; CPU bf16 units: {'yes' if doc['bf16_units'] else 'no'}. "
        f"{doc['arch']} (random realistic backbone, frozen) with a linear head fine-tuned by `vrconvert finetune` "
        f"for {len(doc['epochs'])} epochs ({doc['finetune_s']:.0f} s) on three opencv-doc scenes; "
        f"{s['clips']} clips of {FRAMES}x{SIZE}x{SIZE} from the held-out files ({', '.join(doc['held_out'])}).",
        "",
        "| model | top-1 (labels) | top-1 agreement with torch f32 | min cosine | max rel. error |",
        "| --- | --- | --- | --- | --- |",
        f"| torch f32 (model.pth) | {100 * s['torch f32']['top1']:.0f}% | | | |",
    ]
    for name, row in s.items():
        if name in ("clips", "torch f32"):
            continue
        lines.append(
            f"| {name} | {100 * row['top1']:.0f}% | {100 * row['agree_top1']:.0f}% | {row['min_cosine']:.6f} | "
            f"{row['max_rel_diff']:.1e} |"
        )
    last = doc["epochs"][-1]
    lines += ["", f"Fine-tuning's last epoch: {json.dumps(last)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    from run import describe, machine

    doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": describe(machine())}
    doc.update(bench_trained(args.quick))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trained.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "trained.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
