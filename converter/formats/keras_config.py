"""The config Keras writes for `models_tf.build(arch)`, computed from the layer records without Keras.

Importing Keras costs a full framework (TensorFlow, or torch with its compiler stack) even where a
command only writes or reads a file. This module spells the functional config of the default model
(channels-last, top included, logits, no preprocessing) the way Keras' serializer does, key for key;
the tests compare it with Keras' own output for every variant. `VERIFIED_KERAS` names the Keras releases
that comparison ran on: with any other, callers go through Keras itself.
"""

from __future__ import annotations

import dataclasses

from vrconvert.converter.arch import spec
from vrconvert.converter.arch.layers import INPUT, Layer, expand, keras_name

VERIFIED_KERAS = ("3.15.1",)
# Keras records a shared object (the layers' one DTypePolicy) by the object's id(); any integer reads back.
SHARED_DTYPE_ID = 140000000000000
ACTIVATIONS = {"mish": "mish", "hard_swish": "hard_silu", "sigmoid": "sigmoid", "softmax": "softmax"}
OPS = frozenset({"conv", "bn", "act", "pool", "maxpool", "gap", "add", "mul", "avgpool", "dense"})
# The layer-record attributes the spelling below reads or knows to leave Keras' config alone.
FIELDS = frozenset(
    {"name", "op", "inputs", "channels_in", "channels_out", "kernel", "stride", "padding", "bias", "activation"}
    | {"mid", "padding_mode", "epsilon", "momentum"}
)
# The variables of each weighted Keras class, in the order Keras creates and saves them.
VARIABLES = {
    "Conv3D": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "Dense": ("kernel", "bias"),
}

Shape = tuple[int | None, ...]


def keras_version() -> str | None:
    """The installed Keras release, read from its metadata (never by importing it)."""
    from importlib import metadata

    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        return None


def _spelled(layer: Layer) -> bool:
    """A record this module spells: a known op and activation, and no attribute it does not know of set
    (a field added to the records later means a Keras option this spelling was never checked for)."""
    unknown = [f for f in dataclasses.fields(layer) if f.name not in FIELDS]
    return (
        layer.op in OPS
        and (layer.op != "act" or layer.activation == "relu" or layer.activation in ACTIVATIONS)
        and all(getattr(layer, f.name) == f.default for f in unknown)
    )


def supported(arch: spec.Arch) -> bool:
    """Whether this module spells `arch`'s config for the installed Keras (the video ResNets' records only;
    other families go through Keras)."""
    if not isinstance(arch, spec.Arch):
        return False
    return keras_version() in VERIFIED_KERAS and all(_spelled(layer) for layer in expand(arch))


def _initializer(name: str, config: dict | None = None) -> dict:
    return {"module": "keras.initializers", "class_name": name, "config": config or {}, "registered_name": None}


def _glorot() -> dict:
    return _initializer("GlorotUniform", {"seed": None, "input_axes": None, "output_axes": None})


def _tensor(shape: Shape, source: str) -> dict:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": list(shape), "dtype": "float32", "keras_history": [source, 0, 0]},
    }


