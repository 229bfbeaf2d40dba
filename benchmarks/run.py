"""vrconvert's benchmark suite (`make bench`): inference, conversion, validation and start-up, measured
side by side in one run, the compared sides alternated pair by pair, medians and ratios.

Writes benchmarks/results.json and benchmarks/results.md (the table the README shows). Targets:
Keras/torch inference time per clip (every variant, batch 1 and 8) <= 0.8 on TensorFlow, <= 1.0 on
JAX, <= 1.1 on torch, each figure also as achieved GFLOP/s and a fraction of the CPU's fp32 peak; `torch2keras --no-validate` <= 2.0x the
I/O floor's wall time with peak RSS <= 1.5 GB; validate's overhead <= 15% over its forward passes;
`vrconvert --help` <= 0.5 s. Options: --quick (fewer repetitions), --skip PART, --only PART.

Inference alone (about 10-15 minutes on an idle 2-core machine): `.venv/bin/python benchmarks/run.py --only inference`.
The file commands in the P1 and P2 installs against their floors (fresh venvs from the wheel):
`--only files` (benchmarks/files.py, its own table benchmarks/files.md).
The zoo's inference at 16x224x224 (s3d, swin3d_t, swin3d_b, mvit_v1_b, mvit_v2_s; about half an hour
idle): `--only zoo` (benchmarks/zoo.py, benchmarks/zoo.md). Keras `fit` steps against torch's training
loop: `--only training` (benchmarks/training.py, benchmarks/training.md). Top-1 of a fine-tuned model per precision
(f32, int8, bf16 where the CPU has it): `--only trained` (benchmarks/trained.py, benchmarks/trained.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
BACKENDS = ("tensorflow", "jax", "torch")
TARGETS = {"tensorflow": 0.8, "jax": 1.0, "torch": 1.1}  # Keras/torch time per clip, at most
FMA_UNITS_PER_CORE = 2  # an assumption: server cores with AVX-512 (Xeon Scalable Gold/Platinum) have two

FLOOR = """
import sys, torch, h5py
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True, mmap=True)
with h5py.File(sys.argv[2], "w") as f:
    for key, tensor in state.items():
        f.create_dataset(key, data=tensor.numpy())
"""


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one child process; reaped with wait4, so the RSS is
    that child's own."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env or ENV, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    probe = (
        "import json, importlib.metadata as m\n"
        "names = ('torch', 'tensorflow-cpu', 'tensorflow', 'keras', 'jax', 'numpy', 'av')\n"
        "have = {d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()}\n"
        "print(json.dumps({n: m.version(n) for n in names if n in have}))"
    )
    versions = json.loads(subprocess.run([PY, "-c", probe], capture_output=True, text=True, check=True).stdout)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
        "peak": fp32_peak() if Path("/proc/cpuinfo").exists() else None,
    }


def describe(machine: dict) -> str:
    """The CPU as the tables name it: model, cores and widest vector unit (two CPUs may share a name)."""
    lanes = (machine.get("peak") or {}).get("fp32_lanes")
    simd = {16: ", AVX-512", 8: ", AVX2", 4: ", SSE"}.get(lanes, "")
    return f"{machine['cpu']} ({machine['cores']} cores{simd}, {(machine.get('peak') or {}).get('ghz', 0):.2f} GHz)"


def fp32_peak(cpuinfo: str | None = None, fma_units: int = FMA_UNITS_PER_CORE) -> dict:
    """This CPU's fp32 peak, cores x FMA units x SIMD lanes x 2 flops x GHz, read from /proc/cpuinfo:
    physical cores (distinct physical id/core id pairs, so SMT siblings do not count twice), the widest
    vector flags (avx512f: 16 fp32 lanes, avx/avx2: 8, else sse: 4), `fma` (2 flops per lane per
    instruction; without it a multiply and an add issue separately, the same 2 per lane per cycle on
    two ports, so the formula holds) and the clock from the model name ("@ 2.60GHz") or else
    `cpu MHz` (under a hypervisor the TSC rate: the nominal clock, not the turbo one; turbo makes the
    real peak higher). FMA units per core cannot be read from cpuinfo: `fma_units` is an assumption."""
    text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    blocks = [b for b in text.split("\n\n") if b.strip()]
    fields = [dict(line.split(":", 1) for line in b.splitlines() if ":" in line) for b in blocks]
    fields = [{k.strip(): v.strip() for k, v in f.items()} for f in fields]
    cores = len({(f.get("physical id", "0"), f.get("core id", str(i))) for i, f in enumerate(fields)}) or 1
    flags = set(fields[0].get("flags", "").split()) if fields else set()
    lanes = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    model = fields[0].get("model name", "") if fields else ""
    match = re.search(r"@\s*([0-9.]+)\s*GHz", model)
    ghz = float(match.group(1)) if match else float(fields[0].get("cpu MHz", "0")) / 1000 if fields else 0.0
    gflops = cores * fma_units * lanes * 2 * ghz
    return {
        "cores": cores,
        "fma_units_per_core": fma_units,
        "fp32_lanes": lanes,
        "fma": "fma" in flags,
        "ghz": ghz,
        "clock_from": "model name" if match else "cpu MHz",
        "gflops": gflops,
        "formula": f"{cores} cores x {fma_units} FMA units x {lanes} fp32 lanes x 2 flops x {ghz:.2f} GHz "
        f"= {gflops:.1f} GFLOP/s",
    }


def measured_sgemm(n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of torch's fp32 matrix multiply (n x n): a practical ceiling next to the paper peak."""
    code = (
        "import time, torch\n"
        f"a = torch.randn({n}, {n}); b = torch.randn({n}, {n}); a @ b\n"
        "times = []\n"
        f"for _ in range({reps}):\n"
        "    t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)\n"
        f"print(2 * {n} ** 3 / sorted(times)[len(times) // 2] / 1e9)"
    )
    return float(subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True, env=ENV).stdout)


