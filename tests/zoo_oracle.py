"""Reads the oracle of torchvision's other video models (`fixtures/zoo/`, copied from the shared oracle) and
reproduces its numpy recipe weights and seeded inputs."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

ZOO = Path(__file__).parent / "fixtures" / "zoo"


@cache
def meta(arch: str) -> dict:
    """`meta.json`'s entry: parameter count, inputs and seeds, hooked blocks, published weights."""
    return json.loads((ZOO / "meta.json").read_text())[arch]


def keys(arch: str) -> list[dict]:
    """torchvision's state_dict entries in order: {"key", "shape", "dtype"}."""
    return json.loads((ZOO / f"{arch}.keys.json").read_text())


def oracle(arch: str) -> dict[str, np.ndarray]:
    with np.load(ZOO / f"{arch}.oracle.npz") as z:
        return {k: z[k] for k in z.files}


def recipe_state_dict(arch: str) -> dict[str, np.ndarray]:
    """The zoo README's recipe: one default_rng(11), draws in keys.json order (torchvision's own non-float
    buffers come from the oracle, `num_batches_tracked` is 0)."""
    rng = np.random.default_rng(11)
    buffers = {k[len("buffer.") :]: v for k, v in oracle(arch).items() if k.startswith("buffer.")}
    out: dict[str, np.ndarray] = {}
    for entry in keys(arch):
        key, shape = entry["key"], tuple(entry["shape"])
        if entry["dtype"] != "float32":
            out[key] = buffers[key] if key in buffers else np.array(0, dtype=np.int64)
            continue
        if key.endswith("running_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith(".weight"):
            gain = 2.0 if len(shape) >= 3 else 1.0
            value = rng.normal(0.0, np.sqrt(gain / np.prod(shape[1:])), shape)
        else:
            value = rng.normal(0.0, 0.02, shape)
        out[key] = value.astype(np.float32)
    return out


def oracle_input(arch: str, name: str) -> np.ndarray:
    """The seeded input `name` of `arch` in torch layout (N, C, T, H, W)."""
    m = meta(arch)
    return np.random.default_rng(m["input_seeds"][name]).standard_normal(m["inputs"][name]).astype(np.float32)


def bound(arch: str, name: str) -> float:
    """The parity bar on input `name`: max(1e-5, 2 x torch float32's own error against float64)."""
    o = oracle(arch)
    return max(1e-5, 2 * rel_err(o[f"{name}.logits"], o[f"{name}.logits64"]))


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |difference| / max |expected|: the oracle README's yardstick."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
