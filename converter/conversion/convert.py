"""The two conversion flows, top to bottom:

torch_to_keras: checkpoint -> normalised state dict -> accounting/detection -> mapping -> Keras model
                -> parity check -> file (atomic)
keras_to_torch: Keras file -> variables -> detection -> mapping (inverse) -> state dict -> file (atomic)

Plus the in-memory forms the Python API exposes.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import accounting, families, mapping
from vrconvert.converter.arch.families import expand
from vrconvert.converter.arch.layers import count_params
from vrconvert.converter.conversion import seeds
from vrconvert.converter.conversion.result import Result
from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import checkpoint, keras_io
from vrconvert.converter.formats.output import atomic_path, check_target
from vrconvert.converter.parity import runtime
from vrconvert.converter.parity import validate as validator


def state_dict_to_keras(state: dict, arch: str | None = None):
    """In memory: a torchvision-style state dict (torch tensors or numpy) -> a Keras model."""
    arrays = {
        k: np.asarray(v.detach().cpu().float() if hasattr(v, "detach") and v.is_floating_point() else v)
        for k, v in state.items()
    }
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    variant = accounting.detect(accounting.shapes_of(arrays), arch)
    return keras_weights.build_model(variant, arrays)


def keras_to_state_dict(model, arch: str | None = None) -> dict[str, np.ndarray]:
    """In memory: a vrconvert Keras model -> a torchvision state dict of numpy arrays (in order)."""
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    variant = accounting.detect(
        accounting.torch_shapes_of(keras_weights.shapes_of_model(model)), arch, keras_weights.activation_of(model)
    )
    return mapping.to_torch(variant, keras_weights.variables_of(model))


def torch_to_keras(
    src: str | Path,
    dst: str | Path,
    *,
    arch: str | None = None,
    force: bool = False,
    validate: bool = True,
    tolerance: float | None = None,
    clips: dict[str, np.ndarray] | None = None,
    fold_bn: bool = False,
    include_preprocessing: bool = False,
) -> Result:
    """Converts a torch checkpoint to `.keras`, `.h5` or `.weights.h5`; checks parity before writing.

    With `fold_bn`, the Keras model is the inference form with every BatchNorm folded into its conv
    (`models_tf.fold`; `.keras`/`.h5` only: a `.weights.h5` carries no config to tell it apart).
    With `include_preprocessing`, it takes uint8 frames and applies torchvision's transform itself
    (`models_tf.preprocessing`; `.keras`/`.h5` only), checked against torchvision's transform + torch."""
    start = time.perf_counter()
    dst = Path(dst)
    suffix = check_target(dst, force, keras_io.KERAS_SUFFIXES)
    if fold_bn and suffix == ".weights.h5":
        raise InputError(f"{dst}: --fold-bn writes a whole model (.keras or .h5), not .weights.h5")
    if include_preprocessing and (suffix == ".weights.h5" or fold_bn):
        why = "with --fold-bn" if fold_bn else "to .weights.h5 (no config to carry it)"
        raise InputError(f"{dst}: --include-preprocessing cannot be written {why}; write a .keras or .h5")
    ckpt, variant = load_state(src, arch)
    tolerance = validator.default_tolerance(include_preprocessing) if tolerance is None else tolerance
    from vrconvert.models_tf import fold  # lazy: Keras
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    if fold_bn:
        model = fold.build_folded(variant, ckpt.state)
    else:
        model = keras_weights.build_model(variant, ckpt.state, include_preprocessing=include_preprocessing)
    result = Result(
        src=str(src),
        dst=str(dst),
        arch=variant.name,
        num_classes=variant.num_classes,
        num_params=count_params(expand(variant)),
        source_format=ckpt.format,
        source_dtypes=ckpt.source_dtypes,
        notes=ckpt.notes,
        hash_check=ckpt.hash_check,
    )
    if validate:
        report = validator.check_models(
            variant,
            torch_model_from_state(variant, ckpt.state),
            model,
            clips or default_clips(raw=include_preprocessing),
            runtime.prepare("cpu"),
            tolerance,
        )
        result.parity = report
        validator.require(report)
    keras_weights.save(model, dst, suffix)
    result.seconds = time.perf_counter() - start
    return result


def default_clips(frames: int = 16, size: tuple[int, int] = (112, 112), raw: bool = False) -> dict[str, np.ndarray]:
    """The post-conversion check's inputs (`validator.default_clips`); what was left out is warned."""
    clips, notes = validator.default_clips(frames=frames, size=size, raw=raw)
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return clips


def keras_to_torch(
    src: str | Path, dst: str | Path, *, arch: str | None = None, num_classes: int | None = None, force: bool = False
) -> Result:
    """Converts a `.keras`/`.h5`/`.weights.h5` file to a torchvision state dict (`.pth` or `.safetensors`)."""
    start = time.perf_counter()
    dst = Path(dst)
    suffix = check_target(dst, force, checkpoint.TORCH_SUFFIXES)
    src = Path(src)
    if seeds.is_seed_file(src):
        return seeds.seed_to_torch(src, dst, arch=arch, num_classes=num_classes, force=force)
    from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

    variant, variables = keras_weights.read_keras_file(src, arch, num_classes)
    notes = []
    if keras_io.takes_frames(src):  # a state dict has no input contract: say how to keep the Keras file's
        notes.append(
            f"{src.name} takes uint8 frames: load this state dict into "
            f"vrconvert.models_torch.build({variant.name!r}, include_preprocessing=True) for the same input"
        )
    state = mapping.to_torch(variant, variables)
    report = accounting.account(variant, accounting.shapes_of(state))
    assert report.ok, report.summary()  # to_torch writes exactly torchvision's layout
    with atomic_path(dst, suffix) as tmp:
        checkpoint.write_torch(state, tmp)
    return Result(
        src=str(src),
        dst=str(dst),
        arch=variant.name,
        num_classes=variant.num_classes,
        num_params=count_params(expand(variant)),
        source_format=keras_io.keras_suffix(src),
        source_dtypes=["float32"],
        notes=notes,
        hash_check=None,
        seconds=time.perf_counter() - start,
    )


def write_untrained(arch: str, dst: str | Path, *, num_classes: int | None = None, force: bool = False) -> Result:
    """`vrconvert build`: an untrained model of `arch` (each framework's default initialisation),
    as `.keras`/`.h5`/`.weights.h5` or as a torchvision-style `.pth`/`.safetensors` state dict."""
    start = time.perf_counter()
    dst = Path(dst)
    suffix = check_target(dst, force, keras_io.KERAS_SUFFIXES + checkpoint.TORCH_SUFFIXES)
    try:
        variant = families.get(arch)
    except KeyError as exc:
        raise InputError(exc.args[0]) from None
    variant = variant.with_classes(num_classes or variant.num_classes)
    if suffix in keras_io.KERAS_SUFFIXES:
        from vrconvert import models_tf
        from vrconvert.models_tf import weights as keras_weights  # lazy: Keras

        keras_weights.save(models_tf.build(variant), dst, suffix)
        framework = "keras"
    else:
        from vrconvert import models_torch

        state = {k: v.numpy() for k, v in models_torch.build(variant, variant.num_classes).state_dict().items()}
        with atomic_path(dst, suffix) as tmp:
            checkpoint.write_torch(state, tmp)
        framework = "torch"
    return Result(
        src=arch,
        dst=str(dst),
        arch=variant.name,
        num_classes=variant.num_classes,
        num_params=count_params(expand(variant)),
        source_format=framework,
        seconds=time.perf_counter() - start,
    )
