"""Weight files of the public Keras video ResNets, read with h5py (no Keras, no code from the file).

One table: layout detector -> reader. Each reader returns the variant and its weights as Keras
variable paths of vrconvert's model (`layer2_0_conv1_two_conv/kernel`), after strict accounting:
every array of the file used once, and missing, unexpected and mismatched arrays listed.

- 3D-ResNet-Builder-for-Keras (@238f436, Keras 2 / tf_keras): `model.save_weights("x.h5")`. Names come
  from global layer counters (`conv3d_7/kernel:0`), so they say nothing; the order does: all trainable
  weights in model order, then every BatchNorm's moving mean and variance. The variant is the one
  whose expansion gives exactly that sequence of roles and shapes ('FAST' and 'split-FAST' have
  identical files: --arch chooses).
- ResNet18-2Plus1DD (Keras 3): `model.save_weights("x.weights.h5")`, one group per attribute path
  (`block3/feature_extract1/convolution/spatial_decompose/vars/0`); the stems are `layers/conv2_plus1d_layer*`.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.arch.accounting import Report
from vrconvert.converter.arch.layers import keras_name
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import h5safe

FLOAT_KINDS = "f"
STATS = ("moving_mean", "moving_variance")


@dataclass(frozen=True)
class Expected:
    """One Keras variable of the variant: its path, role (kernel, gamma, ...) and shape."""

    path: str
    role: str
    shape: tuple[int, ...]


def expected(arch: spec.Arch) -> list[Expected]:
    """The variant's variables in model order (the mapping's order)."""
    return [Expected(e.keras_path, e.keras_path.rsplit("/", 1)[1], e.keras_shape) for e in mapping.entries(arch)]


def _read(dataset, path: str) -> np.ndarray:
    """A float dataset in its stored dtype, its dtype checked and its storage (stored in this file, no
    chunk larger than itself, built-in filters only) before any byte is read (its shape was accounted
    for by the caller); `read_project_weights` casts to float32 and notes it."""
    if dataset.dtype.kind not in FLOAT_KINDS or dataset.dtype.itemsize not in (2, 4, 8):
        raise InputError(f"{path}: dataset has dtype {dataset.dtype}, expected floats")
    return h5safe.read(dataset, path)


def _local(f, name: str):
    """The dataset at `name`, reached through hard links only (a soft or external link is refused by name)."""
    import h5py

    node = h5safe.child(f, name)
    return node if isinstance(node, h5py.Dataset) else None


# -- 3D-ResNet-Builder-for-Keras: Keras 2 HDF5, order-based ------------------------------------------


def _builder_names(f) -> list[str] | None:
    """The dataset paths in the file's own order (layer_names, then each layer's weight_names), counted
    before any list is built and reached through hard links only (`h5safe.keras2_weights`)."""
    if "keras_version" not in f.attrs:
        return None
    return h5safe.keras2_weights(f)


def _is_builder(f) -> bool:
    names = _builder_names(f)
    return bool(names) and all(re.search(r"/(conv3d|batch_normalization|dense)(_\d+)?/\w+:0$", n) for n in names)


def _builder_order(arch: spec.Arch) -> list[Expected]:
    """The builder's file order: trainable variables in model order, then the BatchNorm statistics."""
    variables = expected(arch)
    return [v for v in variables if v.role not in STATS] + [v for v in variables if v.role in STATS]


def _role(name: str) -> str:
    return name.rsplit("/", 1)[1].split(":", 1)[0]


def _account_builder(arch: spec.Arch, found: list[tuple[str, str, tuple]]) -> Report:
    report = Report(arch.name)
    order = _builder_order(arch)
    for (name, role, shape), want in zip(found, order, strict=False):
        if role != want.role or shape != want.shape:
            report.mismatched.append((f"{name} ({role}) as {want.path}", shape, want.shape))
    report.missing = [want.path for want in order[len(found) :]]
    report.unexpected = [name for name, _, _ in found[len(order) :]]
    return report


