"""Safe output: refuse to clobber, write to a temporary file beside the target, publish it on success.

Publishing without `--force` is a hard link from the temporary file to DST, which fails if anything
(a file, a dangling symlink, another run's output) appeared at DST in the meantime, so nothing is ever
clobbered; with `--force` it is a rename. The temporary file is removed on every exit path, SIGTERM
and SIGINT included, and a write that fails (read-only folder, full disk, the file-size limit) is
one line (exit 2), never a traceback or a leftover: the writers' own temporary files (Keras saves its
weights through one) go to a scratch folder beside DST that is removed with the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from vrconvert.converter.errors import InputError

# Signals that end a run: turned into SystemExit while a temporary file exists, so `finally` removes it.
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Targets that check_target cleared with force=True: only these may be replaced when published.
_REPLACEABLE: set[str] = set()


def matching_suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The first of `suffixes` that `path`'s name ends with (list `.weights.h5` before `.h5`)."""
    return next((s for s in suffixes if path.name.endswith(s)), None)


def check_target(dst: Path, force: bool, suffixes: tuple[str, ...]) -> str:
    """Validates DST before any work is done; returns the matched suffix."""
    suffix = matching_suffix(dst, suffixes)
    if suffix is None or dst.name == suffix:
        raise InputError(f"{dst}: the output must end with {', '.join(suffixes)}")
    if os.path.lexists(dst) and not force:  # lexists: a dangling symlink is something too
        raise InputError(f"{dst}: already exists (use --force to replace it)")
    if dst.is_dir():
        raise InputError(f"{dst}: is a directory")
    if not dst.parent.is_dir():
        raise InputError(f"{dst.parent}: no such directory")
    if not os.access(dst.parent, os.W_OK | os.X_OK):
        raise InputError(f"{dst.parent}: the folder is not writable")
    (_REPLACEABLE.add if force else _REPLACEABLE.discard)(os.path.abspath(dst))
    return suffix


@contextlib.contextmanager
def removed_on_signal() -> Iterator[None]:
    """While inside, SIGTERM/SIGINT/SIGHUP raise SystemExit(128 + signal) so that `finally` blocks
    (which remove temporary files) run; SIGXFSZ is ignored so that passing the file-size limit is an
    OSError (EFBIG) rather than a core dump. Handlers are restored on the way out. Main thread only
    (elsewhere Python cannot set handlers, and the process's own handlers stay)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum, _frame):
        raise SystemExit(128 + signum)

    saved = {sig: signal.signal(sig, end) for sig in ENDING_SIGNALS}
    saved[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def publish(tmp: Path, dst: Path, force: bool) -> None:
    """Moves the finished `tmp` to `dst`: a rename with `force`, else a link that never replaces."""
    if force:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise InputError(f"{dst}: appeared while converting; left it alone (use --force to replace it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
            raise
        try:  # no hard links here (FAT, some network shares): claim the name, then rename over our claim
            os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise InputError(f"{dst}: appeared while converting; left it alone (use --force to replace it)") from None
        os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dst: Path, suffix: str, force: bool | None = None) -> Iterator[Path]:
    """A temporary path in DST's folder (same suffix: Keras checks it), published to DST only on
    success (see `publish`); removed on failure and on SIGTERM/SIGINT. `force` defaults to what
    `check_target` was told for DST."""
    force = os.path.abspath(dst) in _REPLACEABLE if force is None else force
    token = secrets.token_hex(4)
    tmp = dst.parent / f".{dst.name[: -len(suffix)]}.partial-{token}{suffix}"
    scratch = dst.parent / f".{dst.name[: -len(suffix)]}.scratch-{token}"  # the writers' own temp files
    saved_tempdir = tempfile.tempdir
    try:
        with removed_on_signal():
            scratch.mkdir()
            tempfile.tempdir = str(scratch)  # Keras writes its weights to a temporary file first
            try:
                yield tmp
                publish(tmp, dst, force)
            except InputError:
                raise
            except (OSError, RuntimeError) as exc:  # torch/h5py wrap EROFS/EFBIG/ENOSPC in their own types
                reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else type(exc).__name__
                raise InputError(f"{dst}: cannot write it ({reason}); nothing was written") from exc
    finally:
        tempfile.tempdir = saved_tempdir
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        shutil.rmtree(scratch, ignore_errors=True)


# Artifacts of several files (OpenVINO's .xml and .bin) or a directory (a SavedModel): everything is written
# into a temporary folder beside DST and moved into place only when the whole artifact exists and passed its
# check. On failure nothing is left at DST, and with --force the old artifact comes back.


def check_targets(targets: list[Path], force: bool) -> None:
    """Refuses to clobber any of `targets` without `force`; their folder must exist."""
    for target in targets:
        if (target.exists() or target.is_symlink()) and not force:
            raise InputError(f"{target}: already exists (use --force to replace it)")
        if not target.parent.is_dir():
            raise InputError(f"{target.parent}: no such directory")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def staging(dst: Path) -> Iterator[Path]:
    """A fresh temporary folder in DST's folder (so the final renames stay on one file system); removed
    on exit, whatever is still in it."""
    folder = dst.parent / f".{dst.name}.partial-{secrets.token_hex(4)}"
    try:
        with removed_on_signal():  # SIGTERM/SIGINT end through this `finally` too
            folder.mkdir()
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def commit(staged: list[Path], targets: list[Path], force: bool) -> None:
    """Moves each staged path onto its target (files or directories), the last one last: the artifact a
    runtime opens (.xml, .tflite, ...) appears only once its companions are in place. With `force`,
    replaced targets are set aside first and restored if any move fails; without it, a target that
    appeared while exporting is left alone."""
    token = secrets.token_hex(4)
    aside: list[tuple[Path, Path]] = []
    moved: list[Path] = []
    try:
        for target in targets:
            if target.exists() or target.is_symlink():
                if not force:
                    raise InputError(f"{target}: appeared while exporting; left it alone (use --force to replace it)")
                old = target.parent / f".{target.name}.old-{token}"
                os.replace(target, old)
                aside.append((old, target))
        for source, target in zip(staged, targets, strict=True):
            os.replace(source, target)
            moved.append(target)
    except BaseException:
        for target in moved:
            _remove(target)
        for old, target in aside:
            os.replace(old, target)
        raise
    for old, _ in aside:
        _remove(old)
