"""`models_tf.build(arch, weights=...)`: a Keras model carrying a checkpoint's or a Keras file's
weights, as `keras.applications` does. Every backbone weight is accounted for strictly before one is
assigned; the head is loaded, dropped (`include_top=False`) or freshly initialised (another width)."""

from __future__ import annotations

import numpy as np

from vrconvert.converter.arch import accounting, families, mapping
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import checkpoint, weights_source
from vrconvert.converter.formats.keras_io import keras_suffix


def source_state(arch: families.Variant, weights) -> tuple[families.Variant, dict[str, np.ndarray], str]:
    """(the file's arch, its torch-named state, a name for messages); a torch checkpoint may lack a head."""
    path = weights_source.resolve(weights, arch)
    where = str(weights)
    if keras_suffix(path) is not None:  # read as `keras2torch` reads it (a wrapped backbone's head included)
        from vrconvert.models_tf import fold, nested
        from vrconvert.models_tf import weights as keras_weights
        from vrconvert.models_tf.variables import variables_of

        variant, model = keras_weights.load_keras_model(path, arch.name)
        if nested.wrapped(model) or fold.is_folded(model):  # found by its layers (a folded one is refused there)
            variant, state = nested.locate(model, arch.name)
            return variant, state, where
        return variant, mapping.to_torch(variant, variables_of(model)), where  # as built: the mapping's paths
    ckpt = checkpoint.read_checkpoint(path)
    return weights_source.backbone_arch(arch, accounting.shapes_of(ckpt.state), where), ckpt.state, where


def build(arch: str | families.Variant, num_classes: int | None = None, *, weights=None, **options):
    """`models_tf.build`: a Keras model of `arch` in the style of `keras.applications`, untrained or with
    `weights` (a `.pth`/`.pt`/`.safetensors`/`.keras`/`.h5`/`.weights.h5` file, or the pretrained name
    "kinetics400" through the hub cache and the verified download). Every backbone weight is accounted
    for strictly; a `num_classes` other than the file's gets a fresh head (one warning line says so) and
    `include_top=False` drops the file's head. Every other option is `models_tf.build.build`'s."""
    from vrconvert.models_tf.build import build as untrained

    if weights is None:
        return untrained(arch, num_classes, **options)
    if num_classes is not None and options.get("classes") not in (None, num_classes):
        raise ValueError(f"num_classes={num_classes} and classes={options['classes']} disagree")
    num_classes = num_classes or options.pop("classes", None)
    options.pop("classes", None)
    return build_with_weights(
        arch, weights, include_top=options.pop("include_top", True), num_classes=num_classes, **options
    )


def build_with_weights(arch: str | families.Variant, weights, *, include_top: bool, num_classes: int | None, **options):
    """The Keras model of `arch` built by `models_tf.build` with `options`, its variables from `weights`."""
    from vrconvert.models_tf.build import build

    variant = families.get(arch) if isinstance(arch, str) else arch
    file_arch, state, where = source_state(variant, weights)
    head_keys = weights_source.head_keys(file_arch)
    has_head = head_keys[0] in state
    plan = weights_source.plan(file_arch, has_head, include_top, num_classes, where)
    data_format = options.pop("data_format", "channels_last")
    model = build(plan.arch, include_top=include_top, **options)
    head = [e for e in mapping.entries(plan.arch) if e.torch_key in head_keys]
    entries = [e for e in mapping.entries(plan.arch) if plan.load_head or e not in head]
    variables = {v.path: v for v in model.weights}
    fresh = {e.keras_path for e in head} if include_top and not plan.load_head else set()
    unassigned = set(variables) - {e.keras_path for e in entries} - fresh
    unknown = {e.keras_path for e in entries} - set(variables)
    if unassigned or unknown:  # every variable is either loaded or a deliberately fresh head
        raise InputError(f"{where}: the mapping does not cover the Keras model: {sorted(unassigned | unknown)[:4]}")
    for e in entries:
        variables[e.keras_path].assign(np.require(e.to_keras(state[e.torch_key]), requirements="C"))
    if data_format == "channels_last":
        return model
    from vrconvert.models_tf import layout

    return layout.derive(model, data_format, contiguous=True)  # the training form: see layout.derive
