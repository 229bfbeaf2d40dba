"""Keras layers for what Keras has no built-in layer for in a Video Swin Transformer.

The exact GELU in a spelling every export format runs (MViT's blocks use it too), padding to a multiple,
patch merging's 2x2 gather, and shifted-window attention with its relative position bias and masks. Registered under the package "vrconvert", so a `.keras` file holding them loads in safe mode
once `vrconvert` is imported. Written with `keras.ops` only: they run on TensorFlow, torch and JAX. Sizes
known when the graph is built are resolved in Python (masks become constants); on TensorFlow, sizes known
only at run time go through the same arithmetic as tensors, so a model with free T, H, W still exports.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from vrconvert.converter.arch import swin3d

PACKAGE = "vrconvert"
SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2), torch's M_SQRT1_2


def _static(*values) -> bool:
    return all(isinstance(v, int) for v in values)


def _pad_end(x, multiples: tuple, axes: tuple[int, ...]):
    """Zeros after the end of each of `axes` up to a multiple of its entry in `multiples`."""
    shape = ops.shape(x)
    widths = [[0, 0] for _ in range(len(x.shape))]
    for axis, m in zip(axes, multiples, strict=True):
        widths[axis][1] = (m - shape[axis] % m) % m
    if _static(*(w for _, w in widths)) and not any(w for _, w in widths):
        return x
    return ops.pad(x, widths)


def _roll(x, shifts, back: bool):
    """torch.roll of (N, T, H, W, C) by -shifts (by +shifts with `back`) on T, H, W, as two slices
    concatenated: the same values moved, in an op every export format runs (LiteRT has no Roll)."""
    for axis, s in zip((1, 2, 3), shifts, strict=True):
        if _static(s) and s == 0:
            continue
        cut = ops.shape(x)[axis] - s if back else s
        lead = (slice(None),) * axis
        x = ops.concatenate([x[(*lead, slice(cut, None))], x[(*lead, slice(None, cut))]], axis=axis)
    return x


@keras.saving.register_keras_serializable(package=PACKAGE)
class Gelu(keras.layers.Layer):
    """The exact (erf) GELU as torch computes it, x * 0.5 * (1 + erf(x / sqrt 2)). Keras' own gelu on
    TensorFlow lowers to Erfc, which tf2onnx cannot convert; Erf is an ONNX, LiteRT and OpenVINO op."""

    def call(self, x):
        return x * 0.5 * (1.0 + ops.erf(x * SQRT_HALF))

    def compute_output_shape(self, shape):
        return tuple(shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PadToMultiple(keras.layers.Layer):
    """Pads (N, T, H, W, C) with zeros after the end of T, H and W up to multiples of `multiples`
    (torchvision pads a clip so to a multiple of the patch before its patch embedding)."""

    def __init__(self, multiples, **kwargs):
        super().__init__(**kwargs)
        self.multiples = tuple(int(m) for m in multiples)

    def call(self, x):
        return _pad_end(x, self.multiples, (1, 2, 3))

    def compute_output_shape(self, shape):
        dims = [None if n is None else -(-n // m) * m for n, m in zip(shape[1:4], self.multiples, strict=True)]
        return (shape[0], *dims, shape[4])

    def get_config(self):
        return {**super().get_config(), "multiples": list(self.multiples)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchMerge(keras.layers.Layer):
    """torchvision's PatchMerging before its norm: (N, T, H, W, C) with H and W padded to even, each 2x2
    neighbourhood's cells (0,0), (1,0), (0,1), (1,1) concatenated on channels: (N, T, H/2, W/2, 4C)."""

    def call(self, x):
        x = _pad_end(x, (2, 2), (2, 3))
        return ops.concatenate(
            [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], axis=-1
        )

    def compute_output_shape(self, shape):
        half = [None if n is None else -(-n // 2) for n in shape[2:4]]
        return (shape[0], shape[1], *half, 4 * shape[4])


@keras.saving.register_keras_serializable(package=PACKAGE)
class ShiftedWindowAttention3D(keras.layers.Layer):
    """torchvision's ShiftedWindowAttention3d on (N, T, H, W, C): pad to whole windows, roll by the shift,
    attend within each window (all windows and heads batched in one einsum) with the relative position bias
    gathered through torchvision's index and the shift masks, then undo the roll and the padding.

    `qkv` and `proj` are Keras Dense layers; the bias table is this layer's variable. On an axis no longer
    than the window the window shrinks to it and that axis is not shifted, as in torchvision.
    """

    def __init__(self, channels, heads, window, shift, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.heads = int(channels), int(heads)
        self.window, self.shift = tuple(int(w) for w in window), tuple(int(s) for s in shift)
        self.index = np.asarray(swin3d.relative_position_index(self.window), dtype="int32")
        self.qkv = keras.layers.Dense(3 * self.channels, name="qkv")
        self.proj = keras.layers.Dense(self.channels, name="proj")

    def build(self, shape):
        t, h, w = self.window
        rows = (2 * t - 1) * (2 * h - 1) * (2 * w - 1)
        self.relative_position_bias_table = self.add_weight(
            shape=(rows, self.heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="relative_position_bias_table",
        )
        self.qkv.build((None, None, self.channels))
        self.proj.build((None, None, self.channels))

    def _windows(self, size):
        """The window and shift for this input size (Python ints where the size is known)."""
        windows, shifts = [], []
        for n, k, s in zip(size, self.window, self.shift, strict=True):
            if _static(n):
                windows.append(min(n, k))
                shifts.append(0 if n <= k else s)
            else:
                windows.append(ops.minimum(n, k))
                shifts.append(ops.where(n <= k, 0, s))
        return windows, shifts

    def _bias(self, n):
        """(1, heads, n, n): the table's rows picked by torchvision's index for the first n tokens."""
        index = self.index[:n, :n] if _static(n) else ops.convert_to_tensor(self.index)[:n, :n]
        bias = ops.take(self.relative_position_bias_table, ops.reshape(index, (-1,)), axis=0)
        return ops.expand_dims(ops.transpose(ops.reshape(bias, (n, n, self.heads)), (2, 0, 1)), 0)

    def _mask(self, padded, windows, shifts, dtype):
        """(windows, n, n): 0 within a shift region, swin3d.MASK_VALUE across regions."""
        if _static(*padded, *windows, *shifts):
            labels = [
                np.asarray(swin3d.region_labels(p, k, s)) for p, k, s in zip(padded, windows, shifts, strict=True)
            ]
            xp = np
        else:
            labels = [
                ops.cast(ops.arange(p) >= p - k, "int32") + ops.cast(ops.arange(p) >= p - s, "int32")
                for p, k, s in zip(padded, windows, shifts, strict=True)
            ]
            xp = ops
        grid = xp.reshape(labels[0], (-1, 1, 1)) * 9 + xp.reshape(labels[1], (1, -1, 1)) * 3 + labels[2]
        g = [p // k for p, k in zip(padded, windows, strict=True)]
        grid = xp.reshape(grid, (g[0], windows[0], g[1], windows[1], g[2], windows[2]))
        grid = xp.reshape(xp.transpose(grid, (0, 2, 4, 1, 3, 5)), (-1, windows[0] * windows[1] * windows[2]))
        differ = xp.not_equal(xp.expand_dims(grid, 1), xp.expand_dims(grid, 2))
        mask = xp.where(differ, swin3d.MASK_VALUE, 0.0)
        return ops.cast(ops.convert_to_tensor(mask), dtype)

    def call(self, x):
        shape = ops.shape(x)
        b, size, c = shape[0], shape[1:4], self.channels
        windows, shifts = self._windows(size)
        x = _pad_end(x, tuple(windows), (1, 2, 3))
        padded = [ops.shape(x)[i] for i in (1, 2, 3)]
        shifted = not (_static(*shifts) and not any(shifts))
        if shifted:
            x = _roll(x, shifts, back=False)
        grid = [p // k for p, k in zip(padded, windows, strict=True)]
        n = windows[0] * windows[1] * windows[2]
        # windows (b, T/kt, H/kh, W/kw) of tokens (kt, kh, kw), in two 5-D transposes (LiteRT's have 6 at most)
        x = ops.reshape(x, (b * grid[0], windows[0], grid[1], windows[1], padded[2] * c))
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3, 4)), (-1, windows[0] * windows[1], grid[2], windows[2], c))
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3, 4)), (-1, n, c))
        qkv = ops.reshape(self.qkv(x), (-1, n, 3, self.heads, c // self.heads))
        q = qkv[:, :, 0] * ((c // self.heads) ** -0.5)
        attn = ops.einsum("bqhd,bkhd->bhqk", q, qkv[:, :, 1]) + self._bias(n)
        if shifted:
            mask = ops.expand_dims(ops.expand_dims(self._mask(padded, windows, shifts, attn.dtype), 0), 2)
            attn = ops.reshape(ops.reshape(attn, (b, -1, self.heads, n, n)) + mask, (-1, self.heads, n, n))
        x = ops.einsum("bhqk,bkhd->bqhd", ops.softmax(attn, axis=-1), qkv[:, :, 2])
        x = self.proj(ops.reshape(x, (-1, n, c)))
        x = ops.reshape(x, (-1, grid[2], windows[0] * windows[1], windows[2], c))  # the windows undone
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3, 4)), (-1, grid[1], windows[0], windows[1], padded[2] * c))
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3, 4)), (b, padded[0], padded[1], padded[2], c))
        if shifted:
            x = _roll(x, shifts, back=True)
        return x[:, : size[0], : size[1], : size[2]]

    def compute_output_shape(self, shape):
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "heads": self.heads,
            "window": list(self.window),
            "shift": list(self.shift),
        }