def make_checkpoint(folder: Path) -> Path:
    """An r2plus1d_18 checkpoint saved as torchvision saves one (random weights: timing only)."""
    path = folder / "r2plus1d_18.pth"
    subprocess.run(
        [
            PY,
            "-c",
            "import torch, sys; from vrconvert import models_torch; "
            "torch.save(models_torch.build('r2plus1d_18').state_dict(), sys.argv[1])",
            str(path),
        ],
        check=True,
        env=ENV,
    )
    return path


def bench_inference(reps: int) -> list[dict]:
    """benchmarks/inference.py: one torch process and one per Keras backend, called in turn."""
    out = subprocess.run(
        [PY, str(HERE / "inference.py"), "--reps", str(reps)], check=False, capture_output=True, text=True, env=ENV
    )
    if out.returncode != 0:
        raise RuntimeError(f"inference failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_conversion(ckpt: Path, folder: Path, reps: int) -> dict:
    convert = [PY, "-m", "vrconvert", "torch2keras", "--no-validate", "--force", str(ckpt), str(folder / "out.keras")]
    floor = [PY, "-c", FLOOR, str(ckpt), str(folder / "floor.h5")]
    timed(floor)  # warm the page cache for both sides
    walls, rsss, floor_walls, floor_rsss = [], [], [], []
    for _ in range(reps):
        wall, rss, _ = timed(convert)
        walls.append(wall)
        rsss.append(rss)
        wall, rss, _ = timed(floor)
        floor_walls.append(wall)
        floor_rsss.append(rss)
    return {
        "arch": "r2plus1d_18",
        "reps": reps,
        "convert_s": median(walls),
        "convert_peak_rss_mb": max(rsss),
        "floor_s": median(floor_walls),
        "floor_peak_rss_mb": max(floor_rsss),
        "ratio": median(walls) / median(floor_walls),
        "checkpoint_mb": ckpt.stat().st_size / 1e6,
        "keras_file_mb": (folder / "out.keras").stat().st_size / 1e6,
    }


def bench_validation(ckpt: Path, folder: Path, reps: int) -> dict:
    keras_file = folder / "out.keras"
    cmd = [PY, "-m", "vrconvert", "validate", str(ckpt), str(keras_file), "--random", "4", "--json"]
    runs = []
    for _ in range(reps):
        wall, rss, out = timed(cmd)
        doc = json.loads(out)
        forward = sum(c["torch_seconds"] + c["keras_seconds"] for c in doc["cases"])
        runs.append(
            {
                "wall_s": wall,
                "peak_rss_mb": rss,
                "forward_s": forward,
                **{f"{k}_s": v for k, v in doc["seconds"].items()},
            }
        )
    best = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]  # the median run, figures kept together
    return {
        "arch": "r2plus1d_18",
        "inputs": "packaged clip + 4 random, 16x112x112",
        "reps": reps,
        **best,
        "compare_overhead": best["compare_s"] / best["forward_s"] - 1,
        "process_overhead": best["wall_s"] / best["forward_s"] - 1,
    }


