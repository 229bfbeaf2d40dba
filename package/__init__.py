"""vrconvert: torchvision's Kinetics-400 video ResNets in PyTorch and Keras 3, and conversion between them.

Subpackages: `vrconvert.converter` (spec, layers, mapping, checkpoints), `vrconvert.models_torch`,
`vrconvert.models_tf`, `vrconvert.cli`. Nothing heavy is imported here: torch, TensorFlow and Keras
load only when a function that needs them is called.
"""

from __future__ import annotations

__version__ = "0.1.0"


def torch_to_keras(src, dst, **options):
    """Converts a torch checkpoint file to `.keras`, `.h5` or `.weights.h5` (see converter.conversion.convert)."""
    from vrconvert.converter.conversion.convert import torch_to_keras as run

    return run(src, dst, **options)


def keras_to_torch(src, dst, **options):
    """Converts a Keras file to a torchvision state dict file, `.pth` or `.safetensors`."""
    from vrconvert.converter.conversion.convert import keras_to_torch as run

    return run(src, dst, **options)


def state_dict_to_keras(state, arch: str | None = None):
    """In memory: a torchvision-style state dict -> Keras model (architecture detected unless given)."""
    from vrconvert.converter.conversion.convert import state_dict_to_keras as run

    return run(state, arch)


def keras_to_state_dict(model, arch: str | None = None, head: str | None = None):
    """In memory: a vrconvert Keras model, or a model around a vrconvert backbone with its own head, ->
    torchvision state dict of numpy arrays (the head becomes `fc`; `head` names it if need be)."""
    from vrconvert.converter.conversion.convert import keras_to_state_dict as run

    return run(model, arch, head)
