"""Real video in: decoding and clip sampling (`decode`, PyAV), torchvision's Kinetics eval transform in
numpy (`preprocess`) and classification of a video (`classify`).

The decoding API is re-exported so callers can say `video.load_clips(...)`."""

from vrconvert.converter.video.decode import (
    DATA,
    SAMPLE_CLIP,
    Clip,
    clip_starts,
    frame_count,
    frame_rate,
    load_clips,
    sample_clip,
)

__all__ = ["DATA", "SAMPLE_CLIP", "Clip", "clip_starts", "frame_count", "frame_rate", "load_clips", "sample_clip"]
