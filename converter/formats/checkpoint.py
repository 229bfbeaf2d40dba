"""Reading the torch checkpoints users really have into a normalised state dict, and writing one back.

Normalised means: a flat `{torchvision key: numpy array}` with training-script wrappers and
`module.` prefixes removed and every floating tensor in float32. Zip checkpoints are read by
`torchzip` (numpy only, an allowlist unpickler); what it does not handle, and the legacy format, go
to `torch.load(weights_only=True)`. Either way a checkpoint can never execute code; safetensors never
could.
"""

from __future__ import annotations

import hashlib
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter import limits
from vrconvert.converter.arch import accounting
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import torchzip
from vrconvert.converter.formats.gate import regular_file

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "net", "network")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
TORCHVISION_NAME = re.compile(r"-([0-9a-f]{8})\.[A-Za-z]+$")
ZIP_MAGIC = b"PK\x03\x04"
TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")  # what read_checkpoint reads and write_torch writes


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its normalised state and what was done to get it."""

    path: Path
    format: str
    state: dict[str, np.ndarray]
    source_dtypes: list[str]
    notes: list[str] = field(default_factory=list)
    hash_check: str | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_name_hash(path: Path) -> str | None:
    """torchvision-style names (`NAME-<8 hex>.pth`) carry the file's SHA-256 prefix: check it."""
    match = TORCHVISION_NAME.search(path.name)
    if not match:
        return None
    digest = sha256_of(path)
    if not digest.startswith(match.group(1)):
        raise InputError(
            f"{path.name}: SHA-256 {digest[:8]}... does not match the {match.group(1)} in its name "
            "(corrupt or incomplete download?)"
        )
    return f"sha256 prefix {match.group(1)} verified"


def sniff(path: Path) -> str:
    """The file's format from its first bytes, or an InputError that says what it looks like (after
    the path gate: a FIFO, device or directory is never opened)."""
    regular_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise InputError(f"{path}: the file is empty")
    if head.startswith(ZIP_MAGIC):
        return "torch-zip"
    if head[:1] == b"\x80":  # a pickle protocol marker: the pre-1.6 torch format
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"\x89HDF"):
        raise InputError(f"{path}: an HDF5 file (a Keras .h5/.weights.h5?), not a torch checkpoint")
    raise InputError(f"{path}: not a PyTorch or safetensors checkpoint (starts with {head[:8]!r})")


def _load_torch(path: Path, fmt: str):
    reason = "the legacy (pre-1.6) torch format"
    try:
        if fmt == "torch-zip":
            try:
                return torchzip.load(path)
            except torchzip.Unsupported as exc:
                reason = str(exc)  # torch's own safe loader handles more (or refuses with its reason)
        else:
            torchzip.check_legacy(path)  # bounded pickles, storages that fit the file: before torch reads it
    except InputError as exc:
        raise InputError(f"{path}: refused: {exc}") from exc
    try:
        import torch
    except ImportError as exc:
        raise InputError(f"{path}: reading it needs torch ({reason}): pip install torch") from exc

    try:
        with warnings.catch_warnings():  # e.g. the pickle-protocol warning: the refusal below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch-zip")
    except Exception as exc:  # torch raises many types for hostile or broken files
        text = str(exc)[:2000].strip()
        first = limits.brief(text.splitlines()[0]).strip("'") if text else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "Unsupported operand" in str(exc):
            raise InputError(
                f"{path}: refused to unpickle it: it holds Python objects, not only tensors "
                f"(save model.state_dict() instead). torch said: {first}"
            ) from exc
        raise InputError(f"{path}: cannot read it as a torch checkpoint (truncated or corrupt?): {first}") from exc


def _load_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            declared = {key: f.get_slice(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            dtypes = {key: SAFETENSORS_DTYPES.get(s.get_dtype(), s.get_dtype().lower()) for key, s in declared.items()}
            _check_declared(path, {key: tuple(s.get_shape()) for key, s in declared.items()}, dtypes)
            if "bfloat16" not in dtypes.values():
                return {key: f.get_tensor(key) for key in declared}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read it as safetensors: {limits.brief(str(exc)[:200]).strip(chr(39))}"
        ) from exc
    try:  # bfloat16 has no numpy dtype: torch reads it
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except ImportError as exc:
        raise InputError(f"{path}: reading bfloat16 safetensors needs torch: pip install torch") from exc
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read it as safetensors: {limits.brief(str(exc)[:200]).strip(chr(39))}"
        ) from exc


SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _check_declared(path: Path, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> None:
    """Before any tensor is widened or copied: string keys, the dtype rule and the element cap."""
    total = 0
    for key, shape in shapes.items():
        if not isinstance(key, str):
            raise InputError(f"{path}: a state-dict key that is {limits.brief(key)}, not a string")
        if len(key) > limits.KEY_CHARS:
            raise InputError(f"{path}: a state-dict key of {len(key):,} characters ({limits.brief(key)})")
        count = 1
        for n in shape:
            count *= int(n)
        total += count
    limits.check(f"{path}: the number of elements in the state dict", total, limits.STATE_ELEMENTS)
    accounting.check_dtypes(dtypes, f"{path}")


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # without torch imported, no torch tensor can exist
    return isinstance(value, (torchzip.Tensor, np.ndarray)) or (torch is not None and isinstance(value, torch.Tensor))


def _dtype_name(value) -> str:
    """torch's name of a tensor's dtype; sparse and quantized torch tensors are named by their layout."""
    if isinstance(value, torchzip.Tensor):
        return value.dtype
    if isinstance(value, np.ndarray):
        return str(value.dtype)
    if value.layout is not sys.modules["torch"].strided:
        return str(value.layout).removeprefix("torch.")
    if value.is_quantized:
        return f"quantized {str(value.dtype).removeprefix('torch.')}"
    return str(value.dtype).removeprefix("torch.")


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(_is_tensor(v) for v in obj.values())


def _unwrap(obj, notes: list[str]) -> Mapping:
    """The state dict inside a training script's container ({"model": ..., "optimizer": ..., ...})."""
    if _is_tensor_dict(obj):
        return obj
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and _is_tensor_dict(obj[key]):
                others = [k for k in obj if k != key]
                shown = ", ".join(limits.brief(k).strip("'") for k in others[:8]) + (", ..." if len(others) > 8 else "")
                notes.append(f"took the state dict from {key!r}" + (f" (ignored {shown})" if others else ""))
                return obj[key]
        found = ", ".join(limits.brief(k).strip("'") for k in list(obj)[:8]) or "nothing"
        raise InputError(f"no state dict found in the checkpoint (top-level keys: {found})")
    raise InputError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")


def _strip_prefixes(state: Mapping, notes: list[str]) -> dict:
    state = dict(state)
    for key, value in state.items():
        if not isinstance(key, str):
            raise InputError(f"a state-dict key that is {limits.brief(key)}, not a string")
        if not _is_tensor(value):
            raise InputError(f"the state-dict entry {limits.brief(key)} is {limits.brief(value)}, not a tensor")
    for prefix in PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
            notes.append(f"stripped the {prefix!r} prefix")
    return state


def _float32(value) -> np.ndarray:
    if isinstance(value, torchzip.Tensor):
        return value.float32()
    if isinstance(value, np.ndarray):
        return value.astype(np.float32)
    return value.detach().cpu().float().numpy()


def _to_numpy(path: Path, state: dict, notes: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """float32 numpy arrays (integers as they are), after the declared shapes and dtypes passed."""
    names = {key: _dtype_name(tensor) for key, tensor in state.items()}
    _check_declared(path, {key: tuple(tensor.shape) for key, tensor in state.items()}, names)
    converted: dict[str, int] = {}
    dtypes: set[str] = set()
    out = {}
    for key, tensor in state.items():
        name = names[key]
        dtypes.add(name)
        if name in accounting.FLOAT_DTYPES and name != "float32":
            converted[name] = converted.get(name, 0) + 1
            out[key] = _float32(tensor)
        elif isinstance(tensor, torchzip.Tensor):
            out[key] = tensor.array
        elif isinstance(tensor, np.ndarray):
            out[key] = tensor
        else:
            out[key] = tensor.detach().cpu().numpy()
    for name, count in converted.items():
        notes.append(f"converted {count} {name} tensors to float32")
    return out, sorted(dtypes)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Reads a `.pth`/`.pt` (zip or legacy) or `.safetensors` checkpoint safely into a normalised state."""
    path = Path(path)
    fmt = sniff(path)
    hash_check = verify_name_hash(path)
    notes: list[str] = []
    raw = _load_safetensors(path) if fmt == "safetensors" else _unwrap(_load_torch(path, fmt), notes)
    try:
        state, dtypes = _to_numpy(path, _strip_prefixes(raw, notes), notes)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from exc
    return Checkpoint(path, fmt, state, dtypes, notes, hash_check)


def write_torch(state: dict[str, np.ndarray], path: Path) -> None:
    """Writes a plain state dict: `.pth`/`.pt` (torch zip format) or `.safetensors`."""
    import torch

    tensors = {key: torch.from_numpy(np.require(value, requirements="C")) for key, value in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
