"""`vrconvert evaluate`: counts and failures over a folder, resume after a kill, the lock, the same
results from one worker, two workers and Ray, a sabotaged pair located, and the report in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import invoke, make_checkpoint, save_state

from vrconvert.converter.evaluate import store

CLIP = ["--frames", "2", "--size", "16x16"]
VIDEOS = 31
TIMING = ("seconds", "worker")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import av

    import vrconvert

    root = tmp_path_factory.mktemp("evaluate")
    _, state = make_checkpoint("r3d_18", num_classes=3, seed=0)
    save_state(state, root / "m.pth")
    vrconvert.state_dict_to_keras(state).save(str(root / "m.keras"))
    bad = dict(state)
    bad["layer1.0.conv2.1.running_var"] = state["layer1.0.conv2.1.running_var"] * 1.5
    save_state(bad, root / "bad.pth")
    rng = np.random.default_rng(0)
    for i in range(VIDEOS):
        folder = root / "videos" / "abc"[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        with av.open(str(folder / f"v{i:02d}.mp4"), "w") as c:
            s = c.add_stream("mpeg4", rate=10)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for t in range(6):
                for p in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 3 * t, axis=1), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    videos = root / "videos"
    (videos / "a" / "corrupt.mp4").write_bytes((videos / "a" / "v00.mp4").read_bytes()[:300])
    (videos / "b" / "notes.mp4").write_text("this is not a video\n")
    (videos / "README.txt").write_text("not listed: no video suffix\n")
    return root


def _run(data, out, *extra, models=("m.pth", "m.keras"), videos=None, capsys):
    args = ["evaluate", *(data / m for m in models), "--videos", videos or data / "videos", *CLIP, "--out", out, *extra]
    return invoke(args, capsys)


def _stable(folder) -> list[str]:
    """The results file's records without timings and worker names, sorted."""
    return sorted(
        json.dumps({k: v for k, v in r.items() if k not in TIMING}, sort_keys=True) for r in store.read_records(folder)
    )


def test_faithful_folder_counts_failures_and_report(data, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(data, out, "--json", "--report", tmp_path / "r.html", capsys=capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert (s["videos"], s["evaluated"], s["failures"]) == (VIDEOS + 2, VIDEOS, 2)
    assert sorted(f["key"] for f in s["failed"]) == ["a/corrupt.mp4", "b/notes.mp4"]
    assert all("\n" not in f["error"] and f["error"] for f in s["failed"])
    assert s["top1_agreement"] == 1.0 and s["top5_agreement"] == 1.0 and s["beyond_tolerance"] == 0
    assert s["accuracy"]["torch"]["videos"] == VIDEOS  # labels from the class folders
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page.split("<body>")[1].split("base64")[0]
    keys = [r["key"] for r in store.read_records(out)]
    assert len(keys) == len(set(keys)) == VIDEOS + 2


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(data, tmp_path, capsys):
    """The offline page in a real browser: a few videos (one corrupt) are enough to draw every part."""
    videos = tmp_path / "videos"
    for name in ("a/v00.mp4", "b/v01.mp4", "c/v02.mp4", "a/corrupt.mp4"):
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / "videos" / name, videos / name)
    page = tmp_path / "r.html"
    code, _, err = _run(data, tmp_path / "run", "--report", page, videos=videos, capsys=capsys)
    assert code == 0, err
    shot = tmp_path / "shot.png"
    subprocess.run(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
         f"file://{page}"],
        check=False, capture_output=True, timeout=60,
    )  # fmt: skip
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280)
    assert (pixels < 200).mean() > 0.01  # text and figures drawn, not a blank page
    if os.environ.get("VRCONVERT_KEEP_SCREENSHOT"):  # to look at it
        shutil.copy(shot, os.environ["VRCONVERT_KEEP_SCREENSHOT"])


def test_second_run_on_the_same_folder_is_refused(data, tmp_path, capsys):
    with store.ResultsStore(tmp_path / "run") as held:
        held.open({"x": 1}, resume=False)
        code, _, err = _run(data, tmp_path / "run", capsys=capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "another vrconvert evaluate run" in errors[0]
    assert not (tmp_path / "run" / store.RESULTS).read_bytes()  # nothing interleaved


def test_killed_run_resumes_with_every_video_once(data, tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vrconvert", "evaluate", data / "m.pth", data / "m.keras", "--videos", data / "videos",
           *CLIP, "--out", out]  # fmt: skip
    proc = subprocess.Popen([str(c) for c in cmd], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
    deadline = time.monotonic() + 120
    while len(store.read_records(out)) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(store.read_records(out))
    assert 5 <= before < VIDEOS + 2
    with open(out / store.RESULTS, "ab") as f:
        f.write(b'{"key": "torn')  # what a kill in the middle of a write would leave
    code, _, err = _run(data, out, "--resume", capsys=capsys)
    assert code == 0, err
    keys = [r["key"] for r in store.read_records(out)]
    assert len(keys) == len(set(keys)) == VIDEOS + 2
    assert (out / store.RESULTS).read_bytes().endswith(b"\n")


@pytest.mark.slow  # about 1.5 min: three evaluate runs, one on a local Ray cluster
def test_two_workers_and_ray_give_the_same_results_as_one(data, tmp_path, capsys):
    # one thread each, as two workers and two Ray actors on two cores get: other thread counts sum in
    # other orders, which moves the last bits of the logits. The one-worker reference runs as its own
    # process: in this one TensorFlow may already run with every core, and then keeps them
    cmd = [sys.executable, "-m", "vrconvert", "evaluate", data / "m.pth", data / "m.keras", "--videos", data / "videos",
           *CLIP, "--out", tmp_path / "one", "--threads", "1"]  # fmt: skip
    one = subprocess.run(
        [str(c) for c in cmd],
        check=False,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert one.returncode == 0, one.stderr
    assert _run(data, tmp_path / "two", "--workers", "2", capsys=capsys)[0] == 0
    assert _stable(tmp_path / "two") == _stable(tmp_path / "one")
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        code, _, err = _run(data, tmp_path / "ray", "--ray", "auto", "--workers", "2", capsys=capsys)
    finally:
        ray.shutdown()
    assert code == 0, err
    assert _stable(tmp_path / "ray") == _stable(tmp_path / "one")


def test_sabotaged_pair_disagrees_and_report_names_first_divergence(data, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _run(
        data, out, "--json", "--report", tmp_path / "r.html", models=("bad.pth", "m.keras"), capsys=capsys
    )
    s = json.loads(stdout)
    assert code == 1 and s["beyond_tolerance"] == VIDEOS
    profile = json.loads((out / store.LAYERS).read_text())
    assert profile["first_divergence"] == "layer1.0.conv2.1"
    assert "First diverging layer: <b>layer1.0.conv2.1</b>" in (tmp_path / "r.html").read_text()


def test_one_model_with_labels_gives_accuracy(data, tmp_path, capsys):
    code, stdout, err = _run(data, tmp_path / "run", "--json", models=("m.keras",), capsys=capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["compared"] == 0 and s["accuracy"]["keras"]["videos"] == VIDEOS and "torch" not in s["accuracy"]


def test_ray_token_is_used_when_at_hand(tmp_path, monkeypatch):
    """`ray start` turns token authentication on and leaves the token in ~/.ray; a driver joining by
    address must then run in token mode, which the user did not have to ask for. A mode they chose stays."""
    from vrconvert.converter.evaluate.ray_runner import _token_when_at_hand

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    _token_when_at_hand()
    assert "RAY_AUTH_MODE" not in os.environ  # no token anywhere: Ray's default
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    _token_when_at_hand()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    _token_when_at_hand()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
