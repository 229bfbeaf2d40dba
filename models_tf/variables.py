"""A Keras model's variables by path: read all at once, or assigned strictly (every variable exactly once)."""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np

from vrconvert.converter.errors import InputError


def assign(model, arrays: Iterable[tuple[str, np.ndarray]], paths: set[str], what: str = "the mapping") -> None:
    """Assigns (variable path, array) pairs; `paths` (what they will cover) must be exactly the model's:
    otherwise one line saying what `what` leaves unassigned and what it names that the model lacks."""
    variables = {v.path: v for v in model.weights}
    if set(variables) != paths:
        missing, extra = sorted(set(variables) - paths), sorted(paths - set(variables))
        raise InputError(f"{what} does not cover the Keras model: unassigned {missing[:4]}, unknown {extra[:4]}")
    for path, array in arrays:
        variables[path].assign(array)


def variables_of(model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def shapes_of_model(model) -> dict[str, tuple[int, ...]]:
    return {v.path: tuple(v.shape) for v in model.weights}
