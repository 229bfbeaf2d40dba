"""Reading torch's zip checkpoint format with numpy alone: no torch import, no code execution.

`torch.save` writes a zip holding `data.pkl` (the object tree, tensors as references to storages) and
one uncompressed member per storage. This reader unpickles `data.pkl` with an allowlist of exactly the
globals a state dict needs (OrderedDict, `_rebuild_tensor_v2`, `_rebuild_parameter`, the storage
types), each mapped to a function of ours, never to torch's; storages are memory-mapped from the file.

Untrusted bytes are checked before anything is built from them:
- `data.pkl` is read with a bounded read (`limits.PICKLE_BYTES`), then `scan_pickle` walks its opcodes
  with an abstract stack *before* unpickling: memo indices, nesting depth, opcode count, dict keys
  (atoms only: a key built from shared tuples can take 2^depth steps to hash) and the targets of
  BUILD/REDUCE are checked, so the real unpickler only ever sees a bounded, tree-like program.
- every storage reference and tensor record is checked against the member's real byte length with
  Python integers (no overflow): offsets, sizes and strides non-negative, the last element inside the
  storage, no more elements than the storage holds, storage dtypes from an allowlist.
- a storage shared by many tensors is mapped (or, when unaligned, copied) once.

Problems of the file raise `Refused` (an InputError: exit 2, no fallback). Only a well-formed pickle
that uses a global outside the allowlist raises `Unsupported`, and the caller falls back to
`torch.load(weights_only=True)`, which is equally safe but needs torch.

So a Keras user can convert (with `--no-validate`) and inspect torch checkpoints without torch.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter import limits
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import zip_members

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
STORAGE_KEY = re.compile(rf"[0-9A-Za-z_]{{1,{limits.STORAGE_KEY_CHARS}}}")


class Unsupported(Exception):
    """A well-formed file uses something this reader does not handle (the caller falls back to torch)."""


class Refused(InputError):
    """The file is malformed or exceeds a limit: refused outright (never handed to another reader)."""


class _Sealed:
    """No pickle may change one of ours: BUILD calls `__setstate__`, which dataclasses would provide."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        raise Refused(f"a pickle tries to change a {type(self).__name__}")


@dataclass(frozen=True, slots=True)
class StorageType(_Sealed):
    name: str  # torch's dtype name
    dtype: type


@dataclass(frozen=True, slots=True)
class Storage(_Sealed):
    """One storage as `persistent_load` returns it (only our code can make one)."""

    array: np.ndarray
    name: str


