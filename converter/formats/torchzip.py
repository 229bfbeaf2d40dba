"""Reading torch's zip checkpoint format with numpy alone: no torch import, no code execution.

`torch.save` writes a zip holding `data.pkl` (the object tree, tensors as references to storages) and
one uncompressed member per storage. This reader unpickles `data.pkl` with an allowlist of exactly the
globals a state dict needs (OrderedDict, `_rebuild_tensor_v2`, `_rebuild_parameter`, the storage
types), each mapped to a function of ours, never to torch's; storages are memory-mapped from the file.
Anything outside the allowlist raises `Unsupported`, and the caller falls back to
`torch.load(weights_only=True)`, which is equally safe but needs torch (about a second to import).

So a Keras user can convert (with `--no-validate`) and inspect torch checkpoints without torch.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# torch storage type -> numpy dtype (bfloat16 has none: kept as its 16-bit pattern, widened on request)
STORAGE_DTYPES = {
    "FloatStorage": ("float32", np.float32),
    "DoubleStorage": ("float64", np.float64),
    "HalfStorage": ("float16", np.float16),
    "BFloat16Storage": ("bfloat16", np.uint16),
    "LongStorage": ("int64", np.int64),
    "IntStorage": ("int32", np.int32),
    "ShortStorage": ("int16", np.int16),
    "CharStorage": ("int8", np.int8),
    "ByteStorage": ("uint8", np.uint8),
    "BoolStorage": ("bool", np.bool_),
}


class Unsupported(Exception):
    """The file uses something this reader does not handle (the caller falls back to torch)."""


@dataclass(frozen=True)
class StorageType:
    name: str  # torch's dtype name
    dtype: type


@dataclass
class Tensor:
    """A tensor read without torch: its numpy array (a memory map where possible) and torch dtype name."""

    array: np.ndarray
    dtype: str

    def float32(self) -> np.ndarray:
        if self.dtype == "bfloat16":  # the upper half of a float32
            return (self.array.astype(np.uint32) << 16).view(np.float32)
        return self.array.astype(np.float32)


def _rebuild_tensor(storage, offset, size, stride, *_):
    array, name = storage
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and isinstance(offset, int)):
        raise Unsupported("malformed tensor record")
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise Unsupported("malformed tensor shape")
    numel = int(np.prod(size, dtype=np.int64))
    if numel and offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= array.size:
        raise Unsupported("tensor reaches past its storage")
    item = array.itemsize
    view = (
        np.lib.stride_tricks.as_strided(array[offset:], shape=size, strides=[s * item for s in stride], writeable=False)
        if numel
        else np.zeros(size, array.dtype)
    )
    return Tensor(view, name)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    if not isinstance(data, Tensor):
        raise Unsupported("parameter without a tensor")
    return data


ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(*spec) for name, spec in STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages) -> None:
        super().__init__(io.BytesIO(data))
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise Unsupported(f"global {module}.{name}") from None

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            raise Unsupported(f"persistent id {pid!r:.80}")
        kind, key, numel = pid[1], pid[2], pid[4]
        return self._storages(key, kind.dtype, numel), kind.name


def _member_offset(raw, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start in the file (after its local header)."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if header[:4] != b"PK\x03\x04":
        raise Unsupported("bad local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def load(path: str | Path):
    """The object tree of a torch zip checkpoint, tensors as `Tensor`; raises `Unsupported`."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise Unsupported(str(exc)) from exc
    with archive, open(path, "rb") as raw:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise Unsupported("no single data.pkl")
        root = pickles[0][: -len("data.pkl")]
        if root + "byteorder" in names and archive.read(root + "byteorder") != b"little":
            raise Unsupported("big-endian storages")
        whole = np.memmap(path, dtype=np.uint8, mode="r")

        def storage(key: str, dtype: type, numel: int) -> np.ndarray:
            try:
                info = archive.getinfo(f"{root}data/{key}")
            except KeyError:
                raise Unsupported(f"missing storage {key!r}") from None
            itemsize = np.dtype(dtype).itemsize
            if info.compress_type != zipfile.ZIP_STORED or numel < 0 or numel * itemsize > info.file_size:
                raise Unsupported(f"storage {key!r} is compressed or shorter than declared")
            start = _member_offset(raw, info)
            if start + numel * itemsize > whole.size:
                raise Unsupported(f"storage {key!r} is truncated")
            chunk = whole[start : start + numel * itemsize]
            return chunk.view(dtype) if start % itemsize == 0 else np.frombuffer(chunk.tobytes(), dtype)

        try:
            return _Unpickler(archive.read(pickles[0]), storage).load()
        except Unsupported:
            raise
        except Exception as exc:  # truncated or corrupt pickle data
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
