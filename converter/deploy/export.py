"""`vrconvert export`, top to bottom:

SRC (torch checkpoint or vrconvert Keras file) -> torch-named state -> Keras model (BatchNorms folded on
request) -> Keras' `model.export` into a staging folder beside DST -> the artifact loaded by its own
runtime and compared with the torch model through the validator's one comparison -> moved onto DST.
A failure at any step leaves nothing at DST.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.arch.layers import INPUT
from vrconvert.converter.deploy import lowp
from vrconvert.converter.deploy import quality as quality_check
from vrconvert.converter.deploy.formats import INSTALL_HINT, Format, format_for, targets
from vrconvert.converter.errors import InputError, ParityError
from vrconvert.converter.formats import output as atomic
from vrconvert.converter.parity import validate as validator


@dataclass
class ExportResult:
    """What an export did, for the CLI's human and JSON output."""

    src: str
    dst: str
    format: str
    arch: str
    num_classes: int
    folded: bool
    input_shape: list
    runtime: str = ""
    signature: dict = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # path -> bytes
    seconds: dict[str, float] = field(default_factory=dict)
    parity: validator.Report | None = None
    default_precision: dict | None = None  # OpenVINO: the figures at the plugin's default precision
    notes: list[str] = field(default_factory=list)
    precision: str = "f32"
    quality: quality_check.Quality | None = None  # int8 and bf16: the check on held-out clips

    @property
    def passed(self) -> bool | None:
        if self.quality is not None:
            return self.quality.passed
        return None if self.parity is None else self.parity.passed

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("parity", "quality")}
        out["passed"] = self.passed
        out["parity"] = self.parity.as_dict() if self.parity else None
        out["quality"] = self.quality.as_dict() if self.quality else None
        return out


def load_source(src: Path, arch: str | None = None) -> tuple[spec.Arch, dict[str, np.ndarray], str]:
    """(arch, torch-named state, source kind) from a torch checkpoint or an unfolded vrconvert Keras file."""
    from vrconvert.converter.formats import keras_io

    if keras_io.keras_suffix(src):
        from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

        variant, variables = keras_weights.read_keras_file(src, arch)
        return variant, mapping.to_torch(variant, variables), keras_io.keras_suffix(src)
    from vrconvert.converter.conversion.torch_model import load_state

    ckpt, variant = load_state(src, arch)
    return variant, ckpt.state, ckpt.format


def keras_model_for(variant: spec.Arch, state: dict[str, np.ndarray], fold_bn: bool, include_preprocessing=False):
    """The Keras model to export: the converted one, or its BatchNorm-folded inference form; with
    `include_preprocessing`, fed uint8 frames (`models_tf.preprocessing`), resized by explicit taps: the
    runtimes' own bilinear kernels round exact half-way values their own way."""
    if fold_bn and include_preprocessing:
        raise InputError("--include-preprocessing and --fold-bn cannot be combined yet")
    if fold_bn:
        from vrconvert.models_tf import fold

        return fold.build_folded(variant, state)
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    return keras_weights.build_model(variant, state, include_preprocessing=include_preprocessing, resize="taps")


def check_format_installed(fmt: Format) -> None:
    missing = fmt.missing_module()
    if missing:
        raise InputError(f"exporting to {fmt.name} needs {missing}, which is not installed: {INSTALL_HINT}")


def export(
    src: str | Path,
    dst: str | Path,
    *,
    format: str | None = None,
    arch: str | None = None,
    frames: int | None = None,
    size: tuple[int, int] | None = None,
    fold_bn: bool = False,
    force: bool = False,
    validate: bool = True,
    tolerance: float | None = None,
    videos=(),
    clips: dict[str, np.ndarray] | None = None,
    progress=None,
    include_preprocessing: bool = False,
    lower: lowp.Options | None = None,
    clip_frames: int | None = None,
) -> ExportResult:
    """Exports SRC to DST in `format` (default: from DST's suffix); with `validate`, the artifact is run
    by its runtime on the validator's clips and must match torch within `tolerance`, else ParityError and
    nothing at DST. `frames` and `size` fix the input shape; left out, T, H and W stay free. `clips`
    (torch layout, by name) replace the validator's default inputs. With `include_preprocessing`, the
    artifact takes uint8 frames (N, T, H, W, 3): T fixed (default: the clip length), H and W free unless
    `size` is given, checked on decoded frames. `lower` asks for an int8 or bf16 artifact (`lowp`): it is
    checked on held-out real clips of `clip_frames` frames (default: `frames`, else 16) against the
    float32 torch model, and written only if its logits' cosine meets the bound."""
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    lower = lower or lowp.Options()
    fmt, final = _refuse_early(
        src, dst, format, lower, frames, size, include_preprocessing, validate, tolerance, videos, force
    )
    tolerance = validator.default_tolerance(include_preprocessing) if tolerance is None else tolerance
    frames = frames or spec.Preprocessing().frames if include_preprocessing else frames
    variant, state, _ = load_source(src, arch)
    model, signature = _model_and_signature(fmt, variant, state, fold_bn, include_preprocessing, frames, size)
    result = ExportResult(
        str(src), str(dst), fmt.name, variant.name, variant.num_classes, fold_bn, list(signature[0].shape)
    )
    result.precision = lower.precision
    clip_frames = clip_frames or frames or spec.Preprocessing().frames
    result.seconds["load"] = time.perf_counter() - start
    job = _Job(
        fmt=fmt,
        variant=variant,
        state=state,
        lower=lower,
        clip_frames=clip_frames,
        raw=include_preprocessing,
        videos=videos,
        result=result,
    )
    _write(job, model, signature, dst, force, validate, clips, frames, size, tolerance, progress)
    result.files = {str(p): _size(p) for p in final}
    result.seconds["total"] = time.perf_counter() - start
    return result


