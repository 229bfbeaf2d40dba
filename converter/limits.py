"""Every resource limit vrconvert enforces on untrusted files, in one place, each with its reason.

Readers ask here before they allocate, view, extract or wait: a file that declares more than a limit
allows is refused with a one-line `InputError` (exit 2) before the memory, disk or time is spent. The
values are generous for every real checkpoint of the networks vrconvert knows (the largest, r2plus1d_34
style bottlenecks, hold well under 100 M parameters) and small enough that a tiny hostile file cannot
make vrconvert use more than a few GB.
"""

from __future__ import annotations

import math
import os

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


# --- any input file: the path gate (formats.gate) -------------------------------------------------------
# A weight file holds at most the state cap in float64 plus its container (zip directory, pickle, HDF5's
# own metadata): a larger one cannot be a checkpoint of a network vrconvert knows, and a file that size
# is refused before any library opens it.
WEIGHTS_FILE_BYTES = 8 * STATE_ELEMENTS + 256 * MIB
VIDEO_FILE_BYTES = 1 << 40  # a video is decoded as a stream (frames are bounded above), so only the absurd

# --- HDF5 structure (formats.h5safe) ---------------------------------------------------------------------
H5_DEPTH = 32  # group nesting (Keras writes at most 6 levels: layers/NAME/vars/0 under model_weights)
H5_ATTRIBUTES = 1_000  # attributes on one object (Keras writes a handful; weight_names chunks a few more)
H5_ATTRIBUTE_BYTES = 16 * MIB  # one attribute's stored bytes (model_config is the largest, ~300 KB)
H5_NAMES = H5_OBJECTS  # names listed in attributes (layer_names, weight_names): one per object at most
# Everything the datasets inflate to once decompressed, chunk padding included: the state cap in float32
# plus slack, as for a .keras archive. A chunk may never be larger than its dataset along any axis, so a
# few bytes of gzip on disk cannot declare gigabytes that libhdf5 would allocate whole.
H5_INFLATED_BYTES = KERAS_BYTES

# --- evaluate's results folder (evaluate.store, evaluate.records) and video lists -----------------------
RESULT_LINE_BYTES = 1 * MIB  # one line of results.jsonl (a record is ~1 KB; 1000 clips' names ~40 KB)
RESULT_FILE_BYTES = 16 * MIB  # run.json and layers.json (the per-layer profile of r2plus1d_34 is ~60 KB)
LIST_LINE_BYTES = 64 * KIB  # one line of a --videos list or --labels CSV (Linux paths are at most 4 KB)
LIST_BYTES = 256 * MIB  # a --videos list or --labels CSV (a million videos is ~100 MB)
VIDEOS = 2_000_000  # videos in one evaluation (Kinetics-700 has 650,000; each costs ~300 bytes here)

# --- downloads, continued ----------------------------------------------------------------------------------
DOWNLOAD_MIN_RATE = 1 * KIB  # bytes per second over DOWNLOAD_WINDOW (curl's --speed-limit / --speed-time)
DOWNLOAD_WINDOW = 20  # seconds: a trickling server is dropped within this much, not after the deadline
DOWNLOAD_MAX_SECONDS = 7 * 24 * 3600  # the most VRCONVERT_DOWNLOAD_SECONDS may ask for (setitimer's range)


def env_seconds(name: str, default: float, most: float) -> float:
    """The number of seconds an environment variable sets (`default` when unset or empty); anything
    other than a finite number from 0 (exclusive) to `most` is a one-line InputError."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= most:
        raise InputError(f"{name}={brief(text)} is not a number of seconds from 0 to {most:,g}")
    return value


def printable(text: str) -> str:
    """`text` with control characters (terminal escape codes, newlines, bidi overrides) written as
    escapes, so a file name cannot rewrite what a terminal shows."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text)


ONE_LINE_CHARS = 300  # a library's message quoted whole: its reason often follows its first line


def one_line(text: str, most: int = ONE_LINE_CHARS) -> str:
    """A library's message as one line: its lines joined (never cut before the reason that follows the
    first), control characters escaped, at most `most` characters."""
    flat = printable(" ".join(str(text).split()))
    return flat if len(flat) <= most else flat[: most - 3] + "..."