def read_builder(f, path: Path, arch: str | None, num_classes: int | None) -> tuple[spec.Arch, dict[str, np.ndarray]]:
    names = _builder_names(f) or []
    found = []
    for name in names:
        dataset = _local(f, name)
        if dataset is None:
            raise InputError(f"{path}: weight {name!r} is listed but not stored in the file")
        found.append((name, _role(name), tuple(int(n) for n in dataset.shape)))
    heads = [shape for _, role, shape in found if role == "kernel" and len(shape) == 2]
    classes = num_classes or (heads[-1][1] if heads else None)
    candidates = _candidates("builder", arch)
    reports, fits = [], []
    for variant in candidates:
        variant = variant.with_classes(classes or variant.num_classes)
        report = _account_builder(variant, found)
        (fits if report.ok else reports).append(variant if report.ok else report)
    variant = _choose(path, fits, reports, arch, len(found), "3D-ResNet-Builder .h5")
    order = _builder_order(variant)
    return variant, {want.path: _read(_local(f, name), name) for (name, _, _), want in zip(found, order, strict=True)}


# -- ResNet18-2Plus1DD: Keras 3 .weights.h5, name-based ----------------------------------------------

_2PLUS1DD_BLOCKS = ("layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1")
_2PLUS1DD_PARTS = {
    "feature_extract": "conv1",
    "feature_extract1": "conv2",
    "shortcut": "shortcut",
    "convolution/spatial_decompose": "spatial",
    "convolution/temporal_decompose": "temporal",
    "normalize": "bn",
}
_2PLUS1DD_VARIABLES = {
    "conv": ("kernel",),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}
_2PLUS1DD_PATH = re.compile(
    r"(?:(?P<block>block(?P<n>\d*))|layers/conv2_plus1d_layer(?:_(?P<stem>\d+))?|(?P<embedding>embedding))"
    r"(?:/(?P<unit>feature_extract1?|shortcut))?"
    r"(?:/(?P<part>convolution/spatial_decompose|convolution/temporal_decompose|normalize))?"
    r"/vars/(?P<index>\d+)"
)


def _is_2plus1dd(f) -> bool:
    return "embedding" in f and "layers" in f and "block" in f and "layer_names" not in f.attrs


def _2plus1dd_variable(name: str) -> str | None:
    """`block3/feature_extract1/convolution/spatial_decompose/vars/0` -> `layer3_0_conv2_spatial/kernel`."""
    m = _2PLUS1DD_PATH.fullmatch(name)
    if m is None:
        return None
    if m["embedding"]:
        if m["unit"] or m["part"]:
            return None
        record, op = "fc", "dense"
    else:
        if m["block"]:
            n = int(m["n"] or 0)
            if n >= len(_2PLUS1DD_BLOCKS) or not m["unit"]:
                return None
            prefix = f"{_2PLUS1DD_BLOCKS[n]}.{_2PLUS1DD_PARTS[m['unit']]}"
        else:
            if m["unit"]:
                return None
            prefix = f"stem.{int(m['stem'] or 0)}"
        if not m["part"]:
            return None
        record, op = f"{prefix}.{_2PLUS1DD_PARTS[m['part']]}", "bn" if m["part"] == "normalize" else "conv"
    index = int(m["index"])
    return f"{keras_name(record)}/{_2PLUS1DD_VARIABLES[op][index]}" if index < len(_2PLUS1DD_VARIABLES[op]) else None


def read_2plus1dd(f, path: Path, arch: str | None, num_classes: int | None) -> tuple[spec.Arch, dict[str, np.ndarray]]:
    datasets = h5safe.walk(f).datasets  # hard links only; groups, datasets and attributes all counted
    embedding = datasets.get("embedding/vars/0")
    classes = num_classes or (int(embedding.shape[1]) if embedding is not None and len(embedding.shape) == 2 else None)
    [variant] = _candidates("2plus1dd", arch)
    variant = variant.with_classes(classes or variant.num_classes)
    want = {v.path: v for v in expected(variant)}
    report, used, arrays = Report(variant.name), set(), {}
    for name, dataset in datasets.items():
        target = _2plus1dd_variable(name)
        if target is None or target not in want or target in used:
            report.unexpected.append(name)
            continue
        used.add(target)
        shape = tuple(int(n) for n in dataset.shape)
        if shape != want[target].shape:
            report.mismatched.append((f"{name} as {target}", shape, want[target].shape))
            continue
        arrays[target] = dataset
    report.missing = [p for p in want if p not in used]
    if not report.ok:
        raise InputError(f"{path}: does not fit {variant.name}: {report.summary()}")
    return variant, {target: _read(dataset, target) for target, dataset in arrays.items()}


