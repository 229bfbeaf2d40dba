"""A vrconvert backbone found inside whatever a user wrapped it in.

Keras users nest the backbone as one layer of a Functional or Sequential model, or reuse its layers in a
new graph, and add their own head. Variable paths then depend on the wrapping (`sequential/h/kernel`),
so the layers are walked instead, by the names the builder gave them; the head is found by its role
(`converter.arch.heads`). Layers around them that torch's model has no counterpart for are refused by
name, so a converted state dict never silently computes something else.
"""

from __future__ import annotations

import keras
import numpy as np

from vrconvert.converter.arch import accounting, heads, mapping, spec
from vrconvert.converter.arch.layers import PREPROCESSING_PREFIX, expand, keras_name
from vrconvert.converter.errors import InputError
from vrconvert.models_tf.variables import assign
from vrconvert.models_tf.walk import activation_of, leaves

# weightless layers a wrapper may hold: identity at inference (Dropout) or torch's own head pooling
PASSIVE = ("InputLayer", "Dropout", "SpatialDropout3D", "Flatten", "GlobalAveragePooling3D")


def _check_passive(layer, names: set[str]) -> None:
    """A weightless layer outside the backbone must be one torch's model can do without."""
    kind = type(layer).__name__
    if kind == "GlobalMaxPooling3D":
        raise InputError(f"layer {layer.name}: a max-pooling head; torchvision's model pools by the average")
    if layer.name in names or layer.name.startswith(PREPROCESSING_PREFIX) or kind in PASSIVE:
        return
    if kind == "Activation" and layer.get_config().get("activation") in ("linear", "softmax"):
        return
    raise InputError(f"layer {layer.name} ({kind}) has no counterpart in torchvision's model; it cannot be converted")


def _weighted(layer) -> heads.Weighted:
    return heads.Weighted(
        name=layer.name, kind=type(layer).__name__, shapes={_var(v): tuple(v.shape) for v in layer.weights}
    )


def _var(variable) -> str:
    return variable.path.rsplit("/", 1)[-1]


def wrapped(model) -> bool:
    """Whether `model` is more than a vrconvert model: a model nested in it, or a weighted layer that no
    known network has (a user's head)."""
    return any(isinstance(layer, keras.Model) for layer in model.layers) or any(
        layer.weights and not heads.is_known(layer.name) for layer in model.layers
    )


def find(model, arch: str | None = None, head: str | None = None, require_head: bool = True, values: bool = True):
    """(arch, variables) of the backbone and head inside `model`, the variables keyed by the mapping's
    Keras paths (the head's as `fc/...`). `head` names the head layer when more than one Dense could be
    it; without `require_head`, a headless backbone is accepted (then no `fc/...` variables)."""
    layers = leaves(model)
    weighted = [_weighted(layer) for layer in layers if layer.weights]
    name = heads.find_head(weighted, head)
    if name is None and require_head:
        raise InputError("no classifier head: the model has no Dense layer outside the backbone")
    heads.refuse_foreign(weighted, name)
    shapes = heads.renamed(weighted, name)
    variant = _detect(accounting.torch_shapes_of(shapes), arch, activation_of(_FlatView(layers)), name is None)
    own = {keras_name(r.name) for r in expand(variant)}
    own |= {f"{n}_pad" for n in own}
    for layer in layers:
        if not layer.weights:
            _check_passive(layer, own)
        elif layer.name == name and layer.get_config().get("activation") not in (None, "linear", "softmax"):
            raise InputError(f"layer {name}: a head with activation {layer.get_config()['activation']!r}")
    if not values:  # detection only: no copy of the weights
        return variant, {}
    found = {}
    for layer in layers:
        for v in layer.weights:
            found[f"{heads.HEAD if layer.name == name else layer.name}/{_var(v)}"] = keras.ops.convert_to_numpy(v)
    return variant, found


def locate(model, arch: str | None = None, head: str | None = None, require_head: bool = True):
    """(arch, torch state dict) of the backbone and head inside `model` (see `find`); a headless
    backbone's state dict has no `fc.*`."""
    variant, values = find(model, arch, head, require_head)
    if f"{heads.HEAD}/kernel" not in values:
        values = {**values, **{e.keras_path: np.zeros(e.keras_shape, np.float32) for e in head_entries(variant)}}
        state = mapping.to_torch(variant, values)
        return variant, {k: v for k, v in state.items() if not k.startswith(f"{heads.HEAD}.")}
    return variant, mapping.to_torch(variant, values)


def head_entries(variant: spec.Arch) -> list:
    return [e for e in mapping.entries(variant) if e.torch_key.startswith(f"{heads.HEAD}.")]


def _detect(torch_shapes: dict, arch: str | None, activation: str | None, headless: bool) -> spec.Arch:
    """The architecture of the backbone (strictly accounted for); a headless one is detected with a
    stand-in head, so every backbone key still has to fit."""
    if not headless:
        return accounting.detect(torch_shapes, arch, activation)
    features = _feature_width(torch_shapes)
    stand_in = {f"{heads.HEAD}.weight": (1, features), f"{heads.HEAD}.bias": (1,)} if features else {}
    return accounting.detect({**torch_shapes, **stand_in}, arch, activation)


def _feature_width(torch_shapes: dict) -> int | None:
    """The backbone's output channels: its last BatchNorm's width."""
    widths = [shape[0] for key, shape in torch_shapes.items() if key.endswith(".running_mean")]
    return widths[-1] if widths else None


class _FlatView:
    """What `activation_of` needs (`get_layer`) over leaves found anywhere in the model."""

    def __init__(self, layers: list) -> None:
        self._by_name = {layer.name: layer for layer in layers}

    def get_layer(self, name: str):
        if name not in self._by_name:
            raise ValueError(name)
        return self._by_name[name]


def flat_copy(model, variant: spec.Arch, head: str | None = None):
    """`model` itself when it is a plain vrconvert model, else a plain one of `variant` carrying its
    backbone's and head's variables and its BatchNorm layers' class, momentum and epsilon (what
    training follows; a wrapper's Dropout has no torch twin and is left out)."""
    from vrconvert.models_tf.batchnorm import running_variance_rule
    from vrconvert.models_tf.build import build

    if not any(isinstance(layer, keras.Model) for layer in model.layers) and heads.HEAD in {
        layer.name for layer in model.layers
    }:
        return model
    _, values = find(model, variant.name, head)
    flat = build(variant, batchnorm=running_variance_rule(model))
    norms = {layer.name: layer for layer in leaves(model) if isinstance(layer, keras.layers.BatchNormalization)}
    for layer in flat.layers:
        if layer.name in norms:
            layer.momentum, layer.epsilon = norms[layer.name].momentum, norms[layer.name].epsilon
    assign(flat, values.items(), set(values), "the wrapped backbone")
    return flat
