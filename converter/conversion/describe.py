"""What a weights file holds, for `vrconvert inspect`: format, architecture, classes, input contract,
parameters, dtypes, hash check, notes."""

from __future__ import annotations

from pathlib import Path

from vrconvert.converter.arch import accounting
from vrconvert.converter.arch.families import expand
from vrconvert.converter.arch.layers import count_params
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import checkpoint, keras_file, keras_io

FRAMES_IN = "uint8 frames (N, T, H, W, 3) of any HxW; torchvision's Kinetics transform is in the model"
CLIPS_IN = "normalised float32 clips ({layout}): apply the Kinetics transform first"


def describe(file: str | Path, arch: str | None = None) -> dict:
    """The description of a torch checkpoint or a Keras file, as a flat dict (the keys `inspect` prints).

    Args:
        file: a `.pth`/`.pt`/`.safetensors`/legacy checkpoint or a `.keras`/`.h5`/`.weights.h5` file.
        arch: the architecture, where detection from the file alone is ambiguous.
    Returns:
        file, format, arch, num_classes, input, dtypes, hash_check, notes, num_params, midplanes, file_size.
    """
    file = Path(file)
    info = _keras(file, arch) if keras_io.keras_suffix(file) else _torch(file, arch)
    variant = info.pop("variant")
    info["num_params"] = count_params(expand(variant))
    info["midplanes"] = accounting.midplanes_report(variant)  # R(2+1)D widths that differ from the formula
    info["file_size"] = file.stat().st_size
    return info


def _keras(file: Path, arch: str | None) -> dict:
    from vrconvert.converter.backends import select_backend_for_files

    select_backend_for_files()
    read = keras_file.read(file, arch, values=False)  # a model as vrconvert writes it: no Keras needed
    if read is not None:
        variant, frames_in, dtypes = read[0], False, ["float32"]  # read() takes float32 weights only
    else:
        from vrconvert.models_tf import weights as keras_weights  # lazy: Keras
        from vrconvert.models_tf.preprocessing import has_preprocessing

        variant, model = keras_weights.load_keras_model(file, arch)
        frames_in, dtypes = has_preprocessing(model), sorted({str(v.dtype) for v in model.weights})
    return {
        "file": str(file),
        "format": keras_io.keras_suffix(file),
        "variant": variant,
        "arch": variant.name,
        "num_classes": variant.num_classes,
        "input": FRAMES_IN if frames_in else CLIPS_IN.format(layout="N, T, H, W, 3"),
        "dtypes": dtypes,
        "hash_check": None,
        "notes": [],
    }


def _torch(file: Path, arch: str | None) -> dict:
    ckpt = checkpoint.read_checkpoint(file)
    try:
        variant = accounting.detect(accounting.shapes_of(ckpt.state), arch)
    except InputError as exc:
        raise InputError(f"{file}: {exc}") from exc
    return {
        "file": str(file),
        "format": ckpt.format,
        "variant": variant,
        "arch": variant.name,
        "num_classes": variant.num_classes,
        "input": CLIPS_IN.format(layout="N, 3, T, H, W"),
        "dtypes": ckpt.source_dtypes,
        "hash_check": ckpt.hash_check,
        "notes": ckpt.notes,
    }
