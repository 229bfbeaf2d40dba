"""File-command benchmark (part of `make bench`): `torch2keras --no-validate`, `keras2torch` and `inspect`
of r2plus1d_18, each in the installs users make (fresh venvs from the built wheel, as `make test-install`
builds them: P1 `vrconvert[all]`, P2 `vrconvert[tensorflow,video]`) and against its floor, all in one run,
commands and floors alternated round by round, medians reported.

Floors (each a child process, timed like the commands):
- `torch2keras`: import torch and h5py, `torch.load` the checkpoint, write every array with h5py;
- the same without torch (P2 has none): read each tensor's bytes out of the checkpoint's zip with numpy;
- `keras2torch`: import torch and h5py, read every dataset of the `.keras` file's weights, `torch.save`.
Targets: both conversions at most 1.5x their floor, `inspect x.keras` under 1 s.

    python benchmarks/files.py [--quick] [--profiles P1 P2] [--wheel WHEEL] [--out DIR]

`--wheel` measures another build (an earlier commit's wheel, for a before/after) with the same fixtures.
Writes DIR/files.json and DIR/files.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
WORK = ROOT / "build" / "bench-files"
ARCH = "r2plus1d_18"
TARGET_RATIO, TARGET_INSPECT = 1.5, 1.0

FLOOR_TORCH = """
import sys, torch, h5py
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True, mmap=True)
with h5py.File(sys.argv[2], "w") as f:
    for key, tensor in state.items():
        f.create_dataset(key, data=tensor.numpy())
"""
FLOOR_NO_TORCH = """
import sys, zipfile, numpy as np, h5py
with zipfile.ZipFile(sys.argv[1]) as archive, h5py.File(sys.argv[2], "w") as f:
    for info in archive.infolist():
        if "/data/" in info.filename:
            f.create_dataset(info.filename, data=np.frombuffer(archive.read(info), np.uint8))
"""
FLOOR_K2T = """
import io, sys, zipfile, torch, h5py
with zipfile.ZipFile(sys.argv[1]) as archive:
    weights = io.BytesIO(archive.read("model.weights.h5"))
state = {}
with h5py.File(weights, "r") as f:
    f.visititems(lambda name, obj: state.__setitem__(name, torch.from_numpy(obj[()])) if isinstance(obj, h5py.Dataset) else None)
torch.save(state, sys.argv[2])
"""


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run_py = _load("bench_run", HERE / "run.py")  # timed(), machine(), describe()
profiles_py = _load("install_profiles", ROOT / "tools" / "install_profiles.py")  # the profiles' rows


def profile_of(label: str):
    """The install profile row of a venv label (`P1`, or `P1-baseline` for the baseline wheel's)."""
    return next(p for p in profiles_py.PROFILES if p.name == label.split("-")[0])


def install(label: str, wheel: Path, log) -> Path:
    """A fresh venv with `wheel[extras]` of the install profile `label` (torch==2.13.0 first where wanted)."""
    profile = profile_of(label)
    path = WORK / label
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, stdout=log, stderr=log)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if profile.torch:
        subprocess.run([*pip, profiles_py.TORCH], check=True, stdout=log, stderr=log)
    target = f"{wheel}[{profile.extras}]" if profile.extras else str(wheel)
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), target], check=True, stdout=log, stderr=log)
    return path


def fixtures(folder: Path) -> tuple[Path, Path]:
    """An r2plus1d_18 checkpoint (random weights; timing only) and its .keras, made in this venv."""
    ckpt, keras = folder / f"{ARCH}.pth", folder / f"{ARCH}.keras"
    code = (
        "import sys, torch; from vrconvert import models_torch; torch.manual_seed(0); "
        f"torch.save(models_torch.build({ARCH!r}).state_dict(), sys.argv[1])"
    )
    subprocess.run([PY, "-c", code, str(ckpt)], check=True, env=run_py.ENV, cwd=folder)
    convert = [PY, "-m", "vrconvert", "torch2keras", "--no-validate", "--force", str(ckpt), str(keras)]
    subprocess.run(convert, check=True, env=run_py.ENV, capture_output=True, cwd=folder)
    return ckpt, keras


