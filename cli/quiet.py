"""stderr carries vrconvert's own lines only: TensorFlow's C++ start-up logging (absl, oneDNN,
cpu_feature_guard) is silenced for the duration of its import, and third-party Python warnings and
log records are dropped. Nothing changes with VRCONVERT_DEBUG=1; TensorFlow's import is left alone
where the user set TF_CPP_MIN_LOG_LEVEL.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings

import click

from vrconvert.converter.stderr import fd2_silenced, only_own_warnings


def install() -> None:
    """Called once by the CLI entry point, before any command runs."""
    if os.environ.get("VRCONVERT_DEBUG") == "1":
        return
    only_own_warnings()  # our own remarks stay, as one line
    warnings.showwarning = _one_line
    logging.disable(logging.CRITICAL)  # vrconvert writes with click, never through logging
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` like the normal machinery does, and runs its import silenced (asked again
    only if TensorFlow leaves sys.modules; a bare find_spec, as Keras does, imports nothing)."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilencedLoader(spec.loader)
        return spec


class _SilencedLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = self.loader  # TensorFlow sees its own loader, as without us
        module.__loader__ = self.loader
        with fd2_silenced({"TF_CPP_MIN_LOG_LEVEL": "3"}):
            self.loader.exec_module(module)
