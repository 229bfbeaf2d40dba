"""`vrconvert export`: a deployable artifact (SavedModel, LiteRT, ONNX, OpenVINO IR), checked against torch
in its own runtime before it is written."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .backend import rerun_with_backend
from .options import (
    arch_option,
    emit_json,
    fold_bn_option,
    force_option,
    include_preprocessing_option,
    json_option,
    no_validate_option,
    note,
    parse_size,
    size_option,
    tolerance_option,
    videos_option,
)
from .validate import print_report

FORMAT_NAMES = ("saved_model", "litert", "onnx", "openvino")


@click.command("export")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_NAMES),
    default=None,
    help="Artifact format (default: from DST: .tflite LiteRT, .onnx ONNX, .xml OpenVINO IR, no suffix SavedModel).",
)
@arch_option
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Fix T in the input shape (with --size).")
@size_option("Fix HxW in the input shape (with --frames); default: T, H, W free.", default=None)
@fold_bn_option
@include_preprocessing_option(
    "Take uint8 frames (N, T, H, W, 3) and apply torchvision's Kinetics transform in the artifact."
)
@force_option
@no_validate_option("Skip running the artifact against torch.")
@tolerance_option
@videos_option
@click.option("--int8", is_flag=True, help="Quantize to int8 (OpenVINO .xml, ONNX .onnx): --precision int8.")
@click.option(
    "--precision",
    type=click.Choice(["f32", "bf16", "int8"]),
    default=None,
    help="f32 (default); bf16: OpenVINO at bf16 (on a CPU with bf16 units); int8: as --int8.",
)
@click.option(
    "--calibration",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A video (or folder of videos) to calibrate int8 on (repeatable); never used for the check.",
)
@click.option(
    "--calibration-clips",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Calibration clips, spread evenly over the calibration videos.",
)
@click.option(
    "--check-clips",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="int8/bf16: held-out clips per check video (the packaged clip unless it calibrated, and each --video).",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(min=-1, max=1),
    default=None,
    help="int8/bf16: the lowest accepted cosine between the artifact's and torch float32's logits on any "
    "held-out clip (default 0.999 for int8, 0.9999 for bf16).",
)
@click.option(
    "--keep-float",
    default="classifier",
    show_default=True,
    help="int8: layers left in float, comma-separated: stem, classifier, or none.",
)
@json_option
def export(src, dst, fmt, size, no_validate, int8, precision, keep_float, as_json, **options) -> None:
    """Export SRC (a torch checkpoint or a vrconvert .keras/.h5/.weights.h5 file) to DST.

    The artifact is loaded by its own runtime (tf.saved_model, LiteRT's Interpreter, onnxruntime,
    OpenVINO at f32) and compared with the torch model on a seeded random clip, the packaged real clip
    and every --video; it is moved onto DST only if it matches. Exit 0 pass, 1 parity failure, 2 bad input.
    """
    from vrconvert.converter import backends

    if not backends.select_backend("tensorflow"):
        rerun_with_backend("tensorflow")  # exits
    from vrconvert.converter.deploy import export as exporter
    from vrconvert.converter.deploy.quality import table
    from vrconvert.converter.errors import ParityError

    lowp = {k: options.pop(k) for k in ("calibration", "calibration_clips", "check_clips", "min_cosine")}
    lower = _lower_precision(int8, precision, keep_float, **lowp)
    clip_size = parse_size(size) if size is not None else None
    try:
        result = exporter.export(
            src,
            dst,
            format=fmt,
            size=clip_size,
            validate=not no_validate,
            lower=lower,
            **options,  # arch, frames, fold_bn, include_preprocessing, force, tolerance, videos
        )
    except ParityError as exc:  # a failed int8/bf16 check: its table, then the one-line verdict
        if getattr(exc, "quality", None) is not None:
            for line in table(exc.quality):
                note(line)
        raise
    if as_json:
        emit_json(result.as_dict())
        return
    print_export(result)
    if result.passed is False:
        sys.exit(1)


def _lower_precision(int8: bool, precision: str | None, keep_float: str, **lowp):
    """The int8/bf16 options as the exporter takes them."""
    from vrconvert.converter.deploy.lowp import Options

    if int8 and precision not in (None, "int8"):
        raise click.UsageError(f"--int8 and --precision {precision} contradict each other")
    roles = tuple(r.strip() for r in keep_float.split(",") if r.strip() and r.strip() != "none")
    return Options(precision="int8" if int8 else precision or "f32", keep_float=roles, **lowp)


def print_export(result) -> None:
    """The human form of an export's result: the artifact, its check, OpenVINO's default precision."""
    from vrconvert.converter.deploy.quality import table

    for line in result.notes:
        note(f"note: {line}")
    shape = "x".join("?" if d is None else str(d) for d in result.input_shape)
    click.echo(
        f"{result.src} -> {result.dst}: {result.format}, {result.arch}{' (BatchNorm folded)' if result.folded else ''}, "
        f"input {result.signature.get('input')!r} {shape} {result.signature.get('dtype', 'float32')} NTHWC, "
        f"{sum(result.files.values()) / 1e6:.1f} MB ({result.seconds['total']:.1f} s)"
    )
    if result.parity is not None:
        click.echo(f"artifact run by {result.runtime}; 'keras s' is the artifact's time")
        print_report(result.parity)
    if result.default_precision:
        d = result.default_precision
        click.echo(
            f"at OpenVINO's default precision ({d['runtime']}): max relative difference {d['max_rel_diff']:.2e}"
            f"{'' if d['top5_agree'] else ', top-5 differs'}; pin f32 at run time with {d['pin_f32']}"
        )
    if result.quality is not None:
        q = result.quality
        kept = f"; kept in float: {', '.join(q.kept_float)}" if q.kept_float else ""
        calibrated = f", calibrated on {len(q.calibration)} clip(s) by {q.tool}{kept}" if q.calibration else ""
        click.echo(f"{q.precision} artifact run by {q.runtime}{calibrated}")
        for line in table(q):
            click.echo(line)
