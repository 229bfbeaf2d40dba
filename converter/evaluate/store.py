"""The results folder: `results.jsonl` is the truth of a run, one line per finished video.

Each line is written by one `os.write` on an O_APPEND descriptor and fsync'd before the next video
is counted, so a crash, a kill or a Ctrl-C loses at most the videos in flight and never leaves
half a line behind a whole one: a torn last line (a kill during the write) is cut off on resume.
`run.json` holds the settings the run started with (a resume must use the same ones); `lock`
is held with `flock` for the whole run, so a second run on the same folder is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from vrconvert.converter.errors import InputError
from vrconvert.converter.formats.output import write_text_atomic

RESULTS = "results.jsonl"
SETTINGS = "run.json"
LAYERS = "layers.json"
LOCK = "lock"


def encode(record: dict) -> bytes:
    """One record as one line of JSON (keys sorted, so equal records are equal bytes)."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return (line + "\n").encode("utf-8")


def read_records(folder: str | Path) -> list[dict]:
    """The complete lines of `folder`'s results file, in order; a torn last line is left out."""
    return [record for record, _ in _complete_lines(Path(folder) / RESULTS)]


def _complete_lines(path: Path) -> Iterator[tuple[dict, int]]:
    """(record, offset just past its line) for every whole line; stops at a torn or garbled one."""
    if not path.exists():
        return
    end = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                record = json.loads(raw)
            except ValueError:
                return
            end += len(raw)
            yield record, end


class ResultsStore:
    """An evaluation folder opened for writing by this process alone."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self.dropped_bytes = 0

    def open(self, settings: dict, resume: bool) -> set[str]:
        """Takes the lock, checks `settings` against the folder's, and returns the finished videos' keys."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 64, 0).decode(errors="replace").strip() or "?"
            self.close()
            raise InputError(
                f"{self.folder}: another vrconvert evaluate run (pid {holder}) is using this folder"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        results, saved = self.folder / RESULTS, self.folder / SETTINGS
        if results.exists() and results.stat().st_size and not resume:
            self.close()
            raise InputError(f"{self.folder}: already holds results; add --resume to go on, or choose another --out")
        if resume and saved.exists():
            before = json.loads(saved.read_text())
            changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
            if changed:
                self.close()
                raise InputError(
                    f"{self.folder}: --resume with other settings than the run began with ({', '.join(changed)})"
                )
        else:
            write_text_atomic(saved, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        done, end = set(), 0
        for record, offset in _complete_lines(results):
            done.add(record["key"])
            end = offset
        if results.exists() and results.stat().st_size > end:  # a torn line from a killed run
            self.dropped_bytes = results.stat().st_size - end
            os.truncate(results, end)
        self._fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return done

    def append(self, record: dict) -> None:
        """Adds one finished video: one write of one whole line, then fsync."""
        data = encode(record)
        size = os.fstat(self._fd).st_size
        written = os.write(self._fd, data)
        if written != len(data):  # disk full or the like: take the fragment back, never leave it
            os.ftruncate(self._fd, size)
            raise OSError(f"{self.folder / RESULTS}: short write ({written} of {len(data)} bytes)")
        os.fsync(self._fd)

    def write_layers(self, profile: dict) -> None:
        write_text_atomic(self.folder / LAYERS, json.dumps(profile, indent=1) + "\n")

    def close(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the flock
                setattr(self, name, None)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
