"""`vrconvert validate`: logits parity of a torch checkpoint and a Keras file, with localisation."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .backend import rerun_with_backend
from .options import (
    allow_tf32_option,
    device_option,
    emit_json,
    frames_option,
    json_option,
    keras_backend_option,
    parse_size,
    size_option,
    tolerance_option,
    videos_option,
)


@click.command("validate")
@click.argument("torch_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("keras_file", type=click.Path(dir_okay=False, path_type=Path))
@videos_option
@click.option(
    "--random",
    "random_clips",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Seeded random clips to compare on.",
)
@frames_option
@size_option("HxW of the random clips [default: the model's crop, e.g. 112x112; with --train 56x56].", default=None)
@click.option("--no-sample", is_flag=True, help="Leave out the real clip packaged with vrconvert.")
@device_option
@keras_backend_option
@allow_tf32_option
@tolerance_option
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page: the cases and the per-layer error profile of the worst input.",
)
@click.option("--train", is_flag=True, help="Compare SGD training steps instead (BatchNorm in training mode).")
@click.option("--steps", type=click.IntRange(min=1), default=2, show_default=True, help="With --train: SGD steps.")
@click.option("--batch", type=click.IntRange(min=2), default=2, show_default=True, help="With --train: clips a step.")
@click.option(
    "--lr", type=click.FloatRange(min=0), default=0.01, show_default=True, help="With --train: learning rate."
)
@click.option("--momentum", type=click.FloatRange(min=0, max=1), default=0.0, show_default=True, help="With --train.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True, help="With --train.")
@click.option("--head", default=None, metavar="NAME", help="The classifier layer of a wrapped backbone, if ambiguous.")
@json_option
def validate(torch_file, keras_file, keras_backend, train, as_json, **options) -> None:
    """Check that TORCH_FILE and KERAS_FILE compute the same logits.

    Runs both on seeded random clips, the packaged real clip and every --video, reports per input the
    max absolute and relative difference, cosine and top-1/top-5 agreement, and on failure names the
    first torch module and Keras layer whose outputs differ. Exit 0 pass, 1 parity failure, 2 bad input.

    With --train, both take the same SGD steps from the same weights on seeded clips of --frames and
    --size, and every logit, loss, gradient, weight and BatchNorm statistic of every step is judged
    against a float64 torch run (Keras' error at most 2x torch float32's own); the worst tensor is named.
    """
    from vrconvert.converter import backends

    keras_backend = backends.resolve_backend(keras_backend)
    if not backends.select_backend(keras_backend):
        rerun_with_backend(keras_backend)  # exits
    training = ("frames", "size", "steps", "batch", "lr", "momentum", "weight_decay", "head")
    if train:
        _train(torch_file, keras_file, as_json=as_json, **{k: options[k] for k in training})
        return
    parity = (
        "videos",
        "random_clips",
        "frames",
        "size",
        "no_sample",
        "device",
        "allow_tf32",
        "tolerance",
        "report_path",
    )
    _parity(torch_file, keras_file, as_json=as_json, **{k: options[k] for k in parity})


def _parity(
    torch_file,
    keras_file,
    videos,
    random_clips,
    frames,
    size,
    no_sample,
    device,
    allow_tf32,
    tolerance,
    report_path,
    as_json,
) -> None:
    """The inference check: both models on the clips, the report, the exit status."""
    from vrconvert.converter.formats import keras_io
    from vrconvert.converter.parity import runtime
    from vrconvert.converter.parity import validate as validator

    raw = keras_io.takes_frames(keras_file)  # a model that preprocesses itself is fed decoded frames
    tolerance = validator.default_tolerance(raw) if tolerance is None else tolerance
    clip_size = parse_size(size) if size is not None else None
    if not (random_clips or videos or not no_sample):
        raise click.UsageError("nothing to compare: give --random N, --video FILE or leave the packaged clip in")

    def clips(variant):  # at the network's own crop and transform unless --size says otherwise
        return validator.clips_for(
            frames=frames,
            size=clip_size or variant.preprocessing.crop,
            random=random_clips,
            sample=not no_sample,
            videos=videos,
            raw=raw,
            preprocessing=variant.preprocessing,
        )

    if report_path is not None:
        from vrconvert.converter.evaluate import report as html_report

        html_report.check_target(report_path)  # before the models run: matplotlib there, folder exists
    settings = runtime.prepare(device, allow_tf32)
    report = validator.validate_files(
        torch_file,
        keras_file,
        clips=clips,
        runtime=settings,
        tolerance=tolerance,
        progress=None if as_json else _progress(random_clips + len(videos) + (not no_sample)),
        profile=report_path is not None,
    )
    if report_path is not None:
        html_report.validation_page(report.as_dict(), _profile(report), report_path)
    if as_json:
        emit_json(report.as_dict())
    else:
        print_report(report)
    if not report.passed:
        sys.exit(1)


def _train(torch_file, keras_file, frames, size, steps, batch, lr, momentum, weight_decay, head, as_json) -> None:
    from vrconvert.converter.parity import train

    settings = train.Settings(
        steps=steps,
        batch=batch,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        frames=frames,
        size=parse_size(size) if size is not None else train.Settings().size,
    )
    report = train.validate_training(torch_file, keras_file, settings, head=head)
    if as_json:
        emit_json(report.as_dict())
    else:
        worst = report.worst
        click.echo(
            f"{report.arch} ({report.num_classes} classes), Keras on {report.backend}: {steps} SGD steps of "
            f"{batch} clips {frames}x{settings.size[0]}x{settings.size[1]}, lr {lr:g}, momentum {momentum:g}, "
            f"weight decay {weight_decay:g}; BatchNorm running variance by {report.batchnorm}'s rule"
        )
        click.echo(f"{len(report.checks)} tensors judged against float64 torch; ReLU ties taken: {report.ties}")
        for c in [c for c in report.checks if not c.passed][:10]:
            click.echo(
                f"  step {c.step} {c.what} {c.name}: Keras {c.keras_error:.2e} > bound {c.bound:.2e} "
                f"(torch float32 {c.torch_error:.2e})"
            )
        verdict = "PASS" if report.passed else "FAIL"
        click.echo(
            f"training parity {verdict}: worst step {worst.step} {worst.what} {worst.name}, Keras "
            f"{worst.keras_error:.2e} vs bound {worst.bound:.2e} (torch float32 {worst.torch_error:.2e})"
        )
    if not report.passed:
        sys.exit(1)


def _profile(report) -> dict | None:
    """The per-layer picture's data, in the form the HTML report draws (as evaluate's worst video)."""
    from dataclasses import asdict

    from vrconvert.converter.parity.validate import first_divergence

    if report.layers is None:
        return None
    worst = report.worst.input
    first = first_divergence(report.layers, report.tolerance, worst)
    return {
        "video": None,
        "input": worst,
        "tolerance": report.tolerance,
        "layers": [asdict(d) for d in report.layers],
        "first_divergence": first.torch_module if first else None,
    }


def _progress(length: int):
    def wrap(cases):
        return click.progressbar(
            cases, length=length, label="comparing", file=sys.stderr, item_show_func=lambda c: c.input if c else None
        )

    return wrap


def print_report(report) -> None:
    """The human form: a header, one row per input, the verdict and, on failure, the localisation."""
    click.echo(f"{report.arch} ({report.num_classes} classes): {report.runtime.describe()}")
    rows = [("input", "max abs", "max rel", "cosine", "top-1", "top-5", "torch s", "keras s")]
    for c in report.cases:
        rows.append(
            (
                c.input,
                f"{c.max_abs_diff:.2e}",
                f"{c.max_rel_diff:.2e}",
                f"{c.cosine:.9f}",
                "same" if c.top1_agree else "DIFF",
                "same" if c.top5_agree else "DIFF",
                f"{c.torch_seconds:.2f}",
                f"{c.keras_seconds:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    worst = report.worst
    verdict = "PASS" if report.passed else "FAIL"
    sign = "<=" if report.passed else ">"
    if report.nonfinite:
        click.echo(f"parity FAIL: {report.nonfinite} NaN/Inf values in the logits (first on {worst.input})")
    else:
        click.echo(
            f"parity {verdict}: max relative difference {worst.max_rel_diff:.2e} {sign} tolerance {report.tolerance:g}"
            + ("" if report.passed else f" on {worst.input}")
        )
    d = report.first_divergence
    if d is not None:
        click.echo(
            f"first divergence on {d.input}: torch module {d.torch_module} <-> Keras layer {d.keras_layer} "
            f"({d.op}), max rel diff {d.max_rel_diff:.2e}"
        )
        for layer in [*d.before, d, *d.after]:
            marker = ">" if layer is d else " "
            click.echo(
                f"  {marker} {layer.torch_module:<24} {layer.keras_layer:<24} {layer.op:<7} "
                f"max abs {layer.max_abs_diff:.2e}  max rel {layer.max_rel_diff:.2e}"
            )
    elif not report.passed:
        click.echo("no single layer exceeds the tolerance: the difference builds up across the network")
