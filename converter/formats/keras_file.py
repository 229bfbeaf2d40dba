"""Keras files written and read with h5py and zipfile alone, laid out as Keras' own saver lays them out.

A `.keras` archive is `metadata.json`, `config.json` (`keras_config.model_config`) and
`model.weights.h5`: one group per layer (`layers/conv3d_7/vars`, named by class and a per-class
counter in the functional order, the layer's name in its `name` attribute), its variables as datasets
`0`, `1`, ... in the order Keras creates them, and an empty `vars` group for the model itself. A
`.weights.h5` is that weights file alone. The tests compare every byte of the weights file with
Keras' output and load the archive with plain Keras.
"""

from __future__ import annotations

import datetime
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import keras_archive, keras_config


def _write_weights(f, arch: spec.Arch, config: dict, state: dict[str, np.ndarray]) -> None:
    """Every variable of `arch` into the open h5py file `f`, from the torch-named `state`."""
    by_path = {e.keras_path: e for e in mapping.entries(arch)}
    f.create_group("vars").attrs["name"] = config["config"]["name"]
    for group, layer, names in keras_config.weight_groups(config):
        vars_group = f.create_group(group).create_group("vars")
        vars_group.attrs["name"] = layer
        for index, var in enumerate(names):
            entry = by_path[f"{layer}/{var}"]
            vars_group[str(index)] = np.require(entry.to_keras(state[entry.torch_key]), np.float32, "C")


def write(path: Path, arch: spec.Arch, state: dict[str, np.ndarray]) -> None:
    """A `.keras` archive, or with that suffix a `.weights.h5`, of `arch` carrying the torch-named `state`
    (accounted for), as the installed Keras saves one (`keras_config.supported(arch)` must hold)."""
    import h5py

    config = keras_config.model_config(arch)
    if Path(path).name.endswith(".weights.h5"):
        with h5py.File(path, mode="w") as f:
            _write_weights(f, arch, config, state)
        return
    metadata = {
        "keras_version": keras_config.keras_version(),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    with open(path, "wb") as out, zipfile.ZipFile(out, "w") as archive:
        with archive.open("metadata.json", "w") as member:
            member.write(json.dumps(metadata).encode())
        with archive.open("config.json", "w") as member:
            member.write(json.dumps(config).encode())
        buffer = io.BytesIO()
        with h5py.File(buffer, mode="w") as f:
            _write_weights(f, arch, config, state)
        archive.writestr("model.weights.h5", buffer.getbuffer())


def _normalised(config) -> str:
    """A config as JSON with the shared object ids' values (id()s of the saving process) zeroed."""
    return re.sub(r'"shared_object_id": \d+', '"shared_object_id": 0', json.dumps(config))


def _activation(config: dict) -> str | None:
    for layer in config["config"]["layers"]:
        if layer["config"].get("name") == "stem_2":
            name = "relu" if layer["class_name"] == "ReLU" else layer["config"].get("activation")
            return {"hard_silu": "hard_swish"}.get(name, name) if isinstance(name, str) else None
    return None


def read(path: Path, arch: str | None = None, *, values: bool = True):
    """(arch, {Keras variable path: array, or its shape when not `values`}) of a `.keras` file holding
    exactly the model `models_tf.build` makes (the config equal to `keras_config.model_config`'s, the
    weights file laid out as Keras lays it out), read with h5py; None for any other file (folded,
    with preprocessing, saved by another Keras, damaged): Keras itself must read those.
    The file is checked first (`keras_archive.check`: an InputError names what is wrong)."""
    import h5py

    from vrconvert.converter.arch import accounting

    path = Path(path)
    if not path.name.endswith(".keras") or not path.is_file():  # Keras' path names what is missing
        return None
    keras_archive.check(path, arch)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            groups = keras_config.weight_groups(config)
            info = archive.getinfo("model.weights.h5")
            with keras_archive._member(archive, info, path) as member, h5py.File(member, "r") as f:
                found = {}
                for group, layer, names in groups:
                    stored = f[f"{group}/vars"]
                    if stored.attrs.get("name") != layer or sorted(stored) != [str(i) for i in range(len(names))]:
                        return None
                    for index, var in enumerate(names):
                        dataset = stored[str(index)]
                        if dataset.dtype != np.float32:
                            return None
                        found[f"{layer}/{var}"] = dataset[()] if values else tuple(dataset.shape)
        shapes = {key: tuple(np.shape(v)) if values else v for key, v in found.items()}
        # the model's name is its variant's (the gate below requires it): detection tries that one alone
        named = config["config"]["name"] if config["config"]["name"] in spec.VARIANTS else None
        variant = accounting.detect(accounting.torch_shapes_of(shapes), arch or named, _activation(config))
    except (
        OSError,
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        AttributeError,
        RuntimeError,
        zipfile.BadZipFile,
        EOFError,
        InputError,
    ):
        return None
    if not keras_config.supported(variant) or _normalised(config) != _normalised(keras_config.model_config(variant)):
        return None
    return variant, found
