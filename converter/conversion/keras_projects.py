"""Importing the public Keras video ResNets' weight files: their file -> a torchvision-style state dict
(`keras2torch`) or a clean, serialisable vrconvert Keras model (`keras2keras`).

The file is read and accounted for by `formats.project_weights`; everything after is the usual mapping.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import accounting, mapping
from vrconvert.converter.arch.layers import count_params, expand
from vrconvert.converter.conversion.result import Result
from vrconvert.converter.formats import checkpoint, keras_io, project_weights
from vrconvert.converter.formats.output import atomic_path, check_target

is_project_file = project_weights.is_project_file


def _result(src: Path, dst: Path, variant, start: float, notes: list[str] = ()):
    return Result(
        src=str(src),
        dst=str(dst),
        arch=variant.name,
        num_classes=variant.num_classes,
        num_params=count_params(expand(variant)),
        source_format=f"{variant.origin} weights file",
        source_dtypes=sorted({n.split()[2] for n in notes if n.startswith("converted ")} | {"float32"}),
        notes=[f"read as {variant.name}: {variant.description}", *notes],
        hash_check=None,
        seconds=time.perf_counter() - start,
    )


def project_to_torch(
    src: str | Path, dst: str | Path, *, arch: str | None = None, num_classes: int | None = None, force: bool = False
):
    """An original project's weight file -> `.pth`/`.safetensors` in vrconvert's torch layout."""
    start, src, dst = time.perf_counter(), Path(src), Path(dst)
    suffix = check_target(dst, force, checkpoint.TORCH_SUFFIXES)
    notes: list[str] = []
    variant, variables = project_weights.read_project_weights(src, arch, num_classes, notes)
    state = mapping.to_torch(variant, variables)
    report = accounting.account(variant, accounting.shapes_of(state))
    assert report.ok, report.summary()  # to_torch writes exactly the variant's layout
    with atomic_path(dst, suffix) as tmp:
        checkpoint.write_torch(state, tmp)
    return _result(src, dst, variant, start, notes)


def project_to_keras_model(
    src: str | Path, arch: str | None = None, num_classes: int | None = None, notes: list[str] | None = None
):
    """(variant, the file's variables by Keras path, a vrconvert Keras model carrying them, every variable assigned once)."""
    from vrconvert import models_tf  # lazy: Keras
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    variant, variables = project_weights.read_project_weights(src, arch, num_classes, notes)
    model = models_tf.build(variant)
    keras_weights.assign(model, variables.items(), set(variables))
    return variant, variables, model


def project_to_keras(
    src: str | Path,
    dst: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    force: bool = False,
    validate: bool = True,
    tolerance: float = 1e-5,
    clips: dict[str, np.ndarray] | None = None,
):
    """An original project's weight file -> `.keras` (or `.h5`/`.weights.h5`), checked against the same
    weights in torch before anything is written."""
    start, src, dst = time.perf_counter(), Path(src), Path(dst)
    suffix = check_target(dst, force, keras_io.KERAS_SUFFIXES)
    notes: list[str] = []
    variant, variables, model = project_to_keras_model(src, arch, num_classes, notes)
    result = _result(src, dst, variant, start, notes)
    if validate:
        from vrconvert.converter.parity import validate as validator

        clips = clips or validator.default_clips(sample=False)[0]
        result.parity = validator.check_conversion(
            variant, mapping.to_torch(variant, variables), model, clips, tolerance
        )
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    keras_weights.save(model, dst, suffix)
    result.seconds = time.perf_counter() - start
    return result
