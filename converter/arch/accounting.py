"""Strict accounting of a state dict against an architecture, and detection of the architecture.

Missing, unexpected and shape-mismatched keys are all listed before anything is assigned (the style of
Hugging Face's cross-loading report); any non-empty list is an error. Nothing is ever squeezed or
reshaped to fit. R3D and MC3 share every key name: only kernel shapes tell them apart.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np

from vrconvert.converter import limits
from vrconvert.converter.arch import families, layers, mapping, spec, swin3d_mapping
from vrconvert.converter.errors import InputError

OPTIONAL_SUFFIX = mapping.TORCH_ONLY_SUFFIX  # pre-1.0 checkpoints have no num_batches_tracked


@dataclass
class Report:
    """What did not fit between a state dict and an architecture."""

    arch: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, found, expected

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def summary(self, limit: int = 4) -> str:
        def some(items: list[str]) -> str:
            more = f", and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        def keys(items: list[str]) -> str:  # keys come from the file: each quoted within a bound
            return some([limits.brief(k).strip("'") for k in items])

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({keys(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({keys(self.unexpected)})")
        if self.mismatched:
            shown = [
                f"{limits.brief(k).strip(chr(39))}: found {_spelled(a)} expected {_spelled(b)}"
                for k, a, b in self.mismatched
            ]
            parts.append(f"{len(self.mismatched)} mismatched ({some(shown)})")
        return "; ".join(parts) or "all keys match"

    def as_dict(self) -> dict:
        return {
            "arch": self.arch,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [{"key": k, "found": _listed(a), "expected": _listed(b)} for k, a, b in self.mismatched],
        }


def _spelled(found: tuple | str) -> str:
    return str(tuple(found)) if isinstance(found, tuple | list) else found


def _listed(found: tuple | str) -> list | str:
    return list(found) if isinstance(found, tuple | list) else found


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def dtype_expected(key: str) -> tuple[str, tuple[str, ...]]:
    """The dtype rule: `num_batches_tracked` is an integer count; every weight and statistic is
    floating point of 16, 32 or 64 bits (bfloat16 included). Returns (what to call it, the dtypes)."""
    if key.endswith(OPTIONAL_SUFFIX) or key.endswith(swin3d_mapping.INDEX):  # a count; Swin3D's index
        return "an integer", INT_DTYPES
    return "floating point (16, 32 or 64 bits)", FLOAT_DTYPES


def check_dtypes(dtypes: dict[str, str], where: str = "the checkpoint") -> None:
    """Refuses (one line, like any mismatched entry) a state whose entries break the dtype rule, so
    that nothing is ever cast silently (int8 to float32, complex losing its imaginary part)."""
    report = Report("")
    for key, dtype in dtypes.items():
        expected, allowed = dtype_expected(key)
        if dtype not in allowed:
            report.mismatched.append((key, dtype, expected))
    if not report.ok:
        raise InputError(f"{where} has entries of the wrong dtype: {report.summary()}")


def account(arch: families.Variant, shapes: dict[str, tuple[int, ...]]) -> Report:
    """Compares a state dict's key -> shape against `arch` (num_batches_tracked may be absent)."""
    expected = mapping.torch_shapes(arch)
    report = Report(arch.name)
    for key, shape in expected.items():
        if key not in shapes:
            if not key.endswith(OPTIONAL_SUFFIX):
                report.missing.append(key)
        elif tuple(shapes[key]) != shape:
            report.mismatched.append((key, tuple(shapes[key]), shape))
    report.unexpected = [key for key in shapes if key not in expected]
    return report


HEADS = ("fc.weight", "head.1.weight", "head.weight")  # without an arch: the ResNets', MViT's, Swin3D's


def num_classes_of(shapes: dict[str, tuple[int, ...]], arch: families.Variant | None = None) -> int | None:
    """A classifier head's width (fine-tuned heads differ from 400), read from the weight of `arch`'s head
    (its last conv or dense record: S3D's is a 1x1x1 conv), or without `arch` from a known head's weight."""
    head = None
    if arch is not None:
        head = next((r for r in reversed(families.expand(arch)) if r.op in ("conv", "dense")), None)
    if head is None:
        weight = next((shapes[key] for key in HEADS if key in shapes), None)
        return int(weight[0]) if weight is not None and len(weight) == 2 else None
    weight = shapes.get(f"{head.name}.weight")
    return int(weight[0]) if weight is not None and len(weight) == (2 if head.op == "dense" else 5) else None


