"""vrconvert: torchvision's Kinetics-400 video models in PyTorch and Keras 3, and conversion between them.

Subpackages: `vrconvert.converter` (spec, layers, mapping, checkpoints), `vrconvert.models_torch`,
`vrconvert.models_tf`, `vrconvert.cli`. Nothing heavy is imported here: torch, TensorFlow and Keras
load only when a function that needs them is called.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"
# vrconvert's registered Keras layers (no Lambda anywhere): MViT's, Swin3D's and its short-side resize,
# and the opt-in torch-rule BatchNorm
KERAS_LAYERS = (
    "vrconvert.models_tf.mvit_layers",
    "vrconvert.models_tf.swin3d_layers",
    "vrconvert.models_tf.short_side",
    "vrconvert.models_tf.batchnorm",
)


def register_keras_layers() -> None:
    """Registers vrconvert's own Keras layers, so that `keras.models.load_model` finds them in safe mode.
    Done by `import vrconvert` the moment Keras is imported; call it only where Keras was imported through
    a path that bypassed that hook."""
    for module in KERAS_LAYERS:
        importlib.import_module(module)


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Registers `KERAS_LAYERS` right after Keras itself is imported, so a `.keras` file using vrconvert's
    layers loads in safe mode after `import vrconvert`, while `import vrconvert` stays free of Keras."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module) -> None:
                run(module)
                register_keras_layers()

            spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    register_keras_layers()
elif not any(isinstance(finder, _RegisterWithKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithKeras())


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


def finetune(videos, out, *, weights, **options):
    """Fine-tunes `weights` on class folders of videos: OUT/model.keras, OUT/model.pth and the curves (see
    converter.training.finetune); TensorFlow's start-up lines and third-party warnings stay off stderr."""
    from vrconvert.converter.training.finetune import finetune as run

    return run(videos, out, weights=weights, **options)
