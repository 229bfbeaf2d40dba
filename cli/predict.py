"""`vrconvert predict`: classify a video with a Keras file or a torch checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from .backend import rerun_with_backend
from .options import (
    arch_option,
    clips_option,
    emit_json,
    frames_option,
    json_option,
    keras_backend_option,
    num_classes_option,
)


@click.command("predict")
@click.argument("video", type=click.Path(path_type=Path))
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="How many classes to print.")
@clips_option("Clips spread evenly over the video; their probabilities are averaged.")
@frames_option
@arch_option
@num_classes_option()
@keras_backend_option
@json_option
def predict(video, model, top, clips, frames, arch, num_classes, keras_backend, as_json) -> None:
    """Classify VIDEO (mp4, avi, mkv, webm, ...) with MODEL (.keras, .h5, .weights.h5, .pth, .pt, .safetensors).

    Prints Kinetics-400 labels with probabilities (class indices for a head of another size).
    """
    from vrconvert.converter import backends

    keras_backend = backends.resolve_backend(keras_backend)
    if not backends.select_backend(keras_backend):
        rerun_with_backend(keras_backend)  # exits
    from vrconvert.converter.video.classify import classify

    result = classify(video, model, top=top, clips=clips, frames=frames, arch=arch, num_classes=num_classes)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(
        f"{result.video}: {result.arch} via {result.framework}, {len(result.clips)} clip(s) of {frames} "
        f"frames ({result.seconds:.1f} s)"
    )
    width = max(len(label.label) for label in result.top)
    for label in result.top:
        click.echo(f"{label.rank:3d}. {label.label:<{width}}  {label.probability:.4f}")
