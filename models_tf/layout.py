"""Execution layouts of a vrconvert Keras model: the same network and weights, rearranged for a backend.

The `.keras` file has one contract: channels-last (N, T, H, W, C) input, the layout TensorFlow's CPU
kernels need. Keras' torch backend runs channels-last convolutions by copying every activation to
torch's layout and back (about 40% of its time), so on torch vrconvert runs a channels-first twin of
the model. The twin is derived from the channels-last model's own config (public
`get_config`/`from_config`, built-in layers only), so it follows whatever vocabulary the builder
grows, and refuses a layer it does not know rather than guessing.

A Conv3D kernel is stored as (T, H, W, in, out) whatever the data format, so the twin takes the
original's weights unchanged. Optionally, a strided 1x1x1 convolution (the ResNet shortcut) becomes
an exact strided selection (a 1-wide MaxPooling3D with the conv's stride) and a stride-1 1x1x1
convolution: the same numbers, but a kernel the backends run fast where their strided 1x1x1 path
is slow.
"""

from __future__ import annotations

import copy
from typing import Literal

from vrconvert.converter.arch.layers import PREPROCESSING_PREFIX

DataFormat = Literal["channels_last", "channels_first"]

# Layers whose config carries a data_format and whose weights do not depend on it.
_FORMATTED = {
    "Conv3D",
    "ZeroPadding3D",
    "AveragePooling3D",
    "MaxPooling3D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling3D",
}
# Layers that act elementwise (or on 2-D tensors after the global pool): unchanged by the layout.
# Dropout is the identity at inference and drops single elements in training (no noise shape is set).
_ELEMENTWISE = {"ReLU", "Activation", "Add", "Multiply", "Dropout"}


def _rename_inputs(data, old: str, new: str):
    """`data` (a layer's serialised call arguments) with every reference to layer `old` pointing at `new`."""
    if isinstance(data, dict):
        if data.get("class_name") == "__keras_tensor__" and data["config"]["keras_history"][0] == old:
            data = copy.deepcopy(data)
            data["config"]["keras_history"] = [new, *data["config"]["keras_history"][1:]]
            return data
        return {k: _rename_inputs(v, old, new) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_rename_inputs(v, old, new) for v in data)
    return data


def _strided_pointwise(layer: dict) -> bool:
    """Whether a layer config is a 1x1x1 Conv3D with a stride > 1 (a ResNet shortcut)."""
    cfg = layer["config"]
    return (
        layer["class_name"] == "Conv3D"
        and tuple(cfg["kernel_size"]) == (1, 1, 1)
        and any(s > 1 for s in cfg["strides"])
        and tuple(cfg["dilation_rate"]) == (1, 1, 1)
        and cfg["padding"] == "valid"
    )


def _selection(conv: dict, data_format: DataFormat) -> dict:
    """The config of a 1-wide MaxPooling3D with `conv`'s stride, reading `conv`'s input: the strided
    selection half of a split shortcut (max over one element is that element, bit for bit)."""
    name = f"{conv['name']}_stride"
    return {
        "module": "keras.layers",
        "class_name": "MaxPooling3D",
        "config": {
            "name": name,
            "trainable": False,
            "dtype": conv["config"]["dtype"],
            "pool_size": [1, 1, 1],
            "strides": list(conv["config"]["strides"]),
            "padding": "valid",
            "data_format": data_format,
        },
        "registered_name": None,
        "name": name,
        "inbound_nodes": copy.deepcopy(conv["inbound_nodes"]),
    }


def _reading(source: str, shape) -> list[dict]:
    """The inbound nodes of a layer reading layer `source`'s output (of shape `shape`)."""
    history = {"shape": list(shape), "dtype": "float32", "keras_history": [source, 0, 0]}
    return [{"args": [{"class_name": "__keras_tensor__", "config": history}], "kwargs": {}}]


def _permute(name: str, source: str, shape, dims: list[int]) -> dict:
    """The config of a Permute layer reading layer `source`'s output (of shape `shape`)."""
    return {
        "module": "keras.layers",
        "class_name": "Permute",
        "config": {"name": name, "trainable": False, "dtype": "float32", "dims": dims},
        "registered_name": None,
        "name": name,
        "inbound_nodes": _reading(source, shape),
    }


