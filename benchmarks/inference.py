"""One Keras backend's inference figures (run by benchmarks/run.py in its own process, since Keras
fixes its backend at import): torch model vs the converted Keras model through vrconvert's own
inference path, the two sides alternated pair by pair, medians. Prints one JSON document."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np


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
        run_keras = predictor(keras_model)
        for batch in batches:
            clip = np.random.default_rng(0).standard_normal((batch, 3, frames, size, size)).astype(np.float32)
            x_torch, x_keras = torch.from_numpy(clip), np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1))
            start = time.perf_counter()
            run_keras(x_keras)  # the first call traces/compiles this shape
            first_keras = time.perf_counter() - start
            with torch.no_grad():
                torch_model(x_torch)
            t_torch, t_keras = [], []
            for _ in range(reps):
                start = time.perf_counter()
                with torch.no_grad():
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
                    "torch_s_per_clip": torch_s / batch,
                    "keras_s_per_clip": keras_s / batch,
                    "ratio": keras_s / torch_s,
                    "keras_first_call_s": first_keras,
                    "max_rel_diff": rel,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    backend, archs, batches, reps = (
        sys.argv[1],
        sys.argv[2].split(","),
        [int(b) for b in sys.argv[3].split(",")],
        int(sys.argv[4]),
    )
    main(backend, archs, batches, reps)
