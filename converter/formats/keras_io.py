"""The Keras side of conversion: a Keras model from a normalised state dict, and the variables of a
Keras file read back strictly (never `load_weights(by_name=True)`, which skips what does not match)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.arch.layers import expand, torch_path
from vrconvert.converter.conversion import accounting
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import keras_archive
from vrconvert.converter.formats.output import matching_suffix

KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")


def keras_suffix(path: Path) -> str | None:
    return matching_suffix(path, KERAS_SUFFIXES)


def build_model(
    arch: spec.Arch, state: dict[str, np.ndarray], *, include_preprocessing: bool = False, resize: str = "layer"
):
    """The Keras model of `arch` carrying `state` (already accounted for), every variable assigned once.

    Arrays are permuted and assigned one at a time, so peak memory is the model plus one tensor. With
    `include_preprocessing`, the model takes uint8 frames (its transform layers own no variables; `resize`
    as `models_tf.build`'s `preprocessing_resize`).
    """
    from vrconvert import models_tf

    model = models_tf.build(arch, include_preprocessing=include_preprocessing, preprocessing_resize=resize)
    assign(model, mapping.iter_keras(arch, state), {e.keras_path for e in mapping.entries(arch)})
    return model


def assign(model, arrays: Iterable[tuple[str, np.ndarray]], paths: set[str]) -> None:
    """Assigns (variable path, array) pairs; `paths` (what they will cover) must be exactly the model's."""
    variables = {v.path: v for v in model.weights}
    if set(variables) != paths:
        missing, extra = sorted(set(variables) - paths), sorted(paths - set(variables))
        raise InputError(f"the mapping does not cover the Keras model: unassigned {missing[:4]}, unknown {extra[:4]}")
    for path, array in arrays:
        variables[path].assign(array)


def takes_frames(path: Path) -> bool:
    """Whether the model in a Keras file is fed uint8 frames (built with `include_preprocessing`), read
    from its config alone, before anything is built. A `.weights.h5` holds no config: never. An unreadable
    file answers False; loading it names the problem."""
    import json
    import zipfile

    from vrconvert.converter.formats import limits

    suffix = keras_suffix(Path(path))
    try:
        if suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > limits.KERAS_CONFIG_BYTES:
                    return False
                with archive.open(info) as member:
                    text = member.read(limits.KERAS_CONFIG_BYTES + 1)
        elif suffix == ".h5":
            import h5py

            with h5py.File(path, "r") as f:
                text = f.attrs.get("model_config")
                if not isinstance(text, str | bytes) or len(text) > limits.KERAS_CONFIG_BYTES:
                    return False
        else:
            return False
        layers = json.loads(text)["config"]["layers"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError):
        return False
    from vrconvert.models_tf.preprocessing import PREFIX

    return isinstance(layers, list) and any(
        isinstance(layer, dict)
        and isinstance(layer.get("config"), dict)
        and str(layer["config"].get("name", "")).startswith(PREFIX)
        for layer in layers
    )


def variables_of(model) -> dict[str, np.ndarray]:
    import keras

    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def torch_shapes_of(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Keras variable shapes renamed and permuted to torch's spelling by the mapping's rules alone, so
    that the architecture can be detected (and accounted for) exactly as for a torch checkpoint."""
    out = {}
    for path, shape in shapes.items():
        layer, var = path.rsplit("/", 1) if "/" in path else ("", path)
        shape = tuple(shape)
        rule = mapping.rule_for_keras(var, len(shape))
        key = f"{torch_path(layer)}.{rule.torch_suffix}" if rule else path
        if rule and rule.permutation:
            shape = tuple(shape[int(a)] for a in np.argsort(rule.permutation))
        out[key] = shape
    return out


def shapes_of_model(model) -> dict[str, tuple[int, ...]]:
    return {v.path: tuple(v.shape) for v in model.weights}


def load_keras_model(path: str | Path, arch: str | None = None, num_classes: int | None = None):
    """(arch, model) from a `.keras`/`.h5` model (loaded as saved, safe mode on) or a `.weights.h5`
    file (loaded into a freshly built model of the detected or given arch)."""
    path = Path(path)
    suffix = keras_suffix(path)
    if suffix is None:
        raise InputError(f"{path}: expected a .keras, .h5 or .weights.h5 file")
    if path.exists():
        keras_archive.check(path, arch)  # limits, names, dtypes and declared shapes, before Keras reads it
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if suffix == ".weights.h5":
        variant = _arch_of_weights_file(path, arch, num_classes)
        from vrconvert import models_tf

        model = models_tf.build(variant)
        try:
            with warnings.catch_warnings():  # e.g. "Skipping nested container": the error below says it
                warnings.simplefilter("ignore")
                model.load_weights(str(path))
        except Exception as exc:
            raise InputError(
                f"{path}: does not fit {variant.name} with {variant.num_classes} classes: {str(exc).splitlines()[0]}"
            ) from exc
        return variant, model
    import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot load it as a Keras model: {str(exc).strip().splitlines()[0]}") from exc
    from vrconvert.models_tf import fold

    detect = fold.detect if fold.is_folded(model) else accounting.detect  # folded: exactly its variables
    variant = detect(
        shapes_of_model(model) if detect is fold.detect else torch_shapes_of(shapes_of_model(model)),
        arch,
        activation_of(model),
    )
    return variant, model


def activation_of(model) -> str | None:
    """The network's activation as its config names it (the stem's first), in the spec's spelling."""
    import keras

    try:
        layer = model.get_layer("stem_2")
    except ValueError:
        return None
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    if isinstance(layer, keras.layers.Activation):
        name = layer.get_config().get("activation")
        return {"hard_silu": "hard_swish"}.get(name, name) if isinstance(name, str) else None
    return None


def read_keras_file(path: Path, arch: str | None = None, num_classes: int | None = None):
    """(arch, variables) of a Keras file, keyed by variable path (of an unfolded model: a folded one has
    lost its BatchNorm statistics, which torch needs)."""
    from vrconvert.models_tf import fold

    variant, model = load_keras_model(path, arch, num_classes)
    if fold.is_folded(model):
        raise InputError(
            f"{path}: its BatchNorms are folded into the convs and cannot be unfolded; use the unfolded file"
        )
    return variant, variables_of(model)


def _arch_of_weights_file(path: Path, arch: str | None, num_classes: int | None) -> spec.Arch:
    """A `.weights.h5` names its arrays by layer class and creation order (`layers/conv3d_7/vars/0`),
    not by our layer names: detect by the multiset of shapes when no --arch is given (the head's width
    is the Dense kernel's), R(2+1)D mid-channel widths read from the n-th Conv3D kernel."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, tuple[int, ...]] = {}
            f.visititems(
                lambda name, obj: arrays.__setitem__(name, tuple(obj.shape)) if isinstance(obj, h5py.Dataset) else None
            )
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file: {exc}") from exc
    shapes = sorted(arrays.values())
    classes = num_classes or next((s[1] for s in shapes if len(s) == 2), None)
    kernels = _conv_kernels_in_order(arrays)
    fits = []
    for name in [arch] if arch else list(spec.VARIANTS):
        variant = spec.get(name).with_classes(classes or 400)
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
