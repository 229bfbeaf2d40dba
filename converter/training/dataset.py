"""A folder of class folders (the Kinetics/UCF-101 layout) -> a deterministic train/val split by file,
decoded into uint8 clips by parallel worker threads.

Each video gives `clips` clips of `frames` consecutive frames spread evenly over it (the video
reader's own sampling and its container allow-list and size limits). Every frame is resized as it is
decoded to the transform's resize size with torchvision's exact uint8 resize, so memory is what the
model's input needs (a 128x171 frame is 65 KB) whatever the source resolution; the model's own resize
is then an identity. The split is by file, never by clip, so no clip of a validation video is trained on.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter.arch.spec import Preprocessing
from vrconvert.converter.errors import InputError

MEMORY_BYTES = 8 * 2**30  # decoded clips are held in memory: a larger dataset is refused up front


@dataclass(frozen=True, kw_only=True)
class Split:
    """Class names (sorted folder names, label = index) and the (relative path, label) of each file."""

    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...]

    def as_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "train": [list(f) for f in self.train],
            "val": [list(f) for f in self.val],
        }


@dataclass(frozen=True, kw_only=True)
class Clips:
    """Decoded clips (N, T, H, W, 3) uint8 and their labels (N,) int32."""

    frames: np.ndarray
    labels: np.ndarray


def scan(folder: str | Path) -> dict[str, list[str]]:
    """{class name: its files (relative paths, sorted)}; hidden entries are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory of class folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if loose:
        raise InputError(f"{root}: {loose[0]} is a file; VIDEOS holds one folder per class, videos inside them")
    if len(classes) < 2:
        found = f"one class ({classes[0]})" if classes else "no class folder"
        raise InputError(f"{root}: {found}; fine-tuning needs at least two class folders")
    files = {}
    for name in classes:
        videos = sorted(
            f"{name}/{p.name}" for p in (root / name).iterdir() if p.is_file() and not p.name.startswith(".")
        )
        if not videos:
            raise InputError(f"{root / name}: an empty class folder")
        files[name] = videos
    return files


def _order(path: str) -> str:
    """A file's place in the split order: a hash of its relative path, so the split does not depend on
    the listing order and adding a file moves no other file between train and val."""
    return hashlib.sha256(path.encode()).hexdigest()


def split(files: dict[str, list[str]], val_split: float) -> Split:
    """Per class, `round(n * val_split)` files (at least one when val_split > 0, never all) go to val."""
    if not 0.0 <= val_split < 1.0:
        raise InputError(f"--val-split must be in [0, 1), not {val_split}")
    classes = tuple(files)
    train, val = [], []
    for label, name in enumerate(classes):
        ordered = sorted(files[name], key=_order)
        count = min(max(round(len(ordered) * val_split), 1 if val_split > 0 else 0), len(ordered) - 1)
        if val_split > 0 and count == 0:
            raise InputError(f"{name}: one video; with a validation split every class needs at least two")
        val += [(p, label) for p in sorted(ordered[:count])]
        train += [(p, label) for p in sorted(ordered[count:])]
    return Split(classes=classes, train=tuple(train), val=tuple(val))


def _decode_one(task: tuple[str, int, int, tuple]) -> tuple[str, np.ndarray | str]:
    """In a worker thread: (path, clips (C, T, h, w, 3) uint8) or (path, the error's one line)."""
    from vrconvert.converter.video import decode, preprocess

    path, frames, clips, resize = task
    preprocessing = Preprocessing(resize=resize)
    try:
        out = []
        for clip in decode.load_clips(path, frames=frames, clips=clips, raw=True):
            raw = clip.array[0]
            out.append(preprocess.resize_uint8(raw, preprocessing.resized(*raw.shape[1:3])))
        return path, np.stack(out)
    except InputError as exc:
        return path, str(exc)
    except Exception as exc:  # a decoder failure of any kind is this file's problem, said in one line
        return path, f"{path}: cannot read this video ({type(exc).__name__}: {str(exc).strip()[:200]})"


def decode(
    root: str | Path,
    files: tuple[tuple[str, int], ...],
    *,
    frames: int,
    clips: int,
    preprocessing: Preprocessing,
    workers: int | None = None,
) -> Clips:
    """Every file's clips, decoded by `workers` threads (FFmpeg's decoding and numpy's resize release the
    GIL; threads need no `__main__` guard in the caller's script and are safe after TensorFlow's import)."""
    side = preprocessing.resize
    if len(side) != 2:
        raise InputError("fine-tuning needs a fixed (H, W) resize")
    need = len(files) * clips * frames * side[0] * side[1] * 3
    if need > MEMORY_BYTES:
        raise InputError(
            f"{len(files)} videos x {clips} clips x {frames} frames at {side[0]}x{side[1]} need "
            f"{need / 2**30:.1f} GiB in memory, over vrconvert's {MEMORY_BYTES / 2**30:.0f} GiB"
        )
    tasks = [(str(Path(root) / path), frames, clips, tuple(side)) for path, _ in files]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    if workers == 1:
        results = [_decode_one(t) for t in tasks]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="vrconvert-decode") as pool:
            results = list(pool.map(_decode_one, tasks))
    arrays, labels = [], []
    for (_, result), (_, label) in zip(results, files, strict=True):
        if isinstance(result, str):
            raise InputError(result)
        arrays.append(result)
        labels += [label] * len(result)
    return Clips(frames=np.concatenate(arrays), labels=np.asarray(labels, np.int32))
