"""Regenerates vrconvert's packaged real clip (converter/data/vtest_clip.mp4) from OpenCV's vtest.avi.

Source: Debian's opencv-doc 4.6.0+dfsg-12, usr/share/doc/opencv-doc/examples/data/vtest.avi
(768x576, 10 fps, 795 frames; OpenCV, Apache-2.0 AND BSD-3-Clause). Fetch it with
`apt-get download opencv-doc && dpkg -x opencv-doc_*.deb x`, then run:

    python tools/make_sample_clip.py x/usr/share/doc/opencv-doc/examples/data/vtest.avi converter/data/vtest_clip.mp4

The clip: frames 100..139 (4 s), scaled to 320x240, H.264 in MP4.
"""

from __future__ import annotations

import sys

import av

FIRST, COUNT, WIDTH, HEIGHT = 100, 40, 320, 240


def main(src: str, dst: str) -> None:
    with av.open(src) as inp, av.open(dst, "w") as out:
        rate = inp.streams.video[0].average_rate
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryslow"}
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= FIRST + COUNT:
                break
            if i >= FIRST:
                small = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p", interpolation="AREA")
                small.pts = None
                out.mux(stream.encode(small))
        out.mux(stream.encode())


if __name__ == "__main__":
    main(*sys.argv[1:3])