# -- the table ---------------------------------------------------------------------------------------

Reader = Callable[[object, Path, "str | None", "int | None"], "tuple[spec.Arch, dict[str, np.ndarray]]"]
LAYOUTS: dict[str, tuple[str, Callable[[object], bool], Reader]] = {
    "builder": ("3D-ResNet-Builder-for-Keras save_weights .h5 (Keras 2)", _is_builder, read_builder),
    "2plus1dd": ("ResNet18-2Plus1DD save_weights .weights.h5 (Keras 3)", _is_2plus1dd, read_2plus1dd),
}


def _candidates(origin: str, arch: str | None) -> list[spec.Arch]:
    if arch is not None:
        try:
            variant = spec.get(arch)
        except KeyError as exc:
            raise InputError(exc.args[0]) from None
        if variant.origin != origin:
            raise InputError(f"{arch} is not a variant of the file's project ({LAYOUTS[origin][0]})")
        return [variant]
    return [v for v in spec.VARIANTS.values() if v.origin == origin]


def _choose(path: Path, fits: list, reports: list[Report], arch: str | None, count: int, what: str) -> spec.Arch:
    if len(fits) == 1:
        return fits[0]
    if fits:
        names = ", ".join(v.name for v in fits)
        raise InputError(f"{path}: a {what} that fits {names} alike (identical weight shapes); pass --arch")
    if arch:
        raise InputError(f"{path}: does not fit {arch}: {reports[0].summary()}")
    best = min(reports, key=lambda r: r.size)
    raise InputError(
        f"{path}: a {what} with {count} weights of no known variant; closest is {best.arch}: {best.summary()}"
    )


def detect_layout(f) -> str | None:
    return next((name for name, (_, detector, _) in LAYOUTS.items() if detector(f)), None)


def is_project_file(path: str | Path) -> bool:
    """Whether `path` is an HDF5 file in one of the originals' layouts (cheap: attributes and names).
    The path gate comes first: a FIFO or device is refused (InputError), never opened."""
    try:
        import h5py  # noqa: F401 (h5safe opens with it)
    except ImportError:
        return False
    try:
        with h5safe.open_file(path) as f:
            return detect_layout(f) is not None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return False


def read_project_weights(
    path: str | Path, arch: str | None = None, num_classes: int | None = None, notes: list[str] | None = None
) -> tuple[spec.Arch, dict[str, np.ndarray]]:
    """(variant, Keras variable path -> float32 array) of an original project's weight file; a cast to
    float32 is added to `notes` (as a torch checkpoint's is)."""
    try:
        import h5py  # noqa: F401 (h5safe opens the file with it; the extra is named here)
    except ImportError:
        raise InputError("reading Keras weight files needs h5py: pip install 'vrconvert[keras]'") from None
    path = Path(path)
    try:
        with h5safe.open_file(path) as f:
            layout = detect_layout(f)
            if layout is None:
                raise InputError(f"{path}: an HDF5 file of unknown layout ({_describe(f)})")
            variant, arrays = LAYOUTS[layout][2](f, path, arch, num_classes)
    except InputError as exc:
        text = str(exc)
        raise (exc if text.startswith(str(path)) else InputError(f"{path}: {text}")) from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # h5py on damaged files
        raise InputError(
            f"{path}: not a readable HDF5 file: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
        ) from None
    casts = Counter(str(a.dtype) for a in arrays.values() if a.dtype != np.float32)
    if notes is not None:
        notes += [f"converted {count} {dtype} weights to float32" for dtype, count in sorted(casts.items())]
    return variant, {key: a.astype(np.float32, copy=False) for key, a in arrays.items()}


def _describe(f) -> str:
    """What was found, in one line: root attributes and the first groups (counted, never all listed)."""
    h5safe.attributes(f, "/")
    count = f.id.get_num_objs()
    keys = [k.decode("utf-8", "replace") for k in itertools.islice(f.id, 5)]
    attrs = sorted(f.attrs.keys())
    shown = ", ".join(keys) + (f", and {count - 5} more" if count > 5 else "")
    return f"root attributes [{', '.join(attrs)}], top-level entries [{shown}]; expected {', '.join(d for d, _, _ in LAYOUTS.values())}"
