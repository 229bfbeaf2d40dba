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


def clip(batch: int) -> np.ndarray:
    """The timed input, torch layout (N, 3, T, H, W); every side draws the same one."""
    return np.random.default_rng(0).standard_normal((batch, 3, FRAMES, SIZE, SIZE)).astype(np.float32)


# ---- the workers ---------------------------------------------------------------------------------------


def _torch_side():
    import torch

    from vrconvert import models_torch

    def load(arch: str, state: str):
        if not os.path.exists(state):  # the torch side draws the weights; every Keras side reads them
            torch.manual_seed(0)
            model = models_torch.build(arch)
            np.savez(state, **{k: v.numpy() for k, v in model.state_dict().items()})
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

    def load(arch: str, state: str):
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
    inputs: dict[int, np.ndarray] = {}
    for line in sys.stdin:
        command = json.loads(line)
        start = time.perf_counter()
        if command["op"] == "load":
            run, inputs = load(command["arch"], command["state"]), {}
        else:
            x = inputs.setdefault(command["batch"], clip(command["batch"]))
            out = run(x)
            if command.get("save"):
                np.save(command["save"], out)
        replies.write(json.dumps({"seconds": time.perf_counter() - start}) + "\n")


# ---- the parent ----------------------------------------------------------------------------------------


class Side:
    """One worker process."""

    def __init__(self, side: str, env: dict) -> None:
        self.name = side
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", side]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **command) -> float:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited ({self.proc.wait()})")
        return json.loads(line)["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure(archs, batches, reps: int, env: dict) -> list[dict]:
    names = ["torch"] + [f"keras-{b}" for b in KERAS_BACKENDS]
    sides = [Side(n, env) for n in names]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for arch in archs:
                state = os.path.join(tmp, f"{arch}.npz")
                prepare = {s.name: s.ask(op="load", arch=arch, state=state) for s in sides}
                gmacs = macs_per_clip(arch) / 1e9
                for batch in batches:
                    first = {}
                    for s in sides:  # the first call traces/compiles this shape; its output is compared
                        first[s.name] = s.ask(op="run", batch=batch, save=os.path.join(tmp, f"{s.name}.npy"))
                    outputs = {s.name: np.load(os.path.join(tmp, f"{s.name}.npy")) for s in sides}
                    times: dict[str, list[float]] = {s.name: [] for s in sides}
                    for rep in range(reps):
                        for s in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
                            times[s.name].append(s.ask(op="run", batch=batch))
                    torch_s = statistics.median(times["torch"])
                    expected = outputs["torch"]
                    for backend in KERAS_BACKENDS:
                        name = f"keras-{backend}"
                        keras_s = statistics.median(times[name])
                        rows.append(
                            {
                                "arch": arch,
                                "batch": batch,
                                "keras_backend": backend,
                                "reps": reps,
                                "gmacs_per_clip": gmacs,
                                "torch_s_per_clip": torch_s / batch,
                                "keras_s_per_clip": keras_s / batch,
                                "torch_gflops": 2 * gmacs * batch / torch_s,
                                "keras_gflops": 2 * gmacs * batch / keras_s,
                                "ratio": keras_s / torch_s,
                                "torch_spread": [min(times["torch"]) / batch, max(times["torch"]) / batch],
                                "keras_spread": [min(times[name]) / batch, max(times[name]) / batch],
                                "keras_prepare_s": prepare[name],
                                "keras_first_call_s": first[name],
                                "max_rel_diff": float(np.abs(expected - outputs[name]).max() / np.abs(expected).max()),
                            }
                        )
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for s in sides:
            s.close()
    return rows


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