def bench_startup(ckpt: Path, folder: Path, reps: int) -> dict:
    out = {}
    for name, cmd in (
        ("help", ["--help"]),
        ("inspect_pth", ["inspect", str(ckpt)]),
        ("inspect_keras", ["inspect", str(folder / "out.keras")]),
    ):
        out[f"{name}_s"] = median([timed([PY, "-m", "vrconvert", *cmd])[0] for _ in range(reps)])
    return out


def keep_earlier(results: dict, path: Path, parts: tuple[str, ...]) -> None:
    """A partial run (--only) keeps the other parts of the last results.json, each with when and where it
    was measured."""
    if not path.is_file():
        return
    earlier = json.loads(path.read_text())
    for name in [*parts, "sgemm_gflops", "inference_peak"]:
        if name in earlier and name not in results:
            results[name] = earlier[name]
            if name in parts:
                when = earlier.get("measured", {}).get(name, f"{earlier['date']} on {earlier['machine']['cpu']}")
                results.setdefault("measured", {})[name] = when


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Measured {results['date']} on {describe(m)}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".",
        "",
    ]
    if len(set(results.get("measured", {}).values())) > 1:
        lines[-1:-1] = [
            "Parts measured: " + "; ".join(f"{k} {v}" for k, v in results["measured"].items()) + ".",
        ]
    lines += _inference_table(results, m) if "inference" in results else []
    for part, table in (
        ("conversion", _conversion_table),
        ("validation", _validation_table),
        ("startup", _startup_table),
        ("evaluate", _evaluate_table),
    ):
        lines += table(results) if part in results else []
    return "\n".join(lines)


