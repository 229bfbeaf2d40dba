"""Keras files as paths: which suffixes are Keras', and what a file's config says before anything is built."""

from __future__ import annotations

from pathlib import Path

from vrconvert.converter import limits
from vrconvert.converter.arch.layers import PREPROCESSING_PREFIX
from vrconvert.converter.formats.output import matching_suffix

KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")


def keras_suffix(path: Path) -> str | None:
    return matching_suffix(path, KERAS_SUFFIXES)


def takes_frames(path: Path) -> bool:
    """Whether the model in a Keras file is fed uint8 frames (built with `include_preprocessing`), read
    from its config alone, before anything is built. A `.weights.h5` holds no config: never. An unreadable
    file answers False; loading it names the problem."""
    import json
    import zipfile

    from vrconvert.converter.errors import InputError
    from vrconvert.converter.formats import h5safe
    from vrconvert.converter.formats.gate import regular_file

    suffix = keras_suffix(Path(path))
    try:
        regular_file(path)  # a FIFO is never opened here
        if suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > limits.KERAS_CONFIG_BYTES:
                    return False
                with archive.open(info) as member:
                    text = member.read(limits.KERAS_CONFIG_BYTES + 1)
        elif suffix == ".h5":
            with h5safe.open_file(path) as f:
                text = h5safe.text(f, "model_config")
                if not isinstance(text, str | bytes) or len(text) > limits.KERAS_CONFIG_BYTES:
                    return False
        else:
            return False
        layers = json.loads(text)["config"]["layers"]
    except (InputError, OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError):
        return False
    return isinstance(layers, list) and any(
        isinstance(layer, dict)
        and isinstance(layer.get("config"), dict)
        and str(layer["config"].get("name", "")).startswith(PREPROCESSING_PREFIX)
        for layer in layers
    )
