"""Atomic output for artifacts that are a file, a pair of files (OpenVINO's .xml and .bin) or a directory
(a SavedModel): everything is written into a temporary folder beside DST and moved into place only when
the whole artifact exists and passed its check. On failure nothing is left at DST, and with --force the
old artifact comes back."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from vrconvert.converter.errors import InputError
from vrconvert.converter.formats.output import removed_on_signal


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