def cases(venvs: dict[str, Path], ckpt: Path, keras: Path, out: Path) -> dict[tuple[str, str], list[str]]:
    """(profile, what) -> command; the floors run in the venv they are named after (those that need torch
    only where the profile has it, as `keras2torch` itself)."""
    rows: dict[tuple[str, str], list[str]] = {}
    for name, path in venvs.items():
        exe, py = str(path / "bin" / "vrconvert"), str(path / "bin" / "python")
        has_torch = profile_of(name).torch
        rows[(name, "torch2keras --no-validate")] = [exe, "torch2keras", "--no-validate", "--force", str(ckpt),
                                                     str(out / f"{name}.keras")]  # fmt: skip
        if has_torch:
            rows[(name, "keras2torch")] = [exe, "keras2torch", "--force", str(keras), str(out / f"{name}.pth")]
        rows[(name, "inspect x.keras")] = [exe, "inspect", str(keras)]
        rows[(name, "inspect x.pth")] = [exe, "inspect", str(ckpt)]
        if name.endswith("-baseline"):  # the floors are measured once, in the profile's own venv
            continue
        if has_torch:
            rows[(name, "floor: torch2keras")] = [py, "-c", FLOOR_TORCH, str(ckpt), str(out / f"{name}-floor.h5")]
            rows[(name, "floor: keras2torch")] = [py, "-c", FLOOR_K2T, str(keras), str(out / f"{name}-floor.pth")]
        rows[(name, "floor: torch2keras, no torch")] = [py, "-c", FLOOR_NO_TORCH, str(ckpt),
                                                        str(out / f"{name}-floor-nt.h5")]  # fmt: skip
    return rows


