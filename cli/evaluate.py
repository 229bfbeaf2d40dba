"""`vrconvert evaluate`: both models over a whole set of videos, resumable, parallel, with a report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .backend import rerun_with_backend
from .options import emit_json, frames_option, json_option, keras_backend_option, parse_size, tolerance_option


class Progress:
    """Videos done, rate, ETA and disagreements so far, on stderr (redrawn in place on a terminal)."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.disagree, self.failed = total, 0, 0, 0
        self.start = self.last = time.monotonic()
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def update(self, record: dict) -> None:
        self.done += 1
        self.failed += not record["ok"]
        self.disagree += record.get("top1_agree") is False
        now = time.monotonic()
        if self.enabled and (now - self.last > (0.2 if self.tty else 10) or self.done == self.total):
            self.last = now
            self.draw(now)

    def draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0
        width = 24
        bar = "#" * round(width * self.done / max(self.total, 1))
        line = (
            f"[{bar:<{width}}] {self.done}/{self.total} videos  {rate:.2f}/s  ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}"
            f"  top-1 disagreements {self.disagree}  failures {self.failed}"
        )
        click.echo(("\r" + line) if self.tty else line, nl=not self.tty or self.done == self.total, err=True)


def _models(paths: tuple[Path, ...]) -> tuple[Path | None, Path | None]:
    from vrconvert.converter.formats import keras_io
    from vrconvert.converter.formats.checkpoint import TORCH_SUFFIXES

    if not 1 <= len(paths) <= 2:
        raise click.UsageError("give a torch checkpoint, a Keras file, or both")
    torch_file = [p for p in paths if p.name.lower().endswith(TORCH_SUFFIXES)]
    keras_file = [p for p in paths if keras_io.keras_suffix(p)]
    if len(torch_file) > 1 or len(keras_file) > 1 or len(torch_file) + len(keras_file) != len(paths):
        raise click.UsageError(
            f"expected at most one torch checkpoint ({', '.join(TORCH_SUFFIXES)}) and one Keras file "
            f"({', '.join(keras_io.KERAS_SUFFIXES)}), got {' '.join(map(str, paths))}"
        )
    for p in paths:
        if not p.is_file():
            raise click.UsageError(f"{p}: no such file")
    if keras_file and keras_io.takes_frames(keras_file[0]):  # its input contract, read from the config alone
        from vrconvert.converter.errors import InputError

        raise InputError(
            f"{keras_file[0]}: it takes uint8 frames (built with --include-preprocessing), while evaluate feeds "
            "normalised clips; evaluate the file converted without --include-preprocessing"
        )
    return (torch_file or [None])[0], (keras_file or [None])[0]