def _source(layer: dict) -> str:
    """The name of the layer feeding a single-input layer config."""
    return layer["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0]


def _consumers(layers: list[dict]) -> dict[str, int]:
    """How many layer configs read each layer's output."""
    counts: dict[str, int] = {}

    def walk(data) -> None:
        if isinstance(data, dict):
            if data.get("class_name") == "__keras_tensor__":
                name = data["config"]["keras_history"][0]
                counts[name] = counts.get(name, 0) + 1
                return
            for v in data.values():
                walk(v)
        elif isinstance(data, (list, tuple)):
            for v in data:
                walk(v)

    for layer in layers:
        walk(layer["inbound_nodes"])
    return counts


def _same_padded(pad: dict, conv: dict) -> bool:
    """Whether an explicit ZeroPadding3D followed by a "valid" Conv3D equals that conv with Keras'
    "same" padding: stride 1 and an odd kernel on every axis, k // 2 zeros each side (Keras pads
    "same" asymmetrically only where a stride divides unevenly)."""
    cfg = conv["config"]
    padding = [tuple(p) if isinstance(p, (list, tuple)) else (p, p) for p in pad["config"]["padding"]]
    return (
        conv["class_name"] == "Conv3D"
        and cfg["padding"] == "valid"
        and tuple(cfg["strides"]) == (1, 1, 1)
        and tuple(cfg["dilation_rate"]) == (1, 1, 1)
        and all(k % 2 == 1 and p == (k // 2, k // 2) for k, p in zip(cfg["kernel_size"], padding, strict=True))
    )


def _merge_padding(layers: list[dict], outputs: set[str]) -> list[dict]:
    """`layers` with each ZeroPadding3D that only feeds a stride-1 conv folded into that conv's "same"
    padding (on Keras' torch backend that becomes torch's own conv padding: no padded copy)."""
    by_name = {layer["name"]: layer for layer in layers}
    readers = _consumers(layers)
    dropped = set()
    for conv in layers:
        if conv["class_name"] != "Conv3D" or not conv["inbound_nodes"]:
            continue
        pad = by_name.get(_source(conv))
        if (
            pad is None
            or pad["class_name"] != "ZeroPadding3D"
            or readers.get(pad["name"]) != 1
            or pad["name"] in outputs
        ):
            continue
        if _same_padded(pad, conv):
            conv["config"]["padding"] = "same"
            conv["inbound_nodes"] = _rename_inputs(conv["inbound_nodes"], pad["name"], _source(pad))
            dropped.add(pad["name"])
    return [layer for layer in layers if layer["name"] not in dropped]


def derive(
    model,
    data_format: DataFormat = "channels_first",
    *,
    split_strided: bool = False,
    merge_padding: bool = False,
    contiguous: bool = False,
):
    """A new Keras model computing what `model` (a channels-last vrconvert model) computes, laid out
    as `data_format`, with `model`'s weights copied in.

    Its input stays channels-last (N, T, H, W, C) either way: a channels-first twin transposes once,
    in a `Permute` layer right after the input (or after the built-in transform, which stays
    channels-last), so callers never see the internal layout.
    `split_strided` rewrites each strided 1x1x1 Conv3D as a strided selection and a 1x1x1 conv;
    `merge_padding` folds an explicit zero padding into the stride-1 conv it feeds ("same" padding).
    `contiguous` (for training) writes the permuted input out in torch's default layout: the permutation
    alone is a strided view whose channels-last 3-D strides torch carries through every later layer,
    which its convolutions run faster forward and about twice as slow backward.
    """
    import keras

    config = copy.deepcopy(model.get_config())
    out: list[dict] = []
    entry = _entry(model)
    for layer in config["layers"]:
        out += _rewritten(layer, config["layers"], model, data_format, split_strided)
        if data_format == "channels_first" and layer["name"] == entry:  # the network's input
            out += _to_channels_first(entry, model, config["layers"], contiguous)
    outputs = config["output_layers"]
    single = bool(outputs) and isinstance(outputs[0], str)  # one output serialised flat: [name, 0, 0]
    outputs = [list(outputs)] if single else [list(o) for o in outputs]
    if data_format == "channels_first":  # 5-D outputs (feature maps) go back to channels-last
        out += _outputs_to_channels_last(outputs, model.outputs)
    config["output_layers"] = outputs[0] if single else outputs
    kept = {entry[0] for entry in outputs}
    config["layers"] = _merge_padding(out, kept) if merge_padding else out
    twin = keras.Model.from_config(config)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            twin.get_layer(layer.name).set_weights(weights)
    return twin


def channels_first(model) -> bool:
    """Whether `model` is a channels-first twin (any layer laid out channels-first)."""
    return any(getattr(layer, "data_format", None) == "channels_first" for layer in model.layers)


def for_training(model):
    """The form of a channels-last vrconvert model that Keras' current backend trains fastest: on torch,
    the contiguous channels-first twin (the same weights, copied back by layer name); elsewhere `model`."""
    import keras

    return derive(model, "channels_first", contiguous=True) if keras.backend.backend() == "torch" else model


def _rewritten(layer: dict, layers: list[dict], model, data_format: DataFormat, split_strided: bool) -> list[dict]:
    """One layer's config in `data_format`, with what must come before it (a strided selection); `layers`'
    inbound names are updated where a new layer is put in between."""
    kind, cfg = layer["class_name"], layer["config"]
    first = data_format == "channels_first"
    layer.pop("build_config", None)  # shapes recorded in the original layout; rebuilt on call
    if kind == "InputLayer":
        shape = cfg.get("batch_shape")
        if shape is None or len(shape) != 5:
            raise ValueError(f"{layer['name']}: expected a 5-D (N, T, H, W, C) input, got {shape}")
    if kind == "InputLayer" or layer["name"].startswith(PREPROCESSING_PREFIX):
        return [layer]  # the built-in transform works on frames as they come: channels-last
    if kind in _FORMATTED:
        if cfg["data_format"] != "channels_last":
            raise ValueError(f"{layer['name']}: the source model must be channels-last, got {cfg['data_format']}")
        cfg["data_format"] = data_format
    elif kind in ("BatchNormalization", "TorchBatchNormalization"):  # Keras' layer, or torch's variance rule
        if cfg["axis"] not in (-1, 4, [-1], [4]):
            raise ValueError(f"{layer['name']}: BatchNormalization over axis {cfg['axis']}, not the channels")
        cfg["axis"] = 1 if first else -1
    elif kind == "Concatenate":  # S3D's Inception branches, joined along the channels
        if cfg["axis"] not in (-1, 4):
            raise ValueError(f"{layer['name']}: Concatenate along axis {cfg['axis']}, not the channels")
        cfg["axis"] = 1 if first else -1
    elif kind == "Dense":
        rank = len(model.get_layer(layer["name"]).input.shape)
        if rank != 2:
            raise ValueError(f"{layer['name']}: a Dense layer on a {rank}-D tensor")
    elif kind not in _ELEMENTWISE:
        raise ValueError(f"{layer['name']}: no {data_format} form known for a {kind} layer")
    if not (split_strided and _strided_pointwise(layer)):
        return [layer]
    selection = _selection(layer, data_format)
    cfg["strides"] = [1, 1, 1]
    layer["inbound_nodes"] = _rename_inputs(layer["inbound_nodes"], _source(layer), selection["name"])
    return [selection, layer]


def _entry(model) -> str:
    """The layer whose output the network reads: the built-in transform's last layer, or the input."""
    names = [layer.name for layer in model.layers]
    transform = [n for n in names if n.startswith(PREPROCESSING_PREFIX)]
    return transform[-1] if transform else model.layers[0].name


def _to_channels_first(source: str, model, layers: list[dict], contiguous: bool) -> list[dict]:
    """The layers putting `source`'s (N, T, H, W, C) output channels-first, with every reader of `source`
    re-pointed at them: a permutation, and with `contiguous` a 1-wide average pooling after it (x / 1,
    exact), which writes the values out in torch's default (N, C, T, H, W) order."""
    shape = list(model.get_layer(source).output.shape)
    permute, dense = f"{source}_to_channels_first", f"{source}_channels_first"
    for other in layers:
        other["inbound_nodes"] = _rename_inputs(other["inbound_nodes"], source, dense if contiguous else permute)
    added = [_permute(permute, source, shape, [4, 1, 2, 3])]
    if not contiguous:
        return added
    pool = {
        "module": "keras.layers",
        "class_name": "AveragePooling3D",
        "config": {
            "name": dense,
            "trainable": False,
            "dtype": "float32",
            "pool_size": [1, 1, 1],
            "strides": [1, 1, 1],
            "padding": "valid",
            "data_format": "channels_first",
        },
        "registered_name": None,
        "name": dense,
        "inbound_nodes": _reading(permute, [shape[0], shape[4], *shape[1:4]]),
    }
    return [*added, pool]


def _outputs_to_channels_last(outputs: list[list], tensors) -> list[dict]:
    """Permutes that put a channels-first twin's 5-D outputs back to channels-last (`outputs` re-pointed)."""
    added = []
    for entry, tensor in zip(outputs, tensors, strict=True):
        if len(tensor.shape) == 5:
            back = f"{entry[0]}_to_channels_last"
            added.append(_permute(back, entry[0], tensor.shape, [2, 3, 4, 1]))
            entry[:] = [back, 0, 0]
    return added
