"""Where `build(arch, weights=...)` gets its weights: a pretrained name (the hub cache, filled by the
verified download) or a file vrconvert reads. Which head the file holds, and whether it is kept, is
decided here too, the same way for both builders."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import accounting, families, heads
from vrconvert.converter.errors import InputError

PRETRAINED_NAMES = ("kinetics400", "KINETICS400_V1", "DEFAULT")  # torchvision's enum spellings too


def head_keys(arch: families.Variant) -> tuple[str, str]:
    """The torch keys of `arch`'s classifier (`fc`, S3D's `classifier.1`, Swin3D's `head`, MViT's `head.1`)."""
    name = heads.head_record(arch).name
    return f"{name}.weight", f"{name}.bias"


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The architecture to build, and whether the file's head is loaded into it."""

    arch: families.Variant
    load_head: bool


def resolve(weights: str | Path, arch: families.Variant) -> Path:
    """The file behind `weights`: a pretrained name goes through the hub cache and the verified download."""
    if isinstance(weights, str) and weights in PRETRAINED_NAMES:
        from vrconvert.converter.formats import download

        return download.fetch_pretrained(arch.name)
    path = Path(weights)
    if not path.is_file():
        names = ", ".join(repr(n) for n in PRETRAINED_NAMES[:1])
        raise InputError(f"weights={str(weights)!r}: no such file, and not a pretrained name ({names})")
    return path


def backbone_arch(arch: families.Variant, shapes: dict[str, tuple[int, ...]], where: str) -> families.Variant:
    """`arch` as the file's weights have it (head width, R(2+1)D mid widths), every backbone key strictly
    accounted for (missing, unexpected and mismatched are errors); a file without a head is allowed."""
    classes = accounting.num_classes_of(shapes, arch)
    variant = arch.with_classes(classes or arch.num_classes)
    variant = accounting.with_checkpoint_midplanes(variant, shapes) or variant
    report = accounting.account(variant, shapes)
    if classes is None:
        report.missing = [k for k in report.missing if k not in head_keys(arch)]
    if not report.ok:
        raise InputError(f"{where}: does not fit {arch.name}: {report.summary()}")
    return variant


def plan(file_arch: families.Variant, has_head: bool, include_top: bool, num_classes: int | None, where: str) -> Plan:
    """What to build: the file's head is kept when the top is included with the file's width; a
    different width (or a file without a head) gets a fresh head, said in one line."""
    classes = num_classes or (file_arch.num_classes if has_head else families.get(file_arch.name).num_classes)
    target = file_arch.with_classes(classes)
    if not include_top:
        return Plan(arch=target, load_head=False)
    if has_head and classes == file_arch.num_classes:
        return Plan(arch=target, load_head=True)
    why = f"its head has {file_arch.num_classes} classes" if has_head else "it holds no head"
    warnings.warn(f"{where}: {why}; a fresh {classes}-class head is initialised", stacklevel=4)
    return Plan(arch=target, load_head=False)


def backbone_state(state: dict[str, np.ndarray], arch: families.Variant) -> dict[str, np.ndarray]:
    return {k: v for k, v in state.items() if k not in head_keys(arch)}
