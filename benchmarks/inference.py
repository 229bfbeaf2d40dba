"""Inference figures for `make bench`: torch against the converted Keras model on every Keras backend,
each side in a process of its own, the sides called in turn.

Why processes of their own: a framework's thread pools and allocator state outlive its calls, so a
torch timed inside a process that also runs TensorFlow or XLA measured up to 1.6x slower than inside a
torch-only one (mc3_18, batch 8: 0.44 to 0.76 s per clip). Here one torch process is the baseline for
all three backends; the Keras processes (TensorFlow, JAX, torch) run vrconvert's own inference path
(`models_tf.predictor`, which picks each backend's layout). For each variant and batch the parent calls
every side once per round, the starting side rotating round by round, so slow drifts of the machine
fall on all sides alike; only one side computes at a time. Medians over the rounds.

    python benchmarks/inference.py [--reps N] [--arch A ...] [--batch B ...]   (prints one JSON list)

`python benchmarks/inference.py --serve SIDE` is a worker: JSON commands on stdin, one JSON reply per
line on the descriptor it was started with (its stdout; the libraries' own output goes to stderr).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
FRAMES, SIZE = 16, 112


def macs_per_clip(arch: str, frames: int = FRAMES, size: int = SIZE) -> int:
    """Multiply-accumulates of one (3, frames, size, size) clip, from the spec's layer records: each
    conv's output size x kernel volume x C_in x C_out, plus the classifier. BatchNorm, ReLU, adds and
    pools are not counted (the convention of torchvision's published figures, whose "GFLOPS" column
    counts these MACs: r3d_18 40.70, mc3_18 43.34, r2plus1d_18 40.52)."""
    from vrconvert.converter.arch import families, layers

    shapes: dict[str, tuple[int, int, int] | None] = {layers.INPUT: (frames, size, size)}
    total = 0
    for record in families.expand(families.get(arch)):
        source = shapes.get(record.inputs[0]) if record.inputs else None
        if record.op in ("conv", "pool"):
            out = tuple(
                (n + 2 * p - k) // s + 1
                for n, k, s, p in zip(source, record.kernel, record.stride, record.padding, strict=True)
            )
            if record.op == "conv":
                total += math.prod(out) * math.prod(record.kernel) * record.channels_in * record.channels_out
        elif record.op == "gap":
            out = (1, 1, 1)
        elif record.op == "dense":
            total += record.channels_in * record.channels_out
            out = None
        elif record.op == "avgpool":
            out = None
        else:  # bn, act, add, mul: the shape passes through
            out = source
        shapes[record.name] = out
    return total


def clip(batch: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """The timed input, torch layout (N, 3, T, H, W); every side draws the same one."""
    return np.random.default_rng(0).standard_normal((batch, 3, frames, size, size)).astype(np.float32)


def recipe(state: dict) -> dict:
    """Weights drawn by the zoo oracle's numpy recipe (fan-in scaled weights, BatchNorm statistics away
    from identity, small tables), in the model's own key order; non-float buffers kept. torch's default
    initialisation leaves some zoo models' logits at their bias alone (the input's signal dies out), so
    a comparison of outputs would compare nothing; the time is the same either way."""
    rng = np.random.default_rng(11)
    out = {}
    for key, value in state.items():
        shape = tuple(value.shape)
        if not value.is_floating_point():
            out[key] = value.numpy()
            continue
        if key.endswith("running_mean"):
            drawn = rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            drawn = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".bias"):
            drawn = rng.normal(0.0, 0.1, shape)
        elif key.endswith(".weight"):
            drawn = rng.normal(0.0, np.sqrt((2.0 if len(shape) >= 3 else 1.0) / np.prod(shape[1:])), shape)
        else:
            drawn = rng.normal(0.0, 0.02, shape)
        out[key] = drawn.astype(np.float32)
    return out


# ---- the workers ---------------------------------------------------------------------------------------


def _torch_side():
    import torch

    from vrconvert import models_torch

    def load(arch: str, state: str, weights: str = "torch"):
        if not os.path.exists(state):  # the torch side draws the weights; every Keras side reads them
            torch.manual_seed(0)
            drawn = models_torch.build(arch).state_dict()
            np.savez(state, **(recipe(drawn) if weights == "recipe" else {k: v.numpy() for k, v in drawn.items()}))
        with np.load(state) as z:
            model = models_torch.build(arch)
            model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
        model.eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run

    return load


def _keras_side(backend: str):
    os.environ["KERAS_BACKEND"] = backend
    import keras  # noqa: F401  (fixes the backend before vrconvert imports it)

    import vrconvert
    from vrconvert.models_tf import predictor

    def load(arch: str, state: str, weights: str = "torch"):
        with np.load(state) as z:
            model = vrconvert.state_dict_to_keras({k: z[k] for k in z.files}, arch)
        run_keras = predictor(model)
        return lambda x: np.asarray(run_keras(np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1))))

    return load


def serve(side: str) -> None:
    """Answers commands until stdin closes: load (arch, state file), run (batch; saves the output when
    asked) -> seconds."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the replies
    load = _torch_side() if side == "torch" else _keras_side(side.removeprefix("keras-"))
    run = None
    inputs: dict[tuple[int, int, int], np.ndarray] = {}
    for line in sys.stdin:
        command = json.loads(line)
        start = time.perf_counter()
        if command["op"] == "load":
            run, inputs = None, {}
            gc.collect()  # the last model goes before the next is built (the zoo's are large)
            run = load(command["arch"], command["state"], command.get("weights", "torch"))
        else:
            shape = (command["batch"], command.get("frames", FRAMES), command.get("size", SIZE))
            x = inputs.setdefault(shape, clip(*shape))
            out = run(x)
            if command.get("save"):
                np.save(command["save"], out)
        replies.write(json.dumps({"seconds": time.perf_counter() - start}) + "\n")


