"""vrconvert: torchvision's Kinetics-400 video ResNets in PyTorch and Keras 3, and conversion between them.

Subpackages: `vrconvert.converter` (spec, layers, mapping, checkpoints), `vrconvert.models_torch`,
`vrconvert.models_tf`, `vrconvert.cli`. Nothing heavy is imported here: torch, TensorFlow and Keras
load only when a function that needs them is called.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def register_keras_layers() -> None:
    """Registers vrconvert's own Keras layers (Swin3D's window attention, patch merging, padding and its
    short-side resize), so that `keras.models.load_model` finds them in safe mode. Imported here when Keras
    already is (which costs nothing more); otherwise call it before loading."""
    from vrconvert.models_tf import short_side, swin3d_layers  # noqa: F401


if "keras" in sys.modules:
    register_keras_layers()


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


def keras_to_state_dict(model, arch: str | None = None):
    """In memory: a vrconvert Keras model -> torchvision state dict of numpy arrays."""
    from vrconvert.converter.conversion.convert import keras_to_state_dict as run

    return run(model, arch)
