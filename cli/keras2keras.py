"""`vrconvert keras2keras`: a public Keras video ResNet's weight file -> a clean vrconvert Keras model."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    arch_option,
    force_option,
    frames_option,
    json_option,
    no_validate_option,
    num_classes_option,
    parse_size,
    size_option,
    tolerance_option,
)


@click.command("keras2keras")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@arch_option
@num_classes_option("Head width (default: read from the file).")
@force_option
@no_validate_option()
@tolerance_option
@frames_option
@size_option("HxW of the random parity clip.")
@json_option
def keras2keras(src, dst, arch, num_classes, force, no_validate, tolerance, frames, size, as_json) -> None:
    """Read SRC, a weight file of 3D-ResNet-Builder-for-Keras (Keras 2 `save_weights` .h5) or of
    ResNet18-2Plus1DD (.weights.h5), and write DST (.keras, .h5 or .weights.h5): the same network as
    a vrconvert Keras model that saves and reloads with its weights, checked against torch first."""
    from vrconvert.converter import parity
    from vrconvert.converter.conversion import keras_projects
    from vrconvert.converter.parity import validate as validator

    from .convert import _report

    clips = None if no_validate else validator.clips_for(frames=frames, size=parse_size(size), random=1, sample=False)
    result = keras_projects.project_to_keras(
        src,
        dst,
        arch=arch,
        num_classes=num_classes,
        force=force,
        validate=not no_validate,
        tolerance=parity.DEFAULT_TOLERANCE if tolerance is None else tolerance,
        clips=clips,
    )
    _report(result, as_json)
