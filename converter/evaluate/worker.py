"""One video through both models: `evaluate_one(item, settings) -> record`, the only work a worker does.

The models load once per process (the first call; `Evaluator` holds them) and each call is a pure
function of the video and the settings. Clips are sampled and averaged exactly as `predict` does
(`--clips N` evenly spaced clips, softmax probabilities averaged); parity is the validator's one
comparison (`parity.compare`) over the per-clip logits of both models. A video that cannot be read
becomes a failed record with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter import parity
from vrconvert.converter.arch import spec
from vrconvert.converter.errors import InputError
from vrconvert.converter.evaluate.sources import Item, label_index
from vrconvert.converter.video.classify import probabilities

TOP = 5
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs, picklable: the model files, the clip sampling and the class list."""

    torch_file: str | None
    keras_file: str | None
    clips: int = 1
    frames: int = 16
    size: tuple[int, int] = (112, 112)  # the centre crop; the resize keeps Kinetics' 128x171 : 112x112 ratio
    tolerance: float = parity.DEFAULT_TOLERANCE
    keras_backend: str = "tensorflow"
    classes: tuple[str, ...] = ()  # the dataset's labels, sorted (used when the model names no classes)
    threads: int = 1

    @property
    def preprocessing(self) -> spec.Preprocessing:
        base = spec.Preprocessing()
        h, w = self.size
        resize = (round(h * base.resize[0] / base.crop[0]), round(w * base.resize[1] / base.crop[1]))
        return spec.Preprocessing(resize=resize, crop=(h, w), frames=self.frames)

    def identity(self) -> dict:
        """The settings a resumed run must share (threads and class order of a re-listed source aside)."""
        keep = ("torch_file", "keras_file", "clips", "frames", "size", "keras_backend")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k in keep}