@dataclass(frozen=True, slots=True)
class Tensor(_Sealed):
    """A tensor read without torch: its numpy array (a memory map where possible) and torch dtype name.

    Frozen with slots, so a pickle's BUILD opcode cannot replace its array."""

    array: np.ndarray
    dtype: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def float32(self) -> np.ndarray:
        if self.dtype == "bfloat16":  # the upper half of a float32
            return (self.array.astype(np.uint32) << 16).view(np.float32)
        return self.array.astype(np.float32)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A strided view of `storage`, after checking every number of the record against it."""
    if not isinstance(storage, Storage):
        raise Refused("a tensor record without a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and _is_int(offset)):
        raise Refused("malformed tensor record")
    if len(size) != len(stride) or len(size) > limits.TENSOR_DIMS:
        raise Refused(f"malformed tensor shape ({len(size)} sizes, {len(stride)} strides)")
    if not all(_is_int(n) and 0 <= n <= limits.TENSOR_DIM_SIZE for n in size):
        raise Refused("a tensor size that is negative, huge or not an integer")
    if not all(_is_int(s) and 0 <= s <= limits.TENSOR_DIM_SIZE for s in stride):
        raise Refused("a tensor stride that is negative, huge or not an integer")
    array = storage.array
    if offset < 0 or offset > array.size:
        raise Refused(f"tensor storage offset {offset} is outside its storage of {array.size} elements")
    numel = 1
    for n in size:  # Python integers: exact, whatever the file says
        numel *= n
    if numel == 0:
        return Tensor(np.zeros(size, array.dtype), storage.name)
    if numel > array.size:
        raise Refused(f"a tensor of {numel:,} elements in a storage of {array.size:,}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= array.size:
        raise Refused("a tensor reaches past the end of its storage")
    item = array.itemsize
    view = np.lib.stride_tricks.as_strided(
        array[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    return Tensor(view, storage.name)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    if not isinstance(data, Tensor):
        raise Refused("a parameter without a tensor")
    return data


ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(*spec) for name, spec in STORAGE_DTYPES.items()},
}


# --- the pre-scan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlobalRef:
    """A global a pickle names (never imported by the scan)."""

    module: str
    name: str


@dataclass(slots=True, eq=False)
class _Node:
    kind: str  # atom, tuple, list, dict, set, global, obj
    depth: int = 0
    value: object = None
    children: list = field(default_factory=list)


ATOM_OPS = {
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
    "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "BINUNICODE8",
    "SHORT_BINUNICODE", "BINBYTES", "BINBYTES8", "SHORT_BINBYTES", "BYTEARRAY8",
}  # fmt: skip
EMPTY_OPS = {"EMPTY_TUPLE": "tuple", "EMPTY_LIST": "list", "EMPTY_DICT": "dict", "EMPTY_SET": "set"}


class _BoundedReader:
    """A file-like view that refuses to read more than `limit` bytes (genops reads declared lengths)."""

    def __init__(self, stream, limit: int) -> None:
        self._stream, self._left = stream, limit

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            raise Refused(f"a pickle larger than vrconvert's limit of {limits.PICKLE_BYTES:,} bytes")
        data = self._stream.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self._stream.readline(min(self._left, 1 << 16) + 1)
        if len(line) > self._left or not line.endswith(b"\n"):
            raise Refused("a pickle text argument is too long or unterminated")
        self._left -= len(line)
        return line


def scan_pickle(stream) -> list[tuple]:
    """Walks one pickle's opcodes (from `stream`, up to its STOP) with an abstract stack and checks it
    against `limits` without building any object. Returns the persistent ids it holds, each a tuple of
    atoms (str, int, ...) and `GlobalRef`s, other items as None. Raises `Refused`."""
    scan = _PickleScan()
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(stream), start=1):
            if count > limits.PICKLE_OPS:
                raise Refused(f"a pickle of more than {limits.PICKLE_OPS:,} opcodes")
            if op.name == "STOP":
                scan.pop()
                return scan.pids
            scan.step(op.name, arg)
    except Refused:
        raise
    except (ValueError, TypeError, struct.error, UnicodeDecodeError, OverflowError) as exc:
        raise Refused(f"malformed pickle data ({type(exc).__name__})") from exc
    raise Refused("malformed pickle (no STOP)")


_CONTAINERS = {"TUPLE": "tuple", "LIST": "list", "DICT": "dict", "FROZENSET": "set"}


class _PickleScan:
    """The abstract machine behind `scan_pickle`: a stack of `_Node`s (kinds and depths, never objects),
    the marks, the memo and the persistent ids seen. One method per opcode family."""

    def __init__(self) -> None:
        self.stack: list[_Node] = []
        self.marks: list[list[_Node]] = []
        self.memo: dict[int, _Node] = {}
        self.pids: list[tuple] = []
        self.handlers = {
            **dict.fromkeys(("PROTO", "FRAME"), lambda name, arg: None),
            "MARK": self.mark,
            **dict.fromkeys(_CONTAINERS, self.container),
            **dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3"), self.small_tuple),
            **dict.fromkeys(("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"), self.add_items),
            **dict.fromkeys(("POP", "POP_MARK", "DUP"), self.stack_op),
            **dict.fromkeys(("GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"), self.memo_op),
            **dict.fromkeys(("GLOBAL", "STACK_GLOBAL"), self.global_ref),
            **dict.fromkeys(("REDUCE", "NEWOBJ"), self.reduce),
            "BUILD": self.build,
            "BINPERSID": self.persistent_id,
        }

    def step(self, name: str, arg) -> None:
        if name in ATOM_OPS:
            self.stack.append(_Node("atom", 0, arg))
        elif name in EMPTY_OPS:
            self.stack.append(_Node(EMPTY_OPS[name], 1))
        elif name in self.handlers:
            self.handlers[name](name, arg)
        else:  # INST, OBJ, EXT*, NEWOBJ_EX, PERSID, buffers: never in a state dict
            raise Refused(f"a pickle uses the {name} opcode, which state dicts never use")

    def pop(self) -> _Node:
        if not self.stack:
            raise Refused("malformed pickle (stack underflow)")
        return self.stack.pop()

    def top(self) -> _Node:
        """The item an in-place opcode works on (below an empty stack: the item before the mark)."""
        return self.stack[-1] if self.stack else self.pop()

    def pop_mark(self) -> list[_Node]:
        if not self.marks:
            raise Refused("malformed pickle (no mark)")
        items, self.stack = self.stack, self.marks.pop()
        return items

    @staticmethod
    def node(kind: str, children: list[_Node], value: object = None) -> _Node:
        depth = 1 + max((c.depth for c in children), default=0)
        if depth > limits.PICKLE_DEPTH:
            raise Refused(f"a pickle nested deeper than vrconvert's limit of {limits.PICKLE_DEPTH}")
        return _Node(kind, depth, value, children)

    @staticmethod
    def add(container: _Node, kind: str, items: list[_Node]) -> None:
        if container.kind not in (kind, "obj"):  # an obj: OrderedDict() and the like
            raise Refused(f"malformed pickle (adding items to a {container.kind})")
        if kind in ("dict", "set"):
            keys = items[0::2] if kind == "dict" else items
            if any(k.kind != "atom" for k in keys):
                raise Refused("a pickle with a container as a dict key or set item")
        depth = 1 + max((c.depth for c in items), default=0)
        if depth > limits.PICKLE_DEPTH:
            raise Refused(f"a pickle nested deeper than vrconvert's limit of {limits.PICKLE_DEPTH}")
        container.depth = max(container.depth, depth)

    def mark(self, name: str, arg) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def container(self, name: str, arg) -> None:
        items, kind = self.pop_mark(), _CONTAINERS[name]
        if kind == "dict" and len(items) % 2:
            raise Refused("malformed pickle (odd DICT)")
        built = self.node(kind, items)
        if kind in ("dict", "set"):
            self.add(built, kind, items)
        self.stack.append(built)

    def small_tuple(self, name: str, arg) -> None:
        items = [self.pop() for _ in range(int(name[-1]))][::-1]
        self.stack.append(self.node("tuple", items))

    def add_items(self, name: str, arg) -> None:
        if name == "APPEND":
            item = self.pop()
            self.add(self.top(), "list", [item])
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            self.add(self.top(), "dict", [key, value])
        else:
            items = self.pop_mark()
            if name == "SETITEMS" and len(items) % 2:
                raise Refused("malformed pickle (odd SETITEMS)")
            self.add(self.top(), {"APPENDS": "list", "SETITEMS": "dict", "ADDITEMS": "set"}[name], items)

    def stack_op(self, name: str, arg) -> None:
        if name == "DUP":
            self.stack.append(self.top())
        elif name == "POP" and self.stack:
            self.stack.pop()
        else:  # POP_MARK, or POP on an empty stack
            self.pop_mark()

    def memo_op(self, name: str, arg) -> None:
        if name in ("GET", "BINGET", "LONG_BINGET"):
            index = int(arg) if name == "GET" else arg
            if index not in self.memo:
                raise Refused("malformed pickle (memo key not found)")
            self.stack.append(self.memo[index])
            return
        index = len(self.memo) if name == "MEMOIZE" else int(arg) if name == "PUT" else arg
        if not _is_int(index) or not 0 <= index < limits.PICKLE_MEMO:
            raise Refused(f"a pickle memo index beyond vrconvert's limit of {limits.PICKLE_MEMO:,}")
        self.memo[index] = self.top()

    def global_ref(self, name: str, arg) -> None:
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
        else:
            attr_node, module_node = self.pop(), self.pop()
            module, attr = module_node.value, attr_node.value
            if not (isinstance(attr, str) and isinstance(module, str)):
                raise Refused("malformed pickle (STACK_GLOBAL of non-strings)")
        self.stack.append(_Node("global", 0, GlobalRef(module, attr)))

    def reduce(self, name: str, arg) -> None:
        args, func = self.pop(), self.pop()
        if func.kind != "global" or args.kind != "tuple":
            raise Refused(f"a pickle {name} of a {func.kind} with a {args.kind}")
        self.stack.append(self.node("obj", [args], func.value))

    def build(self, name: str, arg) -> None:
        state = self.pop()
        target = self.top()
        if target.kind != "obj" or target.value != GlobalRef("collections", "OrderedDict"):
            raise Refused("a pickle BUILD on something other than an OrderedDict")
        target.depth = max(target.depth, self.node("obj", [state]).depth)

    def persistent_id(self, name: str, arg) -> None:
        pid = self.pop()
        values = pid.children if pid.kind == "tuple" else [pid]
        self.pids.append(tuple(c.value if c.kind in ("atom", "global") else None for c in values))
        self.stack.append(self.node("obj", [pid], "persistent"))


# --- the zip reader ----------------------------------------------------------------------------------


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages) -> None:
        super().__init__(io.BytesIO(data))
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise Unsupported(f"global {limits.brief(module)}.{limits.brief(name)}") from None

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
            and isinstance(pid[2], str)
            and _is_int(pid[4])
        ):
            raise Refused(f"a malformed storage reference ({limits.brief(pid)})")
        kind, key, numel = pid[1], pid[2], pid[4]
        return Storage(self._storages(key, kind.dtype, numel), kind.name)


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, refusing (before and while reading) more than `limit` uncompressed."""
    limits.check(f"{limits.brief(info.filename)} (uncompressed)", info.file_size, limit, " bytes")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    return data[: limits.check(f"{limits.brief(info.filename)} (uncompressed)", len(data), limit, " bytes")]