@dataclass(kw_only=True)
class _Job:
    """One export's settled inputs, shared by its stages."""

    fmt: Format
    variant: object
    state: dict
    lower: lowp.Options
    clip_frames: int
    raw: bool
    videos: tuple
    result: ExportResult


def _write(
    job: _Job, model, signature, dst: Path, force: bool, validate: bool, clips, frames, size, tolerance, progress
):
    """Stages the artifact, checks it in its runtime (int8/bf16: on held-out clips; f32: against torch within
    `tolerance`) and moves it onto DST only when the check passed."""
    fmt, lower, result = job.fmt, job.lower, job.result
    with atomic.staging(dst) as folder:
        staged_main = folder / dst.name
        staged, quantized, calibrated = _stage(job, model, folder, staged_main, signature)
        runner = fmt.runner(staged_main, **lowp.runner_options(fmt, lower))
        result.runtime, result.signature = runner.runtime, runner.signature.as_dict()
        t = time.perf_counter()
        if validate and lower.lower:
            result.quality = _check_lower(job, runner, quantized, calibrated)
        elif validate:
            clips = _default_clips(job.variant, frames, size, job.videos, job.raw, result) if clips is None else clips
            _check_float(job, runner, staged_main, clips, tolerance, progress)
        if validate:
            result.seconds["validate"] = time.perf_counter() - t
        del runner
        atomic.commit(staged, [folder_to_target(p, folder, dst) for p in staged], force)


