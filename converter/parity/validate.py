"""The parity validator: do a torch model and a Keras model compute the same function, and if not,
where do they part?

1. Both models run on the same clips (seeded random ones, the packaged real clip, the user's videos)
   and their logits are compared: max absolute and relative difference (relative to the largest
   |logit|), cosine, top-1 and top-5 agreement, the time each side took.
2. When a clip fails, both models run once more on it, keeping the output of every layer record
   (stem, every conv, BatchNorm, ReLU, residual add, pooling, head); the first record whose output
   differs by more than the tolerance (relative to that layer's largest |activation|) is named, as
   torch module and Keras layer, with the figures of the records around it.

`torch_to_keras` checks its output with the same functions before it writes anything.
"""

from __future__ import annotations

import importlib.util
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter import parity
from vrconvert.converter.arch import folding, swin3d
from vrconvert.converter.arch.families import Variant, expand
from vrconvert.converter.arch.layers import keras_name
from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state
from vrconvert.converter.errors import InputError, ParityError
from vrconvert.converter.parity.runtime import Runtime, prepare

CONTEXT = 2  # records shown before and after the first divergence
# On raw frames the transform's uint8 rounding can land on the other side for a few values (each runtime
# orders its resize arithmetic its own way), each moving the logits slightly: the end-to-end bound, the
# default whenever the clips are frames (benchmarks/preprocessing.md has the measurements).
FRAMES_TOLERANCE = 1e-4


def default_tolerance(raw: bool) -> float:
    return FRAMES_TOLERANCE if raw else parity.DEFAULT_TOLERANCE


@dataclass
class LayerDiff:
    """One layer record's outputs compared (relative to the torch side's largest |activation|)."""

    torch_module: str
    keras_layer: str
    op: str
    max_abs_diff: float
    max_rel_diff: float


@dataclass
class Divergence:
    """The first record that differs beyond tolerance, on `input`, with its neighbours' figures."""

    input: str
    torch_module: str
    keras_layer: str
    op: str
    max_abs_diff: float
    max_rel_diff: float
    before: list[LayerDiff] = field(default_factory=list)
    after: list[LayerDiff] = field(default_factory=list)


@dataclass
class Report:
    arch: str
    num_classes: int
    runtime: Runtime
    tolerance: float
    cases: list[parity.Case]
    first_divergence: Divergence | None = None
    layers: list[LayerDiff] | None = None  # every record on the worst clip, when localised or profiled
    torch_file: str | None = None
    keras_file: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # load, compare (the cases), localise

    @property
    def passed(self) -> bool:
        return all(c.passed(self.tolerance) for c in self.cases)

    @property
    def nonfinite(self) -> int:
        """NaN and Inf values in the logits of every case, both sides (any is a failure)."""
        return sum(c.nonfinite for c in self.cases)

    @property
    def worst(self) -> parity.Case:
        return max(self.cases, key=lambda c: c.max_rel_diff)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "nonfinite": self.nonfinite,
            **self.runtime.as_dict(),
            "arch": self.arch,
            "num_classes": self.num_classes,
            "torch_file": self.torch_file,
            "keras_file": self.keras_file,
            "seconds": self.seconds,
            "cases": [c.as_dict() for c in self.cases],
            "first_divergence": asdict(self.first_divergence) if self.first_divergence else None,
        }


def clips_for(
    *,
    frames: int = 16,
    size: tuple[int, int] = (112, 112),
    random: int = 1,
    sample: bool = True,
    videos: Sequence[str | Path] = (),
    raw: bool = False,
    preprocessing=None,
) -> dict[str, np.ndarray]:
    """The validation inputs, by name, in torch layout (N, C, T, H, W): `random` seeded normal clips
    of `size`, the packaged real clip and one centred clip of each video (`preprocessing`, the model's
    eval transform; default Kinetics' for the ResNets). With `raw`, uint8 frames (N, T, H, W, 3) instead,
    for models that preprocess themselves: seeded uniform frames of `size` and the videos' decoded frames."""
    from vrconvert.converter import video

    transform = {} if preprocessing is None else {"preprocessing": preprocessing}

    clips = {
        f"random{' frames' if raw else ''}(seed={seed}, {frames}x{size[0]}x{size[1]})": (
            random_frames(seed, frames, size) if raw else parity.random_clip(seed, frames, size)
        )
        for seed in range(random)
    }
    for path in ([video.SAMPLE_CLIP] if sample else []) + [Path(v) for v in videos]:
        clip = video.load_clips(path, frames=frames, layout="NCTHW", raw=raw, **transform)[0]
        clips[clip.name if path == video.SAMPLE_CLIP else f"{path}[{clip.start_frame}:{clip.start_frame + frames}]"] = (
            clip.array
        )
    return clips


