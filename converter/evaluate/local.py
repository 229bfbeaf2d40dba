"""`--workers N` on one machine: N processes, each with its share of the cores and its own models.

One worker runs in this process. More run in a spawn-started pool (no fork of a process that already
runs torch or TensorFlow threads); each loads the models once in its initializer. At most two
videos per worker are in flight, so a kill loses little and results stream back as they finish.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator

from vrconvert.converter.evaluate.sources import Item
from vrconvert.converter.evaluate.worker import Settings, evaluate_one, evaluator, limit_threads


def cores() -> int:
    """The cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def share(workers: int) -> int:
    """Threads per worker: the cores split evenly, at least one each."""
    return max(1, cores() // max(1, workers))


def _start_worker(settings: Settings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ["KERAS_BACKEND"] = settings.keras_backend
    limit_threads(settings.threads)
    evaluator(settings)


def run_local(items: Iterable[Item], settings: Settings, workers: int) -> Iterator[dict]:
    """Records of `items`, in the order they finish."""
    if workers <= 1:
        limit_threads(settings.threads)
        for item in items:
            yield evaluate_one(item, settings)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    pending = iter(items)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(settings,)) as pool:
        running = set()
        try:
            while True:
                while len(running) < 2 * workers and (item := next(pending, None)) is not None:
                    running.add(pool.submit(evaluate_one, item, settings))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in running:
                future.cancel()
