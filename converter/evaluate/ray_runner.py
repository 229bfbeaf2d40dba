"""`--ray ADDRESS|auto`: the same `evaluate_one` on a Ray cluster, one actor per worker.

Each actor loads the models once and evaluates the videos `ray.util.ActorPool` hands it; results
come back as they finish and this process alone writes the results file. Model files and videos
are read by path on the nodes: on a cluster of several machines they must be on shared storage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from vrconvert.converter.errors import InputError
from vrconvert.converter.evaluate.sources import Item
from vrconvert.converter.evaluate.worker import Settings
from vrconvert.converter.stderr import fd2_silenced


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'vrconvert[evaluate]'") from None
    return ray


class _Worker:
    """A Ray actor's state: one process with its models loaded once."""

    def __init__(self, settings: Settings):
        from vrconvert.converter.evaluate.worker import evaluator, limit_threads

        os.environ["KERAS_BACKEND"] = settings.keras_backend
        limit_threads(settings.threads)
        self.settings = settings
        evaluator(settings)

    def run(self, item: Item) -> dict:
        from vrconvert.converter.evaluate.worker import evaluate_one

        return evaluate_one(item, self.settings)


def connect(address: str) -> int:
    """Joins the cluster at `address` ("auto": the one this machine belongs to), unless this process
    already did; returns its CPU count. Ray's C++ client logs each retry on stderr: silenced."""
    _token_when_at_hand()  # before Ray's import, which reads it
    ray = _ray()
    if not ray.is_initialized():
        try:
            with fd2_silenced():
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise InputError(f"--ray {address}: no Ray cluster there ({str(exc).splitlines()[0]})") from None
    return int(ray.cluster_resources().get("CPU", 1))


def _token_when_at_hand() -> None:
    """`ray start` (Ray 2.59 and later) turns token authentication on and writes the token to
    ~/.ray/auth_token, but a driver joining by address sends it only under RAY_AUTH_MODE=token (without
    it: 'InvalidAuthToken' retries, then 'no Ray cluster there'). Token mode still joins a cluster
    without authentication, so it is chosen whenever a token is at hand and the user chose no mode."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    at_hand = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if at_hand or (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def run_ray(items: Iterable[Item], settings: Settings, workers: int) -> Iterator[dict]:
    """Records of `items`, in the order they finish, from `workers` actors of `settings.threads` CPUs."""
    ray = _ray()
    from ray.util import ActorPool

    actor = ray.remote(num_cpus=settings.threads)(_Worker)
    actors = [actor.remote(settings) for _ in range(workers)]
    pool = ActorPool(actors)
    try:
        yield from pool.map_unordered(lambda a, item: a.run.remote(item), items)
    finally:
        for a in actors:
            ray.kill(a)
