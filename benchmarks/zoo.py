"""The zoo's inference benchmark (part of `make bench`; alone: `benchmarks/run.py --only zoo`): s3d,
swin3d_t, swin3d_b, mvit_v1_b and mvit_v2_s, torch's twin against the converted Keras model on every
Keras backend, time per clip at batch 1 and 8, with benchmarks/inference.py's design (one process per
side, one side computing at a time, the starting side rotating round by round, medians).

The clip is 16x224x224 for every model: the size torchvision's published GFLOPs are counted at and the
oracle's `clip16` (MViT's weights accept no other). Work per clip is those published figures
(tests/fixtures/zoo/meta.json, the oracle's copy), which count multiply-accumulates as the ResNets'
do, so GFLOP/s = 2 x GMAC x clips / seconds, as in results.md. Weights follow the oracle's numpy recipe
(`inference.recipe`), so the outputs compared carry the input's signal.

These models are large (a swin3d_b call at batch 8 takes tens of seconds on 2 cores), so batch 8 gets
fewer rounds than batch 1. Writes benchmarks/zoo.json and benchmarks/zoo.md after each model, so an
interrupted run keeps what it measured. Usage:

    python benchmarks/zoo.py [--quick] [--arch A ...] [--batch B ...] [--rounds N] [--rounds8 N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import inference  # noqa: E402  (the workers and the alternation)
from run import ENV, describe, machine  # noqa: E402

ARCHS = ("s3d", "swin3d_t", "swin3d_b", "mvit_v1_b", "mvit_v2_s")
FRAMES, SIZE = 16, 224
TARGETS = {"tensorflow": 1.0, "jax": 1.0, "torch": 1.1}  # Keras/torch time per clip, at most
META = HERE.parent / "tests" / "fixtures" / "zoo" / "meta.json"


def published_gmacs(arch: str) -> float:
    """torchvision's published "GFLOPS" of `arch` (its Kinetics-400 weights), a MAC count at 16x224x224."""
    weights = json.loads(META.read_text())[arch]["weights"]
    return float(next(iter(weights.values()))["gflops"])


def markdown(doc: dict) -> str:
    m = doc["machine"]
    peak = (m.get("peak") or {}).get("gflops")

    def rate(gflops: float) -> str:
        return f"{gflops:.0f} ({100 * gflops / peak:.0f}%)" if peak else f"{gflops:.0f}"

    lines = [
        f"Measured {doc['date']} on {describe(m)}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; {doc['mode']} run, "
        + ", ".join(f"batch {b}: {n} round{'s' * (n > 1)}" for b, n in doc["rounds"].items())
        + f" (after one untimed call), {doc['wall_s'] / 60:.0f} min in all.",
        "",
        f"| inference, {FRAMES}x{SIZE}x{SIZE} | batch | rounds | torch s/clip | Keras s/clip | Keras/torch | target | "
        "torch GFLOP/s (% peak) | Keras GFLOP/s (% peak) | max rel diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {a: i for i, a in enumerate(ARCHS)}
    backends = inference.KERAS_BACKENDS
    for r in sorted(doc["rows"], key=lambda r: (order[r["arch"]], backends.index(r["keras_backend"]), r["batch"])):
        target = TARGETS[r["keras_backend"]]
        verdict = "met" if r["ratio"] <= target else "missed"
        lines.append(
            f"| {r['arch']}, Keras on {r['keras_backend']} | {r['batch']} | {r['reps']} | "
            f"{r['torch_s_per_clip']:.2f} | {r['keras_s_per_clip']:.2f} | **{r['ratio']:.2f}** | "
            f"<= {target} ({verdict}) | {rate(r['torch_gflops'])} | {rate(r['keras_gflops'])} | "
            f"{r['max_rel_diff']:.1e} |"
        )
    work = {r["arch"]: r["gmacs_per_clip"] for r in doc["rows"]}
    lines += [
        "",
        "Work per clip (torchvision's published figures, multiply-accumulates; GFLOP = 2 x GMAC): "
        + ", ".join(f"{a} {g:.2f} GMAC" for a, g in work.items())
        + ".",
    ]
    if m.get("peak"):
        lines.append(f"fp32 peak: {m['peak']['formula']}.")
    return "\n".join(lines) + "\n"


def write(out: Path, doc: dict) -> None:
    """zoo.json and zoo.md, each replaced whole."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("zoo.json", json.dumps(doc, indent=2) + "\n"), ("zoo.md", markdown(doc))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 only, one round (a smoke run)")
    parser.add_argument("--arch", action="append", choices=ARCHS)
    parser.add_argument("--batch", action="append", type=int, help="default 1 and 8 (--quick: 1)")
    parser.add_argument("--rounds", type=int, help="rounds at batch 1 (default 3, --quick 1)")
    parser.add_argument("--rounds8", type=int, help="rounds at larger batches (default 1)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    batches = args.batch or ([1] if args.quick else [1, 8])
    if min(n for n in (args.rounds, args.rounds8, *batches) if n is not None) < 1:
        parser.error("batches and rounds must be at least 1")
    one = args.rounds if args.rounds is not None else 1 if args.quick else 3
    rounds = {b: one if b == 1 else args.rounds8 if args.rounds8 is not None else 1 for b in batches}
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "rounds": {str(b): n for b, n in rounds.items()},
        "clip": [FRAMES, SIZE, SIZE],
        "rows": [],
        "wall_s": 0.0,
        "arch_wall_s": {},
    }
    start = time.perf_counter()
    for arch in args.arch or ARCHS:
        print(f"zoo: {arch} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        doc["rows"] += inference.measure(
            [arch],
            batches,
            1,
            ENV,
            frames=FRAMES,
            size=SIZE,
            gmacs={arch: published_gmacs(arch)},
            rounds=rounds,
            weights="recipe",
        )
        doc["arch_wall_s"][arch] = time.perf_counter() - began
        doc["wall_s"] = time.perf_counter() - start
        write(args.out, doc)
    print(markdown(doc))


if __name__ == "__main__":
    main()
