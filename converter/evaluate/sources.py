"""Which videos to evaluate and what their labels are: a folder, a text list or a `path,label` CSV.

Paths in a list resolve against the list's own folder. Lists and label files are streamed a line at
a time (each line and the file within `limits`), and of a label file only the rows that name a listed
video are kept, so a huge file costs time, not memory. A folder is searched recursively for video
files (by suffix); when every video sits exactly one folder down (UCF101's `Class/video.avi`), the
folder names are the labels. `--labels CSV` gives (or overrides) labels by path.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vrconvert.converter import limits
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats.gate import regular_file

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


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 list, one line at a time, each at most `limits.LIST_LINE_BYTES`."""
    regular_file(path, limits.LIST_BYTES)
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(limits.LIST_LINE_BYTES + 1):
            number += 1
            if len(raw) > limits.LIST_LINE_BYTES:
                raise InputError(f"{path}:{number}: a line longer than {limits.LIST_LINE_BYTES:,} bytes")
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            yield number, text.rstrip("\r\n")


def _csv_rows(path: Path) -> Iterator[tuple[str, str]]:
    """`path,label` rows; a first row naming the columns is skipped."""
    for number, line in _lines(path):
        row = next(csv.reader([line]), [])
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise InputError(f"{path}:{number}: expected 'path,label', got {limits.brief(','.join(row))}")
        if number == 1 and row[0].strip().lower() in ("path", "video", "file", "filename"):
            continue
        yield row[0].strip(), row[1].strip()


def _count(entries: list, path: Path) -> None:
    limits.check(f"{path}: the number of videos", len(entries), limits.VIDEOS)


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
    entries: list[tuple[Path, str | None]] = []
    if list_file.suffix.lower() == ".csv":
        for p, label in _csv_rows(list_file):
            entries.append((root / p, label))
            _count(entries, list_file)
    else:
        for _, line in _lines(list_file):
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((root / line, None))
                _count(entries, list_file)
    keys = [_key(Path(p), root) for p, _ in entries]
    if all(label is None for _, label in entries) and keys and all(len(Path(k).parts) == 2 for k in keys):
        entries = [(p, Path(k).parts[0]) for (p, _), k in zip(entries, keys, strict=True)]  # UCF101's testlist
    seen: dict[str, Item] = {}
    for (path, label), key in zip(entries, keys, strict=True):
        seen.setdefault(key, Item(key, str(path), label))
    return Source(tuple(seen.values()), duplicates=len(entries) - len(seen))


def _apply_labels(source: Source, labels_csv: Path, root: Path) -> Source:
    """Labels by path (or, failing that, by unambiguous file name) from a CSV streamed once; only rows
    whose file name is a listed video's are looked at further."""
    base = labels_csv.parent.resolve()
    names = {Path(item.path).name for item in source.items}
    by_path: dict[str, str] = {}
    by_name: dict[str, str | None] = {}
    for p, label in _csv_rows(labels_csv):
        name = Path(p).name
        if name not in names:
            continue
        by_path[_key((base / p).resolve(), root)] = label
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