def timed(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """(wall s, CPU s (user + system), peak RSS MB) of one child process, reaped with wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=WORK)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def measure(rows: dict[tuple[str, str], list[str]], reps: int) -> dict[tuple[str, str], dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "VRCONVERT_DEBUG", "VIRTUAL_ENV")}
    for cmd in rows.values():  # warm the page cache and each venv's bytecode
        timed(cmd, env)
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {key: [] for key in rows}
    for _ in range(reps):  # round by round, so that load on a shared machine falls on every row alike
        for key, cmd in rows.items():
            runs[key].append(timed(cmd, env))
    return {
        key: {
            "median_s": statistics.median(r[0] for r in got),
            "cpu_s": statistics.median(r[1] for r in got),
            "runs": [round(r[0], 2) for r in got],
            "peak_rss_mb": max(r[2] for r in got),
        }
        for key, got in runs.items()
    }


def summarise(results: dict[tuple[str, str], dict]) -> list[dict]:
    out = []
    for (profile, what), r in results.items():
        row = {"profile": profile, "what": what, **r}
        floor = {"torch2keras --no-validate": "floor: torch2keras", "keras2torch": "floor: keras2torch"}.get(what)
        if floor:
            base = results.get((profile, floor)) or next(
                (v for (p, w), v in results.items() if w == floor), None
            )  # a torch-less profile is compared with the torch floor measured in a profile with torch
            if base:
                row["floor_s"] = base["median_s"]
                row["ratio"] = r["median_s"] / base["median_s"]
                row["cpu_ratio"] = r["cpu_s"] / base["cpu_s"]
                row["target"] = f"<= {TARGET_RATIO}x floor"
                row["met"] = row["ratio"] <= TARGET_RATIO
        if what == "torch2keras --no-validate" and (profile, "floor: torch2keras, no torch") in results:
            row["ratio_no_torch_floor"] = r["median_s"] / results[(profile, "floor: torch2keras, no torch")]["median_s"]
        if what == "inspect x.keras":
            row["target"] = f"< {TARGET_INSPECT:g} s"
            row["met"] = r["median_s"] < TARGET_INSPECT
        out.append(row)
    return out


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"Measured {doc['date']} on {run_py.describe(m)}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f". Load average {doc['load'][0]:.1f} at the start, {doc['load'][1]:.1f} at the end"
        + (
            " (the machine was shared with other jobs: absolute times are inflated; CPU time, user + system of "
            "the child, suffers less from the load than wall time)"
            if max(doc["load"]) > 1.5  # this bench keeps about one core busy
            else " (no other job ran)"
        )
        + f". Ratios are taken in one run with the sides alternated round by round. {doc['reps']} rounds, "
        f"medians; wheel: {doc['wheel']}. Versions are the test venv's: "
        "P1 and P2 install the same pins from constraints.txt, without jax or scipy.",
        "",
        "| profile | command | wall s | CPU s | peak RSS MB | floor wall s | ratio (wall) | ratio (CPU) | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["rows"]:
        ratio = f"**{r['ratio']:.2f}x**" if "ratio" in r else ""
        if "ratio_no_torch_floor" in r:
            ratio += f" ({r['ratio_no_torch_floor']:.2f}x the floor without torch)"
        verdict = "" if "met" not in r else (" (met)" if r["met"] else " (missed)")
        floor = f"{r['floor_s']:.2f}" if "floor_s" in r else ""
        cpu_ratio = f"{r['cpu_ratio']:.2f}x" if "cpu_ratio" in r else ""
        lines.append(
            f"| {r['profile']} | `{r['what']}` | {r['median_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{floor} | {ratio} | {cpu_ratio} | {r.get('target', '')}{verdict} |"
        )
    lines += [
        "",
        "Floors: `torch2keras`: import torch and h5py, `torch.load` (mmap), write every array with h5py. "
        "Without torch (P2 has none): read each tensor's bytes from the checkpoint's zip, write them with h5py. "
        "`keras2torch`: import torch and h5py, read every dataset of the `.keras` weights, `torch.save`. "
        "A profile without torch is compared with the torch floor of a profile that has it (same run, same files).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, 2 with --quick)")
    parser.add_argument("--baseline", type=Path, help="also measure this wheel's commands (as P1-baseline, ...)")
    parser.add_argument("--profiles", nargs="*", default=["P1", "P2"])
    parser.add_argument("--wheel", type=Path, help="measure this wheel instead of one built from the tree")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--reuse", action="store_true", help="keep the venvs of the last run (same wheel)")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    if not args.reuse:
        shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "files").mkdir(parents=True, exist_ok=True)
    with (WORK / "setup.log").open("w") as log:
        if args.wheel:
            wheel = args.wheel.resolve()
        else:
            folder = WORK / "wheel"
            subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(ROOT)], check=True,
                           stdout=log, stderr=log)  # fmt: skip
            (wheel,) = folder.glob("vrconvert-*.whl")
        print("installing", ", ".join(args.profiles), "...", file=sys.stderr, flush=True)
        wheels = dict.fromkeys(args.profiles, wheel)
        wheels |= {f"{name}-baseline": args.baseline.resolve() for name in args.profiles if args.baseline}
        venvs = {
            name: WORK / name if args.reuse and (WORK / name / "bin" / "vrconvert").exists() else install(name, w, log)
            for name, w in wheels.items()
        }
    ckpt, keras = fixtures(WORK / "files")
    print("measuring ...", file=sys.stderr, flush=True)
    rounds = args.rounds or (2 if args.quick else 5)
    results = measure(cases(venvs, ckpt, keras, WORK / "files"), rounds)
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": run_py.machine(),
        "load": [load_start, os.getloadavg()[0]],
        "reps": rounds,
        "wheel": wheel.name if not args.wheel else str(args.wheel),
        "baseline": str(args.baseline) if args.baseline else None,
        "checkpoint_mb": ckpt.stat().st_size / 1e6,
        "rows": summarise(results),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "files.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = markdown(doc)
    (args.out / "files.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
