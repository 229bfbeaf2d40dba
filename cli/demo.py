"""`vrconvert demo`: the main job on an embedded default, needing no download and no shared files."""

from __future__ import annotations

import time

import click
import numpy as np


@click.command()
@click.option("--frames", default=8, show_default=True, help="Clip length T.")
@click.option("--size", default=112, show_default=True, help="Clip height and width.")
def demo(frames: int, size: int) -> None:
    """Builds each variant in PyTorch and Keras with the same generated weights and compares logits."""
    import torch

    from vrconvert import models_tf, models_torch
    from vrconvert.converter import spec

    clip = np.random.default_rng(0).standard_normal((1, 3, frames, size, size)).astype(np.float32)
    for name in spec.VARIANTS:
        tmodel = models_torch.build(name).eval()
        kmodel = models_tf.build(name)
        state = tmodel.state_dict()
        for layer in kmodel.layers:  # the next issue replaces this with the converter's mapping
            path = layer.name.replace("_", ".")
            weights = [state[f"{path}.{p}"].numpy() for p in ("weight", "bias", "running_mean", "running_var")
                       if f"{path}.{p}" in state]
            if not weights:
                continue
            if weights[0].ndim == 5:
                weights[0] = weights[0].transpose(2, 3, 4, 1, 0)
            elif weights[0].ndim == 2:
                weights[0] = weights[0].T
            layer.set_weights(weights)
        start = time.perf_counter()
        with torch.no_grad():
            expected = tmodel(torch.from_numpy(clip)).numpy()
        t_torch = time.perf_counter() - start
        start = time.perf_counter()
        got = kmodel.predict_on_batch(clip.transpose(0, 2, 3, 4, 1))
        t_keras = time.perf_counter() - start
        rel = float(np.abs(got - expected).max() / np.abs(expected).max())
        click.echo(f"{name:12s} params {spec.get(name).num_params:>11,}  max rel diff {rel:.1e}  "
                   f"top-1 {'agrees' if got.argmax() == expected.argmax() else 'DIFFERS'}  "
                   f"torch {t_torch:.2f}s keras {t_keras:.2f}s")
        if rel > 1e-5:
            raise SystemExit(1)