class _Writer:
    """Accumulates layer entries; tracks each value's shape (T, H, W stay None: the input's are)."""

    def __init__(self) -> None:
        self.layers: list[dict] = []
        self.shapes: dict[str, Shape] = {}
        self.sources: dict[str, list[str]] = {}

    @staticmethod
    def dtype() -> dict:
        return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}

    def add(self, cls: str, name: str, options: dict, sources: list[str], out: Shape, *, built=False, mask=False):
        config = {"name": name, "trainable": True, "dtype": self.dtype(), **options}
        tensors = [_tensor(self.shapes[s], s) for s in sources]
        entry = {"module": "keras.layers", "class_name": cls, "config": config, "registered_name": None}
        shapes = [list(self.shapes[s]) for s in sources]
        if built:
            entry["build_config"] = {"input_shape": shapes if len(sources) > 1 else shapes[0]}
        entry["name"] = name
        args = [tensors] if len(sources) > 1 else tensors
        entry["inbound_nodes"] = [{"args": args, "kwargs": {"mask": None} if mask else {}}]
        self.layers.append(entry)
        self.shapes[name] = out
        self.sources[name] = sources
        return name

    def ordered(self, output: str) -> list[dict]:
        """The layers in Keras' functional order (`keras.src.ops.function.map_graph`): by decreasing
        depth from the output, ties by first visit of a depth-first walk from the output; the first
        DTypePolicy written carries no shared id, the later ones do."""
        visit: dict[str, int] = {}  # first-visit index (pre-order)
        post: list[str] = []  # post-order: inputs before the layers that read them
        done: set[str] = set()
        stack = [(output, iter(self.sources[output]))]
        visit[output] = 0
        while stack:
            name, pending = stack[-1]
            nxt = next(pending, None)
            if nxt is None:
                stack.pop()
                done.add(name)
                post.append(name)
            elif nxt not in done:
                visit.setdefault(nxt, len(visit))
                stack.append((nxt, iter(self.sources[nxt])))
        depth: dict[str, int] = {}
        for name in reversed(post):
            d = depth.setdefault(name, 0)
            for parent in self.sources[name]:
                depth[parent] = max(d + 1, depth.get(parent, 0))
        order = sorted(post, key=lambda n: (-depth[n], visit[n]))
        by_name = {entry["name"]: entry for entry in self.layers}
        layers = [by_name[n] for n in order]
        shared = False
        for entry in layers:
            if isinstance(entry["config"].get("dtype"), dict):
                if shared:
                    entry["config"]["dtype"]["shared_object_id"] = SHARED_DTYPE_ID
                shared = True
        return layers


def _broadcast(a: Shape, b: Shape) -> Shape:
    def one(x, y):
        if x == 1:
            return y
        if y == 1:
            return x
        return None if x is None or y is None else x

    return tuple(one(x, y) for x, y in zip(a, b, strict=True))


def _pooling(layer: Layer) -> dict:
    padding = "same" if layer.padding_mode == "same" else "valid"
    return {
        "pool_size": list(layer.kernel),
        "padding": padding,
        "strides": list(layer.stride),
        "data_format": "channels_last",
    }


def _conv_options(layer: Layer, padding: str) -> dict:
    """A Conv3D's config as Keras 3.15.1 spells it."""
    return {
        "filters": layer.channels_out,
        "kernel_size": list(layer.kernel),
        "strides": list(layer.stride),
        "padding": padding,
        "data_format": "channels_last",
        "dilation_rate": [1, 1, 1],
        "groups": 1,
        "activation": "linear",
        "use_bias": layer.bias,
        "kernel_initializer": _glorot(),
        "bias_initializer": _initializer("Zeros"),
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }


def _bn_options(layer: Layer) -> dict:
    """A BatchNormalization's config as Keras 3.15.1 spells it."""
    return {
        "axis": -1,
        "momentum": 1 - layer.momentum,
        "epsilon": layer.epsilon,
        "center": True,
        "scale": True,
        "beta_initializer": _initializer("Zeros"),
        "gamma_initializer": _initializer("Ones"),
        "moving_mean_initializer": _initializer("Zeros"),
        "moving_variance_initializer": _initializer("Ones"),
        "beta_regularizer": None,
        "gamma_regularizer": None,
        "beta_constraint": None,
        "gamma_constraint": None,
        "synchronized": False,
        "renorm": False,
        "renorm_clipping": None,
        "renorm_momentum": 0.99,
    }


def _dense_options(layer: Layer) -> dict:
    """A Dense layer's config as Keras 3.15.1 spells it."""
    return {
        "units": layer.channels_out,
        "activation": "linear",
        "use_bias": layer.bias,
        "kernel_initializer": _glorot(),
        "bias_initializer": _initializer("Zeros"),
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
        "quantization_config": None,
    }