def _inference_table(results: dict, m: dict) -> list[str]:
    lines: list[str] = []
    machine_peak = results.get("inference_peak", m.get("peak"))  # kept parts keep their machine's
    peak = (machine_peak or {}).get("gflops")

    def rate(gflops: float) -> str:
        return f"{gflops:.0f} ({100 * gflops / peak:.0f}%)" if peak else f"{gflops:.0f}"

    lines += [
        "| inference, 16x112x112 | batch | torch s/clip | Keras s/clip | Keras/torch | target | "
        "torch GFLOP/s (% peak) | Keras GFLOP/s (% peak) | max rel diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(results["inference"], key=lambda r: (BACKENDS.index(r["keras_backend"]), r["arch"])):
        target = TARGETS.get(r["keras_backend"])
        verdict = "" if target is None else (" (met)" if r["ratio"] <= target else " (missed)")
        lines.append(
            f"| {r['arch']}, Keras on {r['keras_backend']} | {r['batch']} | {r['torch_s_per_clip']:.3f} | "
            f"{r['keras_s_per_clip']:.3f} | **{r['ratio']:.2f}** | <= {target}{verdict} | "
            f"{rate(r['torch_gflops'])} | {rate(r['keras_gflops'])} | {r['max_rel_diff']:.1e} |"
        )
    macs = {r["arch"]: r["gmacs_per_clip"] for r in results["inference"]}
    lines += [
        "",
        "Work per clip (MACs from the spec's layer records; GFLOP = 2 x GMAC): "
        + ", ".join(f"{a} {g:.2f} GMAC" for a, g in macs.items())
        + ".",
    ]
    if machine_peak:
        lines.append(
            f"fp32 peak: {machine_peak['formula']} (FMA units per core assumed, clock from "
            f"{machine_peak['clock_from']})."
        )
    if results.get("sgemm_gflops"):
        lines.append(f"Measured fp32 matrix multiply (torch, 2048^3): {rate(results['sgemm_gflops'])} GFLOP/s.")
    lines.append("")
    return lines


def _conversion_table(results: dict) -> list[str]:
    lines: list[str] = []
    c = results["conversion"]
    lines += [
        "| conversion (r2plus1d_18, 126 MB) | wall s | peak RSS MB | target |",
        "| --- | --- | --- | --- |",
        f"| `torch2keras --no-validate` | {c['convert_s']:.2f} | {c['convert_peak_rss_mb']:.0f} | "
        f"<= 2.0x floor, <= 1536 MB |",
        f"| floor: `import torch, h5py`, `torch.load`, write every array | {c['floor_s']:.2f} | "
        f"{c['floor_peak_rss_mb']:.0f} | |",
        f"| ratio | **{c['ratio']:.2f}x** | | |",
        "",
    ]
    return lines


def _validation_table(results: dict) -> list[str]:
    lines: list[str] = []
    v = results["validation"]
    lines += [
        "| `validate` (r2plus1d_18, packaged clip + 4 random) | seconds |",
        "| --- | --- |",
        f"| whole process (wall) | {v['wall_s']:.2f} |",
        f"| forward passes, torch + Keras (5 inputs) | {v['forward_s']:.2f} |",
        f"| compare loop (the forward passes plus vrconvert's work around them) | {v['compare_s']:.2f} |",
        f"| overhead of the compare loop over the forward passes (target <= 15%) | "
        f"**{100 * v['compare_overhead']:.1f}%** |",
        f"| overhead of the whole process over the forward passes | {100 * v['process_overhead']:.0f}% |",
        f"| of which: reading both files, building the torch model | {v['load_s']:.2f} |",
        "",
    ]
    return lines


def _startup_table(results: dict) -> list[str]:
    lines: list[str] = []
    s = results["startup"]
    lines += [
        "| start-up | wall s | target |",
        "| --- | --- | --- |",
        f"| `vrconvert --help` | **{s['help_s']:.2f}** | <= 0.5 |",
        f"| `vrconvert inspect r2plus1d_18.pth` | {s['inspect_pth_s']:.2f} | |",
        f"| `vrconvert inspect out.keras` | {s['inspect_keras_s']:.2f} | |",
        "",
    ]
    return lines


def _evaluate_table(results: dict) -> list[str]:
    lines: list[str] = []
    e = results["evaluate"]
    lines += [
        f"| evaluate over {e['videos']} videos ({e['clip']} clips) | videos/s |",
        "| --- | --- |",
        f"| the two models back to back, one process | {e['baseline_videos_per_s']:.2f} |",
        f"| `evaluate` (one fsync'd line per video) | {e['evaluate_videos_per_s']:.2f} |",
        f"| ratio (target >= {e['target']}) | **{e['ratio']:.2f}** |",
        "",
    ]
    return lines


def bench_evaluate() -> dict:
    """benchmarks/evaluate.py in its own process (it prints one JSON line)."""
    out = subprocess.run([PY, str(HERE / "evaluate.py")], check=True, capture_output=True, text=True, env=ENV)
    return json.loads(out.stdout.strip().splitlines()[-1])


IN_PROCESS_PARTS = ("inference", "conversion", "validation", "startup", "evaluate")  # results.json / results.md
OWN_TABLE_PARTS = (
    "export",
    "preprocessing",
    "lowp",
    "trained",
    "files",
    "zoo",
    "training",
)  # each its own script and PART.md


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--skip", action="append", default=[], choices=IN_PROCESS_PARTS)
    parser.add_argument(
        "--only",
        action="append",
        choices=IN_PROCESS_PARTS + OWN_TABLE_PARTS,
        help="measure only this part (repeatable); the other parts of results.json are kept, with their dates",
    )
    parser.add_argument("--out", type=Path, default=HERE)
    return parser.parse_args()


def wanted(args: argparse.Namespace, part: str) -> bool:
    return part not in args.skip and (not args.only or part in args.only)


def measure(args: argparse.Namespace) -> dict:
    """The in-process parts asked for, each with the date and machine it was measured on."""
    reps = 2 if args.quick else 5
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = make_checkpoint(folder)
        subprocess.run(
            [PY, "-m", "vrconvert", "torch2keras", "--no-validate", str(ckpt), str(folder / "out.keras")],
            check=True,
            env=ENV,
            capture_output=True,
        )
        parts = {
            "conversion": lambda: bench_conversion(ckpt, folder, reps),
            "validation": lambda: bench_validation(ckpt, folder, max(1, reps - 2)),
            "startup": lambda: bench_startup(ckpt, folder, reps),
            "inference": lambda: bench_inference(3 if args.quick else 5),
            "evaluate": bench_evaluate,
        }
        if wanted(args, "inference"):
            results["sgemm_gflops"], results["inference_peak"] = measured_sgemm(), results["machine"]["peak"]
        for name, run in parts.items():
            if wanted(args, name):
                print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
                results[name] = run()
                results.setdefault("measured", {})[name] = f"{results['date']} on {describe(results['machine'])}"
    return results


def main() -> None:
    args = arguments()
    if not args.only or set(args.only) & set(IN_PROCESS_PARTS):  # else results.json has nothing new
        results = measure(args)
        if args.only:
            keep_earlier(results, args.out / "results.json", IN_PROCESS_PARTS)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        table = markdown(results)
        (args.out / "results.md").write_text(table + "\n")
        print(table)
    for part in OWN_TABLE_PARTS:
        if not args.only or part in args.only:
            command = [PY, str(HERE / f"{part}.py"), "--out", str(args.out)] + ["--quick"] * args.quick
            subprocess.run(command, check=True, env=ENV)


if __name__ == "__main__":
    main()
