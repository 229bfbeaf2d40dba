"""Regenerates the tests' real clips (tests/fixtures/clips/) from OpenCV's sample videos.

Source: Debian's opencv-doc 4.6.0+dfsg-12, usr/share/doc/opencv-doc/examples/data/ (OpenCV, Apache-2.0 AND
BSD-3-Clause). Fetch it with `apt-get download opencv-doc && dpkg -x opencv-doc_*.deb x`, then run:

    python tools/make_test_clips.py x/usr/share/doc/opencv-doc/examples/data tests/fixtures/clips

Each clip is a run of consecutive frames, scaled down, H.264 in MP4, at a frame rate of its own: the zoo's
parity checks want 25 and 30 fps clips, and fine-tuning's learning check wants three different scenes.
Megamind.avi (23.976 fps) is re-timed to 25 fps: the same frames, stamped 1/25 s apart.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av

# output name: (source file, first frame, frame count, output frame rate, width, height)
CLIPS = {
    "megamind_25fps.mp4": ("Megamind.avi", 30, 64, 25, 320, 234),
    "megamind_bugy_30fps.mp4": ("Megamind_bugy.avi", 120, 64, 30, 320, 234),
    "tree_15fps.mp4": ("tree.avi", 2, 64, 15, 320, 240),
    "vtest_10fps.mp4": ("vtest.avi", 300, 64, 10, 320, 240),
}


def make(src: Path, dst: Path, first: int, count: int, rate: int, width: int, height: int, crf: int = 26) -> None:
    """Frames first..first+count-1 of `src`, scaled to width x height, as H.264 at `rate` frames a second."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryslow"}
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= first + count:
                break
            if i >= first:
                small = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                small.pts, small.time_base = i - first, Fraction(1, rate)
                out.mux(stream.encode(small))
        out.mux(stream.encode())


def main(src_dir: str, dst_dir: str) -> None:
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    for name, (source, first, count, rate, width, height) in CLIPS.items():
        make(Path(src_dir) / source, Path(dst_dir) / name, first, count, rate, width, height)


if __name__ == "__main__":
    main(*sys.argv[1:3])
