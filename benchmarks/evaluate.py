"""evaluate's overhead: throughput over 50 videos vs the two models called back to back on the same
clips in one process (decode included on both sides). Target: evaluate >= 90% of the baseline.

Both sides run in this process with the models already loaded (start-up is not throughput); the
evaluate side is the real path: `run_local` -> `evaluate_one` -> one fsync'd line per video.
Sides alternate; medians of the repetitions. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np

VIDEOS, FRAMES, SIZE, REPS = 50, 8, (56, 56), 3


def make_videos(folder: Path) -> None:
    """VIDEOS short noise videos (12 frames of 160x120), written with PyAV."""
    import av

    rng = np.random.default_rng(0)
    for i in range(VIDEOS):
        with av.open(str(folder / f"v{i:02d}.mp4"), "w") as c:
            s = c.add_stream("mpeg4", rate=10)
            s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
            for _ in range(12):
                frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)


def baseline(ev, items, settings) -> float:
    """Videos per second through the two models called back to back (decode included)."""
    import torch

    from vrconvert.converter import video

    start = time.perf_counter()
    for item in items:
        for clip in video.load_clips(item.path, frames=FRAMES, preprocessing=settings.preprocessing, layout="NCTHW"):
            with torch.no_grad():
                ev.torch_model(torch.from_numpy(clip.array)).numpy()
            ev.keras_run(np.ascontiguousarray(clip.array.transpose(0, 2, 3, 4, 1)))
    return len(items) / (time.perf_counter() - start)


def through_evaluate(items, settings) -> float:
    """Videos per second through evaluate's real path, one fsync'd line per video."""
    from vrconvert.converter.evaluate import local, store

    out = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    with store.ResultsStore(out) as results:
        results.open(settings.identity(), resume=False)
        for record in local.run_local(items, settings, 1):
            results.append(record)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    from helpers import make_checkpoint, save_state

    import vrconvert
    from vrconvert.converter.evaluate import local, sources
    from vrconvert.converter.evaluate.worker import Settings, evaluator

    folder = Path(tempfile.mkdtemp())
    _, state = make_checkpoint("r3d_18", seed=0)
    save_state(state, folder / "m.pth")
    vrconvert.state_dict_to_keras(state).save(str(folder / "m.keras"))
    make_videos(folder)
    items = sources.discover(folder).items
    settings = Settings(str(folder / "m.pth"), str(folder / "m.keras"), 1, FRAMES, SIZE, threads=local.share(1))
    ev = evaluator(settings)  # loads both models once, as each worker does
    ev(items[0])  # compile the Keras graph for this shape
    base, ours = [], []
    for _ in range(REPS):
        base.append(baseline(ev, items, settings))
        ours.append(through_evaluate(items, settings))
    print(
        json.dumps(
            {
                "videos": len(items),
                "clip": f"{FRAMES}x{SIZE[0]}x{SIZE[1]}",
                "baseline_videos_per_s": statistics.median(base),
                "evaluate_videos_per_s": statistics.median(ours),
                "ratio": statistics.median(ours) / statistics.median(base),
                "target": 0.9,
                "runs": {"baseline": base, "evaluate": ours},
            }
        )
    )


if __name__ == "__main__":
    main()
