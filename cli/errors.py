"""One table from exception type to what the user sees: one line on stderr and an exit status.
Tracebacks only with VRCONVERT_DEBUG=1."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from vrconvert.converter.errors import VRConvertError
from vrconvert.converter.limits import printable


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# The extra of pyproject.toml that brings each optional top-level module (tests check the names).
EXTRA_OF_MODULE = {
    "torch": "torch",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",  # or `keras` next to torch or jax: Keras alone has no backend
    "h5py": "tensorflow",
    "jax": "jax",
    "jaxlib": "jax",
    "av": "video",
    "safetensors": "safetensors",
}


def _missing_package(exc: ModuleNotFoundError) -> str:
    top = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    hint = f"; install it with: pip install 'vrconvert[{extra}]'" if extra else ""
    if top == "keras":
        hint += " (or 'vrconvert[torch,keras]' for Keras on torch)"
    return f"a package this command needs is not installed: {_first_line(exc)}{hint}"


# (exception type, exit status, message prefix or the whole message); the first matching row wins.
ERROR_TABLE: list[tuple[type[BaseException], int | None, str | Callable[[Exception], str]]] = [
    (VRConvertError, None, ""),  # exit status from the exception (2 input, 1 parity)
    (ModuleNotFoundError, 2, _missing_package),
    (FileNotFoundError, 2, "file not found: "),
    (PermissionError, 2, "permission denied: "),
    (IsADirectoryError, 2, "is a directory: "),
    (MemoryError, 2, "out of memory: "),
    (OSError, 2, "I/O error: "),
]


def run_guarded(entry: Callable[[], None]) -> None:
    """Runs the click group; maps known errors to one line and an exit status."""
    debug = os.environ.get("VRCONVERT_DEBUG") == "1"
    try:
        status = entry()  # click returns the status of ctx.exit() in non-standalone mode
        if status:
            sys.exit(status)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # one line too, pointing at the command's help
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(printable(f"error: {exc.format_message()}{where}"), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(printable(f"error: {exc.format_message()}"), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        for kind, status, prefix in ERROR_TABLE:
            if isinstance(exc, kind):
                message = prefix(exc) if callable(prefix) else f"{prefix}{_first_line(exc)}"
                click.echo(printable(f"error: {message}"), err=True)
                sys.exit(status if status is not None else exc.exit_code)
        click.echo(
            f"error: internal error ({type(exc).__name__}: {printable(_first_line(exc))}); "
            "rerun with VRCONVERT_DEBUG=1 for a traceback",
            err=True,
        )
        sys.exit(3)
