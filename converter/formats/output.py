"""Safe output: refuse to clobber, write to a temporary file beside the target, rename on success."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from vrconvert.converter.errors import InputError


def matching_suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The first of `suffixes` that `path`'s name ends with (list `.weights.h5` before `.h5`)."""
    return next((s for s in suffixes if path.name.endswith(s)), None)


def check_target(dst: Path, force: bool, suffixes: tuple[str, ...]) -> str:
    """Validates DST before any work is done; returns the matched suffix."""
    suffix = matching_suffix(dst, suffixes)
    if suffix is None or dst.name == suffix:
        raise InputError(f"{dst}: the output must end with {', '.join(suffixes)}")
    if dst.exists() and not force:
        raise InputError(f"{dst}: already exists (use --force to replace it)")
    if dst.is_dir():
        raise InputError(f"{dst}: is a directory")
    if not dst.parent.is_dir():
        raise InputError(f"{dst.parent}: no such directory")
    return suffix


@contextlib.contextmanager
def atomic_path(dst: Path, suffix: str) -> Iterator[Path]:
    """A temporary path in DST's folder (same suffix: Keras checks it); renamed to DST only on success."""
    tmp = dst.parent / f".{dst.name[: -len(suffix)]}.partial-{secrets.token_hex(4)}{suffix}"
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
