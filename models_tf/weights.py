"""Weights in and out of Keras models: a model built from a normalised state dict, and the variables of a
Keras file read back strictly (never `load_weights(by_name=True)`, which skips what does not match)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import keras
import numpy as np

from vrconvert.converter import limits
from vrconvert.converter.arch import accounting, families, folding, mapping, spec, swin3d, swin3d_mapping
from vrconvert.converter.arch.families import expand
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import h5safe, keras_archive
from vrconvert.converter.formats.keras_io import keras_suffix
from vrconvert.converter.formats.output import atomic_path
from vrconvert.models_tf import fold
from vrconvert.models_tf.build import build
from vrconvert.models_tf.variables import assign, shapes_of_model, variables_of
from vrconvert.models_tf.walk import activation_of


def build_model(
    arch: spec.Arch, state: dict[str, np.ndarray], *, include_preprocessing: bool = False, resize: str = "layer"
):
    """The Keras model of `arch` carrying `state` (already accounted for), every variable assigned once.

    Arrays are permuted and assigned one at a time, so peak memory is the model plus one tensor. With
    `include_preprocessing`, the model takes uint8 frames (its transform layers own no variables; `resize`
    as `models_tf.build`'s `preprocessing_resize`).
    """
    model = build(arch, include_preprocessing=include_preprocessing, preprocessing_resize=resize)
    assign(model, mapping.iter_keras(arch, state), {e.keras_path for e in mapping.entries(arch)})
    return model


def load_keras_model(
    path: str | Path, arch: str | None = None, num_classes: int | None = None, head: str | None = None
):
    """(arch, model) from a `.keras`/`.h5` model (loaded as saved, safe mode on) or a `.weights.h5`
    file (loaded into a freshly built model of the detected or given arch). A `.keras` model may wrap a
    vrconvert backbone with a head of any name (`models_tf.nested`; `head` names it if need be)."""
    path = Path(path)
    suffix = keras_suffix(path)
    if suffix is None:
        raise InputError(f"{path}: expected a .keras, .h5 or .weights.h5 file")
    if path.exists():
        keras_archive.check(path, arch, head)  # limits, names, dtypes and declared shapes, before Keras reads it
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if suffix == ".weights.h5":
        variant = _arch_of_weights_file(path, arch, num_classes)
        model = build(variant)
        try:
            with warnings.catch_warnings():  # e.g. "Skipping nested container": the error below says it
                warnings.simplefilter("ignore")
                model.load_weights(str(path))
        except Exception as exc:
            raise InputError(
                f"{path}: does not fit {variant.name} with {variant.num_classes} classes: {limits.one_line(str(exc))}"
            ) from exc
        return variant, model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot load it as a Keras model: {limits.one_line(str(exc))}") from exc
    if fold.is_folded(model):  # folded: exactly its variables
        return folding.detect(shapes_of_model(model), arch, activation_of(model)), model
    swin = swin3d_mapping.detect(shapes_of_model(model), keras=True)  # a family with its own rule table
    if swin is not None and arch in (None, swin.name):
        return swin, model
    from vrconvert.models_tf import nested

    if head is not None or nested.wrapped(model):  # a backbone inside a user's model: found by its layers
        return nested.find(model, arch, head, values=False)[0], model
    shapes = accounting.torch_shapes_of(shapes_of_model(model))
    return accounting.detect(shapes, arch, activation_of(model)), model


def read_keras_file(path: Path, arch: str | None = None, num_classes: int | None = None, head: str | None = None):
    """(arch, variables) of a Keras file, keyed by the mapping's variable paths (of an unfolded model: a
    folded one has lost its BatchNorm statistics, which torch needs); a wrapped backbone's head as `fc`."""
    variant, model = load_keras_model(path, arch, num_classes, head)
    if fold.is_folded(model):
        raise InputError(
            f"{path}: its BatchNorms are folded into the convs and cannot be unfolded; use the unfolded file"
        )
    from vrconvert.models_tf import nested

    if Path(path).name.endswith(".weights.h5") or not (head is not None or nested.wrapped(model)):
        return variant, variables_of(model)  # a vrconvert model as built: its variables are the mapping's
    return nested.find(model, variant.name, head)


def _arch_of_weights_file(path: Path, arch: str | None, num_classes: int | None) -> spec.Arch:
    """A `.weights.h5` names its arrays by layer class and creation order (`layers/conv3d_7/vars/0`),
    not by our layer names: detect by the multiset of shapes when no --arch is given (the head's width
    is the Dense kernel's), R(2+1)D mid-channel widths read from the n-th Conv3D kernel."""
    try:
        with h5safe.open_file(path) as f:  # hard links only, counted, storage checked
            arrays = {name: tuple(int(n) for n in obj.shape) for name, obj in h5safe.walk(f).datasets.items()}
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file: {exc}") from exc
    shapes = sorted(arrays.values())
    classes = num_classes or next((s[1] for s in shapes if len(s) == 2), None)
    kernels = _conv_kernels_in_order(arrays)
    fits = []
    for name in [arch] if arch else list(families.VARIANTS):
        variant = families.get(name)
        if isinstance(variant, swin3d.Swin3D):  # the head is one of the 2-D arrays of the last stage's width
            widths = {num_classes} if num_classes else {s[1] for s in shapes if len(s) == 2 and s[0] == variant.width}
            fits += [
                v
                for v in (variant.with_classes(c) for c in sorted(widths))
                if shapes == sorted(e.keras_shape for e in mapping.entries(v))
            ]
            continue
        variant = variant.with_classes(classes or 400)
        convs = [layer for layer in expand(variant) if layer.op == "conv"]
        if len(kernels) == len(convs):  # name the n-th kernel after the n-th conv, in torch's layout
            named = {f"{layer.name}.weight": (k[4], k[3], *k[:3]) for k, layer in zip(kernels, convs, strict=True)}
            variant = accounting.with_checkpoint_midplanes(variant, named) or variant
        if shapes == sorted(e.keras_shape for e in mapping.entries(variant)):
            fits.append(variant)
    if len(fits) == 1:
        return fits[0]
    if arch:
        raise InputError(f"{path}: its {len(shapes)} arrays do not fit {arch} with {classes} classes")
    names = ", ".join(v.name for v in fits)
    raise InputError(
        f"{path}: cannot tell the architecture from its {len(shapes)} arrays"
        + (f" (fits {names})" if fits else "")
        + "; pass --arch"
    )


def _conv_kernels_in_order(arrays: dict[str, tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The Conv3D kernels of a `.weights.h5`, in the order the layers were created."""

    def index(name: str) -> int:
        layer = name.split("/")[1]
        return int(layer.rsplit("_", 1)[1]) if "_" in layer.removeprefix("conv3d") else 0

    kernels = [name for name, shape in arrays.items() if name.startswith("layers/conv3d") and len(shape) == 5]
    return [arrays[name] for name in sorted(kernels, key=index)]


def save(model, dst: Path, suffix: str) -> None:
    """One write, through a temporary file renamed on success: weights only for `.weights.h5`."""
    with atomic_path(dst, suffix) as tmp, _legacy_notice_silenced():
        model.save_weights(str(tmp)) if suffix == ".weights.h5" else model.save(str(tmp))


@contextlib.contextmanager
def _legacy_notice_silenced():
    """Keras warns (as a warning or through absl's logger) that `.h5` is legacy: the user chose it."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        absl.setLevel(level)