def detect(
    shapes: dict[str, tuple[int, ...]], arch: str | None = None, activation: str | None = None
) -> families.Variant:
    """The one known architecture (with its head width) that accounts for every key, or an InputError.

    With `arch` given, only that one is tried, and the error lists what did not fit. Weights cannot
    tell activations apart: a Keras file passes the `activation` its config names, to choose between
    variants that differ only there (a torch checkpoint of one needs `arch`).
    """
    if not shapes:
        raise InputError("the checkpoint holds no tensors")
    candidates = (
        [families.get(arch)]
        if arch
        else [
            v for v in families.VARIANTS.values() if activation is None or getattr(v, "activation", None) == activation
        ]
    )
    keys = set(shapes)  # a head width or mid-plane widths never change a variant's keys: a first cheap look
    fitting = [v for v in candidates if _same_keys(v, keys)]
    reports, matches = [], []
    for variant in fitting or candidates:  # none fitting: every candidate's report, for the closest one
        variant = variant.with_classes(num_classes_of(shapes, variant) or variant.num_classes)
        report = account(variant, shapes)
        if not report.ok and (widened := with_checkpoint_midplanes(variant, shapes)) is not None:
            variant, report = widened, account(widened, shapes)
        (matches if report.ok else reports).append(variant if report.ok else report)
    if len(matches) == 1:
        return matches[0]
    if matches:
        why = (
            " (they differ only in their activation, which weights do not record)"
            if len({replace(m, name="", activation="relu", description="") for m in matches}) == 1
            else ""
        )
        raise InputError(f"ambiguous checkpoint: it fits {', '.join(m.name for m in matches)}{why}; pass --arch")
    if arch:
        raise InputError(f"the checkpoint does not match {arch}: {reports[0].summary()}")
    best = min(reports, key=lambda r: r.size)
    found = f"{len(shapes)} tensors" + (f", first key {limits.brief(next(iter(shapes)))}" if shapes else "")
    raise InputError(f"unknown architecture ({found}); closest is {best.arch}: {best.summary()}")


@functools.cache
def _keys(arch: families.Variant) -> tuple[frozenset[str], frozenset[str]]:
    """`arch`'s state-dict keys: (those a checkpoint must hold, every one it may hold)."""
    every = frozenset(mapping.torch_shapes(arch))
    return frozenset(k for k in every if not k.endswith(OPTIONAL_SUFFIX)), every


def _same_keys(arch: families.Variant, keys: set[str]) -> bool:
    required, every = _keys(arch)
    return required <= keys <= every


def with_checkpoint_midplanes(arch: families.Variant, shapes: dict[str, tuple[int, ...]]) -> spec.Arch | None:
    """`arch` with its R(2+1)D mid-channel widths read from the checkpoint's spatial kernels, when it
    has factorised convs and the checkpoint's widths differ from the formula; else None."""
    if not isinstance(arch, spec.Arch):  # only the ResNet family factorises with a width formula
        return None
    convs = layers.midplane_convs(arch)
    keys = [f"{conv.name}.weight" for conv in convs]
    if not convs or not all(key in shapes and len(shapes[key]) == 5 for key in keys):
        return None
    widths = tuple(int(shapes[key][0]) for key in keys)
    if widths == tuple(conv.channels_out for conv in convs):
        return None
    return replace(arch, midplanes=widths)


def midplanes_report(arch: families.Variant) -> list[str]:
    """Where `arch`'s mid-channel widths differ from torchvision's formula, one line each."""
    if not isinstance(arch, spec.Arch) or arch.midplanes is None:
        return []
    formula = layers.midplane_convs(replace(arch, midplanes=None))
    return [
        f"{conv.name}: {conv.channels_out} (formula {ref.channels_out})"
        for conv, ref in zip(layers.midplane_convs(arch), formula, strict=True)
        if conv.channels_out != ref.channels_out
    ]


def shapes_of(state: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(np.shape(value)) for key, value in state.items()}


def torch_shapes_of(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Keras variable shapes renamed and permuted to torch's spelling by the mapping's rules alone, so
    that the architecture can be detected (and accounted for) exactly as for a torch checkpoint."""
    out = {}
    for path, shape in shapes.items():
        layer, var = path.split("/", 1) if "/" in path else ("", path)  # a sublayer's: `attn/qkv/kernel`
        shape = tuple(shape)
        rule = mapping.rule_for_keras(var, len(shape))
        key = f"{layers.torch_path(layer)}.{rule.torch_suffix}" if rule else path
        if rule and rule.permutation:
            shape = tuple(shape[int(a)] for a in np.argsort(rule.permutation))
        out[key] = shape
    return out
