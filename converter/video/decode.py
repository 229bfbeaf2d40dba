"""Real video in: decode with PyAV, sample clips, apply the Kinetics eval transform (numpy only).

Only allow-listed containers are opened, by the demuxer their first bytes name (`container_format`),
with FFmpeg's protocol whitelist at `file`: a playlist or concat list posing as a video never makes
FFmpeg open another file or URL. Frames are decoded once, front to back, and each kept frame is resized to the transform's 128x171
straight away (the resize acts frame by frame), so memory is about 65 KB per kept frame whatever
the source resolution. Frame indices are exact decode order, not seek approximations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrconvert.converter import limits
from vrconvert.converter.arch.spec import Preprocessing
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats.gate import regular_file
from vrconvert.converter.video import preprocess
from vrconvert.converter.video.preprocess import KINETICS

DATA = Path(__file__).parents[1] / "data"
SAMPLE_CLIP = DATA / "vtest_clip.mp4"  # 40 frames of OpenCV's vtest.avi, 320x240, 10 fps (see data/README.md)


@dataclass(frozen=True)
class Clip:
    """One preprocessed clip: where it came from and the model input (batch of one)."""

    name: str
    start_frame: int
    frames: int
    array: np.ndarray


# Container formats vrconvert opens, by their first bytes: the demuxer is chosen here, never by FFmpeg's
# probe, so a playlist (HLS .m3u8, concat lists) or an image sequence can never make FFmpeg open other files.
CONTAINERS = (
    (4, b"ftyp", "mov"),  # MP4, MOV, M4V, 3GP
    (4, b"moov", "mov"),
    (4, b"mdat", "mov"),
    (4, b"wide", "mov"),
    (4, b"free", "mov"),
    (0, b"\x1a\x45\xdf\xa3", "matroska"),  # MKV, WebM
    (0, b"OggS", "ogg"),
    (0, b"FLV\x01", "flv"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf"),  # WMV
    (0, b"\x00\x00\x01\xba", "mpeg"),  # MPEG program stream (.mpg)
)
OPTIONS = {"protocol_whitelist": "file", "enable_drefs": "0"}  # no URL, no other file a container names


def container_format(path: Path) -> str:
    """FFmpeg's demuxer for the file, from its first bytes, or an InputError naming what is allowed."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"WAVE"):
        return "avi" if head[8:12] == b"AVI " else "wav"  # WAV: no video stream, said as such
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    for at, magic, name in CONTAINERS:
        if head[at : at + len(magic)] == magic:
            return name
    raise InputError(
        f"{path}: not a video file in a container vrconvert opens (MP4/MOV, Matroska/WebM, AVI, MPEG-PS/TS, "
        "Ogg, FLV, ASF)"
    )


def _open(path: Path):
    try:
        import av
    except ImportError as exc:
        raise InputError("reading video needs PyAV: pip install 'vrconvert[video]'") from exc
    if path.is_dir():
        raise InputError(f"{path}: a directory, not a file")
    regular_file(path, limits.VIDEO_FILE_BYTES)
    demuxer = container_format(path)
    try:
        container = av.open(f"file:{os.path.abspath(path)}", format=demuxer, options=OPTIONS)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a video file PyAV can read ({str(exc).strip().splitlines()[0]})") from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream in this file")
    try:
        check_resolution(path, container.streams.video[0].codec_context)
    except InputError:
        container.close()
        raise
    return container


def check_resolution(path: Path, codec) -> None:
    """Refuses frames larger than `limits.VIDEO_SIDE`/`limits.VIDEO_PIXELS` from the stream's declared
    size, before anything is decoded (one 16000x16000 frame is 768 MB as rgb24, 3 GB as float32)."""
    width, height = int(codec.width or 0), int(codec.height or 0)
    if max(width, height) > limits.VIDEO_SIDE or width * height > limits.VIDEO_PIXELS:
        raise InputError(
            f"{path}: {width}x{height} frames are larger than vrconvert's limit of "
            f"{limits.VIDEO_SIDE} pixels a side and {limits.VIDEO_PIXELS:,} pixels a frame"
        )


