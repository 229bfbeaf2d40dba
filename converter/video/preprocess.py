"""torchvision's Kinetics-400 eval transform (`VideoClassification`), reproduced in numpy alone.

So that a Keras user never needs torch to feed a converted model, and never has to guess the
transform. Steps, as torchvision 0.28 does them (see the oracle README):
1. uint8 frames resized to `resize` (128x171) by bilinear interpolation, `antialias=False`,
   `align_corners=False`, computed in float32 and rounded half-to-even back to uint8;
2. centre crop to `crop` (112x112), offsets rounded as Python's `round` does;
3. divide by 255, subtract `mean`, divide by `std`, all in float32.

The float32 arithmetic follows torch's CPU kernel term for term (width pass, then height pass,
weights `1 - l` and `l` from the half-pixel source index), so the uint8 rounding lands on the same
side and the output matches torchvision's to float32 rounding (tested on the oracle's clips).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from vrconvert.converter.arch.spec import Preprocessing

Layout = Literal["NCTHW", "NTHWC"]
KINETICS = Preprocessing()  # the three torchvision video models share it


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and float32 weights of a half-pixel linear resize (torch's align_corners=False)."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (np.float32(1.0) - lam1).astype(np.float32), lam1


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add `a * b + c` with one rounding, as torch's AVX2 kernel computes it.

    The float32 product is exact in float64; the float64 sum is rounded to odd (exact error by
    TwoSum, then the odd neighbour), which makes the final rounding to float32 correct.
    """
    prod = a.astype(np.float64) * b.astype(np.float64)
    addend = c.astype(np.float64)
    total = prod + addend
    back = total - prod
    error = (prod - (total - back)) + (addend - back)
    even = (total.view(np.int64) & 1) == 0
    nudge = (error != 0) & even
    total[nudge] = np.nextafter(total[nudge], np.where(error[nudge] > 0, np.inf, -np.inf))
    return total.astype(np.float32)


def resize_uint8(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, C) uint8 -> (T, h, w, C) uint8, bilinear without antialiasing, as torchvision does."""
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"expected uint8 frames (T, H, W, C), got {frames.dtype} {frames.shape}")
    h0, h1, hl0, hl1 = _linear_taps(frames.shape[1], size[0])
    w0, w1, wl0, wl1 = _linear_taps(frames.shape[2], size[1])
    x = frames.astype(np.float32)
    wl0, wl1 = wl0[None, None, :, None], wl1[None, None, :, None]
    hl0, hl1 = hl0[None, :, None, None], hl1[None, :, None, None]
    # torch: out = t0 * hl0 + t1 * hl1 with t = x[h, w0] * wl0 + x[h, w1] * wl1, each contracted to
    # fma(first, weight, second * weight) by the compiler
    rows = x[:, np.concatenate([h0, h1])]
    t = _fma32(rows[:, :, w0], wl0, rows[:, :, w1] * wl1)
    t0, t1 = t[:, : len(h0)], t[:, len(h0) :]
    out = _fma32(t0, hl0, t1 * hl1)
    return np.rint(out).clip(0, 255).astype(np.uint8)


def center_crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, C) -> (T, h, w, C) from the centre; offsets as torchvision's `center_crop` rounds them."""
    height, width = frames.shape[1:3]
    if height < size[0] or width < size[1]:
        raise ValueError(f"cannot crop {size[0]}x{size[1]} from {height}x{width}")
    top, left = round((height - size[0]) / 2.0), round((width - size[1]) / 2.0)
    return frames[:, top : top + size[0], left : left + size[1]]


def normalize(frames: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 (..., C) -> float32 (x / 255 - mean) / std, each step rounded to float32 as torch does."""
    x = frames.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def kinetics_eval(frames: np.ndarray, preprocessing: Preprocessing = KINETICS, layout: Layout = "NTHWC") -> np.ndarray:
    """One clip of decoded uint8 frames (T, H, W, 3) -> a batch of one, ready for the model.

    `layout` "NTHWC" feeds a Keras model, "NCTHW" a torch one (a transpose, never a reshape).
    """
    size = preprocessing.resized(*frames.shape[1:3])
    return crop_and_normalize(resize_uint8(frames, size), preprocessing, layout)


def crop_and_normalize(
    resized: np.ndarray, preprocessing: Preprocessing = KINETICS, layout: Layout = "NTHWC"
) -> np.ndarray:
    """The steps after the resize (which the video reader applies frame by frame as it decodes)."""
    x = normalize(center_crop(resized, preprocessing.crop), preprocessing.mean, preprocessing.std)[None]
    return to_layout(x, layout)


def to_layout(clip_nthwc: np.ndarray, layout: Layout) -> np.ndarray:
    if layout == "NTHWC":
        return np.ascontiguousarray(clip_nthwc)
    if layout == "NCTHW":
        return np.ascontiguousarray(clip_nthwc.transpose(0, 4, 1, 2, 3))
    raise ValueError(f"layout must be 'NTHWC' or 'NCTHW', not {layout!r}")
