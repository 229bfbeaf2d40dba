"""torchvision's Kinetics eval transform as built-in Keras layers, so a shipped model takes decoded frames.

uint8 frames (N, T, H, W, 3) of any H x W in, the network's normalised (N, T, 112, 112, 3) clip out, with
no Lambda and no custom object: a `.keras` file loads with plain `keras.models.load_model` (safe mode on)
on every backend, and the graph exports. Step by step, as torchvision's `VideoClassification` does it:

1. `to_float`: uint8 -> float32 (a `Rescaling(1.0)`). The cast comes first because LiteRT's
   RESIZE_BILINEAR takes float or uint8 in and the same type out, never uint8 in and float out.
2. `resize`: bilinear to 128x171, `antialias=False`, half-pixel centres (torch's `align_corners=False`),
   `Resizing` inside `TimeDistributed` (Resizing takes 4-D input only: frames are resized one time step
   at a time; a static T gives a loop-free graph of T 4-D resizes, the form LiteRT converts).
   Exported artifacts take `TapsResize` instead (below): each runtime's own RESIZE kernel rounds exact
   half-way values its own way, which put 2.6e-4 to 7.5e-4 of the uint8 levels one off torchvision's.
3. `crop`: `Cropping3D` at torchvision's offsets, `round((in - out) / 2)` (rows 8, cols 30 of 128x171;
   Keras' `CenterCrop` would take col 29, and refuses 5-D input).
4. `round_*`: round half to even and clamp to 0..255, as torchvision's cast back to uint8: adding 2**23
   rounds a float32 in [0, 2**23) to an integer, half to even (IEEE), and subtracting it is exact.
   The clamp to 255 sits between the two additions so that no graph optimiser may fold them into one
   (ONNX and OpenVINO optimisers fuse adjacent additions: the rounding would vanish silently).
5. `scale` and `normalize`: /255, then (x - mean) / std as x * (1 / std) + (-mean / std), both
   `Rescaling` with per-channel constants in the config. (`Normalization` would do, but ONNX exports
   turn its mean and variance into extra graph inputs.) No layer owns a variable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import keras
import numpy as np

from vrconvert.converter.arch.layers import PREPROCESSING_PREFIX
from vrconvert.converter.arch.spec import Preprocessing

PREFIX = PREPROCESSING_PREFIX
FRAMES = "frames"  # the input's name: what a preprocessing model is fed
_MAGIC = 2.0**23  # float32's first power of two with no fractional bits: x + 2**23 is rounded to an integer


def crop_offsets(resized: int, crop: int) -> tuple[int, int]:
    """(before, after) of a centre crop, as torchvision's `center_crop` rounds them (Python's round)."""
    if resized < crop:
        raise ValueError(f"cannot crop {crop} from {resized}")
    before = round((resized - crop) / 2.0)
    return before, resized - crop - before


def frames_input(frames: int | None = None) -> keras.KerasTensor:
    """The uint8 input (N, T, H, W, 3): any H x W; T fixed when `frames` is given."""
    return keras.Input(shape=(frames, None, None, 3), dtype="uint8", name=FRAMES)


def kinetics(
    frames: keras.KerasTensor, preprocessing: Preprocessing | None = None, resize: Resize = "layer"
) -> keras.KerasTensor:
    """uint8 frames (N, T, H, W, 3) -> the normalised float32 clip (N, T, crop_h, crop_w, 3)."""
    p = preprocessing or Preprocessing()
    x = levels(frames, p, resize)
    x = keras.layers.Rescaling(1.0 / 255.0, name=f"{PREFIX}scale")(x)
    scale, offset = [1.0 / s for s in p.std], [-m / s for m, s in zip(p.mean, p.std, strict=True)]
    return keras.layers.Rescaling(scale, offset=offset, name=f"{PREFIX}normalize")(x)


class TapsResize(keras.layers.Layer):
    """Bilinear resize of (N, T, H, W, C) float32 as explicit gathers, products and sums (no RESIZE op).

    For exported artifacts: each runtime's own bilinear kernel orders its float32 arithmetic its own way,
    and where the exact value lies half-way between two uint8 levels (often, on a non-dyadic scale such
    as 320 -> 171) that order decides the level, so each runtime's RESIZE differs from torchvision on some
    values (benchmarks/preprocessing.md). Here the taps are
    torch's (half-pixel source index, weights `1 - l` and `l`, computed from the run-time H and W in
    float32) and so is the order (width pass, then height pass), in plain multiplies and adds that every
    runtime rounds alike; torch's kernel fuses each multiply-add, which leaves a few values one level off
    in every runtime, as Keras' `Resizing` on TensorFlow does.
    """

    def __init__(self, height: int, width: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.height, self.width = height, width

    def call(self, x):
        x = self._along(x, self.width, axis=3)
        return self._along(x, self.height, axis=2)

    @staticmethod
    def _along(x, size: int, axis: int):
        ops = keras.ops
        in_size = ops.shape(x)[axis]
        # torch's float32 steps: scale = in / out, src = scale * (j + 0.5) - 0.5. The maximum (a no-op:
        # scale > 0) keeps graph optimisers from folding `(in / out) * c` into `in * (c / out)`, which
        # rounds differently (TensorFlow's did, for the ONNX and OpenVINO exports)
        scale = ops.maximum(ops.cast(in_size, "float32") / float(size), 0.0)
        src = ops.maximum(scale * (ops.arange(size, dtype="float32") + 0.5) - 0.5, 0.0)
        last = ops.cast(in_size, "int32") - 1
        i0 = ops.minimum(ops.cast(ops.floor(src), "int32"), last)
        l1 = ops.clip(src - ops.cast(i0, "float32"), 0.0, 1.0)
        i1 = ops.minimum(i0 + 1, last)
        shape = [size if a == axis else 1 for a in range(5)]
        l1 = ops.reshape(l1, shape)
        l0 = 1.0 - l1
        return ops.take(x, i0, axis=axis) * l0 + ops.take(x, i1, axis=axis) * l1

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], self.height, self.width, input_shape[4])

    def get_config(self) -> dict:
        return {**super().get_config(), "height": self.height, "width": self.width}


Resize = Literal["layer", "taps"]


def levels(
    frames: keras.KerasTensor, preprocessing: Preprocessing | None = None, resize: Resize = "layer"
) -> keras.KerasTensor:
    """The resized, cropped and rounded frames as float32 uint8 levels (what torchvision holds as uint8).

    `resize="layer"`: Keras' `Resizing` (built-in layers only: what a `.keras` file holds); `"taps"`:
    `TapsResize`, for exported artifacts, whose runtimes' own resize kernels round ties their own way."""
    p = preprocessing or Preprocessing()
    x = keras.layers.Rescaling(1.0, name=f"{PREFIX}to_float")(frames)
    if len(p.resize) == 1:  # the short side to p.resize[0] (Swin3D's): the size follows the frames'
        from vrconvert.models_tf.short_side import ShortSideResizeCrop

        x = ShortSideResizeCrop(p.resize[0], p.crop, name=f"{PREFIX}resize")(x)
        return _rounded(x)
    if resize == "taps":
        x = TapsResize(*p.resize, name=f"{PREFIX}resize")(x)
    else:
        layer = keras.layers.Resizing(
            *p.resize,
            interpolation="bilinear",
            antialias=False,
            crop_to_aspect_ratio=False,
            name=f"{PREFIX}resize_frame",
        )
        x = keras.layers.TimeDistributed(layer, name=f"{PREFIX}resize")(x)
    rows, cols = (crop_offsets(n, c) for n, c in zip(p.resize, p.crop, strict=True))
    x = keras.layers.Cropping3D(((0, 0), rows, cols), name=f"{PREFIX}crop")(x)
    return _rounded(x)


