"""`vrconvert` click group: commands import the frameworks lazily, so `--help` stays instant."""

from __future__ import annotations

import click

from vrconvert import __version__

from .demo import demo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vrconvert")
def cli() -> None:
    """Convert torchvision's video ResNets (r3d_18, mc3_18, r2plus1d_18) between PyTorch and Keras 3."""


cli.add_command(demo)


def main() -> None:
    cli()
