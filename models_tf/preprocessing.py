"""torchvision's Kinetics eval transform as built-in Keras layers, so a shipped model takes decoded frames.

uint8 frames (N, T, H, W, 3) of any H x W in, the network's normalised (N, T, 112, 112, 3) clip out, with
no Lambda and no custom object: a `.keras` file loads with plain `keras.models.load_model` (safe mode on)
on every backend, and the graph exports. Step by step, as torchvision's `VideoClassification` does it:

1. `to_float`: uint8 -> float32 (a `Rescaling(1.0)`). The cast comes first because LiteRT's
   RESIZE_BILINEAR takes float or uint8 in and the same type out, never uint8 in and float out.
2. `resize`: bilinear to 128x171, `antialias=False`, half-pixel centres (torch's `align_corners=False`),
   `Resizing` inside `TimeDistributed` (Resizing takes 4-D input only: frames are resized one time step
   at a time; a static T gives a loop-free graph of T 4-D resizes, the form LiteRT converts).
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

import keras
import numpy as np

from vrconvert.converter.arch.spec import Preprocessing

PREFIX = "preprocess_"
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


def kinetics(frames: keras.KerasTensor, preprocessing: Preprocessing | None = None) -> keras.KerasTensor:
    """uint8 frames (N, T, H, W, 3) -> the normalised float32 clip (N, T, crop_h, crop_w, 3)."""
    p = preprocessing or Preprocessing()
    x = levels(frames, p)
    x = keras.layers.Rescaling(1.0 / 255.0, name=f"{PREFIX}scale")(x)
    scale, offset = [1.0 / s for s in p.std], [-m / s for m, s in zip(p.mean, p.std, strict=True)]
    return keras.layers.Rescaling(scale, offset=offset, name=f"{PREFIX}normalize")(x)


def levels(frames: keras.KerasTensor, preprocessing: Preprocessing | None = None) -> keras.KerasTensor:
    """The resized, cropped and rounded frames as float32 uint8 levels (what torchvision holds as uint8)."""
    p = preprocessing or Preprocessing()
    x = keras.layers.Rescaling(1.0, name=f"{PREFIX}to_float")(frames)
    resize = keras.layers.Resizing(
        *p.resize, interpolation="bilinear", antialias=False, crop_to_aspect_ratio=False, name=f"{PREFIX}resize_frame"
    )
    x = keras.layers.TimeDistributed(resize, name=f"{PREFIX}resize")(x)
    rows, cols = (crop_offsets(n, c) for n, c in zip(p.resize, p.crop, strict=True))
    x = keras.layers.Cropping3D(((0, 0), rows, cols), name=f"{PREFIX}crop")(x)
    x = keras.layers.Rescaling(1.0, offset=_MAGIC, name=f"{PREFIX}round_shift")(x)
    x = keras.layers.ReLU(max_value=_MAGIC + 255.0, name=f"{PREFIX}round_clamp")(x)
    x = keras.layers.Rescaling(1.0, offset=-_MAGIC, name=f"{PREFIX}round_unshift")(x)
    return keras.layers.ReLU(name=f"{PREFIX}round_floor")(x)  # >= 0 always; keeps the unshift unfused


def transform_model(preprocessing: Preprocessing | None = None, frames: int | None = None, *, normalized=True):
    """The transform alone as a Keras model (for measuring it): the normalised clip, or the uint8 levels."""
    inputs = frames_input(frames)
    outputs = kinetics(inputs, preprocessing) if normalized else levels(inputs, preprocessing)
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
