"""`vrconvert evaluate`: both models over a whole set of videos, resumable, parallel, with a report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from vrconvert.converter.limits import printable

from .backend import rerun_with_backend
from .options import (
    clips_option,
    emit_json,
    frames_option,
    json_option,
    keras_backend_option,
    parse_size,
    size_option,
    tolerance_option,
)


class Progress:
    """Videos done, rate, ETA and disagreements so far, on stderr (redrawn in place on a terminal)."""

    def __init__(self, enabled: bool = True):
        self.total, self.done, self.disagree, self.failed = 0, 0, 0, 0
        self.started = self.last = time.monotonic()
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def start(self, total: int) -> None:
        self.total = total
        self.started = self.last = time.monotonic()

    def update(self, record: dict) -> None:
        self.done += 1
        self.failed += not record["ok"]
        self.disagree += record.get("top1_agree") is False
        now = time.monotonic()
        if self.enabled and (now - self.last > (0.2 if self.tty else 10) or self.done == self.total):
            self.last = now
            self.draw(now)

    def draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0
        width = 24
        bar = "#" * round(width * self.done / max(self.total, 1))
        line = (
            f"[{bar:<{width}}] {self.done}/{self.total} videos  {rate:.2f}/s  ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}"
            f"  top-1 disagreements {self.disagree}  failures {self.failed}"
        )
        click.echo(("\r" + line) if self.tty else line, nl=not self.tty or self.done == self.total, err=True)


@click.command("evaluate")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--videos",
    "source",
    required=True,
    type=click.Path(path_type=Path),
    help="A folder (searched recursively; class sub-folders give labels), a text list of paths or a CSV of path,label.",
)
@click.option(
    "--labels", type=click.Path(dir_okay=False, path_type=Path), help="A CSV of path,label (names or indices)."
)
@clips_option("Clips spread evenly over each video, probabilities averaged (as predict does).")
@frames_option
@size_option("HxW of the centre crop (the resize scales with it).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Processes (default 1; with --ray, the cluster's CPUs)."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads per worker (default: the cores split evenly between the workers).",
)
@click.option(
    "--ray", "ray_address", default=None, metavar="ADDRESS|auto", help="Run the workers as actors on this Ray cluster."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="Folder for results.jsonl (one line per finished video).",
)
@click.option("--resume", is_flag=True, help="Go on with the run in --out: finished videos are not repeated.")
@click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write an HTML report here."
)
@tolerance_option
@keras_backend_option
@json_option
def evaluate(
    models: tuple[Path, ...], size: str, tolerance: float | None, keras_backend: str | None, as_json: bool, **options
) -> None:
    """Run MODELS (a torch checkpoint and a Keras file of the same network, or either one alone) over
    every video of --videos: parity, top-1/top-5 agreement and, with labels, accuracy.

    Each finished video is one line of OUT/results.jsonl; --resume goes on after a crash or Ctrl-C.
    Exit 0 when every compared video agrees within tolerance, 1 when one does not, 2 on bad input.
    """
    from vrconvert.converter import backends, parity
    from vrconvert.converter.evaluate import run

    torch_file, keras_file = run.split_models(models)
    run.require_extras(ray=bool(options["ray_address"]), report=bool(options["report"]))
    keras_backend = backends.resolve_backend(keras_backend)
    if keras_file and not backends.select_backend(keras_backend):
        rerun_with_backend(keras_backend)  # exits
    request = run.Request(
        torch_file=torch_file,
        keras_file=keras_file,
        size=parse_size(size),
        tolerance=parity.DEFAULT_TOLERANCE if tolerance is None else tolerance,
        keras_backend=keras_backend,
        **options,  # source, labels, out, clips, frames, workers, threads, ray_address, resume, report
    )
    progress = Progress(enabled=not as_json or sys.stderr.isatty())
    try:
        figures = run.evaluate(
            request, on_start=progress.start, on_record=progress.update, on_note=lambda n: click.echo(n, err=True)
        )
    except run.Interrupted as stop:
        click.echo(
            f"\ninterrupted: {stop.recorded} videos recorded in {stop.out}; run again with --resume to go on", err=True
        )
        sys.exit(130)
    if as_json:
        report = str(request.report) if request.report else None
        emit_json({"out": str(request.out), "report": report, **figures})
    else:
        print_summary(figures, request.out, request.report)
    if figures.get("beyond_tolerance") or figures["top1_disagreements"] or figures["nonfinite"]:
        sys.exit(1)


def _pct(value) -> str:
    return "–" if value is None else f"{value:.2%}"


def _sci(value, spec: str = ".2e") -> str:
    return "–" if value is None else format(value, spec)


def print_summary(s: dict, out: Path, report: Path | None) -> None:
    click.echo(f"videos {s['videos']}: {s['evaluated']} evaluated, {s['failures']} failed")
    for f in s["failed"][:10]:
        click.echo(printable(f"  failed  {f['key']}: {f['error']}"))
    if s["compared"]:
        click.echo(
            f"top-1 agreement {_pct(s['top1_agreement'])} ({s['compared'] - len(s['top1_disagreements'])}/{s['compared']}), "
            f"top-5 agreement {_pct(s['top5_agreement'])}"
        )
        r = s["rel_diff"]
        click.echo(
            f"relative difference p50 {_sci(r['p50'])}  p99 {_sci(r['p99'])}  max {_sci(r['max'])}; "
            f"{s['beyond_tolerance']} video(s) beyond tolerance {s['tolerance']:g}"
        )
        if s["nonfinite"]:
            click.echo(f"{s['nonfinite']} video(s) with NaN/Inf logits (failures: NaN never agrees)")
        for w in s["worst"][:5]:
            click.echo(
                printable(f"  worst   {w['key']}: max rel {_sci(w['max_rel_diff'])}, cosine {_sci(w['cosine'], '.9f')}")
            )
    for model, acc in s["accuracy"].items():
        if acc:
            click.echo(
                f"{model} accuracy: top-1 {_pct(acc['top1'])}, top-5 {_pct(acc['top5'])} over {acc['videos']} labelled videos"
            )
    if s["unknown_labels"]:
        click.echo(f"{len(s['unknown_labels'])} label(s) match no class of the model (e.g. {s['unknown_labels'][0]})")
    click.echo(f"results in {out / 'results.jsonl'}" + (f"; report {report}" if report else ""))
