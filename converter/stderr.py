"""C++ libraries (TensorFlow, Ray) write their log lines straight to file descriptor 2, past Python's
warnings and logging: this points it at /dev/null for the one call that would print them."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def fd2_silenced(env: dict[str, str] | None = None) -> Iterator[None]:
    """File descriptor 2 points at /dev/null, with `env` set (e.g. a library's log level); both restored
    afterwards. A no-op under VRCONVERT_DEBUG=1, where everything is shown."""
    if os.environ.get("VRCONVERT_DEBUG") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    added = {k: v for k, v in (env or {}).items() if k not in os.environ}
    os.environ.update(added)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
        for key in added:
            os.environ.pop(key, None)
