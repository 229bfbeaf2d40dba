"""The layer-name mapping, one entry point for every family: torch key <-> Keras variable path, with the
axis permutation from torch's layout to Keras'.

Most families are described by layer records and map by `record_mapping`'s rule table per op; a family
whose tensors do not follow its records one to one (Swin3D) has a rule table of its own, listed in
`OWN_RULES`. Both expose the same functions, so this module only picks one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vrconvert.converter.arch import record_mapping, swin3d_mapping
from vrconvert.converter.arch.entries import Entry
from vrconvert.converter.arch.families import Variant as Arch
from vrconvert.converter.arch.record_mapping import RULES, TORCH_ONLY_SUFFIX, Rule, rule_for_keras
from vrconvert.converter.arch.swin3d import Swin3D

__all__ = ["RULES", "TORCH_ONLY_SUFFIX", "Rule", "rule_for_keras"]

OWN_RULES = {Swin3D: swin3d_mapping}  # family record type -> its mapping module; the rest: record_mapping


def _rules(arch: Arch):
    return OWN_RULES.get(type(arch), record_mapping)


def entries(arch: Arch) -> tuple[Entry, ...]:
    """Every mapped tensor of `arch`, in torchvision's state_dict order."""
    return _rules(arch).entries(arch)


def torch_only_keys(arch: Arch) -> tuple[str, ...]:
    """The buffers torch has and Keras does not (one `num_batches_tracked` per BatchNorm, ...)."""
    return _rules(arch).torch_only_keys(arch)


def torch_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """torchvision's state_dict layout for `arch`: keys in order, shapes, buffers included."""
    return _rules(arch).torch_shapes(arch)


def iter_keras(arch: Arch, state: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """(Keras variable path, array) one at a time, so a caller can assign each and let it go."""
    return _rules(arch).iter_keras(arch, state)


def to_keras(arch: Arch, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torch-named arrays -> Keras variable path -> array (the state must already be accounted for)."""
    return _rules(arch).to_keras(arch, state)


def complete(arch: Arch, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state` in torchvision's key order with the torch-only buffers it lacks filled in (`num_batches_tracked`,
    absent from Keras and from pre-1.0 checkpoints, as 0)."""
    return _rules(arch).complete(arch, state)


def to_torch(arch: Arch, variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras variable path -> array  ->  a torchvision state dict (numpy), buffers included, in order."""
    return _rules(arch).to_torch(arch, variables)


def table(arch: Arch) -> list[dict]:
    """The mapping as rows a person can read (for `vrconvert mapping`)."""
    rows = [
        {
            "torch": e.torch_key,
            "torch_shape": list(e.torch_shape),
            "keras": e.keras_path,
            "keras_shape": list(e.keras_shape),
            "permutation": list(e.permutation) if e.permutation else None,
        }
        for e in entries(arch)
    ]
    rows += [
        {"torch": key, "torch_shape": [], "keras": None, "keras_shape": None, "permutation": None}
        for key in torch_only_keys(arch)
    ]
    return rows
