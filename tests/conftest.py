"""Shared test set-up: quiet TensorFlow, the TensorFlow Keras backend, small thread pools."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers (oracle, helpers) by name

import numpy as np
import pytest


@pytest.fixture(scope="session")
def torch():
    import torch

    torch.set_num_threads(max(1, os.cpu_count() // 2 if os.environ.get("PYTEST_XDIST_WORKER") else os.cpu_count()))
    return torch


@pytest.fixture(scope="session")
def keras():
    import keras

    return keras


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    """pytest 9.2 with pytest-xdist 3.8 splits every xdist_group across workers (the worker check below
    can only fail with an internal error there): say so in one line before any worker starts."""
    from importlib.metadata import version

    def numbers(name):
        return tuple(int(p) for p in version(name).split(".")[:2] if p.isdigit())

    grouping = config.getoption("dist", "no") == "loadgroup" and not os.environ.get("PYTEST_XDIST_WORKER")
    if grouping and numbers("pytest") >= (9, 2) and numbers("pytest-xdist") <= (3, 8):
        raise pytest.UsageError(
            f"pytest {version('pytest')} with pytest-xdist {version('pytest-xdist')} ignores xdist_group "
            "under --dist loadgroup; install the versions in constraints.txt"
        )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup`, an xdist_group's tests must share one worker (its module fixtures are
    built once); a pytest whose test ids pytest-xdist cannot tag would split every group silently."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and getattr(config.option, "loadgroup", False)):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            raise pytest.UsageError(
                f"{item.nodeid}: pytest-xdist did not tag this test with its xdist_group (pytest "
                f"{pytest.__version__}); install the versions in constraints.txt"
            )
