"""The two conversion flows, top to bottom:

torch_to_keras: checkpoint -> normalised state dict -> accounting/detection -> mapping -> Keras model
                -> parity check -> file (atomic)
keras_to_torch: Keras file -> variables -> detection -> mapping (inverse) -> state dict -> file (atomic)

Plus the in-memory forms the Python API exposes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.arch.layers import count_params, expand
from vrconvert.converter.conversion import accounting
from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state
from vrconvert.converter.errors import InputError, ParityError
from vrconvert.converter.formats import checkpoint, keras_io
from vrconvert.converter.formats.output import atomic_path, check_target
from vrconvert.converter.parity import runtime
from vrconvert.converter.parity import validate as validator


@dataclass
class Result:
    """What a conversion did, for the CLI's human and JSON output."""

    src: str
    dst: str
    arch: str
    num_classes: int
    num_params: int
    source_format: str
    source_dtypes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hash_check: str | None = None
    seconds: float = 0.0
    parity: validator.Report | None = None  # None when the check was skipped (or not applicable)

    @property
    def passed(self) -> bool | None:
        return None if self.parity is None else self.parity.passed

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "parity"}
        report = self.parity.as_dict() if self.parity else {"passed": None}
        out.update(
            {k: v for k, v in report.items() if k not in ("arch", "num_classes", "torch_file", "keras_file", "seconds")}
        )
        if self.parity:
            out["parity_seconds"] = self.parity.seconds
        return out


def state_dict_to_keras(state: dict, arch: str | None = None):
    """In memory: a torchvision-style state dict (torch tensors or numpy) -> a Keras model."""
    arrays = {
        k: np.asarray(v.detach().cpu().float() if hasattr(v, "detach") and v.is_floating_point() else v)
        for k, v in state.items()
    }
    variant = accounting.detect(accounting.shapes_of(arrays), arch)
    return keras_io.build_model(variant, arrays)


def keras_to_state_dict(model, arch: str | None = None) -> dict[str, np.ndarray]:
    """In memory: a vrconvert Keras model -> a torchvision state dict of numpy arrays (in order)."""
    variant = accounting.detect(
        keras_io.torch_shapes_of(keras_io.shapes_of_model(model)), arch, keras_io.activation_of(model)
    )
    return mapping.to_torch(variant, keras_io.variables_of(model))


def default_clips(frames: int = 16, size: tuple[int, int] = (112, 112), raw: bool = False) -> dict[str, np.ndarray]:
    """The post-conversion check's inputs: one seeded random clip and the packaged real clip
    (left out, with a note, where PyAV is not installed); `raw`: uint8 frames, for a preprocessing model."""
    has_pyav = importlib.util.find_spec("av") is not None
    if not has_pyav:
        warnings.warn(
            "the real-clip parity check needs PyAV (pip install 'vrconvert[video]'); random clip only", stacklevel=2
        )
    return validator.clips_for(frames=frames, size=size, random=1, sample=has_pyav, raw=raw)


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
    if fold_bn:
        from vrconvert.models_tf import fold

        model = fold.build_folded(variant, ckpt.state)
    else:
        model = keras_io.build_model(variant, ckpt.state, include_preprocessing=include_preprocessing)
    result = Result(
        str(src),
        str(dst),
        variant.name,
        variant.num_classes,
        count_params(expand(variant)),
        ckpt.format,
        ckpt.source_dtypes,
        ckpt.notes,
        ckpt.hash_check,
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
        if not report.passed:
            where = report.first_divergence
            place = f"; first divergence at {where.torch_module} / {where.keras_layer}" if where else ""
            raise ParityError(
                f"parity failed: max relative difference {report.worst.max_rel_diff:.2e} > "
                f"{tolerance:g} on {report.worst.input}{place}; nothing was written"
            )
    _save_keras(model, dst, suffix)
    result.seconds = time.perf_counter() - start
    return result


def _save_keras(model, dst: Path, suffix: str) -> None:
    """One write, through a temporary file renamed on success: weights only for `.weights.h5`."""
    with atomic_path(dst, suffix) as tmp, _legacy_format_notice_silenced():
        model.save_weights(str(tmp)) if suffix == ".weights.h5" else model.save(str(tmp))


@contextlib.contextmanager
def _legacy_format_notice_silenced():
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


def keras_to_torch(
    src: str | Path, dst: str | Path, *, arch: str | None = None, num_classes: int | None = None, force: bool = False
) -> Result:
    """Converts a `.keras`/`.h5`/`.weights.h5` file to a torchvision state dict (`.pth` or `.safetensors`)."""
    start = time.perf_counter()
    dst = Path(dst)
    suffix = check_target(dst, force, checkpoint.TORCH_SUFFIXES)
    src = Path(src)
    from vrconvert.converter.conversion import seeds  # the public Keras projects' own weight files

    if seeds.is_seed_file(src):
        return seeds.seed_to_torch(src, dst, arch=arch, num_classes=num_classes, force=force)
    variant, variables = keras_io.read_keras_file(src, arch, num_classes)
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
        str(src),
        str(dst),
        variant.name,
        variant.num_classes,
        count_params(expand(variant)),
        keras_io.keras_suffix(src),
        ["float32"],
        notes,
        None,
        time.perf_counter() - start,
    )


def write_untrained(arch: str, dst: str | Path, *, num_classes: int | None = None, force: bool = False) -> Result:
    """`vrconvert build`: an untrained model of `arch` (each framework's default initialisation),
    as `.keras`/`.h5`/`.weights.h5` or as a torchvision-style `.pth`/`.safetensors` state dict."""
    start = time.perf_counter()
    dst = Path(dst)
    suffix = check_target(dst, force, keras_io.KERAS_SUFFIXES + checkpoint.TORCH_SUFFIXES)
    try:
        variant = spec.get(arch)
    except KeyError as exc:
        raise InputError(exc.args[0]) from None
    variant = variant.with_classes(num_classes or variant.num_classes)
    if suffix in keras_io.KERAS_SUFFIXES:
        from vrconvert import models_tf

        _save_keras(models_tf.build(variant), dst, suffix)
        framework = "keras"
    else:
        from vrconvert import models_torch

        state = {k: v.numpy() for k, v in models_torch.build(variant, variant.num_classes).state_dict().items()}
        with atomic_path(dst, suffix) as tmp:
            checkpoint.write_torch(state, tmp)
        framework = "torch"
    return Result(
        arch,
        str(dst),
        variant.name,
        variant.num_classes,
        count_params(expand(variant)),
        framework,
        seconds=time.perf_counter() - start,
    )