def _model_and_signature(fmt, variant, state, fold_bn: bool, raw: bool, frames, size):
    """The Keras model to export and its input signature (T and H x W fixed where given, else free)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise InputError(f"export runs Keras on TensorFlow, not {keras.backend.backend()} (set KERAS_BACKEND)")
    model = keras_model_for(variant, state, fold_bn, raw)
    if (op := fmt.lacking_op(model)) is not None:
        raise InputError(f"{fmt.name} cannot run {variant.name}: its runtime has no {op} op; use another format")
    shape = (None, frames, *(size or (None, None)), 3)
    fixed = tuple(model.inputs[0].shape[1:4])
    if not raw and all(isinstance(n, int) for n in fixed):  # a network of one input size (MViT) takes only it
        if frames is not None and (frames, *size) != fixed:
            need, asked = "x".join(map(str, fixed)), "x".join(map(str, (frames, *size)))
            raise InputError(f"{variant.name} takes clips of exactly {need} (T x H x W), not {asked}")
        shape = (None, *fixed, 3)
    dtype, name = ("uint8", "frames") if raw else ("float32", INPUT)
    return model, [keras.InputSpec(shape=shape, dtype=dtype, name=name)]


def _refuse_early(src, dst, format, lower, frames, size, raw, validate, tolerance, videos, force):
    """Every refusal that needs no framework, before one is imported (bad input fails fast). Returns the
    format and the paths the artifact will take."""
    fmt = format_for(dst, format)
    check_format_installed(fmt)
    lowp.refuse_early(fmt, lower, size=size, raw=raw, validate=validate, tolerance=tolerance, videos=videos)
    final = targets(fmt, dst)
    atomic.check_targets(final, force)
    if not raw and (frames is None) != (size is None):
        raise InputError("--frames and --size fix the input shape together: give both or neither")
    if raw and size is not None and (videos or lower.lower):  # a video's frames come at its own size
        raise InputError(
            "--include-preprocessing with --size takes frames of that size only, and --video/--calibration "
            "videos come at their own: leave --size out (the artifact then takes frames of any size)"
        )
    if not src.exists():
        raise InputError(f"{src}: no such file")
    return fmt, final


def _stage(job: _Job, model, folder: Path, staged_main: Path, signature):
    """The artifact exported into the staging folder (an int8 one: the float artifact set aside, then
    quantized into place). Returns (staged paths, the quantization, its calibration clips)."""
    fmt, lower, variant, result = job.fmt, job.lower, job.variant, job.result
    t = time.perf_counter()
    float_main = staged_main
    if lower.precision == "int8":
        float_main = folder / "float" / staged_main.name
        float_main.parent.mkdir()
    try:
        staged = fmt.export(model, float_main, signature)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{fmt.name} export of {variant.name} failed: {first}") from exc
    result.seconds["export"] = time.perf_counter() - t
    if lower.precision != "int8":
        return staged, None, None
    t = time.perf_counter()
    quantized, calibrated = lowp.quantize_staged(
        fmt, variant, float_main, staged_main, lower, frames=job.clip_frames, raw=job.raw
    )
    result.seconds["quantize"] = time.perf_counter() - t
    return quantized.paths, quantized, calibrated


def _check_lower(job: _Job, runner, quantized, calibrated):
    """The int8/bf16 check on held-out clips against torch float32; a ParityError (with the check's table)
    below the bound."""
    from vrconvert.converter.conversion.torch_model import torch_model_from_state
    from vrconvert.converter.parity import runtime as rt

    fmt, lower, variant = job.fmt, job.lower, job.variant
    quality = lowp.check(
        variant,
        torch_model_from_state(variant, job.state),
        runner,
        rt.prepare("cpu"),
        lower,
        frames=job.clip_frames,
        raw=job.raw,
        videos=job.videos,
        quantized=quantized,
        calibrated=calibrated,
    )
    if fmt.name == "openvino":
        job.result.notes.append(lowp.BF16_NOTE if lower.precision == "bf16" else lowp.F32_NOTE)
    if not quality.passed:
        worst = quality.worst
        error = ParityError(
            f"quality check failed: {lower.precision} {fmt.name} artifact ({runner.runtime}) reaches "
            f"cosine {worst.cosine:.6f} < --min-cosine {lower.bound:g} on {worst.input}; nothing was written"
        )
        error.quality = quality  # the CLI prints the check's table before the verdict
        raise error
    return quality


def _default_clips(variant, frames, size, videos, raw: bool, result) -> dict[str, np.ndarray]:
    """The float check's inputs: decoded frames of any size for a preprocessing artifact, else clips at
    the model's own crop and transform (112x112 for the ResNets); what was left out becomes a note."""
    if raw:
        has_av = importlib.util.find_spec("av") is not None
        clips, notes = validator.default_clips(
            frames=frames, size=size or (240, 320), sample=has_av and size is None, videos=videos, raw=True
        )
        if size is not None and has_av:  # the packaged clip's frames are 240x320
            notes.append(f"an artifact of {size[0]}x{size[1]} frames is checked on the random clip only")
    else:
        clips, notes = validator.default_clips(
            frames=frames or 16,
            size=size or variant.preprocessing.crop,
            videos=videos,
            fixed=True,
            preprocessing=variant.preprocessing,
        )
    result.notes += notes
    return clips


def _check_float(job: _Job, runner, staged_main: Path, clips, tolerance, progress) -> None:
    """The float artifact against torch within `tolerance` (a ParityError otherwise); OpenVINO's default
    precision measured beside it."""
    from vrconvert.converter.conversion.torch_model import torch_model_from_state
    from vrconvert.converter.parity import runtime as rt

    fmt, variant, result = job.fmt, job.variant, job.result
    torch_model = torch_model_from_state(variant, job.state)
    settings = rt.prepare("cpu")
    report = validator.check_runner(variant, torch_model, runner, clips, settings, tolerance, progress)
    result.parity = report
    if fmt.name == "openvino":
        result.default_precision = _openvino_default(fmt, staged_main, variant, torch_model, clips, settings)
    validator.require(report, f"{fmt.name} artifact ({runner.runtime}):")


def folder_to_target(staged: Path, folder: Path, dst: Path) -> Path:
    return dst.parent / staged.relative_to(folder)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _openvino_default(fmt: Format, path: Path, variant, torch_model, clips, settings) -> dict:
    """The same comparison at the CPU plugin's default inference precision (bf16 where the CPU has it):
    reported, never the verdict."""
    runner = fmt.runner(path, precision=None)
    report = validator.check_runner(variant, torch_model, runner, clips, settings, np.inf)
    return {
        "runtime": runner.runtime,
        "max_rel_diff": report.worst.max_rel_diff,
        "top5_agree": all(c.top5_agree for c in report.cases),
        "pin_f32": "core.compile_model(xml, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})",
    }
