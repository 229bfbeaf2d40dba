"""`vrconvert torch2keras` and `vrconvert keras2torch`."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    arch_option,
    emit_json,
    fold_bn_option,
    force_option,
    frames_option,
    include_preprocessing_option,
    json_option,
    no_validate_option,
    note,
    num_classes_option,
    parse_size,
    size_option,
    tolerance_option,
)
from .validate import print_report


def _report(result, as_json: bool) -> None:
    if as_json:
        emit_json(result.as_dict())
        return
    for line in result.notes:
        note(f"note: {line}")
    if result.hash_check:
        note(f"note: {result.hash_check}")
    click.echo(
        f"{result.src} -> {result.dst}: {result.arch}, {result.num_classes} classes, "
        f"{result.num_params:,} parameters ({result.seconds:.1f} s)"
    )
    if result.parity is not None:
        print_report(result.parity)


@click.command("torch2keras")
@click.argument("paths", nargs=-1, metavar="[SRC] DST")
@arch_option
@click.option(
    "--pretrained",
    metavar="ARCH",
    default=None,
    help="Download torchvision's Kinetics-400 weights for ARCH (hash-checked) instead of SRC.",
)
@force_option
@no_validate_option()
@fold_bn_option
@include_preprocessing_option(
    "The model takes uint8 frames (N, T, H, W, 3) of any size and applies torchvision's Kinetics transform."
)
@tolerance_option
@frames_option
@size_option("HxW of the random parity clip [default: the model's crop, e.g. 112x112].", default=None)
@json_option
def torch2keras(
    paths, arch, pretrained, force, no_validate, fold_bn, include_preprocessing, tolerance, frames, size, as_json
) -> None:
    """Convert a torch checkpoint SRC (.pth, .pt, .safetensors) to DST (.keras, .h5 or .weights.h5).

    With --pretrained ARCH, only DST is given: torchvision's Kinetics-400 checkpoint is downloaded
    into torch's hub cache (SHA-256 checked) and converted.
    """
    from vrconvert.converter.conversion import convert
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.parity.validate import default_tolerance

    clip_size = parse_size(size) if size is not None else None  # None: the detected model's crop
    from vrconvert.converter import backends

    if no_validate:
        backends.select_backend_for_files()
    else:
        backends.require_parity_check()
    if len(paths) != (1 if pretrained else 2):
        raise click.UsageError("expected SRC DST, or --pretrained ARCH DST")
    src, dst = (None, Path(paths[0])) if pretrained else (paths[0], Path(paths[1]))
    if pretrained:
        from vrconvert.converter.arch import families
        from vrconvert.converter.formats.download import fetch_pretrained
        from vrconvert.converter.formats.keras_io import KERAS_SUFFIXES
        from vrconvert.converter.formats.output import check_target

        published = list(families.published())
        if pretrained not in published:
            raise InputError(f"no pretrained weights for {pretrained!r}; published: {', '.join(published)}")
        check_target(dst, force, KERAS_SUFFIXES)  # fail before a long download
        src = str(fetch_pretrained(pretrained, progress=not as_json))
        arch = arch or families.published()[pretrained][0].name
    result = convert.torch_to_keras(
        src,
        dst,
        arch=arch,
        force=force,
        validate=not no_validate,
        tolerance=default_tolerance(include_preprocessing) if tolerance is None else tolerance,
        clips=None
        if no_validate or clip_size is None
        else convert.default_clips(frames, clip_size, include_preprocessing),
        fold_bn=fold_bn,
        include_preprocessing=include_preprocessing,
        frames=frames,
    )
    _report(result, as_json)


@click.command("keras2torch")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@arch_option
@num_classes_option()
@click.option(
    "--head", default=None, metavar="NAME", help="The classifier layer, when more than one Dense could be it."
)
@force_option
@json_option
def keras2torch(src, dst, arch, num_classes, head, force, as_json) -> None:
    """Convert a Keras SRC (.keras, .h5, .weights.h5) to a torchvision state dict DST (.pth or .safetensors).

    SRC may wrap a vrconvert backbone (nested, or its layers reused) with a head of any name: the head
    becomes torchvision's `fc`."""
    from vrconvert.converter import backends
    from vrconvert.converter.conversion import convert

    backends.require("torch", *(["safetensors"] if dst.suffix == ".safetensors" else []))  # the writers
    backends.select_backend_for_files()

    _report(convert.keras_to_torch(src, dst, arch=arch, num_classes=num_classes, force=force, head=head), as_json)
