"""Builds torchvision's MViT as a Keras 3 functional model from the family's records.

Channels-last (N, T, H, W, C) in, tokens (N, L, C) inside, logits out. Built-in layers where they express
the op (Conv3D behind an explicit ZeroPadding3D, Reshape, LayerNormalization, Dense, Add, and
Cropping1D + Flatten for the class token), `models_tf.mvit_layers` for the rest. Each layer is named
after its record (`layers.keras_name`).
"""

from __future__ import annotations

import math

import keras

from vrconvert.converter.arch.layers import INPUT, keras_name
from vrconvert.converter.arch.mvit import MViTArch, Record, dataflow, expand, rel_pos_sizes
from vrconvert.models_tf import mvit_layers, swin3d_layers


def _layer(record: Record, x, classifier_activation):
    name = keras_name(record.name)
    if record.op == "conv":
        x = keras.layers.ZeroPadding3D(tuple((p, p) for p in record.padding), name=f"{name}_pad")(x)
        conv = keras.layers.Conv3D(record.channels_out, record.kernel, strides=record.stride, name=name)
        return conv(x)
    if record.op == "tokens":
        return keras.layers.Reshape((math.prod(record.thw), record.channels_out), name=name)(x)
    if record.op == "posenc":
        return mvit_layers.ClassPositionEmbedding(record.channels_out, record.thw, record.absolute, name=name)(x)
    if record.op == "layernorm":
        return keras.layers.LayerNormalization(epsilon=record.epsilon, name=name)(x)
    if record.op == "attention":
        b = record.block
        return mvit_layers.MultiscaleAttention(
            b.dim_in,
            b.attn_dim,
            b.heads,
            b.thw,
            b.kernel_q,
            b.stride_q,
            b.kernel_kv,
            b.stride_kv,
            record.rel_pos,
            record.residual_pool,
            record.epsilon,
            rel_pos_sizes(b) if record.rel_pos else None,
            name=name,
        )(x)
    if record.op == "tokenpool":
        return mvit_layers.TokenMaxPool(record.thw, record.kernel, record.stride, record.padding, name=name)(x)
    if record.op == "dense":
        activation = classifier_activation if record.name == "head.1" else None
        return keras.layers.Dense(record.channels_out, activation=activation, name=name)(x)
    if record.op == "act":
        return swin3d_layers.Gelu(name=name)(x)  # the exact GELU in an ONNX-exportable spelling
    if record.op == "classtoken":  # the first token: crop the others away, then drop the length axis
        x = keras.layers.Cropping1D((0, x.shape[1] - 1), name=f"{name}_crop")(x)
        return keras.layers.Flatten(name=name)(x)
    raise ValueError(f"no Keras layer for op {record.op!r} ({record.name})")


def build(
    arch: MViTArch, *, include_top: bool = True, classifier_activation: str | None = None, name: str | None = None
) -> keras.Model:
    """An untrained Keras MViT taking (N, 16, 224, 224, 3) clips; without the top, the class token's
    normalised features."""
    inputs = keras.Input(shape=(*arch.clip, 3), name=INPUT)
    values = {INPUT: inputs}
    for record in dataflow(expand(arch)):
        if not include_top and record.name == "head.1":
            break
        args = [values[n] for n in record.inputs]
        if record.op == "add":
            values[record.name] = keras.layers.Add(name=keras_name(record.name))(args)
        else:
            values[record.name] = _layer(record, args[0], classifier_activation)
    out = values[record.name] if include_top else values["head.0"]
    return keras.Model(inputs, out, name=name or arch.name)
