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
