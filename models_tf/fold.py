"""The BatchNorm-folded Keras model: an inference-only model in which every BatchNorm is merged into the
conv before it (a Conv3D with a bias), so deployed artifacts skip one pass over every activation.

The graph comes from `arch.folding`'s records through the ordinary per-record builder (built-in layers
only, so a folded `.keras` file loads in safe mode without vrconvert).
"""

from __future__ import annotations

import keras
import numpy as np

from vrconvert.converter.arch import spec
from vrconvert.converter.arch.folding import FOLDED_SUFFIX, folded_layers, folded_variables
from vrconvert.converter.arch.layers import INPUT, keras_name
from vrconvert.models_tf.build import MERGES, apply_layer
from vrconvert.models_tf.variables import assign


def build_folded(arch: spec.Arch, state: dict[str, np.ndarray], input_shape=None):
    """A Keras inference model of `arch` with its BatchNorms folded, carrying `state` (torch-named).

    `input_shape` is (T, H, W, 3), any of T, H, W None (the default: all free)."""
    inputs = keras.Input(shape=tuple(input_shape) if input_shape else (None, None, None, 3), name=INPUT)
    values = {INPUT: inputs}
    for layer in folded_layers(arch):
        if layer.op in MERGES:
            out = MERGES[layer.op](name=keras_name(layer.name))([values[n] for n in layer.inputs])
        else:
            out = apply_layer(layer, values[layer.inputs[0]], None)
        values[layer.name] = out
    model = keras.Model(inputs, out, name=f"{arch.name}{FOLDED_SUFFIX}")
    arrays = folded_variables(arch, state)
    assign(model, arrays.items(), set(arrays), f"{arch.name}'s folded weights")
    return model


def is_folded(model) -> bool:
    """A vrconvert model whose BatchNorms were folded (`build_folded` names it so)."""
    return str(getattr(model, "name", "")).endswith(FOLDED_SUFFIX)
