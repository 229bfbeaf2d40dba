"""Options shared by several commands, defined once."""

from __future__ import annotations

import json

import click

from vrconvert.converter.arch import families

arch_option = click.option(
    "--arch",
    type=click.Choice(list(families.VARIANTS)),
    default=None,
    help="Architecture (default: detected from the file's keys and shapes).",
)
force_option = click.option("--force", is_flag=True, help="Replace DST if it exists.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
frames_option = click.option(
    "--frames", type=click.IntRange(min=1), default=16, show_default=True, help="Frames per clip."
)
tolerance_option = click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=None,
    help="Largest accepted logits difference, relative to the largest |logit| "
    "(default 1e-5; fp32 rounding measures below 1e-6).",
)
device_option = click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Run both models here (cuda: torch on CUDA, Keras on the GPU).",
)
keras_backend_option = click.option(
    "--keras-backend",
    type=click.Choice(["tensorflow", "jax", "torch"]),
    default=None,
    help="Keras backend to run on (default: $KERAS_BACKEND, else tensorflow).",
)
allow_tf32_option = click.option(
    "--allow-tf32", is_flag=True, help="On GPU, let both sides use TF32 (off by default for strict parity)."
)


def parse_size(text: str) -> tuple[int, int]:
    """'112x112' (or '112') -> (112, 112)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise click.BadParameter(f"expected HxW such as 112x112, not {text!r}", param_hint="--size")
    from vrconvert.converter.limits import CLIP_SIDE

    if max(size) > CLIP_SIDE:  # a 3000x3000 clip through a video ResNet needs ~100 GB
        raise click.BadParameter(f"{text!r} is larger than the limit of {CLIP_SIDE} a side", param_hint="--size")
    return size  # type: ignore[return-value]


def emit_json(document: dict) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def note(message: str) -> None:
    """Progress and remarks go to stderr; results go to stdout."""
    click.echo(message, err=True)