def _layer(w: _Writer, layer: Layer, source: str) -> str:
    name = keras_name(layer.name)
    shape = w.shapes[source]
    if layer.op in ("conv", "pool") and any(layer.padding):
        padding = [[p, p] for p in layer.padding]
        options = {"padding": padding, "data_format": "channels_last"}
        source = w.add("ZeroPadding3D", f"{name}_pad", options, [source], shape, built=True)
    padding = "same" if layer.padding_mode == "same" else "valid"
    if layer.op == "conv":
        options = _conv_options(layer, padding)
        return w.add("Conv3D", name, options, [source], (*shape[:-1], layer.channels_out), built=True)
    if layer.op == "bn":
        options = _bn_options(layer)
        return w.add("BatchNormalization", name, options, [source], shape, built=True, mask=True)
    if layer.op == "act" and layer.activation == "relu":
        options = {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}
        return w.add("ReLU", name, options, [source], shape)
    if layer.op == "act":
        return w.add("Activation", name, {"activation": ACTIVATIONS[layer.activation]}, [source], shape)
    if layer.op == "maxpool":
        return w.add("MaxPooling3D", name, _pooling(layer), [source], shape)
    if layer.op == "pool":
        return w.add("AveragePooling3D", name, _pooling(layer), [source], shape)
    if layer.op in ("gap", "avgpool"):
        keep = layer.op == "gap"
        out = (shape[0], 1, 1, 1, shape[-1]) if keep else (shape[0], shape[-1])
        options = {"data_format": "channels_last", "keepdims": keep}
        return w.add("GlobalAveragePooling3D", name, options, [source], out)
    if layer.op == "dense":
        options = _dense_options(layer)
        return w.add("Dense", name, options, [source], (*shape[:-1], layer.channels_out), built=True)
    raise ValueError(f"no Keras config for op {layer.op!r} ({layer.name})")


def model_config(arch: spec.Arch) -> dict:
    """The `config.json` document of `models_tf.build(arch)` as Keras' saver writes it."""
    w = _Writer()
    w.layers.append(
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "config": {
                "batch_shape": [None, None, None, None, 3],
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": INPUT,
                "optional": False,
            },
            "registered_name": None,
            "name": INPUT,
            "inbound_nodes": [],
        }
    )
    w.shapes[INPUT] = (None, None, None, None, 3)
    w.sources[INPUT] = []
    names = {INPUT: INPUT}
    out = INPUT
    for layer in expand(arch):
        if layer.op in ("add", "mul"):
            sources = [names[n] for n in layer.inputs]
            shape = w.shapes[sources[0]]
            for s in sources[1:]:
                shape = _broadcast(shape, w.shapes[s])
            cls = "Add" if layer.op == "add" else "Multiply"
            out = w.add(cls, keras_name(layer.name), {}, sources, shape, built=True)
        else:
            out = _layer(w, layer, names[layer.inputs[0]])
        names[layer.name] = out
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": arch.name,
            "trainable": True,
            "layers": w.ordered(out),
            "input_layers": [INPUT, 0, 0],
            "output_layers": [out, 0, 0],
        },
        "registered_name": "Functional",
        "build_config": {"input_shape": None},
        "compile_config": {},
    }


def snake_case(class_name: str) -> str:
    """Keras' name for a saved layer's group (`naming.to_snake_case`): `Conv3D` -> `conv3d`."""
    import re

    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weight_groups(config: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(h5 group, layer name, variable names) per layer in the order Keras saves them: the functional
    config's layer order, each group named by its class and a per-class counter."""
    used: dict[str, int] = {}
    out = []
    for entry in config["config"]["layers"]:
        base = snake_case(entry["class_name"])
        count = used.get(base)
        used[base] = 0 if count is None else count + 1
        group = base if count is None else f"{base}_{count + 1}"
        names = VARIABLES.get(entry["class_name"], ())
        if entry["class_name"] in ("Conv3D", "Dense") and not entry["config"]["use_bias"]:
            names = names[:1]
        out.append((f"layers/{group}", entry["config"]["name"], names))
    return out
