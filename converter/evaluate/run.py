"""One evaluation from start to finish: the models checked, the videos listed, the workers sized (local or
on Ray), every finished video appended to the results store, then the summary (and the report page)
computed from the file. The CLI only parses and prints."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vrconvert.converter.errors import InputError
from vrconvert.converter.evaluate import local, sources, store, summary
from vrconvert.converter.evaluate.worker import Settings, evaluator
from vrconvert.converter.formats import keras_io
from vrconvert.converter.formats.checkpoint import TORCH_SUFFIXES


@dataclass(frozen=True, kw_only=True)
class Request:
    """What to evaluate and how; `workers`/`threads` None: sized from the cores (or the Ray cluster's)."""

    torch_file: Path | None
    keras_file: Path | None
    source: Path
    out: Path
    labels: Path | None = None
    clips: int = 1
    frames: int = 16
    size: tuple[int, int] = (112, 112)
    tolerance: float
    keras_backend: str = "tensorflow"
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    resume: bool = False
    report: Path | None = None


@dataclass(frozen=True, kw_only=True)
class Interrupted(Exception):
    """Ctrl-C during the run: how many videos the results file holds, for the message."""

    recorded: int
    out: Path


def split_models(paths: tuple[Path, ...]) -> tuple[Path | None, Path | None]:
    """(torch checkpoint, Keras file) from one or two paths, by suffix; a Keras file that takes uint8
    frames is refused (evaluate feeds normalised clips), read from its config alone."""
    if not 1 <= len(paths) <= 2:
        raise InputError("give a torch checkpoint, a Keras file, or both")
    torch_files = [p for p in paths if p.name.lower().endswith(TORCH_SUFFIXES)]
    keras_files = [p for p in paths if keras_io.keras_suffix(p)]
    if len(torch_files) > 1 or len(keras_files) > 1 or len(torch_files) + len(keras_files) != len(paths):
        raise InputError(
            f"expected at most one torch checkpoint ({', '.join(TORCH_SUFFIXES)}) and one Keras file "
            f"({', '.join(keras_io.KERAS_SUFFIXES)}), got {' '.join(map(str, paths))}"
        )
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: no such file")
    if keras_files and keras_io.takes_frames(keras_files[0]):
        raise InputError(
            f"{keras_files[0]}: it takes uint8 frames (built with --include-preprocessing), while evaluate feeds "
            "normalised clips; evaluate the file converted without --include-preprocessing"
        )
    return (torch_files or [None])[0], (keras_files or [None])[0]


def require_extras(*, ray: bool, report: bool) -> None:
    """Ray and matplotlib come with the `evaluate` extra: say so before any work."""
    for module, option, wanted in (("ray", "--ray", ray), ("matplotlib", "--report", report)):
        if wanted and importlib.util.find_spec(module) is None:
            raise InputError(f"{option} needs {module}: pip install 'vrconvert[evaluate]'")


def evaluate(
    request: Request,
    *,
    on_start: Callable[[int], None] = lambda todo: None,
    on_record: Callable[[dict], None] = lambda record: None,
    on_note: Callable[[str], None] = lambda note: None,
) -> dict:
    """Runs `request` and returns the summary figures of the whole results file.

    `on_start(n)` is told how many videos remain, `on_record` gets each finished record, `on_note` the
    remarks worth a line (left-out files, a torn last line dropped). Raises `Interrupted` on Ctrl-C."""
    found = sources.discover(request.source, request.labels)
    if found.skipped:
        on_note(f"{len(found.skipped)} file(s) without a video suffix left out (e.g. {found.skipped[0]})")
    settings, workers = _settings(request, found)
    with store.ResultsStore(request.out) as results:
        done = results.open(settings.identity(), request.resume)
        if results.dropped_bytes:
            on_note(f"{request.out}: dropped a torn last line ({results.dropped_bytes} bytes) of the killed run")
        todo = [item for item in found.items if item.key not in done]
        on_start(len(todo))
        _run(todo, settings, workers, request, results, on_record, len(done))
        figures = summary.summarize(request.out, request.tolerance)
        if request.report and request.torch_file and request.keras_file and figures["worst"]:
            _layer_profile(results, found, settings, figures["worst"][0]["key"], request.out)
    if request.report:
        from vrconvert.converter.evaluate.report import evaluation_page  # lazy: matplotlib

        evaluation_page(request.out, request.report, request.tolerance)
    return figures


def _settings(request: Request, found: sources.Source) -> tuple[Settings, int]:
    """The workers' settings and their count: the cluster's CPUs on Ray, else the local cores shared."""
    if request.ray_address:
        from vrconvert.converter.evaluate import ray_runner  # lazy: Ray

        cpus = ray_runner.connect(request.ray_address)
        workers = request.workers or cpus
        threads = request.threads or max(1, cpus // workers)
    else:
        workers = request.workers or 1
        threads = request.threads or local.share(workers)
    settings = Settings(
        torch_file=str(request.torch_file.resolve()) if request.torch_file else None,
        keras_file=str(request.keras_file.resolve()) if request.keras_file else None,
        clips=request.clips,
        frames=request.frames,
        size=request.size,
        tolerance=request.tolerance,
        keras_backend=request.keras_backend,
        classes=found.classes,
        threads=threads,
    )
    return settings, workers


def _run(todo, settings: Settings, workers: int, request: Request, results, on_record, already: int) -> None:
    if not todo:
        return
    if request.ray_address:
        from vrconvert.converter.evaluate import ray_runner  # lazy: Ray

        records = ray_runner.run_ray(todo, settings, workers)
    else:
        records = local.run_local(todo, settings, workers)
    count = 0
    try:
        for record in records:
            results.append(record)
            count += 1
            on_record(record)
    except KeyboardInterrupt:
        records.close()
        raise Interrupted(recorded=already + count, out=request.out) from None


def _layer_profile(results, found, settings: Settings, key: str, out: Path) -> None:
    """The worst video's per-layer differences (kept in OUT/layers.json, so the report reads a file)."""
    saved = results.read_profile()  # checked against its schema, never through a link
    if saved is not None and saved.get("video") == key:
        return
    record = next(r for r in store.read_records(out) if r["key"] == key)
    item = next((i for i in found.items if i.key == key), None)
    if item is None:
        return
    results.write_layers(evaluator(settings).layer_profile(item, record.get("worst_clip", 0)))
