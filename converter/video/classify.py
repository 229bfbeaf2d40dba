"""Classify a real video with a converted model (Keras file) or a torch checkpoint.

N clips spread evenly over the video, each preprocessed exactly as torchvision's Kinetics-400 eval
transform; the softmax probabilities are averaged over the clips. The Keras path never imports torch
(unless Keras itself runs on its torch backend), the torch path never imports Keras.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter import backends, video
from vrconvert.converter.arch import spec
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import keras_io
from vrconvert.converter.formats.checkpoint import TORCH_SUFFIXES
from vrconvert.converter.video.preprocess import kinetics_eval


@dataclass
class Label:
    rank: int
    index: int
    label: str
    probability: float


@dataclass
class Prediction:
    video: str
    model: str
    framework: str
    arch: str
    num_classes: int
    clips: list[str]
    top: list[Label] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def probabilities(outputs: np.ndarray, variant: spec.Arch | None) -> np.ndarray:
    """Class probabilities from a model's outputs: a softmax over logits, or the outputs as they are
    when the network's head already ends in softmax (the 3D-ResNet-Builder's nets), never twice."""
    if variant is not None and variant.head_activation == "softmax":
        return outputs.astype(np.float64)
    return softmax(outputs)


def _runner(model_path: Path, arch: str | None, num_classes: int | None):
    """(arch, framework name, clip layout, function clip -> logits) for a Keras file or a torch checkpoint."""
    if keras_io.keras_suffix(model_path):
        import keras

        from vrconvert.models_tf import weights as keras_weights  # lazy: Keras
        from vrconvert.models_tf.preprocessing import has_preprocessing, predictor

        variant, model = keras_weights.load_keras_model(model_path, arch, num_classes)
        layout = "frames" if has_preprocessing(model) else "NTHWC"  # frames: its own transform, raw in
        return variant, f"keras ({keras.backend.backend()})", layout, predictor(model)
    if model_path.name.lower().endswith(TORCH_SUFFIXES):
        import torch

        from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state

        ckpt, variant = load_state(model_path, arch)
        model = torch_model_from_state(variant, ckpt.state)

        def run(clip: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(clip)).numpy()

        return variant, "torch", "NCTHW", run
    raise InputError(
        f"{model_path}: expected a Keras file (.keras, .h5, .weights.h5) or a torch checkpoint "
        f"({', '.join(TORCH_SUFFIXES)})"
    )


def classify(
    video_path: str | Path,
    model_path: str | Path,
    *,
    top: int = 5,
    clips: int = 1,
    frames: int | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
) -> Prediction:
    """The `top` classes of a video, probabilities averaged over `clips` evenly spaced clips."""
    start = time.perf_counter()
    video_path, model_path = Path(video_path), Path(model_path)
    if top < 1 or clips < 1:
        raise InputError("--top and --clips must be at least 1")
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such file")
    # the framework the model needs is checked first (one line naming its extra); then the video is decoded, so
    # a bad video fails before a model is loaded; the model's own transform comes after (a model that
    # preprocesses itself gets the decoded frames)
    backends.require("keras" if keras_io.keras_suffix(model_path) else "torch")
    frames = frames or spec.Preprocessing().frames
    raw = keras_io.keras_suffix(model_path) is not None and keras_io.takes_frames(model_path)
    batch = video.load_clips(video_path, frames=frames, clips=clips, raw=True)
    variant, framework, layout, run = _runner(model_path, arch, num_classes)
    if (layout == "frames") != raw:
        raise InputError(f"{model_path}: its config and its layers disagree on whether it takes raw frames")
    mean = np.mean(
        [
            probabilities(run(c.array if raw else kinetics_eval(c.array[0], variant.preprocessing, layout)), variant)[0]
            for c in batch
        ],
        axis=0,
    )
    names = spec.category_names(variant)
    order = np.argsort(-mean, kind="stable")[:top]
    labels = [
        Label(rank + 1, int(i), names[i] if names else f"class {i}", float(mean[i])) for rank, i in enumerate(order)
    ]
    return Prediction(
        str(video_path),
        str(model_path),
        framework,
        variant.name,
        variant.num_classes,
        [c.name for c in batch],
        labels,
        time.perf_counter() - start,
    )
