"""Keras 3 implementations of the spec's video ResNets (channels-last, built-in layers only), and the
fast way to run them (`predictor`: one compiled graph per input shape)."""

from .build import build
from .infer import predictor

__all__ = ["build", "predictor"]
