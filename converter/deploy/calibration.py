"""Clips for lower-precision exports: calibration clips from the user's videos and the held-out clips the
quantized artifact is checked on. Both go through `predict`'s clip sampling and preprocessing
(`converter.video.load_clips`); with `raw`, the decoded uint8 frames for an artifact that preprocesses
itself. A video used for calibration is never a check video: the check measures clips the quantizer
did not see."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vrconvert.converter import video
from vrconvert.converter.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv")


def video_files(paths: Sequence[str | Path]) -> list[Path]:
    """Each path as given, a folder as the video files inside it (recursively, sorted)."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise InputError(f"{path}: no video files in this folder")
            out += found
        else:
            out.append(path)
    return out


def spread(total: int, videos: int) -> list[int]:
    """`total` clips shared out over `videos` videos as evenly as possible (the first ones get the extra)."""
    return [total // videos + (i < total % videos) for i in range(videos)]


def calibration_clips(
    videos: Sequence[str | Path], *, clips: int, frames: int, raw: bool = False
) -> dict[str, np.ndarray]:
    """`clips` clips spread evenly over `videos` (each video's share spread evenly over its frames), by
    name: NTHWC float32 (the Kinetics transform applied) or, with `raw`, uint8 frames."""
    files = video_files(videos)
    if not files:
        raise InputError("--int8 needs calibration videos: give --calibration VIDEO (repeatable)")
    if clips < len(files):
        raise InputError(f"{len(files)} calibration videos need at least {len(files)} calibration clips")
    out: dict[str, np.ndarray] = {}
    for path, count in zip(files, spread(clips, len(files)), strict=True):
        for clip in video.load_clips(path, frames=frames, clips=count, layout="NTHWC", raw=raw):
            out[f"{path}[{clip.start_frame}:{clip.start_frame + frames}]"] = clip.array
    return out


def check_disjoint(videos: Sequence[str | Path], calibration: Sequence[str | Path]) -> set[Path]:
    """Refuses a check video that is also a calibration video; returns the calibration videos (resolved)."""
    used = {p.resolve() for p in video_files(calibration)}
    clash = [str(p) for p in video_files(videos) if p.resolve() in used]
    if clash:
        raise InputError(f"{clash[0]}: also a calibration video; the check needs clips calibration did not see")
    return used


def held_out_clips(
    videos: Sequence[str | Path],
    calibration: Sequence[str | Path],
    *,
    clips: int,
    frames: int,
    raw: bool = False,
) -> dict[str, np.ndarray]:
    """The check's clips in torch layout (N, C, T, H, W) or, with `raw`, uint8 frames: `clips` evenly
    spaced clips of the packaged real clip (unless it calibrated) and of every video in `videos`, none
    of which may be a calibration video."""
    used = check_disjoint(videos, calibration)
    check = video_files(videos)
    sources = ([] if video.SAMPLE_CLIP.resolve() in used else [video.SAMPLE_CLIP]) + check
    if not sources:
        raise InputError("the packaged clip calibrated: give --video VIDEO (not a calibration video) for the check")
    layout = "NTHWC" if raw else "NCTHW"
    out: dict[str, np.ndarray] = {}
    for path in sources:
        for clip in video.load_clips(path, frames=frames, clips=clips, layout=layout, raw=raw):
            name = path.name if path == video.SAMPLE_CLIP else str(path)
            out[f"{name}[{clip.start_frame}:{clip.start_frame + frames}]"] = clip.array
    return out
