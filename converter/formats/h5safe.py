"""HDF5 files read as hostile structure, with h5py but never trusting the file's own pointers.

libhdf5 resolves an external link by opening another file (a FIFO there blocks forever) and a soft
link by path, so a walk that follows either can leave the object tree it was checking. Chunked storage
lets a few bytes of gzip declare a chunk of any size, which libhdf5 allocates and inflates whole before
it returns the few elements the dataset has. And a list built from the file (names in an attribute,
the links of a group) costs memory before any limit can look at it. So here:
- `walk` visits hard links only, depth-first in name order, and refuses a soft or external link by
  its name; every group's link count and every object's attribute count is checked before anything
  is listed, against `limits.H5_OBJECTS` for the whole walk;
- every dataset's storage is checked before a byte of it is read: stored in this file (no external
  or virtual storage), only the filters libhdf5 has built in, no chunk larger than its dataset along
  any axis, and the inflated size of all datasets within `limits.H5_INFLATED_BYTES`;
- `names` reads a string-list attribute after its element count and stored size passed;
- `read` fills an array of the declared shape (bounded by the checks) and nothing else.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter import limits
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats.gate import regular_file

# libhdf5's built-in filters, plus lzf (h5py's own). Any other filter id makes libhdf5 search
# HDF5_PLUGIN_PATH for a shared library to load: code chosen by the file.
FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
LINK_KINDS = {1: "soft", 64: "external"}


@dataclass(kw_only=True)
class Tree:
    """What a walk found so far (filled in as it goes): datasets by path, in the walk's order, the
    objects counted, how much the datasets inflate to, the groups entered."""

    datasets: dict[str, object] = field(default_factory=dict)
    objects: int = 0
    inflated: int = 0
    groups: set[int] = field(default_factory=set)  # file addresses of the groups entered


@contextlib.contextmanager
def open_file(path: str | Path) -> Iterator[object]:
    """An h5py File opened read-only, after the path gate (a FIFO or device is never opened)."""
    import h5py

    path = regular_file(path)
    with h5py.File(path, "r") as f:
        yield f


def _refuse_link(kind: int, where: str) -> InputError:
    what = LINK_KINDS.get(kind, "user-defined")
    return InputError(
        f"the HDF5 {what} link {limits.brief(where)} (it would be followed out of the file's tree); refused"
    )


def child(group, name: str):
    """`group[name]` through hard links only (`name` may hold '/'); None when there is no such link.
    A soft or external link on the way is refused by its name; nothing is ever resolved by path."""
    import h5py

    node = group
    parts = name.split("/")
    for i, part in enumerate(parts):
        where = "/".join(parts[: i + 1])
        if part in ("", ".") or not isinstance(node, h5py.Group):
            return None
        key = part.encode("utf-8")
        if not node.id.links.exists(key):
            return None
        kind = node.id.links.get_info(key).type
        if kind != h5py.h5l.TYPE_HARD:
            raise _refuse_link(kind, where)
        node = node[part]
    return node


def walk(group, *, most: int = limits.H5_OBJECTS) -> Tree:
    """Every dataset under `group` by path (relative to `group`), through hard links only, within the
    object, depth, attribute and inflated-size limits; each dataset's storage checked (`storage`)."""
    tree = Tree()
    _visit(group, "", 0, tree, most)
    return tree


def _visit(group, where: str, depth: int, tree: Tree, most: int) -> None:
    import h5py

    address = h5py.h5o.get_info(group.id).addr
    if address in tree.groups:
        raise InputError(f"the HDF5 group {limits.brief(where or '/')} is reached twice (a hard-link loop); refused")
    tree.groups.add(address)
    attributes(group, where or "/")
    count = group.id.get_num_objs()  # the group's own link count: nothing listed yet
    tree.objects += count
    limits.check("the number of HDF5 objects", tree.objects, most)
    for key in group.id:
        name = key.decode("utf-8", "replace")
        path = f"{where}/{name}" if where else name
        kind = group.id.links.get_info(key).type
        if kind != h5py.h5l.TYPE_HARD:
            raise _refuse_link(kind, path)
        obj = group[name]
        if isinstance(obj, h5py.Group):
            if depth + 1 > limits.H5_DEPTH:
                raise InputError(f"HDF5 groups nested deeper than {limits.H5_DEPTH} levels ({limits.brief(path)})")
            _visit(obj, path, depth + 1, tree, most)
        elif isinstance(obj, h5py.Dataset):
            attributes(obj, path)
            tree.inflated += storage(obj, path)
            limits.check("the datasets' inflated size", tree.inflated, limits.H5_INFLATED_BYTES, " bytes")
            tree.datasets[path] = obj


def attributes(obj, where: str) -> int:
    """The object's attribute count, checked (read from its header, no attribute opened)."""
    import h5py

    count = h5py.h5a.get_num_attrs(obj.id)
    if count > limits.H5_ATTRIBUTES:
        raise InputError(
            f"{limits.brief(where)} has {count:,} HDF5 attributes, over vrconvert's limit of {limits.H5_ATTRIBUTES:,}"
        )
    return count


