"""One Keras backend's inference figures (run by benchmarks/run.py in its own process, since Keras
fixes its backend at import): torch model vs the converted Keras model through vrconvert's own
inference path (`models_tf.predictor`, which picks each backend's layout), the two sides alternated
pair by pair, medians. Prints one JSON document; `macs_per_clip` is the work both sides do."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time

import numpy as np


def macs_per_clip(arch: str, frames: int = 16, size: int = 112) -> int:
    """Multiply-accumulates of one (3, frames, size, size) clip, from the spec's layer records: each
    conv's output size x kernel volume x C_in x C_out, plus the classifier. BatchNorm, ReLU, adds and
    pools are not counted (the convention of torchvision's published figures, whose "GFLOPS" column
    counts these MACs: r3d_18 40.70, mc3_18 43.34, r2plus1d_18 40.52)."""
    from vrconvert.converter.arch import layers, spec

    shapes: dict[str, tuple[int, int, int] | None] = {layers.INPUT: (frames, size, size)}
    total = 0
    for record in layers.expand(spec.get(arch)):
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


def main(backend: str, archs: list[str], batches: list[int], reps: int, frames: int = 16, size: int = 112) -> None:
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import torch

    import vrconvert
    from vrconvert import models_torch
    from vrconvert.models_tf import predictor

    rows = []
    for arch in archs:
        torch_model = models_torch.build(arch).eval()
        keras_model = vrconvert.state_dict_to_keras(torch_model.state_dict(), arch)
        start = time.perf_counter()
        run_keras = predictor(keras_model)
        prepare_keras = time.perf_counter() - start
        gmacs = macs_per_clip(arch, frames, size) / 1e9
        for batch in batches:
            clip = np.random.default_rng(0).standard_normal((batch, 3, frames, size, size)).astype(np.float32)
            x_torch, x_keras = torch.from_numpy(clip), np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1))
            start = time.perf_counter()
            run_keras(x_keras)  # the first call traces/compiles this shape
            first_keras = time.perf_counter() - start
            with torch.inference_mode():
                torch_model(x_torch)
            t_torch, t_keras = [], []
            for _ in range(reps):
                start = time.perf_counter()
                with torch.inference_mode():
                    expected = torch_model(x_torch).numpy()
                t_torch.append(time.perf_counter() - start)
                start = time.perf_counter()
                got = run_keras(x_keras)
                t_keras.append(time.perf_counter() - start)
            rel = float(np.abs(expected - got).max() / np.abs(expected).max())
            torch_s, keras_s = statistics.median(t_torch), statistics.median(t_keras)
            rows.append(
                {
                    "arch": arch,
                    "batch": batch,
                    "keras_backend": keras.backend.backend(),
                    "reps": reps,
                    "gmacs_per_clip": gmacs,
                    "torch_s_per_clip": torch_s / batch,
                    "keras_s_per_clip": keras_s / batch,
                    "torch_gflops": 2 * gmacs * batch / torch_s,
                    "keras_gflops": 2 * gmacs * batch / keras_s,
                    "ratio": keras_s / torch_s,
                    "keras_prepare_s": prepare_keras,
                    "keras_first_call_s": first_keras,
                    "max_rel_diff": rel,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    backend, archs, batches, reps = (
        sys.argv[1],
        sys.argv[2].split(","),
        [int(b) for b in sys.argv[3].split(",")],
        int(sys.argv[4]),
    )
    main(backend, archs, batches, reps)