def _decode(path: Path, wanted: set[int], transform: Preprocessing | None) -> tuple[dict[int, np.ndarray], int]:
    """The `wanted` frames by index (resized as `transform` says) and how many frames were decoded: all of
    them when `wanted` is empty, else up to the last wanted one."""
    import av

    kept: dict[int, np.ndarray] = {}
    count = 0
    last = max(wanted) if wanted else None
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for count, frame in enumerate(container.decode(stream), start=1):
                index = count - 1
                if (
                    max(frame.width, frame.height) > limits.VIDEO_SIDE
                    or frame.width * frame.height > limits.VIDEO_PIXELS
                ):
                    raise InputError(f"{path}: frame {index} is {frame.width}x{frame.height}, over vrconvert's limit")
                if index in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    if transform is not None:  # resized as decoded: the transform's size for this frame
                        rgb = preprocess.resize_uint8(rgb[None], transform.resized(*rgb.shape[:2]))[0]
                    kept[index] = rgb
                if last is not None and index >= last:
                    break
        except av.error.FFmpegError as exc:
            if count == 0:
                raise InputError(f"{path}: cannot decode its video stream ({exc})") from exc
            # a damaged tail: keep what decoded, as players do
    return kept, count


def frame_count(path: str | Path) -> int:
    """The number of frames: the container's figure when it gives one, else counted by decoding."""
    path = Path(path)
    with _open(path) as container:
        declared = container.streams.video[0].frames
    return declared if declared > 0 else _decode(Path(path), set(), Preprocessing(resize=(1, 1)))[1]


def frame_rate(path: str | Path) -> float:
    with _open(Path(path)) as container:
        rate = container.streams.video[0].average_rate
    if not rate:
        raise InputError(f"{path}: the video declares no frame rate; give a start frame instead of a time")
    return float(rate)


def clip_starts(total: int, frames: int, clips: int) -> list[int]:
    """Start frames of `clips` clips spread evenly from the first frame to the last (one clip: centred)."""
    if clips == 1:
        return [(total - frames) // 2]
    return [round(i * (total - frames) / (clips - 1)) for i in range(clips)]


def load_clips(
    path: str | Path,
    *,
    frames: int = 16,
    clips: int = 1,
    start_frame: int | None = None,
    start_time: float | None = None,
    preprocessing: Preprocessing = KINETICS,
    layout: preprocess.Layout = "NTHWC",
    raw: bool = False,
) -> list[Clip]:
    """Clips of `frames` consecutive frames, preprocessed as torchvision's Kinetics-400 eval transform.

    One clip from `start_frame` or `start_time` (seconds), or `clips` clips evenly spaced over the
    video. Each `Clip.array` is a batch of one in `layout` ("NTHWC" for Keras, "NCTHW" for torch); with
    `raw`, the decoded uint8 frames (1, T, H, W, 3) untransformed, for a model that preprocesses itself.
    """
    path = Path(path)
    if frames < 1 or clips < 1:
        raise InputError(f"frames and clips must be positive (got {frames} frames, {clips} clips)")
    if start_time is not None:
        if start_frame is not None:
            raise InputError("give a start frame or a start time, not both")
        start_frame = round(start_time * frame_rate(path))
    if start_frame is not None and clips != 1:
        raise InputError("a start frame or time selects one clip; leave the number of clips at 1")
    if start_frame is not None and start_frame < 0:
        raise InputError(f"{path}: start frame {start_frame} is before the first frame")
    total = frame_count(path)
    for _ in range(2):
        first = start_frame or 0
        if total < first + frames:
            where = f" from frame {start_frame}" if start_frame else ""
            raise InputError(f"{path}: {total} frames, too short for a {frames}-frame clip{where}")
        starts = [start_frame] if start_frame is not None else clip_starts(total, frames, clips)
        wanted = {s + i for s in starts for i in range(frames)}
        kept, decoded = _decode(path, wanted, None if raw else preprocessing)
        if wanted <= kept.keys():
            break
        total = decoded  # the container overstated its length: sample again over what decodes
    out = []
    for start in starts:
        clip = np.stack([kept[start + i] for i in range(frames)])
        array = clip[None] if raw else preprocess.crop_and_normalize(clip, preprocessing, layout)
        out.append(Clip(f"{path.name}[{start}:{start + frames}]", start, frames, array))
    return out


def sample_clip(frames: int = 16, layout: preprocess.Layout = "NTHWC") -> Clip:
    """The clip packaged with vrconvert (real video, so parity is checked on natural images too)."""
    return load_clips(SAMPLE_CLIP, frames=frames, layout=layout)[0]
