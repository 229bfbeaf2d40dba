"""Reads the Swin3D oracle fixtures (torchvision 0.28's numbers) and reproduces their numpy recipe weights and
inputs, as the zoo oracle's README defines them."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "zoo"
ARCHS = ("swin3d_t", "swin3d_s", "swin3d_b")


def keys(arch: str) -> list[dict]:
    """torchvision's state_dict entries in order: {"key", "shape", "dtype"}."""
    return json.loads((FIXTURES / f"{arch}.keys.json").read_text())


@functools.cache
def meta() -> dict:
    return json.loads((FIXTURES / "meta.json").read_text())


@functools.cache
def _npz() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "swin3d.oracle.npz") as z:
        return {k: z[k] for k in z.files}


def oracle(arch: str) -> dict[str, np.ndarray]:
    """`<input>.logits`, `<input>.logits64`, `<input>.<block>.mean`, `weight_checksum` of one variant."""
    prefix = f"{arch}."
    return {k.removeprefix(prefix): v for k, v in _npz().items() if k.startswith(prefix)}


def relative_position_index() -> np.ndarray:
    """torchvision's buffer (every attention of the three variants holds the same one)."""
    return _npz()["relative_position_index"].astype(np.int64)


def recipe_state_dict(arch: str) -> dict[str, np.ndarray]:
    """The README's recipe: one default_rng(11), draws in keys.json order; buffers as torchvision made them."""
    rng = np.random.default_rng(11)
    out: dict[str, np.ndarray] = {}
    for entry in keys(arch):
        key, shape = entry["key"], tuple(entry["shape"])
        if entry["dtype"] != "float32":
            out[key] = relative_position_index()
            continue
        if key.endswith(".weight") and len(shape) == 1:
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith(".weight"):
            gain = 2.0 if len(shape) >= 3 else 1.0
            value = rng.normal(0.0, np.sqrt(gain / np.prod(shape[1:])), shape)
        else:  # relative position tables
            value = rng.normal(0.0, 0.02, shape)
        out[key] = value.astype(np.float32)
    return out


def oracle_input(arch: str, name: str) -> np.ndarray:
    """The seeded input `name` in torch layout (N, C, T, H, W)."""
    m = meta()[arch]
    return np.random.default_rng(m["input_seeds"][name]).standard_normal(m["inputs"][name]).astype(np.float32)


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |difference| / max |expected|: the oracle README's yardstick."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def bound(arch: str, name: str) -> float:
    """The bar for a float32 model: max(1e-5, 2 x torch float32's own error against float64)."""
    o = oracle(arch)
    return max(1e-5, 2 * rel_err(o[f"{name}.logits"], o[f"{name}.logits64"]))
