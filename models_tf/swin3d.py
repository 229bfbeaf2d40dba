"""Builds a Keras 3 functional Swin3D from the family's records (`converter.arch.swin3d`).

Channels-last (N, T, H, W, 3), time first after the batch. Built-in layers where they express the op
(Conv3D, LayerNormalization, Dense, Add, GlobalAveragePooling3D), the family's
registered layers (`models_tf.swin3d_layers`) where Keras has none. Layers are named after torchvision's
module paths, dots spelled as underscores.
"""

from __future__ import annotations

import keras

from vrconvert.converter.arch import swin3d
from vrconvert.converter.arch.swin3d import INPUT, Node
from vrconvert.models_tf import swin3d_layers as sl


def keras_name(path: str) -> str:
    return path.replace(".", "_")


def output_layer(node: Node) -> str:
    """The Keras layer whose output is the record's (a patch merging ends in its reduction)."""
    return keras_name(node.name) + ("_reduction" if node.op == "merge" else "")


def _apply(node: Node, x, classifier_activation):
    name = keras_name(node.name)
    if node.op == "embed":
        x = sl.PadToMultiple(node.kernel, name=f"{name}_pad")(x)
        return keras.layers.Conv3D(node.channels_out, node.kernel, strides=node.kernel, name=name)(x)
    if node.op == "norm":
        return keras.layers.LayerNormalization(epsilon=node.epsilon, name=name)(x)
    if node.op == "attn":
        return sl.ShiftedWindowAttention3D(node.channels_in, node.heads, node.window, node.shift, name=name)(x)
    if node.op == "merge":
        x = sl.PatchMerge(name=name)(x)
        x = keras.layers.LayerNormalization(epsilon=node.epsilon, name=f"{name}_norm")(x)
        return keras.layers.Dense(node.channels_out, use_bias=False, name=f"{name}_reduction")(x)
    if node.op == "dense":
        activation = classifier_activation if node.name == "head" else None
        return keras.layers.Dense(node.channels_out, use_bias=node.bias, activation=activation, name=name)(x)
    if node.op == "gelu":
        return sl.Gelu(name=name)(x)
    if node.op == "pool":
        return keras.layers.GlobalAveragePooling3D(name=name)(x)
    raise ValueError(f"no Keras layer for op {node.op!r} ({node.name})")


def build(
    arch: str | swin3d.Swin3D,
    num_classes: int | None = None,
    *,
    include_top: bool = True,
    classifier_activation: str | None = None,
    input_shape: tuple[int | None, int | None, int | None, int] | None = None,
    name: str | None = None,
    include_preprocessing: bool = False,
) -> keras.Model:
    """An untrained Keras Swin3D; `include_top=False` ends at the final norm's (N, T', H', W', C) map; with
    `include_preprocessing`, fed uint8 frames (N, T, H, W, 3) of any size (`models_tf.preprocessing`)."""
    variant = swin3d.get(arch) if isinstance(arch, str) else arch
    variant = variant.with_classes(num_classes or variant.num_classes)
    shape = tuple(input_shape) if input_shape is not None else (None, None, None, 3)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"input_shape must be (T, H, W, 3) (channels last), not {shape}")
    inputs = keras.Input(shape=shape, name=INPUT)
    values = {INPUT: inputs}
    if include_preprocessing:  # uint8 frames of any H x W in: torchvision's transform is the network's input
        from vrconvert.models_tf import preprocessing

        inputs = preprocessing.frames_input(shape[0])
        values = {INPUT: preprocessing.kinetics(inputs, variant.preprocessing)}
    for node in swin3d.expand(variant):
        if not include_top and node.op == "pool":
            break
        if node.op == "add":
            out = keras.layers.Add(name=keras_name(node.name))([values[n] for n in node.inputs])
        else:
            out = _apply(node, values[node.inputs[0]], classifier_activation)
        values[node.name] = out
    return keras.Model(inputs, out, name=name or variant.name)
