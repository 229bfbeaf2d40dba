"""One mapped tensor: where it lives in torch and in Keras, and the permutation between its layouts.
Every family's mapping lists these; converting is applying them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One tensor: its torch key and shape, its Keras variable path and shape, and the permutation."""

    torch_key: str
    keras_path: str
    torch_shape: tuple[int, ...]
    permutation: tuple[int, ...] | None

    @property
    def keras_shape(self) -> tuple[int, ...]:
        if self.permutation is None:
            return self.torch_shape
        return tuple(self.torch_shape[axis] for axis in self.permutation)

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        return array if self.permutation is None else np.transpose(array, self.permutation)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        if self.permutation is None:
            return array
        return np.transpose(array, tuple(int(a) for a in np.argsort(self.permutation)))