def default_clips(
    *,
    frames: int = 16,
    size: tuple[int, int] = (112, 112),
    raw: bool = False,
    videos: Sequence[str | Path] = (),
    fixed: bool = False,
    sample: bool = True,
    preprocessing=None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The checks' default inputs and notes on what was left out: one seeded random clip of frames x size,
    the packaged real clip (`sample`) and each of `videos`, transformed by `preprocessing` (the model's;
    default Kinetics' for the ResNets). A `fixed`-shape model (an exported artifact) takes real clips only
    at the transform's crop; real clips need PyAV."""
    notes = []
    real = sample or bool(videos)
    crop = tuple(preprocessing.crop) if preprocessing is not None else (112, 112)
    if real and fixed and not raw and tuple(size) != crop:
        notes.append(
            f"the real clips are {crop[0]}x{crop[1]}; a {size[0]}x{size[1]} artifact is checked on the random clip only"
        )
        real = False
    elif real and importlib.util.find_spec("av") is None:
        notes.append("the real-clip check needs PyAV (pip install 'vrconvert[video]'); random clip only")
        real = False
    if videos and not real:
        raise InputError("--video needs PyAV" + ("" if raw else f" and a {crop[0]}x{crop[1]} input (the model's crop)"))
    clips = clips_for(
        frames=frames, size=size, random=1, sample=real and sample, videos=videos, raw=raw, preprocessing=preprocessing
    )
    return clips, notes


def fit_clips(arch, clips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`clips` as a network whose weights fix its input size (MViT's `clip`) can take them: a seeded
    random clip is drawn again, same seed, at that size; the packaged real clip is decoded again through
    the network's own transform; any other clip of another size is left out, with a warning."""
    fixed = getattr(arch, "clip", None)
    if fixed is None:
        return clips
    from vrconvert.converter import video

    t, h, w = fixed
    fitted = {}
    for name, clip in clips.items():
        if clip.dtype == np.uint8 or tuple(clip.shape[2:]) == fixed:
            fitted[name] = clip
        elif seed := re.fullmatch(r"random\(seed=(\d+), [^)]*\)", name):
            fitted[f"random(seed={seed[1]}, {t}x{h}x{w})"] = parity.random_clip(int(seed[1]), t, (h, w), len(clip))
        elif name.startswith(f"{video.SAMPLE_CLIP.name}[") and h == w == arch.preprocessing.crop[0]:
            sample = video.load_clips(video.SAMPLE_CLIP, frames=t, preprocessing=arch.preprocessing, layout="NCTHW")
            fitted[sample[0].name] = sample[0].array
        else:
            warnings.warn(f"{name} left out: {arch.name} takes {t}x{h}x{w} clips only", stacklevel=3)
    return fitted


def require(report: Report, what: str = "") -> None:
    """The one parity gate: a failed report becomes a `ParityError` that names the worst input, the first
    diverging layer where it was localised, and that nothing was written."""
    if report.passed:
        return
    where = report.first_divergence
    place = f"; first divergence at {where.torch_module} / {where.keras_layer}" if where else ""
    if report.nonfinite:
        bad = next(c for c in report.cases if c.nonfinite)
        raise ParityError(
            f"parity failed: {what + ' ' if what else ''}{report.nonfinite} NaN/Inf values in the logits "
            f"(first on {bad.input}){place}; nothing was written"
        )
    raise ParityError(
        f"parity failed: {what + ' ' if what else ''}max relative difference {report.worst.max_rel_diff:.2e} > "
        f"{report.tolerance:g} on {report.worst.input}{place}; nothing was written"
    )


def random_frames(seed: int, frames: int = 16, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Seeded uniform uint8 frames (1, T, H, W, 3), as a decoder gives them (noise: the hardest case
    for the transform's rounding)."""
    return np.random.default_rng(seed).integers(0, 256, (1, frames, *size, 3), dtype=np.uint8)


def _keras_input(clip: np.ndarray) -> np.ndarray:
    """The Keras side's input: raw uint8 frames as they are (both sides take NTHWC), else the transpose."""
    return clip if clip.dtype == np.uint8 else np.ascontiguousarray(clip.transpose(0, 2, 3, 4, 1))


def run_cases(torch_model, keras_run, clips: dict[str, np.ndarray], runtime: Runtime) -> Iterator[parity.Case]:
    """Runs both models on every clip (torch layout in; the Keras side gets the transpose; uint8 frames
    go to both sides as they are)."""
    import torch

    device = runtime.torch_device()
    for name, clip in clips.items():
        x = torch.from_numpy(clip).to(device)
        start = time.perf_counter()
        with torch.no_grad():
            expected = torch_model(x).cpu().numpy()
        t_torch = time.perf_counter() - start
        start = time.perf_counter()
        with runtime.keras_scope():
            got = keras_run(_keras_input(clip))
        yield parity.compare(name, expected, got, t_torch, time.perf_counter() - start)


def layer_diffs(arch: Variant, torch_model, keras_model, clip: np.ndarray, runtime: Runtime) -> list[LayerDiff]:
    """Every layer record's output on `clip`, torch vs Keras, in network order."""
    import keras
    import torch

    from vrconvert.models_tf import fold
    from vrconvert.models_tf.preprocessing import predictor

    channels_last = isinstance(arch, swin3d.Swin3D)  # its twin runs channels-last after the patch embedding
    if channels_last:
        from vrconvert.models_tf.swin3d import output_layer

        pairs = [(r.name, output_layer(r), r.op) for r in swin3d.expand(arch)]
    elif fold.is_folded(keras_model):  # a folded conv's output is its BatchNorm's in torch
        pairs = folding.probe_pairs(arch)
    else:
        pairs = [(r.name, keras_name(r.name), r.op) for r in expand(arch)]
    with runtime.keras_scope():
        probe = keras.Model(keras_model.inputs, [keras_model.get_layer(name).output for _, name, _ in pairs])
        got = predictor(probe)(_keras_input(clip))
    with torch.no_grad():
        values = torch_model.run(torch.from_numpy(clip).to(runtime.torch_device()), keep=[t for t, _, _ in pairs])
    diffs = []
    for (module, layer, op), keras_out in zip(pairs, got, strict=True):
        expected = values.pop(module).cpu().numpy()
        if expected.ndim == 5 and not channels_last:
            expected = expected.transpose(0, 2, 3, 4, 1)
        keras_out = np.asarray(keras_out)
        if parity.nonfinite(expected) or parity.nonfinite(keras_out):  # NaN or Inf: diverged, not equal
            diffs.append(LayerDiff(module, layer, op, np.inf, np.inf))
            continue
        with np.errstate(all="ignore"):
            diff = float(np.abs(expected.astype(np.float64) - keras_out).max())
            scale = max(float(np.abs(expected).max()), np.finfo(np.float32).tiny)
        diffs.append(LayerDiff(module, layer, op, diff, diff / scale))
    return diffs


def first_divergence(diffs: list[LayerDiff], tolerance: float, input_name: str) -> Divergence | None:
    for i, d in enumerate(diffs):
        if d.max_rel_diff > tolerance:
            return Divergence(
                input_name,
                d.torch_module,
                d.keras_layer,
                d.op,
                d.max_abs_diff,
                d.max_rel_diff,
                diffs[max(0, i - CONTEXT) : i],
                diffs[i + 1 : i + 1 + CONTEXT],
            )
    return None


def check_models(
    arch: Variant,
    torch_model,
    keras_model,
    clips: dict[str, np.ndarray],
    runtime: Runtime,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    progress=None,
    profile: bool = False,
) -> Report:
    """Compares the two in-memory models on `clips`; localises the first divergence on the worst clip.

    `progress`, if given, wraps the iterator of cases (e.g. a progress bar of `len(clips)` steps);
    `profile` keeps every layer's figures on the worst clip even when the logits pass (for a report).
    """
    from vrconvert.models_tf.preprocessing import has_preprocessing, predictor

    if has_preprocessing(keras_model) != all(c.dtype == np.uint8 for c in clips.values()):
        wanted = "uint8 frames (N, T, H, W, 3)" if has_preprocessing(keras_model) else "normalised float32 clips"
        raise InputError(f"the Keras model takes {wanted}; compare it on those")

    def localise(torch_model, clip):
        return layer_diffs(arch, torch_model, keras_model, clip, runtime)

    return check_runner(
        arch, torch_model, predictor(keras_model), clips, runtime, tolerance, progress, localise, profile
    )


def check_conversion(
    arch: Variant, state: dict[str, np.ndarray], keras_model, clips: dict[str, np.ndarray], tolerance: float
) -> Report:
    """The post-conversion gate: `keras_model` against torch's model of the same `state` on the CPU; a
    `ParityError` (nothing is written) unless every clip agrees within `tolerance`."""
    report = check_models(arch, torch_model_from_state(arch, state), keras_model, clips, prepare("cpu"), tolerance)
    require(report)
    return report


def check_runner(
    arch: Variant,
    torch_model,
    run,
    clips: dict[str, np.ndarray],
    runtime: Runtime,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    progress=None,
    localise=None,
    profile: bool = False,
) -> Report:
    """The one comparison: the torch model against `run`, anything that maps NTHWC clips to logits (a
    Keras model's predictor, an exported artifact's runtime). `localise(torch_model, clip)`, if given,
    returns the per-layer figures on the worst clip when a case fails. Clips of uint8 frames are for a
    `run` that preprocesses itself: the torch model then gets torchvision's transform in front. With
    `profile`, the per-layer figures are computed on the worst clip even when every case passes."""
    start = time.perf_counter()
    clips = fit_clips(arch, clips)
    if clips and all(c.dtype == np.uint8 for c in clips.values()):  # raw frames: torchvision's transform first
        from vrconvert.models_torch.build import with_preprocessing

        torch_model = with_preprocessing(torch_model)
    torch_model = torch_model.to(runtime.torch_device()).eval()
    cases_iter = run_cases(torch_model, run, clips, runtime)
    if progress is not None:
        with progress(cases_iter) as bar:
            cases = list(bar)
    else:
        cases = list(cases_iter)
    report = Report(arch.name, arch.num_classes, runtime, tolerance, cases)
    report.seconds["compare"] = time.perf_counter() - start
    if localise is not None and (profile or not report.passed):
        start = time.perf_counter()
        worst = report.worst.input
        report.layers = localise(torch_model, clips[worst])
        if not report.passed:
            report.first_divergence = first_divergence(report.layers, tolerance, worst)
        report.seconds["localise"] = time.perf_counter() - start
    return report


def validate_files(
    torch_file: str | Path,
    keras_file: str | Path,
    *,
    clips: dict[str, np.ndarray] | Callable[[Variant], dict[str, np.ndarray]],
    runtime: Runtime,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    progress=None,
    profile: bool = False,
) -> Report:
    """`vrconvert validate`: a torch checkpoint and a Keras file of the same network, compared on `clips`
    (or on what `clips(variant)` returns, for inputs that depend on the network, such as its crop)."""
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    start = time.perf_counter()
    ckpt, variant = load_state(torch_file)
    with runtime.keras_scope():
        keras_variant, keras_model = keras_weights.load_keras_model(Path(keras_file))
    if (variant.name, variant.num_classes) != (keras_variant.name, keras_variant.num_classes):
        raise InputError(
            f"the two files hold different networks: {torch_file} is {variant.name} with "
            f"{variant.num_classes} classes, {keras_file} is {keras_variant.name} with "
            f"{keras_variant.num_classes} classes"
        )
    torch_model = torch_model_from_state(variant, ckpt.state)
    loaded = time.perf_counter() - start
    clips = clips(variant) if callable(clips) else clips
    report = check_models(variant, torch_model, keras_model, clips, runtime, tolerance, progress, profile)
    report.torch_file, report.keras_file = str(torch_file), str(keras_file)
    report.seconds = {"load": loaded, **report.seconds}
    return report
