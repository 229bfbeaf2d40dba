"""The results folder: `results.jsonl` is the truth of a run, one line per finished video.

Each line is written by one `os.write` on an O_APPEND descriptor and fsync'd before the next video
is counted, so a crash, a kill or a Ctrl-C loses at most the videos in flight and never leaves
half a line behind a whole one: a torn last line (a kill during the write) is cut off on resume.
`run.json` holds the settings the run started with (a resume must use the same ones); `lock`
is held with `flock` for the whole run, so a second run on the same folder is refused.

The folder is a store, not a scratchpad: every file in it is opened relative to the folder's own
descriptor with O_NOFOLLOW (a symbolic link planted there is refused, never written through, and
nothing is created outside the folder), must be a regular file, and is read back in bounded lines
and checked against its schema (`records`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from vrconvert.converter import limits
from vrconvert.converter.errors import InputError
from vrconvert.converter.evaluate import records

RESULTS = "results.jsonl"
SETTINGS = "run.json"
LAYERS = "layers.json"
LOCK = "lock"
NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO planted there never blocks


def encode(record: dict) -> bytes:
    """One record as one line of JSON (keys sorted, so equal records are equal bytes)."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return (line + "\n").encode("utf-8")


@contextlib.contextmanager
def _folder_fd(folder: Path) -> Iterator[int | None]:
    """The folder's descriptor (None when it does not exist)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:
        raise InputError(f"{folder}: cannot open the results folder ({exc.strerror})") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _open(folder: Path, dir_fd: int, name: str, flags: int, mode: int = 0o644) -> int | None:
    """`name` in the folder, never through a symbolic link, a regular file; None when absent (and not created)."""
    try:
        fd = os.open(name, flags | NOFOLLOW, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise InputError(
                f"{folder / name}: a symbolic link; refused (the results folder holds plain files)"
            ) from None
        raise InputError(f"{folder / name}: cannot open it ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputError(f"{folder / name}: not a regular file; refused")
    return fd


def _read_small(folder: Path, dir_fd: int | None, name: str) -> bytes | None:
    """A small file of the folder (run.json, layers.json), at most `limits.RESULT_FILE_BYTES`."""
    fd = None if dir_fd is None else _open(folder, dir_fd, name, os.O_RDONLY)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limits.RESULT_FILE_BYTES + 1)
    limits.check(f"{folder / name}", len(data), limits.RESULT_FILE_BYTES, " bytes")
    return data


def read_settings(folder: str | Path) -> dict | None:
    folder = Path(folder)
    with _folder_fd(folder) as dir_fd:
        data = _read_small(folder, dir_fd, SETTINGS)
    return None if data is None else records.settings(data, str(folder / SETTINGS))


def read_profile(folder: str | Path) -> dict | None:
    folder = Path(folder)
    with _folder_fd(folder) as dir_fd:
        data = _read_small(folder, dir_fd, LAYERS)
    return None if data is None else records.profile(data, str(folder / LAYERS))


def read_records(folder: str | Path) -> list[dict]:
    """The complete lines of `folder`'s results file, in order, each checked; a torn last line is left out."""
    folder = Path(folder)
    with _folder_fd(folder) as dir_fd:
        fd = None if dir_fd is None else _open(folder, dir_fd, RESULTS, os.O_RDONLY)
        if fd is None:
            return []
        with os.fdopen(fd, "rb") as f:
            return [record for record, _ in _complete_lines(f, folder / RESULTS)]


def _complete_lines(f, where: Path) -> Iterator[tuple[dict, int]]:
    """(record, offset just past its line) for every whole line, each at most `limits.RESULT_LINE_BYTES`;
    a last line without its newline (a write cut by a kill) ends the file."""
    end, number = 0, 0
    while raw := f.readline(limits.RESULT_LINE_BYTES + 1):
        number += 1
        if len(raw) > limits.RESULT_LINE_BYTES:
            raise InputError(f"{where}:{number}: a line longer than {limits.RESULT_LINE_BYTES:,} bytes; refused")
        if not raw.endswith(b"\n"):
            return
        end += len(raw)
        yield records.record(raw, f"{where}:{number}"), end


class ResultsStore:
    """An evaluation folder opened for writing by this process alone."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._dir_fd: int | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self.dropped_bytes = 0

    def open(self, settings: dict, resume: bool) -> set[str]:
        """Takes the lock, checks `settings` against the folder's, and returns the finished videos' keys."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(f"{self.folder}: cannot use it as the results folder ({exc.strerror})") from None
        try:
            return self._open(settings, resume)
        except BaseException:
            self.close()
            raise

    def _open(self, settings: dict, resume: bool) -> set[str]:
        folder, dir_fd = self.folder, self._dir_fd
        self._lock_fd = _open(folder, dir_fd, LOCK, os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 64, 0).decode(errors="replace").strip() or "?"
            raise InputError(
                f"{folder}: another vrconvert evaluate run (pid {limits.brief(holder).strip(chr(39))}) is using this folder"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = _open(folder, dir_fd, RESULTS, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        size = os.fstat(self._fd).st_size
        if size and not resume:
            raise InputError(f"{folder}: already holds results; add --resume to go on, or choose another --out")
        saved = _read_small(folder, dir_fd, SETTINGS) if resume else None
        if saved is not None:
            before = records.settings(saved, str(folder / SETTINGS))
            changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
            if changed:
                raise InputError(
                    f"{folder}: --resume with other settings than the run began with ({', '.join(changed)})"
                )
        else:
            self._write_atomic(SETTINGS, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        done, end = set(), 0
        with os.fdopen(os.dup(self._fd), "rb") as f:
            f.seek(0)
            for record, offset in _complete_lines(f, folder / RESULTS):
                done.add(record["key"])
                end = offset
        if size > end:  # a torn line from a killed run
            self.dropped_bytes = size - end
            os.ftruncate(self._fd, end)
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
        self._write_atomic(LAYERS, json.dumps(profile, indent=1) + "\n")

    def read_profile(self) -> dict | None:
        data = _read_small(self.folder, self._dir_fd, LAYERS)
        return None if data is None else records.profile(data, str(self.folder / LAYERS))

    def _write_atomic(self, name: str, text: str) -> None:
        """`name` replaced whole: a new file (O_EXCL, never through a link) renamed over it in the folder."""
        tmp = f".{name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self._dir_fd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644, dir_fd=self._dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self._dir_fd)
            raise

    def close(self) -> None:
        for name in ("_fd", "_lock_fd", "_dir_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)  # closing the lock's descriptor releases the flock
                setattr(self, name, None)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
