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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import torchzip

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
    """The file's format from its first bytes, or an InputError that says what it looks like."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a checkpoint")
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
    if fmt == "torch-zip":
        try:
            return torchzip.load(path)
        except torchzip.Unsupported as exc:
            reason = str(exc)  # torch's own safe loader handles more (or refuses with its reason)
    try:
        import torch
    except ImportError as exc:
        raise InputError(f"{path}: reading it needs torch ({reason}): pip install torch") from exc

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch-zip")
    except Exception as exc:  # torch raises many types for hostile or broken files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except TypeError:
        pass  # bfloat16 has no numpy dtype: torch reads it
    except Exception as exc:
        raise InputError(f"{path}: cannot read it as safetensors: {str(exc).splitlines()[0]}") from exc
    with safe_open(str(path), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # without torch imported, no torch tensor can exist
    return isinstance(value, (torchzip.Tensor, np.ndarray)) or (torch is not None and isinstance(value, torch.Tensor))


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
                notes.append(
                    f"took the state dict from {key!r}"
                    + (f" (ignored {', '.join(map(str, others))})" if others else "")
                )
                return obj[key]
        found = ", ".join(map(str, list(obj)[:8])) or "nothing"
        raise InputError(f"no state dict found in the checkpoint (top-level keys: {found})")
    raise InputError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")


def _strip_prefixes(state: Mapping, notes: list[str]) -> dict:
    state = dict(state)
    for prefix in PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
            notes.append(f"stripped the {prefix!r} prefix")
    return state


FLOATS = ("float16", "bfloat16", "float32", "float64")


def _float32(value) -> np.ndarray:
    if isinstance(value, torchzip.Tensor):
        return value.float32()
    if isinstance(value, np.ndarray):
        return value.astype(np.float32)
    return value.detach().cpu().float().numpy()


def _to_numpy(state: dict, notes: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    converted: dict[str, int] = {}
    dtypes: set[str] = set()
    out = {}
    for key, tensor in state.items():
        name = tensor.dtype if isinstance(tensor, torchzip.Tensor) else str(tensor.dtype).removeprefix("torch.")
        dtypes.add(name)
        if name in FLOATS and name != "float32":
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
    state, dtypes = _to_numpy(_strip_prefixes(raw, notes), notes)
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
