"""Which videos to evaluate and what their labels are: a folder, a text list or a `path,label` CSV.

Paths in a list resolve against the list's own folder. A folder is searched recursively for video
files (by suffix); when every video sits exactly one folder down (UCF101's `Class/video.avi`), the
folder names are the labels. `--labels CSV` gives (or overrides) labels by path.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from vrconvert.converter.errors import InputError

VIDEO_SUFFIXES = (
    ".mp4",
    ".avi",
    ".mkv",
    ".webm",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ogv",
    ".flv",
    ".wmv",
    ".3gp",
)
MAX_LIST_BYTES = 256 * 1024 * 1024  # a list of a million videos is ~100 MB


@dataclass(frozen=True)
class Item:
    """One video to evaluate: `key` is its stable name in the results file (its path relative to
    the source's folder), `path` where it is read from."""

    key: str
    path: str
    label: str | None = None


@dataclass(frozen=True)
class Source:
    items: tuple[Item, ...]
    skipped: tuple[str, ...] = ()  # files in a folder that are not videos by their suffix
    duplicates: int = 0

    @property
    def classes(self) -> tuple[str, ...]:
        """The distinct labels, sorted: the class order of a dataset labelled by folder names."""
        return tuple(sorted({i.label for i in self.items if i.label is not None}))


def _key(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_LIST_BYTES:
        raise InputError(f"{path}: {size} bytes is too large for a list of videos (limit {MAX_LIST_BYTES})")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text list of videos ({exc.reason} at byte {exc.start})") from None


def _csv_rows(path: Path) -> list[tuple[str, str]]:
    """`path,label` rows; a first row naming the columns is skipped."""
    rows = []
    for number, row in enumerate(csv.reader(_read_text(path).splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise InputError(f"{path}:{number}: expected 'path,label', got {','.join(row)!r}")
        if number == 1 and row[0].strip().lower() in ("path", "video", "file", "filename"):
            continue
        rows.append((row[0].strip(), row[1].strip()))
    return rows


def _folder(root: Path) -> Source:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)
    )
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    skipped = tuple(_key(p, root) for p in files if p.suffix.lower() not in VIDEO_SUFFIXES)
    class_folders = bool(videos) and all(len(p.relative_to(root).parts) == 2 for p in videos)
    items = tuple(Item(_key(p, root), str(p), p.parent.name if class_folders else None) for p in videos)
    return Source(items, skipped)


def _listed(list_file: Path) -> Source:
    root = list_file.parent.resolve()
    if list_file.suffix.lower() == ".csv":
        entries = [(root / p, label) for p, label in _csv_rows(list_file)]
    else:
        lines = [line.strip() for line in _read_text(list_file).splitlines()]
        entries = [(root / line, None) for line in lines if line and not line.startswith("#")]
    keys = [_key(Path(p), root) for p, _ in entries]
    if all(label is None for _, label in entries) and keys and all(len(Path(k).parts) == 2 for k in keys):
        entries = [(p, Path(k).parts[0]) for (p, _), k in zip(entries, keys, strict=True)]  # UCF101's testlist
    seen: dict[str, Item] = {}
    for (path, label), key in zip(entries, keys, strict=True):
        seen.setdefault(key, Item(key, str(path), label))
    return Source(tuple(seen.values()), duplicates=len(entries) - len(seen))


def _apply_labels(source: Source, labels_csv: Path, root: Path) -> Source:
    if not labels_csv.is_file():
        raise InputError(f"{labels_csv}: no such file")
    base = labels_csv.parent.resolve()
    by_path = {_key((base / p).resolve(), root): label for p, label in _csv_rows(labels_csv)}
    by_name: dict[str, str | None] = {}
    for p, label in _csv_rows(labels_csv):
        name = Path(p).name
        by_name[name] = label if by_name.get(name, label) == label else None  # ambiguous names give nothing
    items = []
    for item in source.items:
        key = _key(Path(item.path).resolve(), root)
        label = by_path.get(key) or by_name.get(Path(item.path).name) or item.label
        items.append(Item(item.key, item.path, label))
    return Source(tuple(items), source.skipped, source.duplicates)


def discover(videos: str | Path, labels: str | Path | None = None) -> Source:
    """The videos of `videos` (a folder, a text list or a CSV of path,label), labelled."""
    videos = Path(videos)
    if videos.is_dir():
        root = videos.resolve()
        source = _folder(root)
    elif videos.is_file():
        root = videos.parent.resolve()
        source = _listed(videos)
    else:
        raise InputError(f"{videos}: no such folder or list of videos")
    if labels is not None:
        source = _apply_labels(source, Path(labels), root)
    if not source.items:
        raise InputError(f"{videos}: no videos found (suffixes {', '.join(VIDEO_SUFFIXES)})")
    return source


def _normal(name: str) -> str:
    return " ".join(name.strip().strip('"').lower().replace("_", " ").split())


def label_index(label: str | None, names: list[str] | None, classes: tuple[str, ...]) -> int | None:
    """A label as a class index: an integer as is; else a class name of the model (Kinetics-400's,
    spaces and underscores alike, case ignored); else its place among the dataset's sorted labels."""
    if label is None:
        return None
    text = label.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if names:
        return {_normal(n): i for i, n in enumerate(names)}.get(_normal(text))
    return classes.index(text) if text in classes else None
