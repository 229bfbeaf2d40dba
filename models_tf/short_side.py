"""torchvision's short-side resize and centre crop (Swin3D's and MViT's eval transform) as one Keras layer.

`Resizing` needs its output size when the graph is built; here it follows the frames' H x W at run time, as
torchvision's `resize(size=[S])` does: the short side becomes S, the long side `int(S * long / short)`. Only
the centre crop's pixels are computed: bilinear taps as torch's (half-pixel source index from the float32
scale in/out, weights `1 - l` and `l`), width pass then height pass, in plain gathers, multiplies and adds.
Registered, so a `.keras` file holding it loads in safe mode once `vrconvert` is imported.
"""

from __future__ import annotations

import keras
from keras import ops


def resized_size(height, width, short: int):
    """torchvision's output size for `resize(size=[short])` (ints, or tensors for run-time sizes)."""
    if isinstance(height, int) and isinstance(width, int):
        if width <= height:
            return int(short * height / width), short
        return short, int(short * width / height)
    # integer floor division: exact, as Python's int(short * long / short_side) is for any frame size that
    # fits int32, and built into every runtime (float64 is not: LiteRT needs Flex ops for it)
    h, w = ops.cast(height, "int32"), ops.cast(width, "int32")
    long_h = ops.floor_divide(short * h, w)
    long_w = ops.floor_divide(short * w, h)
    tall = width <= height
    return ops.where(tall, long_h, short), ops.where(tall, short, long_w)


@keras.saving.register_keras_serializable(package="vrconvert")
class ShortSideResizeCrop(keras.layers.Layer):
    """(N, T, H, W, C) float32 levels -> the (N, T, crop_h, crop_w, C) centre of the short-side resize."""

    def __init__(self, short: int, crop, **kwargs) -> None:
        super().__init__(**kwargs)
        self.short, self.crop = int(short), tuple(int(c) for c in crop)

    def call(self, x):
        shape = ops.shape(x)
        new_h, new_w = resized_size(shape[2], shape[3], self.short)
        x = self._along(x, new_w, self.crop[1], axis=3)
        return self._along(x, new_h, self.crop[0], axis=2)

    @staticmethod
    def _along(x, size, count: int, axis: int):
        in_size = ops.shape(x)[axis]
        # torchvision's crop offset: round((size - count) / 2), half to even (ops.round is)
        offset = ops.round(ops.cast(size - count, "float32") / 2.0)
        scale = ops.maximum(ops.cast(in_size, "float32") / ops.cast(size, "float32"), 0.0)
        src = ops.maximum(scale * (ops.arange(count, dtype="float32") + offset + 0.5) - 0.5, 0.0)
        last = ops.cast(in_size, "int32") - 1
        i0 = ops.minimum(ops.cast(ops.floor(src), "int32"), last)
        l1 = ops.clip(src - ops.cast(i0, "float32"), 0.0, 1.0)
        i1 = ops.minimum(i0 + 1, last)
        l1 = ops.reshape(l1, [count if a == axis else 1 for a in range(5)])
        return ops.take(x, i0, axis=axis) * (1.0 - l1) + ops.take(x, i1, axis=axis) * l1

    def compute_output_shape(self, shape):
        return (*shape[:2], *self.crop, shape[4])

    def get_config(self) -> dict:
        return {**super().get_config(), "short": self.short, "crop": list(self.crop)}
