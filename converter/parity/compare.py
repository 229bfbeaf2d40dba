"""Logits parity figures: how two models' outputs on the same clip compare (see `validate` for the runs).

This is the one comparison `validate`, `torch2keras`, `export` and `evaluate` share. A NaN or an
infinity on either side is a failure with its count, never agreement: NaN compares false with
everything, so without this a NaN-weight model's argmax "agrees" and its max difference passes
no test at all. numpy's warnings about those values stay inside (the count says it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_TOLERANCE = 1e-5  # relative to the largest |logit|; fp32 rounding alone measures ~3e-7 to 7e-7


@dataclass
class Case:
    """One input's comparison, in the figures the validator reports (`nonfinite`: NaN or Inf values in
    either side's logits; any makes the case fail, its differences infinite)."""

    input: str
    max_abs_diff: float
    max_rel_diff: float
    cosine: float
    top1_agree: bool
    top5_agree: bool
    torch_seconds: float
    keras_seconds: float
    nonfinite: int = 0

    def passed(self, tolerance: float) -> bool:
        return self.nonfinite == 0 and self.max_rel_diff <= tolerance

    def as_dict(self) -> dict:
        return asdict(self)


def nonfinite(values: np.ndarray) -> int:
    """How many NaN or Inf values `values` holds."""
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def compare(name: str, expected: np.ndarray, got: np.ndarray, t_torch: float = 0.0, t_keras: float = 0.0) -> Case:
    expected = np.asarray(expected, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    bad = nonfinite(expected) + nonfinite(got)
    if bad:
        return Case(name, np.inf, np.inf, 0.0, False, False, t_torch, t_keras, bad)
    with np.errstate(all="ignore"):  # huge finite logits may overflow the products: inf is the answer then
        diff = np.abs(expected - got)
        scale = max(float(np.abs(expected).max()), np.finfo(np.float32).tiny)
        cosine = float((expected * got).sum() / max(np.linalg.norm(expected) * np.linalg.norm(got), 1e-300))
    k = min(5, expected.shape[-1])
    top5 = all(set(np.argsort(-e)[:k]) == set(np.argsort(-g)[:k]) for e, g in zip(expected, got, strict=True))
    return Case(
        name,
        float(diff.max()),
        float(diff.max() / scale),
        cosine,
        bool((expected.argmax(-1) == got.argmax(-1)).all()),
        bool(top5),
        t_torch,
        t_keras,
    )


def random_clip(seed: int, frames: int = 16, size: tuple[int, int] = (112, 112), batch: int = 1) -> np.ndarray:
    """A seeded standard-normal clip in torch layout (N, C, T, H, W)."""
    return np.random.default_rng(seed).standard_normal((batch, 3, frames, *size)).astype(np.float32)
