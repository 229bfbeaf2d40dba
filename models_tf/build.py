"""Builds a Keras 3 functional model from the spec's layer records.

Channels-last (N, T, H, W, C), built-in layers only, so a saved `.keras` file loads with plain
`keras.models.load_model` (safe mode on) on every backend. Every layer is named after its torchvision
module path with dots spelled as underscores. Where torch pads a conv, an explicit `ZeroPadding3D`
precedes a `padding="valid"` conv: Keras' "same" pads asymmetrically under stride 2.
"""

from __future__ import annotations

from typing import Literal

import keras

from vrconvert.converter.arch import families, swin3d
from vrconvert.converter.arch.families import expand
from vrconvert.converter.arch.layers import INPUT, Layer, keras_name
from vrconvert.converter.arch.mvit import MViTArch
from vrconvert.converter.errors import InputError
from vrconvert.models_tf import mvit

MERGES = {"add": keras.layers.Add, "mul": keras.layers.Multiply, "concat": keras.layers.Concatenate}


def padded_maxpool(layer: Layer, x):
    """torch's padded max pool, whose padded cells never win (zeros would): Keras' stride-1 "same" pool
    (symmetric for an odd window, padded cells ignored) centres a window on every cell, then a 1-wide
    pool keeps every stride-th one, which are the windows torch's padding centres."""
    if any(p != k // 2 or k % 2 == 0 for k, p in zip(layer.kernel, layer.padding, strict=True)):
        raise ValueError(f"{layer.name}: a padded max pool needs odd windows padded by half each side")
    name = keras_name(layer.name)
    if layer.stride == (1, 1, 1):
        return keras.layers.MaxPooling3D(layer.kernel, 1, padding="same", name=name)(x)
    x = keras.layers.MaxPooling3D(layer.kernel, 1, padding="same", name=f"{name}_window")(x)
    return keras.layers.MaxPooling3D(1, layer.stride, name=name)(x)


def apply_layer(layer: Layer, x, classifier_activation, norm=keras.layers.BatchNormalization):
    name = keras_name(layer.name)
    if layer.op in ("conv", "pool") and any(layer.padding):
        x = keras.layers.ZeroPadding3D(tuple((p, p) for p in layer.padding), name=f"{name}_pad")(x)
    # "same" is Keras' own (TensorFlow's rule; its average pool excludes padded cells); "torch" was padded above
    padding = "same" if layer.padding_mode == "same" else "valid"
    if layer.op == "conv":
        return keras.layers.Conv3D(
            layer.channels_out, layer.kernel, strides=layer.stride, padding=padding, use_bias=layer.bias, name=name
        )(x)
    if layer.op == "bn":  # Keras' momentum is 1 - torch's
        return norm(axis=-1, epsilon=layer.epsilon, momentum=1 - layer.momentum, name=name)(x)
    if layer.op == "maxpool" and layer.padding_mode == "torch" and any(layer.padding):
        return padded_maxpool(layer, x)
    if layer.op == "maxpool":
        return keras.layers.MaxPooling3D(layer.kernel, layer.stride, padding=padding, name=name)(x)
    if layer.op == "dropout":
        return keras.layers.Dropout(layer.rate, name=name)(x)
    if layer.op == "act":
        if layer.activation == "relu":
            return keras.layers.ReLU(name=name)(x)
        return keras.layers.Activation(layer.activation, name=name)(x)  # mish, hard_swish, sigmoid
    if layer.op == "pool":  # "torch": after explicit zero padding, as torch's count_include_pad pool
        return keras.layers.AveragePooling3D(layer.kernel, layer.stride, padding=padding, name=name)(x)
    if layer.op == "gap":
        return keras.layers.GlobalAveragePooling3D(keepdims=True, name=name)(x)
    if layer.op == "avgpool":
        return keras.layers.GlobalAveragePooling3D(name=name)(x)
    if layer.op == "dense":  # on the last axis: the head's, or squeeze-excitation's pooled channels
        activation = classifier_activation if layer.name == "fc" else None
        return keras.layers.Dense(layer.channels_out, use_bias=layer.bias, activation=activation, name=name)(x)
    raise ValueError(f"no Keras layer for op {layer.op!r} ({layer.name})")


def build(
    arch: str | families.Variant,
    num_classes: int | None = None,
    *,
    include_top: bool = True,
    pooling: Literal["avg", "max"] | None = None,
    classes: int | None = None,
    classifier_activation: str | None = None,
    input_shape: tuple[int | None, int | None, int | None, int] | None = None,
    name: str | None = None,
    include_preprocessing: bool = False,
    data_format: Literal["channels_last", "channels_first"] = "channels_last",
    preprocessing_resize: Literal["layer", "taps"] = "layer",
    batchnorm: Literal["keras", "torch"] = "keras",
) -> keras.Model:
    """An untrained Keras model of `arch`, as `keras.applications` builds (`models_tf.build` also takes
    `weights=`: `models_tf.pretrained`). `classes` is Keras' spelling of `num_classes`. Unlike
    `keras.applications`, `classifier_activation` defaults to None: torchvision's models return
    logits, and parity is checked on logits. `input_shape` is (T, H, W, 3); T, H and W may be None.
    With `include_top=False`, `pooling` picks the output: None (the layer4 feature map), "avg" or "max".
    `include_preprocessing=True`: the model takes uint8 frames (N, T, H, W, 3) of any H x W and applies
    torchvision's eval transform itself (`models_tf.preprocessing`); `input_shape`'s T fixes the frame count.
    Its resize is Keras' `Resizing` (`preprocessing_resize="layer"`, built-in layers only, for `.keras`
    files) or vrconvert's `TapsResize` (`"taps"`, for exported artifacts: every runtime rounds it alike).
    `data_format="channels_first"` runs channels-first inside (Keras' torch backend's own layout) behind
    the same (N, T, H, W, 3) input (`models_tf.layout`), in the form that trains fastest on Keras' torch
    backend (vrconvert's predictor derives its own inference form); save the channels-last model, not this one.
    `batchnorm="torch"` builds vrconvert's `TorchBatchNormalization` (`models_tf.batchnorm`): training
    updates the moving variance as torch does; the default is Keras' own layer.
    """
    if num_classes is not None and classes is not None and num_classes != classes:
        raise ValueError(f"num_classes={num_classes} and classes={classes} disagree")
    variant = families.get(arch) if isinstance(arch, str) else arch
    variant = variant.with_classes(num_classes or classes or variant.num_classes)
    if (own := OWN_BUILDERS.get(type(variant))) is not None:  # the transformers have builders of their own
        return own(
            variant, include_top, pooling, classifier_activation, input_shape, name, include_preprocessing, data_format
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
    shape = tuple(input_shape) if input_shape is not None else (None, None, None, 3)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"input_shape must be (T, H, W, 3) (channels last), not {shape}")
    inputs = keras.Input(shape=shape, name=INPUT)
    values = {INPUT: inputs}
    if include_preprocessing:  # raw frames in: the transform's output is the network's input
        from vrconvert.models_tf import preprocessing

        inputs = preprocessing.frames_input(shape[0])
        values = {INPUT: preprocessing.kinetics(inputs, variant.preprocessing, preprocessing_resize)}
    x = _records_graph(variant, values, include_top, classifier_activation, batchnorm)
    if not include_top and pooling == "avg":
        x = keras.layers.GlobalAveragePooling3D(name="avgpool")(x)
    elif not include_top and pooling == "max":
        x = keras.layers.GlobalMaxPooling3D(name="maxpool")(x)
    model = keras.Model(inputs, x, name=name or variant.name)
    if data_format == "channels_last":
        return model
    from vrconvert.models_tf import layout  # channels-first execution twin; its input stays (N, T, H, W, 3)

    return layout.derive(model, data_format, contiguous=True)  # the training form: see layout.derive


def _records_graph(variant, values: dict, include_top: bool, classifier_activation, batchnorm: str):
    """The records walked into layers from `values[INPUT]`, up to the head (or before it); the output."""
    from vrconvert.models_tf.batchnorm import layer_class

    norm = layer_class(batchnorm)  # "torch": the running variance updated as torch does (opt-in)
    for layer in expand(variant):
        if not include_top and (layer.op in ("avgpool", "dense") or layer.name == "avgpool"):
            break
        if layer.op in MERGES:
            out = MERGES[layer.op](name=keras_name(layer.name))([values[n] for n in layer.inputs])
        else:
            out = apply_layer(layer, values[layer.inputs[0]], classifier_activation, norm)
        values[layer.name] = out
    if include_top and classifier_activation and layer.op != "dense":  # a conv head's (S3D's) averaged logits
        return keras.layers.Activation(classifier_activation, name="predictions")(out)
    return out


def _mvit(variant, include_top, pooling, classifier_activation, input_shape, name, include_preprocessing, data_format):
    """MViT's own builder; its weights fix the input size."""
    if include_preprocessing or data_format != "channels_last" or pooling is not None:
        raise InputError(f"{variant.name}: include_preprocessing, data_format and pooling are not supported yet")
    if input_shape is not None and tuple(input_shape) != (*variant.clip, 3):
        raise ValueError(f"{variant.name} takes input_shape {(*variant.clip, 3)} only (its weights fix it)")
    return mvit.build(variant, include_top=include_top, classifier_activation=classifier_activation, name=name)


def _swin3d(
    variant, include_top, pooling, classifier_activation, input_shape, name, include_preprocessing, data_format
):
    """Swin3D's own builder."""
    if data_format != "channels_last" or pooling is not None:
        raise ValueError(f"{variant.name}: channels-last only, without pooling")
    from vrconvert.models_tf import swin3d as swin3d_keras

    return swin3d_keras.build(
        variant,
        include_preprocessing=include_preprocessing,
        include_top=include_top,
        classifier_activation=classifier_activation,
        input_shape=input_shape,
        name=name,
    )


# family record type -> its own builder (same arguments); the families described by layer records use `build`'s walk
OWN_BUILDERS = {MViTArch: _mvit, swin3d.Swin3D: _swin3d}