# ---- the parent ----------------------------------------------------------------------------------------


class Side:
    """One worker process."""

    def __init__(self, side: str, env: dict, script: Path | None = None) -> None:
        self.name = side
        command = [sys.executable, str(script or Path(__file__).resolve()), "--serve", side]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def reply(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, **command) -> float:
        return self.reply(**command)["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure(
    archs,
    batches,
    reps: int,
    env: dict,
    *,
    frames: int = FRAMES,
    size: int = SIZE,
    gmacs=None,
    rounds=None,
    weights: str = "torch",
) -> list[dict]:
    """Rows per arch, batch and Keras backend. `gmacs` (arch -> GMAC per clip) replaces the layer-record
    count (the zoo's published figures); `rounds` (batch -> rounds) overrides `reps` for a batch;
    `weights="recipe"` draws the weights by `recipe` instead of torch's initialisation."""
    names = ["torch"] + [f"keras-{b}" for b in KERAS_BACKENDS]
    sides = [Side(n, env) for n in names]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for arch in archs:
                state = os.path.join(tmp, f"{arch}.npz")
                prepare = {s.name: s.ask(op="load", arch=arch, state=state, weights=weights) for s in sides}
                work = gmacs[arch] if gmacs else macs_per_clip(arch) / 1e9
                for batch in batches:
                    shape = {"batch": batch, "frames": frames, "size": size}
                    first = {}
                    for s in sides:  # the first call traces/compiles this shape; its output is compared
                        first[s.name] = s.ask(op="run", **shape, save=os.path.join(tmp, f"{s.name}.npy"))
                    outputs = {s.name: np.load(os.path.join(tmp, f"{s.name}.npy")) for s in sides}
                    times: dict[str, list[float]] = {s.name: [] for s in sides}
                    batch_reps = (rounds or {}).get(batch, reps)
                    for rep in range(batch_reps):
                        for s in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
                            times[s.name].append(s.ask(op="run", **shape))
                    for backend in KERAS_BACKENDS:
                        common = {"arch": arch, "batch": batch, "reps": batch_reps, "clip": [frames, size, size]}
                        rows.append(_row(backend, common, work, times, outputs, prepare, first))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for s in sides:
            s.close()
    return rows


def _row(backend: str, common: dict, work: float, times: dict, outputs: dict, prepare: dict, first: dict) -> dict:
    """One (arch, batch, Keras backend) row: medians per clip, achieved GFLOP/s, ratio and agreement."""
    name, batch = f"keras-{backend}", common["batch"]
    torch_s, keras_s = statistics.median(times["torch"]), statistics.median(times[name])
    expected = outputs["torch"]
    return {
        **common,
        "keras_backend": backend,
        "gmacs_per_clip": work,
        "torch_s_per_clip": torch_s / batch,
        "keras_s_per_clip": keras_s / batch,
        "torch_gflops": 2 * work * batch / torch_s,
        "keras_gflops": 2 * work * batch / keras_s,
        "ratio": keras_s / torch_s,
        "torch_spread": [min(times["torch"]) / batch, max(times["torch"]) / batch],
        "keras_spread": [min(times[name]) / batch, max(times[name]) / batch],
        "keras_prepare_s": prepare[name],
        "keras_first_call_s": first[name],
        "max_rel_diff": float(np.abs(expected - outputs[name]).max() / np.abs(expected).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--arch", action="append", choices=ARCHS)
    parser.add_argument("--batch", action="append", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    print(json.dumps(measure(args.arch or ARCHS, args.batch or [1, 8], args.reps, env)))


if __name__ == "__main__":
    main()