def load(path: str | Path):
    """The object tree of a torch zip checkpoint, tensors as `Tensor`; raises `Refused` or `Unsupported`."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise Refused(f"not a readable zip archive ({limits.brief(str(exc))})") from exc
    try:
        with archive, open(path, "rb") as raw:
            return _load(path, archive, raw)
    except (Refused, Unsupported):
        raise
    except InputError as exc:  # a limit
        raise Refused(str(exc)) from exc
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise Refused(f"a corrupt zip archive ({type(exc).__name__}: {limits.brief(str(exc))})") from exc


def _load(path: Path, archive: zipfile.ZipFile, raw):
    infos = archive.infolist()
    limits.check("the number of zip members", len(infos), limits.ZIP_MEMBERS)
    limits.check("the zip's uncompressed size", sum(i.file_size for i in infos), limits.TORCH_ZIP_BYTES, " bytes")
    pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
    if len({i.filename for i in pickles}) != 1:
        raise Refused("not a torch checkpoint: no single data.pkl in the zip")
    pickle_info = pickles[-1]
    root = pickle_info.filename[: -len("data.pkl")]
    names = {i.filename for i in infos}
    if root + "byteorder" in names and _read_bounded(archive, archive.getinfo(root + "byteorder"), 16) != b"little":
        raise Refused("big-endian storages are not supported")
    data = _read_bounded(archive, pickle_info, limits.PICKLE_BYTES)
    scan_pickle(_BoundedReader(io.BytesIO(data), limits.PICKLE_BYTES))
    file_size = path.stat().st_size
    whole = np.memmap(path, dtype=np.uint8, mode="r")
    cache: dict[tuple[str, type], np.ndarray] = {}
    budget = [limits.STATE_ELEMENTS * 8]  # bytes of storage all tensors may map or copy together

    def storage(key: str, dtype: type, numel: int) -> np.ndarray:
        if (key, dtype) in cache:
            return cache[key, dtype]
        if not STORAGE_KEY.fullmatch(key):
            raise Refused(f"a storage named {limits.brief(key)}")
        try:
            info = archive.getinfo(f"{root}data/{key}")
        except KeyError:
            raise Refused(f"missing storage {limits.brief(key)}") from None
        itemsize = np.dtype(dtype).itemsize
        nbytes = numel * itemsize
        if info.compress_type != zipfile.ZIP_STORED:  # torch reads it (its size was checked above)
            raise Unsupported(f"storage {limits.brief(key)} is compressed")
        if numel < 0 or nbytes > info.file_size:
            raise Refused(f"storage {limits.brief(key)} declares {numel:,} elements, more than its member holds")
        start = zip_members.data_offset(raw, info)
        if start is None:
            raise Refused("a zip member with a bad local header")
        if start < 0 or start + info.file_size > file_size:
            raise Refused(f"storage {limits.brief(key)} reaches past the end of the file")
        budget[0] -= nbytes
        if budget[0] < 0:
            raise Refused(f"the storages exceed vrconvert's limit of {limits.STATE_ELEMENTS:,} elements")
        chunk = whole[start : start + nbytes]
        cache[key, dtype] = chunk.view(dtype) if start % itemsize == 0 else np.frombuffer(chunk.tobytes(), dtype)
        return cache[key, dtype]

    try:
        return _Unpickler(data, storage).load()
    except (Refused, Unsupported):
        raise
    except RecursionError as exc:
        raise Refused("a pickle nested too deeply") from exc
    except Exception as exc:  # truncated or corrupt pickle data
        raise Refused(f"corrupt pickle data ({type(exc).__name__}: {limits.brief(str(exc))})") from exc


# --- the legacy (pre-1.6) format: checked here, read by torch -------------------------------------------


def check_legacy(path: str | Path) -> None:
    """Scans the pickles of a legacy torch file (magic, protocol, system info, object, storage keys)
    and checks that the storages they declare fit in the file, before torch reads (and allocates) them."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            for index in range(5):
                pids = scan_pickle(_BoundedReader(f, limits.PICKLE_BYTES))
                if index < 3 and pids:
                    raise Refused("a malformed legacy torch file (storages in its header)")
                if index == 3:
                    declared = sum(_legacy_storage_bytes(pid) for pid in pids)
                    if declared > size:
                        raise Refused(f"its storages declare {declared:,} bytes, more than the file's {size:,}")
        except struct.error as exc:
            raise Refused("a truncated legacy torch file") from exc


def _legacy_storage_bytes(pid: tuple) -> int:
    if not (len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], GlobalRef) and _is_int(pid[4])):
        raise Refused("a malformed storage reference in a legacy torch file")
    kind = pid[1]
    if kind.module != "torch" or kind.name not in STORAGE_DTYPES or pid[4] < 0:
        raise Refused(f"an unsupported storage type {limits.brief(kind.module)}.{limits.brief(kind.name)}")
    return pid[4] * np.dtype(STORAGE_DTYPES[kind.name][1]).itemsize
