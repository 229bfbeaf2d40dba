"""Keras 3 implementations of the spec's video ResNets (channels-last, built-in layers only)."""

from .build import build

__all__ = ["build"]
