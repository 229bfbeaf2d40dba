"""The one gate an input path passes before any library touches it.

Opening a FIFO blocks until a writer appears, a device can stream forever, and h5py, zipfile, PyAV
and torch all open what they are given. So every reader, sniffer and layout detector asks here first:
`lstat` the path (a symbolic link is followed once, to a regular file only), accept regular files
only, and refuse a file larger than its kind's limit, in one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vrconvert.converter import limits
from vrconvert.converter.errors import InputError


def regular_file(path: str | Path, most: int = limits.WEIGHTS_FILE_BYTES) -> Path:
    """`path` if it is a regular file of at most `most` bytes (through at most one symbolic link),
    else a one-line InputError that says what it is."""
    path = Path(path)
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file ({_kind(info.st_mode)} cannot be read safely)")
    limits.check(f"{path}: the file's size", info.st_size, most, " bytes")
    return path


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