def _rounded(x):
    """Round half to even and clamp to 0..255 (see the module's docstring, step 4)."""
    x = keras.layers.Rescaling(1.0, offset=_MAGIC, name=f"{PREFIX}round_shift")(x)
    x = keras.layers.ReLU(max_value=_MAGIC + 255.0, name=f"{PREFIX}round_clamp")(x)
    x = keras.layers.Rescaling(1.0, offset=-_MAGIC, name=f"{PREFIX}round_unshift")(x)
    return keras.layers.ReLU(name=f"{PREFIX}round_floor")(x)  # >= 0 always; keeps the unshift unfused


def transform_model(
    preprocessing: Preprocessing | None = None, frames: int | None = None, *, normalized=True, resize: Resize = "layer"
):
    """The transform alone as a Keras model (for measuring it): the normalised clip, or the uint8 levels."""
    inputs = frames_input(frames)
    outputs = kinetics(inputs, preprocessing, resize) if normalized else levels(inputs, preprocessing, resize)
    return keras.Model(inputs, outputs, name="kinetics_preprocessing")


def has_preprocessing(model: keras.Model) -> bool:
    """Whether a Keras model takes raw uint8 frames (its layers are named by this module)."""
    return any(layer.name.startswith(PREFIX) for layer in model.layers)


def split(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(the transform, the network) of a preprocessing model: the same layers, cut at the normalisation."""
    clip = model.get_layer(f"{PREFIX}normalize").output
    return keras.Model(model.inputs, clip, name="preprocessing"), keras.Model(clip, model.outputs, name=model.name)


def predictor(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """`models_tf.infer.predictor` for a model of either input contract: a preprocessing model runs its
    transform as Keras runs it, then its network on the backend's fast path (frames in, logits out)."""
    from vrconvert.models_tf import infer

    if not has_preprocessing(model):
        return infer.predictor(model)
    transform, network = split(model)
    run_network = infer.predictor(network)
    if keras.backend.backend() == "torch":  # infer's torch path re-lays a network channels-first
        return lambda frames: run_network(keras.ops.convert_to_numpy(transform(frames, training=False)))
    run_transform = infer.predictor(transform)
    return lambda frames: run_network(run_transform(frames))
