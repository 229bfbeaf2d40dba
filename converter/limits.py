"""Every resource limit vrconvert enforces on untrusted files, in one place, each with its reason.

Readers ask here before they allocate, view, extract or wait: a file that declares more than a limit
allows is refused with a one-line `InputError` (exit 2) before the memory, disk or time is spent. The
values are generous for every real checkpoint of the networks vrconvert knows (the largest, r2plus1d_34
style bottlenecks, hold well under 100 M parameters) and small enough that a tiny hostile file cannot
make vrconvert use more than a few GB.
"""

from __future__ import annotations

from vrconvert.converter.errors import InputError

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# --- torch checkpoints (zip and legacy) --------------------------------------------------------------
PICKLE_BYTES = 64 * MIB  # data.pkl, uncompressed (a state dict's is ~50 KB; with an optimizer a few MB)
PICKLE_MEMO = 1 << 20  # highest memo index a pickle may use (the C unpickler sizes its memo by it)
PICKLE_DEPTH = 64  # container nesting (torch writes about 6)
PICKLE_OPS = 16 * MIB  # opcodes in one pickle
ZIP_MEMBERS = 100_000  # members of a torch zip (one per storage, plus a handful)
TENSOR_DIMS = 16  # dimensions of one tensor (ours have at most 5)
TENSOR_DIM_SIZE = 1 << 40  # elements along one dimension (keeps every product exact and small)
STATE_ELEMENTS = 1 << 28  # elements in one state dict: 1 GiB in float32, ~5x the largest known network
TORCH_ZIP_BYTES = 8 * STATE_ELEMENTS + PICKLE_BYTES  # all members of a torch zip, uncompressed (float64 state)
STORAGE_KEY_CHARS = 64  # a storage's name in the zip (torch writes decimal numbers)
KEY_CHARS = 1000  # a state-dict key (ours are under 40 characters)
MESSAGE_CHARS = 80  # characters of any file-supplied text quoted in an error message

# --- Keras files ---------------------------------------------------------------------------------------
KERAS_MEMBERS = 16  # members of a .keras zip (Keras writes config.json, metadata.json, model.weights.h5)
KERAS_CONFIG_BYTES = 8 * MIB  # config.json (ours are ~300 KB)
KERAS_BYTES = 4 * STATE_ELEMENTS + 64 * MIB  # all members, uncompressed: the state cap in float32 + slack
H5_OBJECTS = 10_000  # groups and datasets in a .h5/.weights.h5 (ours hold ~500)
LAYER_UNITS = 1 << 16  # a Dense layer's units or a Conv3D's filters (ours: at most 2048 and the classes)
KERNEL_SIZE = 16  # one side of a Conv3D kernel (ours: at most 7)

# --- video -----------------------------------------------------------------------------------------------
VIDEO_PIXELS = 4096 * 2304  # width x height of a decoded frame (4K UHD fits; 16000x16000 does not)
VIDEO_SIDE = 8192  # either side of a frame

# --- parity clips ----------------------------------------------------------------------------------------
CLIP_SIDE = 1024  # --size HxW of the random parity clip (a 3000x3000 clip through r3d_18 needs ~100 GB)

# --- downloads -------------------------------------------------------------------------------------------
DOWNLOAD_BYTES = 512 * MIB  # when the published size is unknown (torchvision's video files are < 300 MB)
DOWNLOAD_SLACK = 1 * MIB  # allowed above a published size (never needed for an intact file)
DOWNLOAD_SECONDS = 30 * 60  # the whole download, however slowly the server trickles


def check(what: str, value: int, limit: int, unit: str = "") -> int:
    """`value` if it is within `limit`, else an InputError naming the limit (never the value's repr)."""
    if value > limit:
        raise InputError(f"{what} is {value:,}{unit}, over vrconvert's limit of {limit:,}{unit}")
    return value


def brief(value: object) -> str:
    """A bounded description of a file-supplied value for an error message: text is cut to
    MESSAGE_CHARS and escaped to one line; anything else is named by its type, never repr'd whole."""
    if isinstance(value, str):
        text = value[:MESSAGE_CHARS].encode("unicode_escape").decode("ascii")[:MESSAGE_CHARS]
        return repr(text) + ("..." if len(value) > MESSAGE_CHARS else "")
    if isinstance(value, bool | int | float) or value is None:
        text = repr(value) if not isinstance(value, int) or abs(value) < 1 << 64 else "a huge integer"
        return text[:MESSAGE_CHARS]
    return f"a {type(value).__name__}"
