"""Running a command on another Keras backend than the one this process already uses."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import NoReturn

import click


def rerun_with_backend(backend: str) -> NoReturn:
    """Keras is already running on another backend in this process: run the command in a child and
    exit with its status."""
    ctx = click.get_current_context()
    args = []
    for param in ctx.command.params:
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            continue
        if param.is_flag:
            args += [param.opts[0]] if value else []
        elif param.multiple:
            for item in value:
                args += [param.opts[0], str(item)]
        elif value is not None:
            args += [param.opts[0], str(value)]
    args.append("--")
    for param in ctx.command.params:
        if isinstance(param, click.Argument):  # nargs=-1 arguments arrive as a tuple: one argv item each
            value = ctx.params[param.name]
            args += [str(v) for v in value] if isinstance(value, tuple | list) else [str(value)]
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run(
        [sys.executable, "-m", "vrconvert", ctx.command.name, *args],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    click.echo(proc.stdout, nl=False)
    click.echo(proc.stderr, nl=False, err=True)
    sys.exit(proc.returncode)
