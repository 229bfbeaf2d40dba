"""Lower-precision exports (`vrconvert export --int8` and `--precision bf16`), the steps `export` adds:
refusals before any work, int8 quantization of the staged float artifact on calibration clips, and the
check on held-out clips against torch float32 (`quality`).

bf16 is a run-time choice in OpenVINO (INFERENCE_PRECISION_HINT), not a property of the IR: a bf16 export
writes the float IR, checked at bf16, and says how to compile it at bf16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter.deploy import calibration, quantize
from vrconvert.converter.deploy import quality as quality_check
from vrconvert.converter.deploy.formats import INSTALL_HINT, Format
from vrconvert.converter.errors import InputError

# Kept in float by default: the classifier (measured to help: README, "int8 and bf16"); the stem did not.
DEFAULT_KEEP_FLOAT = ("classifier",)
BF16_NOTE = (
    "checked at bf16; the IR itself is float32 and OpenVINO chooses the precision when it compiles: "
    "core.compile_model(xml, 'CPU', {'INFERENCE_PRECISION_HINT': 'bf16'})"
)
F32_NOTE = (
    "checked with OpenVINO's float parts pinned to f32; on CPUs with bf16 units (avx512_bf16, AMX) OpenVINO "
    "computes them in bf16 unless told: core.compile_model(xml, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})"
)


@dataclass(frozen=True, kw_only=True)
class Options:
    """What a lower-precision export asks for (`precision` "f32" leaves `export` as it was)."""

    precision: str = "f32"
    calibration: tuple = ()  # videos (files or folders)
    calibration_clips: int = 8
    check_clips: int = 2  # per held-out video
    min_cosine: float | None = None
    keep_float: tuple[str, ...] = DEFAULT_KEEP_FLOAT

    @property
    def lower(self) -> bool:
        return self.precision != "f32"

    @property
    def bound(self) -> float:
        return quality_check.DEFAULT_MIN_COSINE[self.precision] if self.min_cosine is None else self.min_cosine


def refuse_early(fmt: Format, opts: Options, *, size, raw: bool, validate: bool, tolerance, videos=()) -> None:
    """Every refusal that needs no model: unsupported pairs, missing tools, options that do not apply, a
    check video that also calibrates."""
    quality_check.check_supported(fmt.name, opts.precision)
    if not opts.lower:
        if opts.min_cosine is not None or opts.calibration:
            raise InputError("--min-cosine and --calibration are for --int8 and --precision bf16")
        return
    if opts.precision == "int8":
        quantize.quantizer_for(fmt.name)
        if not opts.calibration:
            raise InputError("--int8 needs calibration videos: give --calibration VIDEO (repeatable)")
        if fmt.name == "openvino" and fmt.missing_module() is None:
            from vrconvert.converter.backends import installed

            if not installed("nncf"):
                raise InputError(f"--int8 for OpenVINO needs nncf, which is not installed: {INSTALL_HINT}")
        calibration.check_disjoint(videos, opts.calibration)
    elif opts.calibration:
        raise InputError("--calibration is for --int8 (bf16 needs no calibration)")
    if not validate:
        raise InputError(f"--no-validate: a {opts.precision} artifact is written only after its check")
    if tolerance is not None:
        raise InputError(f"--tolerance is for float32 exports; a {opts.precision} artifact is judged by --min-cosine")
    if not raw and size is not None and tuple(size) != (112, 112):
        raise InputError(f"--{opts.precision}: the check runs on real 112x112 clips; fix --size 112x112 or leave it")
    if opts.precision == "bf16" and fmt.missing_module() is None:
        why = quality_check.openvino_bf16_missing()
        if why:
            raise InputError(why)


def runner_options(fmt: Format, opts: Options) -> dict:
    """OpenVINO's run-time precision: bf16 when asked, else pinned f32 (int8's float parts included)."""
    return {"precision": "bf16"} if fmt.name == "openvino" and opts.precision == "bf16" else {}


def quantize_staged(
    fmt: Format, variant, float_main: Path, main: Path, opts: Options, *, frames: int, raw: bool
) -> tuple[quantize.Quantized, list[str]]:
    """The staged float artifact quantized into `main` on calibration clips; (what was written, the
    calibration clips' names)."""
    clips = calibration.calibration_clips(opts.calibration, clips=opts.calibration_clips, frames=frames, raw=raw)
    quantizer = quantize.quantizer_for(fmt.name)
    try:
        done = quantizer(float_main, main, list(clips.values()), opts.keep_float, quantize.stem_convs(variant))
    except InputError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"int8 quantization of {variant.name} for {fmt.name} failed: {first}") from exc
    return done, list(clips)


def check(
    variant,
    torch_model,
    runner,
    settings,
    opts: Options,
    *,
    frames: int,
    raw: bool,
    videos=(),
    quantized: quantize.Quantized | None = None,
    calibrated: list[str] | None = None,
) -> quality_check.Quality:
    """The artifact against torch float32 on held-out clips (never a calibration video's)."""
    clips: dict[str, np.ndarray] = calibration.held_out_clips(
        videos, opts.calibration, clips=opts.check_clips, frames=frames, raw=raw
    )
    return quality_check.check(
        variant,
        torch_model,
        runner,
        clips,
        settings,
        precision=opts.precision,
        min_cosine=opts.bound,
        calibration=calibrated or [],
        kept_float=quantized.kept_float if quantized else [],
        tool=quantized.tool if quantized else "",
    )
