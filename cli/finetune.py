"""`vrconvert finetune`: fine-tune a video ResNet on class folders of videos, in Keras, back to torch."""

from __future__ import annotations

from pathlib import Path

import click

from .backend import rerun_with_backend
from .options import arch_option, emit_json, json_option, keras_backend_option


@click.command("finetune")
@click.argument("videos", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--weights",
    required=True,
    help="Backbone weights: a .pth/.pt/.safetensors/.keras/.h5/.weights.h5 file, or 'kinetics400' (needs --arch).",
)
@arch_option
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True, help="Epochs in all.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Clips per step.")
@click.option("--frames", type=click.IntRange(min=1), default=16, show_default=True, help="Frames per clip.")
@click.option(
    "--size",
    type=click.IntRange(min=8),
    default=112,
    show_default=True,
    help="Crop side; the resize before it keeps Kinetics' 128x171 : 112 ratios.",
)
@click.option(
    "--clips", type=click.IntRange(min=1), default=1, show_default=True, help="Clips per video, spread evenly over it."
)
@click.option(
    "--freeze-until",
    default=None,
    help="Freeze the stem and every stage up to this one (stem, layer1, ..., layer4); Keras' trainable=False: "
    "frozen BatchNorm runs in inference mode.",
)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option(
    "--val-split",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of each class's videos held out (by file, deterministic).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the fresh head and the shuffling.")
@click.option(
    "--precision",
    type=click.Choice(["float32", "mixed_bfloat16"]),
    default="float32",
    show_default=True,
    help="Training precision; the transform and the head stay float32, model.keras is float32.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoding threads (default: CPU count).")
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its last checkpoint (same settings).")
@keras_backend_option
@json_option
def finetune(videos, out, weights, arch, keras_backend, as_json, resume, **settings) -> None:
    """Fine-tune on VIDEOS (one folder per class, videos inside) and write OUT/model.keras, OUT/model.pth
    (torchvision's layout, K classes), OUT/history.json (loss and accuracy per epoch) and OUT/curves.html.

    OUT must not exist, unless --resume continues a run there after an interruption.
    """
    from vrconvert.converter import backends

    keras_backend = backends.resolve_backend(keras_backend)
    if not backends.select_backend(keras_backend):
        rerun_with_backend(keras_backend)  # exits
    from vrconvert.converter.training.finetune import finetune as run

    result = run(videos, out, weights=weights, arch=arch, resume=resume, verbose=0 if as_json else 1, **settings)
    if as_json:
        emit_json(
            {
                "out": result.out,
                "arch": result.arch,
                "classes": list(result.classes),
                "train_clips": result.train_clips,
                "val_clips": result.val_clips,
                "epochs": result.epochs,
                "resumed_from": result.resumed_from,
                "parity_max_rel_diff": result.parity_max_rel_diff,
                "seconds": result.seconds,
            }
        )
        return
    last = result.epochs[-1] if result.epochs else {}
    resumed = f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""
    val = f", val accuracy {last['val_accuracy']:.3f}" if last.get("val_accuracy") is not None else ""
    click.echo(
        f"{result.out}: {result.arch}, {len(result.classes)} classes, {len(result.epochs)} epochs{resumed}{val}; "
        f"model.keras and model.pth agree within {result.parity_max_rel_diff:.1e} ({result.seconds:.0f} s)"
    )
