"""`vrconvert` click group: commands import the frameworks lazily, so `--help` stays instant."""

from __future__ import annotations

import click

from vrconvert import __version__

from . import quiet
from .catalog import build_cmd, list_cmd
from .convert import keras2torch, torch2keras
from .demo import demo
from .errors import run_guarded
from .evaluate import evaluate
from .export import export
from .finetune import finetune
from .inspect import inspect, mapping_cmd
from .keras2keras import keras2keras
from .predict import predict
from .validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vrconvert")
def cli() -> None:
    """Convert video ResNets (torchvision's r3d_18, mc3_18, r2plus1d_18 and the paper's family: see
    `vrconvert list`) between PyTorch and Keras 3, and check that both compute the same logits."""


# One command a line, in `--help` order.
COMMANDS = (
    torch2keras,
    keras2torch,
    keras2keras,
    export,
    validate,
    finetune,
    predict,
    evaluate,
    inspect,
    mapping_cmd,
    list_cmd,
    build_cmd,
    demo,
)
for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    quiet.install()
    run_guarded(lambda: cli.main(standalone_mode=False))
