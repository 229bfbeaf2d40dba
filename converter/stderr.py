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


@contextlib.contextmanager
def third_party_quiet() -> Iterator[None]:
    """For a Python API call, what the CLI does for a command: Keras (and TensorFlow under it) imported
    with its C++ start-up logging silenced (TensorFlow keeps the quiet log level it read then, so its
    graph optimiser's lines stay off too), and third-party Python warnings dropped for the call;
    vrconvert's own warnings stay. Nothing changes under VRCONVERT_DEBUG=1, nor where the user set
    TF_CPP_MIN_LOG_LEVEL or Keras was imported already."""
    import warnings

    if os.environ.get("VRCONVERT_DEBUG") == "1":
        yield
        return
    if "keras" not in sys.modules and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        with fd2_silenced({"TF_CPP_MIN_LOG_LEVEL": "3"}):
            import keras  # noqa: F401
    with warnings.catch_warnings():
        only_own_warnings()
        yield


def only_own_warnings() -> None:
    """Third-party Python warnings dropped; vrconvert's own remarks kept (shown once each)."""
    import warnings

    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", module=r"vrconvert(\.|$)")