def limit_threads(threads: int) -> None:
    """This process's share of the cores, for every pool that would otherwise take them all. The
    variables reach libraries not yet started; torch and TensorFlow are told directly as well."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # fixed once parallel work ran in this process
        torch.set_num_interop_threads(1)
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow already initialised in this process (e.g. a test runs in-process)


class Evaluator:
    """Both models (or one), loaded once, and the function from a video to its record."""

    def __init__(self, settings: Settings):
        from vrconvert.converter.parity import runtime

        os.environ.setdefault("KERAS_BACKEND", settings.keras_backend)
        self.settings = settings
        self.runtime = runtime.prepare("cpu")
        self.arch = self.torch_model = self.keras_model = self.keras_run = None
        if settings.torch_file:
            from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state

            ckpt, self.arch = load_state(settings.torch_file)
            self.torch_model = torch_model_from_state(self.arch, ckpt.state)
        if settings.keras_file:
            from vrconvert.models_tf import weights as keras_weights  # lazy: Keras
            from vrconvert.models_tf.infer import predictor

            with self.runtime.keras_scope():
                variant, self.keras_model = keras_weights.load_keras_model(Path(settings.keras_file))
            if self.arch and (self.arch.name, self.arch.num_classes) != (variant.name, variant.num_classes):
                raise InputError(
                    f"the two files hold different networks: {settings.torch_file} is {self.arch.name} with "
                    f"{self.arch.num_classes} classes, {settings.keras_file} is {variant.name} with "
                    f"{variant.num_classes} classes"
                )
            self.arch = variant
            self.keras_run = predictor(self.keras_model)
        self.names = spec.category_names(self.arch)
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def _clips(self, item: Item):
        from vrconvert.converter import video

        s = self.settings
        return video.load_clips(
            item.path, frames=s.frames, clips=s.clips, preprocessing=s.preprocessing, layout="NCTHW"
        )

    def logits(self, clip: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, float, float]:
        """(torch logits, Keras logits, torch s, Keras s) for one clip in torch layout."""
        import torch

        t_torch = t_keras = 0.0
        expected = got = None
        if self.torch_model is not None:
            start = time.perf_counter()
            with torch.no_grad():
                expected = self.torch_model(torch.from_numpy(clip)).numpy()
            t_torch = time.perf_counter() - start
        if self.keras_run is not None:
            start = time.perf_counter()
            with self.runtime.keras_scope():
                got = self.keras_run(np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1)))
            t_keras = time.perf_counter() - start
        return expected, got, t_torch, t_keras

    def top(self, logits: list[np.ndarray]) -> list[dict]:
        """`predict`'s answer: softmax probabilities averaged over the clips, the best `TOP` classes."""
        with np.errstate(all="ignore"):  # NaN or Inf logits: the comparison counts them as a failure
            mean = np.mean([probabilities(x, self.arch)[0] for x in logits], axis=0)
        order = np.argsort(-mean, kind="stable")[:TOP]
        return [
            {"index": int(i), "name": self.names[i] if self.names else None, "probability": float(mean[i])}
            for i in order
        ]

    def __call__(self, item: Item) -> dict:
        record = {
            "key": item.key,
            "video": item.path,
            "label": item.label,
            "label_index": label_index(item.label, self.names, self.settings.classes),
            "ok": False,
            "error": None,
            "worker": self.where,
        }
        start = time.perf_counter()
        try:
            clips = self._clips(item)
        except (InputError, ValueError, OSError, MemoryError) as exc:
            text = str(exc).strip()
            record["error"] = text.splitlines()[0] if text else type(exc).__name__
            record["seconds"] = {"decode": time.perf_counter() - start}
            return record
        seconds = {"decode": time.perf_counter() - start, "torch": 0.0, "keras": 0.0}
        torch_out, keras_out = [], []
        for clip in clips:
            expected, got, t_torch, t_keras = self.logits(clip.array)
            seconds["torch"] += t_torch
            seconds["keras"] += t_keras
            torch_out += [] if expected is None else [expected]
            keras_out += [] if got is None else [got]
        record.update(ok=True, clips=[c.name for c in clips], seconds=seconds)
        record["torch"] = {"top": self.top(torch_out)} if torch_out else None
        record["keras"] = {"top": self.top(keras_out)} if keras_out else None
        if torch_out and keras_out:
            case = parity.compare(item.key, np.concatenate(torch_out), np.concatenate(keras_out))
            per_clip = [
                parity.compare(c.name, e, g).max_rel_diff for c, e, g in zip(clips, torch_out, keras_out, strict=True)
            ]
            t, k = record["torch"]["top"], record["keras"]["top"]
            record.update(
                max_abs_diff=case.max_abs_diff,
                max_rel_diff=case.max_rel_diff,
                cosine=case.cosine,
                nonfinite=case.nonfinite,  # NaN or Inf in either side's logits: never agreement
                clips_top1_agree=case.top1_agree,
                clips_top5_agree=case.top5_agree,
                top1_agree=not case.nonfinite and t[0]["index"] == k[0]["index"],
                top5_agree=not case.nonfinite and {x["index"] for x in t} == {x["index"] for x in k},
                worst_clip=int(np.argmax(per_clip)),
            )
        return record

    def layer_profile(self, item: Item, clip_index: int) -> dict:
        """The validator's per-layer differences on one clip of `item`, in network order."""
        from vrconvert.converter.parity import validate as validator

        clip = self._clips(item)[clip_index]
        diffs = validator.layer_diffs(self.arch, self.torch_model, self.keras_model, clip.array, self.runtime)
        first = validator.first_divergence(diffs, self.settings.tolerance, clip.name)
        return {
            "video": item.key,
            "input": clip.name,
            "tolerance": self.settings.tolerance,
            "layers": [asdict(d) for d in diffs],
            "first_divergence": first.torch_module if first else None,
        }


_EVALUATORS: dict[Settings, Evaluator] = {}


def evaluator(settings: Settings) -> Evaluator:
    """This process's models for `settings`, loaded on first use."""
    if settings not in _EVALUATORS:
        _EVALUATORS[settings] = Evaluator(settings)
    return _EVALUATORS[settings]


def evaluate_one(item: Item, settings: Settings) -> dict:
    """The record of one video: both models' top classes, parity figures, or the reason it failed."""
    return evaluator(settings)(item)
