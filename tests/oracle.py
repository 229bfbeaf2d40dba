"""Reads the torchvision oracle fixtures and reproduces their numpy recipe weights and inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")
INPUTS = {"small": (101, (2, 3, 4, 64, 64)), "clip8": (102, (2, 3, 8, 112, 112)), "clip16": (103, (1, 3, 16, 112, 112))}
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def keys(arch: str) -> list[dict]:
    """torchvision's state_dict entries in order: {"key", "shape", "dtype"}."""
    return json.loads((FIXTURES / f"{arch}.keys.json").read_text())


def oracle(arch: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{arch}.oracle.npz") as z:
        return {k: z[k] for k in z.files}


def recipe_state_dict(arch: str) -> dict[str, np.ndarray]:
    """The oracle README's recipe: one default_rng(7), draws in keys.json order."""
    rng = np.random.default_rng(7)
    out: dict[str, np.ndarray] = {}
    for entry in keys(arch):
        key, shape = entry["key"], tuple(entry["shape"])
        if key.endswith("num_batches_tracked"):
            out[key] = np.array(0, dtype=np.int64)
            continue
        if key.endswith("running_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".bias"):
            value = rng.normal(0.0, 0.1, shape)
        else:
            gain = 2.0 if len(shape) == 5 else 1.0
            value = rng.normal(0.0, np.sqrt(gain / np.prod(shape[1:])), shape)
        out[key] = value.astype(np.float32)
    return out


def oracle_input(name: str) -> np.ndarray:
    """The seeded input `name` in torch layout (N, C, T, H, W)."""
    seed, shape = INPUTS[name]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |difference| / max |expected|: the oracle README's yardstick."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
