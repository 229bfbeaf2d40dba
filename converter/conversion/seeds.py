"""Importing the public Keras video ResNets' weight files: their file -> a torchvision-style state dict
(`keras2torch`) or a clean, serialisable vrconvert Keras model (`keras2keras`).

The file is read and accounted for by `formats.seed_weights`; everything after is the usual mapping.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import mapping
from vrconvert.converter.arch.layers import count_params, expand
from vrconvert.converter.conversion import accounting
from vrconvert.converter.errors import ParityError
from vrconvert.converter.formats import checkpoint, keras_io, seed_weights
from vrconvert.converter.formats.output import atomic_path, check_target

is_seed_file = seed_weights.is_seed_file


def _result(src: Path, dst: Path, variant, start: float):
    from vrconvert.converter.conversion.convert import Result

    return Result(
        str(src),
        str(dst),
        variant.name,
        variant.num_classes,
        count_params(expand(variant)),
        f"{variant.origin} weights file",
        ["float32"],
        [f"read as {variant.name}: {variant.description}"],
        None,
        time.perf_counter() - start,
    )


def seed_to_torch(
    src: str | Path, dst: str | Path, *, arch: str | None = None, num_classes: int | None = None, force: bool = False
):
    """An original project's weight file -> `.pth`/`.safetensors` in vrconvert's torch layout."""
    start, src, dst = time.perf_counter(), Path(src), Path(dst)
    suffix = check_target(dst, force, checkpoint.TORCH_SUFFIXES)
    variant, variables = seed_weights.read_seed_weights(src, arch, num_classes)
    state = mapping.to_torch(variant, variables)
    report = accounting.account(variant, accounting.shapes_of(state))
    assert report.ok, report.summary()  # to_torch writes exactly the variant's layout
    with atomic_path(dst, suffix) as tmp:
        checkpoint.write_torch(state, tmp)
    return _result(src, dst, variant, start)


def seed_to_keras_model(src: str | Path, arch: str | None = None, num_classes: int | None = None):
    """(variant, a vrconvert Keras model carrying the file's weights, every variable assigned once)."""
    from vrconvert import models_tf

    variant, variables = seed_weights.read_seed_weights(src, arch, num_classes)
    model = models_tf.build(variant)
    keras_io.assign(model, variables.items(), set(variables))
    return variant, variables, model


def seed_to_keras(
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
    variant, variables, model = seed_to_keras_model(src, arch, num_classes)
    result = _result(src, dst, variant, start)
    if validate:
        from vrconvert.converter.conversion.torch_model import torch_model_from_state
        from vrconvert.converter.parity import runtime
        from vrconvert.converter.parity import validate as validator

        state = mapping.to_torch(variant, variables)
        report = validator.check_models(
            variant,
            torch_model_from_state(variant, state),
            model,
            clips or validator.clips_for(frames=16, size=(112, 112), random=1, sample=False),
            runtime.prepare("cpu"),
            tolerance,
        )
        result.parity = report
        if not report.passed:
            raise ParityError(
                f"parity failed: max relative difference {report.worst.max_rel_diff:.2e} > "
                f"{tolerance:g} on {report.worst.input}; nothing was written"
            )
    from vrconvert.converter.conversion.convert import _save_keras

    _save_keras(model, dst, suffix)
    result.seconds = time.perf_counter() - start
    return result