def _check_extra(module: str, option: str) -> None:
    import importlib.util

    from vrconvert.converter.errors import InputError

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{option} needs {module}: pip install 'vrconvert[evaluate]'")


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
@click.option(
    "--clips",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Clips spread evenly over each video, probabilities averaged (as predict does).",
)
@frames_option
@click.option(
    "--size", default="112x112", show_default=True, help="HxW of the centre crop (the resize scales with it)."
)
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
    models,
    source,
    labels,
    clips,
    frames,
    size,
    workers,
    threads,
    ray_address,
    out,
    resume,
    report,
    tolerance,
    keras_backend,
    as_json,
) -> None:
    """Run MODELS (a torch checkpoint and a Keras file of the same network, or either one alone) over
    every video of --videos: parity, top-1/top-5 agreement and, with labels, accuracy.

    Each finished video is one line of OUT/results.jsonl; --resume goes on after a crash or Ctrl-C.
    Exit 0 when every compared video agrees within tolerance, 1 when one does not, 2 on bad input.
    """
    from vrconvert.converter import parity
    from vrconvert.converter.parity import runtime

    torch_file, keras_file = _models(models)
    if ray_address:
        _check_extra("ray", "--ray")
    if report:
        _check_extra("matplotlib", "--report")
    keras_backend = runtime.resolve_backend(keras_backend)
    if keras_file and not runtime.select_backend(keras_backend):
        rerun_with_backend(keras_backend)  # exits
    from vrconvert.converter.evaluate import local, sources, store, summary
    from vrconvert.converter.evaluate.worker import Settings

    tolerance = parity.DEFAULT_TOLERANCE if tolerance is None else tolerance
    found = sources.discover(source, labels)
    if found.skipped and not as_json:
        click.echo(f"{len(found.skipped)} file(s) without a video suffix left out (e.g. {found.skipped[0]})", err=True)
    if ray_address:
        from vrconvert.converter.evaluate import ray_runner

        cpus = ray_runner.connect(ray_address)
        workers = workers or cpus
        threads = threads or max(1, cpus // workers)
    else:
        workers = workers or 1
        threads = threads or local.share(workers)
    settings = Settings(
        str(torch_file.resolve()) if torch_file else None,
        str(keras_file.resolve()) if keras_file else None,
        clips,
        frames,
        parse_size(size),
        tolerance,
        keras_backend,
        found.classes,
        threads,
    )
    with store.ResultsStore(out) as results:
        done = results.open(settings.identity(), resume)
        if results.dropped_bytes:
            click.echo(f"{out}: dropped a torn last line ({results.dropped_bytes} bytes) of the killed run", err=True)
        todo = [item for item in found.items if item.key not in done]
        progress = Progress(len(todo), enabled=not as_json or sys.stderr.isatty())
        if todo:
            if ray_address:
                records = ray_runner.run_ray(todo, settings, workers)
            else:
                records = local.run_local(todo, settings, workers)
            try:
                for record in records:
                    results.append(record)
                    progress.update(record)
            except KeyboardInterrupt:
                records.close()
                click.echo(
                    f"\ninterrupted: {len(done) + progress.done} videos recorded in {out}; "
                    "run again with --resume to go on",
                    err=True,
                )
                sys.exit(130)
        figures = summary.summarize(out, tolerance)
        if report and torch_file and keras_file and figures["worst"]:
            _layer_profile(results, found, settings, figures["worst"][0]["key"], out)
    if report:
        from vrconvert.converter.evaluate.report import evaluation_page

        evaluation_page(out, report, tolerance)
    if as_json:
        emit_json({"out": str(out), "report": str(report) if report else None, **figures})
    else:
        print_summary(figures, out, report)
    if figures.get("beyond_tolerance") or figures["top1_disagreements"]:
        sys.exit(1)


def _layer_profile(results, found, settings, key: str, out: Path) -> None:
    """The worst video's per-layer differences (kept in OUT/layers.json, so the report reads a file)."""
    import json

    from vrconvert.converter.evaluate import store
    from vrconvert.converter.evaluate.worker import evaluator

    saved = out / store.LAYERS
    if saved.exists() and json.loads(saved.read_text()).get("video") == key:
        return
    record = next(r for r in store.read_records(out) if r["key"] == key)
    item = next((i for i in found.items if i.key == key), None)
    if item is None:
        return
    results.write_layers(evaluator(settings).layer_profile(item, record.get("worst_clip", 0)))


def _pct(value) -> str:
    return "–" if value is None else f"{value:.2%}"


def print_summary(s: dict, out: Path, report: Path | None) -> None:
    click.echo(f"videos {s['videos']}: {s['evaluated']} evaluated, {s['failures']} failed")
    for f in s["failed"][:10]:
        click.echo(f"  failed  {f['key']}: {f['error']}")
    if s["compared"]:
        click.echo(
            f"top-1 agreement {_pct(s['top1_agreement'])} ({s['compared'] - len(s['top1_disagreements'])}/{s['compared']}), "
            f"top-5 agreement {_pct(s['top5_agreement'])}"
        )
        r = s["rel_diff"]
        click.echo(
            f"relative difference p50 {r['p50']:.2e}  p99 {r['p99']:.2e}  max {r['max']:.2e}; "
            f"{s['beyond_tolerance']} video(s) beyond tolerance {s['tolerance']:g}"
        )
        for w in s["worst"][:5]:
            click.echo(f"  worst   {w['key']}: max rel {w['max_rel_diff']:.2e}, cosine {w['cosine']:.9f}")
    for model, acc in s["accuracy"].items():
        if acc:
            click.echo(
                f"{model} accuracy: top-1 {_pct(acc['top1'])}, top-5 {_pct(acc['top5'])} over {acc['videos']} labelled videos"
            )
    if s["unknown_labels"]:
        click.echo(f"{len(s['unknown_labels'])} label(s) match no class of the model (e.g. {s['unknown_labels'][0]})")
    click.echo(f"results in {out / 'results.jsonl'}" + (f"; report {report}" if report else ""))
