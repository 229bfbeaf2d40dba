"""Options shared by several commands, defined once."""

from __future__ import annotations

import json

import click

from vrconvert.converter import spec

arch_option = click.option("--arch", type=click.Choice(list(spec.VARIANTS)), default=None,
                           help="Architecture (default: detected from the file's keys and shapes).")
force_option = click.option("--force", is_flag=True, help="Replace DST if it exists.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


def emit_json(document: dict) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def note(message: str) -> None:
    """Progress and remarks go to stderr; results go to stdout."""
    click.echo(message, err=True)
