"""Video input: torchvision's Kinetics preprocessing reproduced in numpy, decoding, clip sampling, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import NO_TORCH, run_python

from vrconvert.converter import video
from vrconvert.converter.errors import InputError
from vrconvert.converter.video import preprocess

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def oracle():
    return np.load(FIXTURES / "preprocess.oracle.npz")


def test_preprocessing_matches_torchvision(oracle):
    noise = preprocess.kinetics_eval(oracle["noise_frames_thwc"], layout="NCTHW")[0]
    ramp_frames = np.linspace(0, 255, 4 * 240 * 320 * 3).reshape(4, 240, 320, 3).astype(np.uint8)
    ramp = preprocess.kinetics_eval(ramp_frames, layout="NCTHW")[0]
    assert noise.shape == ramp.shape == (3, 4, 112, 112) and noise.dtype == np.float32
    assert np.abs(noise - oracle["noise_out_cthw"]).max() <= 1e-6
    assert np.abs(ramp - oracle["ramp_out_cthw"]).max() <= 1e-6


def test_layouts_are_transposes(oracle):
    frames = oracle["noise_frames_thwc"]
    keras_in = preprocess.kinetics_eval(frames, layout="NTHWC")
    torch_in = preprocess.kinetics_eval(frames, layout="NCTHW")
    assert keras_in.shape == (1, 4, 112, 112, 3)
    np.testing.assert_array_equal(keras_in.transpose(0, 4, 1, 2, 3), torch_in)


def test_resize_rounds_like_torch_on_a_tie_heavy_input():
    # an image whose bilinear weights hit .5 exactly: half-to-even rounding decides, as torch.round does
    frames = np.tile(np.array([[0, 1]], np.uint8), (1, 2, 8))[..., None].repeat(3, -1)  # (1, 2, 16, 3)
    out = preprocess.resize_uint8(frames, (2, 8))  # 2:1 in width -> weights 0.5 / 0.5 -> x.5 values
    assert set(np.unique(out)) <= {0, 1}
    np.testing.assert_array_equal(out[0, 0, :, 0], np.rint(np.full(8, 0.5)).astype(np.uint8))


def test_packaged_clip_is_small_real_video():
    assert video.SAMPLE_CLIP.is_file() and video.SAMPLE_CLIP.stat().st_size < 1_000_000
    assert (video.DATA / "README.md").read_text().count("vtest.avi") >= 1
    assert video.frame_count(video.SAMPLE_CLIP) == 40
    clip = video.sample_clip()
    assert clip.array.shape == (1, 16, 112, 112, 3) and clip.name == "vtest_clip.mp4[12:28]"
    assert 0.1 < clip.array.std() < 3  # natural images, normalised


def test_video_path_equals_preprocessing_of_decoded_frames():
    import av

    with av.open(str(video.SAMPLE_CLIP)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    clip = video.load_clips(video.SAMPLE_CLIP, frames=8, start_frame=5, layout="NCTHW")[0]
    np.testing.assert_array_equal(clip.array, preprocess.kinetics_eval(frames[5:13], layout="NCTHW"))


def test_clip_sampling():
    assert video.clip_starts(40, 16, 1) == [12]
    assert video.clip_starts(40, 16, 3) == [0, 12, 24]
    assert video.clip_starts(16, 16, 4) == [0, 0, 0, 0]
    clips = video.load_clips(video.SAMPLE_CLIP, frames=4, clips=5)
    assert [c.start_frame for c in clips] == [0, 9, 18, 27, 36]
    assert video.load_clips(video.SAMPLE_CLIP, frames=4, start_time=1.0)[0].start_frame == 10  # 10 fps


def _write_video(path: Path, codec: str, frames: int = 20, size=(96, 128), pix_fmt="yuv420p") -> None:
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = pix_fmt
        for i in range(frames):
            image = np.full((*size, 3), 8 * i, np.uint8) + rng.integers(0, 8, (*size, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())


@pytest.mark.parametrize(
    "name, codec, pix_fmt",
    [
        ("a.mp4", "libx264", "yuv420p"),
        ("a.avi", "mjpeg", "yuvj420p"),
        ("a.mkv", "mpeg4", "yuv420p"),
        ("a.webm", "libvpx-vp9", "yuv420p"),
    ],
)
def test_containers_decode(tmp_path, name, codec, pix_fmt):
    path = tmp_path / name
    _write_video(path, codec, pix_fmt=pix_fmt)
    assert video.frame_count(path) == 20
    clips = video.load_clips(path, frames=8, clips=2, layout="NCTHW")
    assert [c.start_frame for c in clips] == [0, 12]
    assert clips[1].array.shape == (1, 3, 8, 112, 112)
    # brightness ramps with the frame index (8 levels a frame): the frames come back in order
    means = clips[1].array[0].mean(axis=(0, 2, 3))
    assert np.all(np.diff(means) > 0)


def test_bad_videos(tmp_path):
    import av

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    audio = tmp_path / "sound.wav"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    cases = [
        (tmp_path / "missing.mp4", {}, "no such file"),
        (text, {}, "not a video file"),
        (audio, {}, "no video stream"),
        (tmp_path, {}, "not a file"),
        (video.SAMPLE_CLIP, {"frames": 41}, "40 frames, too short for a 41-frame clip"),
        (video.SAMPLE_CLIP, {"frames": 16, "start_frame": 30}, "too short for a 16-frame clip from frame 30"),
        (video.SAMPLE_CLIP, {"start_frame": -1}, "before the first frame"),
    ]
    for path, options, message in cases:
        with pytest.raises(InputError, match=message):
            video.load_clips(path, **options)


def test_keras_side_needs_no_torch():
    run_python(f"""
        import sys
        exec({NO_TORCH!r})  # any import of torch now fails
        from vrconvert.converter import video
        clip = video.sample_clip(frames=4)
        assert clip.array.shape == (1, 4, 112, 112, 3), clip.array.shape
    """)