def storage(dataset, where: str) -> int:
    """The bytes `dataset` inflates to when read, after checking where and how it is stored."""
    import h5py

    if dataset.is_virtual:
        raise InputError(f"dataset {limits.brief(where)} is virtual (stored in other files); refused")
    plist = dataset.id.get_create_plist()
    if plist.get_external_count():
        raise InputError(f"dataset {limits.brief(where)} is stored outside the file; refused")
    dtype = dataset.dtype
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or h5py.check_vlen_dtype(dtype):
        raise InputError(f"dataset {limits.brief(where)} has a compound or variable-length type")
    shape = tuple(int(n) for n in dataset.shape or ())
    if len(shape) > limits.TENSOR_DIMS:
        raise InputError(f"dataset {limits.brief(where)} has {len(shape)} dimensions")
    for n in shape:
        limits.check(f"a dimension of dataset {limits.brief(where)}", n, limits.TENSOR_DIM_SIZE)
    if plist.get_layout() != h5py.h5d.CHUNKED:
        return math.prod(shape) * dtype.itemsize
    chunk = tuple(int(n) for n in plist.get_chunk())
    if len(chunk) != len(shape) or any(c > max(n, 1) for c, n in zip(chunk, shape, strict=False)):
        raise InputError(
            f"dataset {limits.brief(where)} of shape {shape} is stored in chunks of {chunk}, larger than itself; refused"
        )
    for index in range(plist.get_nfilters()):
        code = int(plist.get_filter(index)[0])
        if code not in FILTERS:
            raise InputError(
                f"dataset {limits.brief(where)} needs HDF5 filter {code}, outside vrconvert's list "
                f"({', '.join(FILTERS.values())}); refused"
            )
    return math.prod(-(-n // c) * c for n, c in zip(shape, chunk, strict=True)) * dtype.itemsize


def names(obj, key: str, budget: list[int]) -> list[str] | None:
    """A string-list attribute (Keras' layer_names, weight_names), its element count taken from
    `budget[0]` (what is left of `limits.H5_NAMES`) before a single string is read; None if absent."""
    if key not in obj.attrs:
        return None
    attr = obj.attrs.get_id(key)
    count = math.prod(int(n) for n in attr.shape or ())
    budget[0] -= count
    if budget[0] < 0:
        raise InputError(f"more than {limits.H5_NAMES:,} names in the file's name lists ({limits.brief(key)})")
    if count == 0:  # Keras writes a weightless layer's empty list as float64
        return []
    limits.check(f"the {limits.brief(key)} attribute", _stored(attr), limits.H5_ATTRIBUTE_BYTES, " bytes")
    if attr.dtype.kind not in "SUO":
        raise InputError(f"the {limits.brief(key)} attribute holds {attr.dtype}, not names")
    values = obj.attrs[key]
    out = []
    for value in np.atleast_1d(values):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if not isinstance(text, str) or len(text) > limits.KEY_CHARS:
            raise InputError(f"a name in the {limits.brief(key)} attribute that is {limits.brief(text)}")
        out.append(text)
    return out


def _stored(attr) -> int:
    """An attribute's stored bytes (libhdf5 reports an empty one as an error)."""
    try:
        return int(attr.get_storage_size())
    except RuntimeError:
        return 0


def text(obj, key: str) -> str | bytes | None:
    """A scalar string attribute (model_config), its stored size checked before it is read."""
    if key not in obj.attrs:
        return None
    attr = obj.attrs.get_id(key)
    if attr.shape not in ((), None) or attr.dtype.kind not in "SUO":
        raise InputError(f"a malformed {limits.brief(key)} attribute")
    limits.check(f"the {limits.brief(key)} attribute", _stored(attr), limits.H5_ATTRIBUTE_BYTES, " bytes")
    value = obj.attrs[key]
    return value if isinstance(value, str | bytes) else None


def read(dataset, where: str) -> np.ndarray:
    """The dataset's values in an array of its declared shape and dtype (storage checked first)."""
    storage(dataset, where)
    out = np.empty(tuple(int(n) for n in dataset.shape), dtype=dataset.dtype)
    if out.size:
        dataset.read_direct(out)
    return out


def listed(obj, key: str, budget: list[int]) -> list[str] | None:
    """Keras 2's name-list attribute `key`, whole or in the chunks it splits long lists into
    (`weight_names0`, `weight_names1`, ...); None when absent."""
    whole = names(obj, key, budget)
    if whole is not None:
        return whole
    out: list[str] | None = None
    for index in range(limits.H5_ATTRIBUTES):
        part = names(obj, f"{key}{index}", budget)
        if part is None:
            break
        out = (out or []) + part
    return out


def keras2_weights(group) -> list[str] | None:
    """The dataset paths a Keras 2 weights group lists (`layer_names`, then each layer's `weight_names`),
    in its order, each reached through hard links only and counted against `limits.H5_NAMES` before a
    list is built; None when the group has no `layer_names`. A layer listed twice is refused."""
    budget = [limits.H5_NAMES]
    layers = listed(group, "layer_names", budget)
    if layers is None:
        return None
    if len(set(layers)) != len(layers):
        raise InputError("a layer listed twice in layer_names")
    out = []
    for layer in layers:
        node = child(group, layer)
        if node is None or not hasattr(node, "attrs"):
            raise InputError(f"layer {limits.brief(layer)} is listed but not stored in the file")
        for name in listed(node, "weight_names", budget) or []:
            path = f"{layer}/{name}"
            try:
                found = child(group, path)
            except InputError as exc:
                raise InputError(f"weight {limits.brief(path)} is listed but not stored in the file: {exc}") from None
            if found is None:
                raise InputError(f"weight {limits.brief(path)} is listed but not stored in the file")
            out.append(path)
    return out
