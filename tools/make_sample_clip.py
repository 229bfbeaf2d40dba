"""Regenerates vrconvert's packaged real clip (converter/data/vtest_clip.mp4) from OpenCV's vtest.avi.

Source: Debian's opencv-doc 4.6.0+dfsg-12, usr/share/doc/opencv-doc/examples/data/vtest.avi
(768x576, 10 fps, 795 frames; OpenCV, Apache-2.0 AND BSD-3-Clause). Fetch it with
`apt-get download opencv-doc && dpkg -x opencv-doc_*.deb x`, then run:

    python tools/make_sample_clip.py x/usr/share/doc/opencv-doc/examples/data/vtest.avi converter/data/vtest_clip.mp4

The clip: frames 100..139 (4 s at vtest's 10 fps), scaled to 320x240, H.264 (CRF 23) in MP4.
"""

from __future__ import annotations

import sys
from pathlib import Path

from make_test_clips import make

if __name__ == "__main__":
    make(Path(sys.argv[1]), Path(sys.argv[2]), first=100, count=40, rate=10, width=320, height=240, crf=23)
