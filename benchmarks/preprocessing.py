"""In-model preprocessing benchmark (part of `make bench`): how often each runtime's transform differs
from torchvision's, and what it costs per clip.

The transform alone (uint8 frames -> uint8 levels after resize, crop and rounding) runs as Keras on
TensorFlow (the `.keras` form: `Resizing`; and the export form: `TapsResize`) and as exported artifacts
in LiteRT, ONNX Runtime and OpenVINO (f32), each export in both forms, so the table shows what the
runtimes' own RESIZE kernels did and what the explicit taps do. The reference is the tests' torchvision
recipe (torch alone, checked there against the oracle). Data: the oracle's two clips and seeded
held-out clips at 240x320, 360x640, 480x270 and 97x131 (noise and moving gradients). Cost: the
normalised transform on one 16-frame 240x320 clip (Keras through `models_tf.infer.predictor`, its
compiled path), median of 7 calls after a warm-up.

    python benchmarks/preprocessing.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import keras  # noqa: E402
import numpy as np  # noqa: E402
from test_preprocessing_model import clips, oracle_cases, oracle_levels, torchvision_levels  # noqa: E402

from vrconvert.converter.deploy.formats import format_for  # noqa: E402
from vrconvert.models_tf import infer  # noqa: E402
from vrconvert.models_tf.preprocessing import FRAMES, transform_model  # noqa: E402

EXPORTS = {"LiteRT": ".tflite", "ONNX Runtime": ".onnx", "OpenVINO (f32)": ".xml"}
FORMS = {"taps": "TapsResize (what `export` uses)", "layer": "Keras `Resizing` (the runtime's RESIZE op)"}


def dataset(seeds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frames, torchvision's levels) pairs: the oracle's clips, then held-out ones."""
    pairs = [(frames, oracle_levels(out)) for frames, out in oracle_cases()]
    for seed in range(seeds):
        pairs += [(f, torchvision_levels(f)) for f in clips(seed=100 + seed)]
    return pairs


def differing(run, pairs) -> dict:
    bad = total = 0
    worst = 0.0
    for frames, expected in pairs:
        diff = np.abs(np.asarray(run(frames[None]))[0].astype(np.float64) - expected)
        bad, total, worst = bad + int((diff > 0).sum()), total + diff.size, max(worst, float(diff.max()))
    return {"differing": bad / total, "values": total, "max_levels": worst}


def ms_per_clip(run, frames: np.ndarray, reps: int = 7) -> float:
    run(frames)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run(frames)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def exported(model, path: Path, frames: int):
    fmt = format_for(path)
    fmt.export(model, path, [keras.InputSpec(shape=(None, frames, None, None, 3), dtype="uint8", name=FRAMES)])
    return fmt.runner(path)


def measure(seeds: int) -> list[dict]:
    pairs = dataset(seeds)
    clip = np.random.default_rng(0).integers(0, 256, (1, 16, 240, 320, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for form, label in FORMS.items():
            levels, normalised = (
                transform_model(frames=f, normalized=n, resize=form) for f, n in ((4, False), (16, True))
            )
            rows.append(
                {
                    "runtime": "Keras on TensorFlow",
                    "form": label,
                    **differing(levels, pairs),
                    "ms_per_clip": ms_per_clip(infer.predictor(normalised), clip),
                }
            )
            for runtime, suffix in EXPORTS.items():
                run = exported(levels, Path(tmp) / f"{form}_levels{suffix}", 4)
                cost = exported(normalised, Path(tmp) / f"{form}_clip{suffix}", 16)
                rows.append(
                    {"runtime": runtime, "form": label, **differing(run, pairs), "ms_per_clip": ms_per_clip(cost, clip)}
                )
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], when: str) -> str:
    values = rows[0]["values"]
    lines = [
        f"Transform against torchvision's ({values / 1e6:.1f} M uint8 values; {when}):",
        "",
        "| runtime | resize | values differing (bound 1e-4) | largest difference (levels) | ms per 16x240x320 clip |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        verdict = "met" if r["differing"] <= 1e-4 and r["max_levels"] <= 1 else "missed"
        lines.append(
            f"| {r['runtime']} | {r['form']} | {r['differing']:.1e} ({verdict}) | {r['max_levels']:.0f} | {r['ms_per_clip']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer held-out clips")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rows = measure(seeds=1 if args.quick else 4)
    from run import describe, machine

    when = f"{time.strftime('%Y-%m-%d')} on {describe(machine())}"
    (args.out / "preprocessing.json").write_text(json.dumps({"date": when, "rows": rows}, indent=2) + "\n")
    table = markdown(rows, when)
    (args.out / "preprocessing.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
