"""Configuration and comparison as attack surface: environment numbers, names with terminal escapes,
a playlist posing as a video, a server that trickles, and NaN called agreement. Each a named
regression test with inputs made here; CLI runs go through `hostile.run_cases`."""

from __future__ import annotations

import os
import socketserver
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile import assert_refused, run_cases

RSS_MB = 1500
SMALL = ["--frames", "2", "--size", "16x16"]


def _case(tmp_path: Path, name: str, argv: list, **more) -> dict:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return {"id": name, "folder": folder, "argv": [str(a) for a in argv], "deadline": 60, **more}


def test_environment_numbers_are_one_line(tmp_path):
    """VRCONVERT_DOWNLOAD_SECONDS=abc or 1e400 was exit 3 (internal error): now one line, exit 2, before
    anything is fetched (the URL points nowhere reachable)."""
    cases = []
    for name, value in {"abc": "abc", "huge": "1e400", "negative": "-5", "nan": "nan", "zero": "0"}.items():
        env = {
            "VRCONVERT_DOWNLOAD_SECONDS": value,
            "VRCONVERT_PRETRAINED_BASE_URL": "http://127.0.0.1:9/none",
            "TORCH_HOME": str(tmp_path / name / "tmp" / "torch"),
        }
        cases.append(_case(tmp_path, name, ["torch2keras", "--pretrained", "mc3_18", "out.keras"], env=env))
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result, contains="VRCONVERT_DOWNLOAD_SECONDS", max_rss_mb=RSS_MB)


def test_control_characters_in_names_are_escaped(tmp_path):
    """A file name with a terminal escape code (and a newline) reached stderr raw."""
    name = "a\x1b[2J\x1b[31mred\nline.pth"
    case = _case(tmp_path, "escapes", ["inspect", name])
    (Path(case["folder"]) / name).write_bytes(b"not a checkpoint")
    result = run_cases([case], tmp_path)["escapes"]
    assert_refused(result)
    assert "\x1b" not in result["stderr"] and "\\x1b[2J" in result["stderr"], result["stderr"]


def test_a_playlist_never_makes_ffmpeg_open_another_file(tmp_path):
    """A .m3u8 (or one renamed .mp4) naming a local file made FFmpeg open that file. Here the file it
    names is a FIFO: opening it would block until the deadline. Only allow-listed containers are opened,
    with FFmpeg's protocol whitelist at `file`."""
    pytest.importorskip("av")
    cases = []
    for name in ("x.m3u8", "x.mp4"):
        case = _case(
            tmp_path,
            name.replace(".", "_"),
            [],
            call=["vrconvert.converter.video.decode:load_clips", name],
            deadline=20,
        )
        folder = Path(case["folder"])
        os.mkfifo(folder / "segment.ts")
        (folder / name).write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nsegment.ts\n#EXT-X-ENDLIST\n")
        cases.append(case)
    concat = _case(tmp_path, "concat", [], call=["vrconvert.converter.video.decode:load_clips", "x.mp4"], deadline=20)
    os.mkfifo(Path(concat["folder"]) / "segment.ts")
    (Path(concat["folder"]) / "x.mp4").write_text("ffconcat version 1.0\nfile segment.ts\n")
    cases.append(concat)
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result, contains="not a video file", max_rss_mb=RSS_MB)
        assert result["seconds"] < 10


class _Trickle(socketserver.StreamRequestHandler):
    """Headers at once, then one byte every 5 s of a 1000-byte body."""

    def handle(self):
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(5)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_a_trickling_server_fails_the_minimum_rate(tmp_path):
    """A server that sends 1 byte every 5 s held the command until the 30-minute deadline; the minimum
    transfer rate over a window drops it within seconds-to-a-minute, whatever the deadline."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            "VRCONVERT_PRETRAINED_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/trickle",
            "TORCH_HOME": str(tmp_path / "rate" / "tmp" / "torch"),
        }
        case = _case(tmp_path, "rate", ["torch2keras", "--pretrained", "mc3_18", "out.keras"], env=env, deadline=90)
        result = run_cases([case], tmp_path)["rate"]
    finally:
        server.shutdown()
    err = result["stderr"]
    assert result["code"] == 2 and err.count("\n") == 1 and "minimum" in err, (result["code"], err)
    assert result["seconds"] < 60, result["seconds"]
    hub = tmp_path / "rate" / "tmp" / "torch" / "hub" / "checkpoints"
    assert not hub.exists() or not list(hub.iterdir())


# --- NaN is a failure, in the one comparison ----------------------------------------------------------------


def test_nonfinite_logits_fail_with_their_count():
    """NaN compared as agreement (argmax of NaN rows is 0 on both sides, NaN <= tolerance is False only
    where someone asks). The one comparison counts NaN and Inf on either side and fails the case, with
    numpy's warnings kept inside."""
    from vrconvert.converter import parity

    good = np.random.default_rng(0).standard_normal((2, 10))
    for expected, got, count in (
        (good, np.full_like(good, np.nan), 20),
        (np.where(np.arange(10) == 3, np.inf, good), good, 2),
        (good, np.where(np.arange(10) == 0, -np.inf, good), 2),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            case = parity.compare("c", expected, got)
        assert case.nonfinite == count and not case.passed(1.0) and not case.top1_agree, case
    assert parity.compare("c", good, good).passed(0.0)


@pytest.fixture(scope="module")
def nan_pair(tmp_path_factory):
    """r2d_18 (2 classes) with NaN in its head's weights, as a torch checkpoint and a .keras file, a video."""
    import shutil

    from helpers import make_checkpoint, save_state

    import vrconvert
    from vrconvert.converter import video

    folder = tmp_path_factory.mktemp("nan")
    state = make_checkpoint("r2d_18", num_classes=2, seed=4)[1]
    state["fc.weight"] = np.full_like(state["fc.weight"], np.nan)
    save_state(state, folder / "nan.pth")
    vrconvert.state_dict_to_keras(state).save(str(folder / "nan.keras"))
    (folder / "videos").mkdir()
    shutil.copyfile(video.SAMPLE_CLIP, folder / "videos" / "v.mp4")
    inf = dict(state, **{"fc.weight": make_checkpoint("r2d_18", num_classes=2, seed=4)[1]["fc.weight"]})
    inf["fc.bias"] = np.array([np.inf, 0.0], np.float32)
    save_state(inf, folder / "inf.pth")
    return folder


@pytest.mark.slow
def test_nan_pair_fails_evaluate_validate_and_conversion(nan_pair, tmp_path, capsys):
    """evaluate on a NaN-weight pair said "top-1 agreement 100%, 0 video(s) beyond tolerance, max rel nan"
    and exited 0 where validate said FAIL; +Inf in fc.bias gave numpy warnings around the failure."""
    import json

    from helpers import invoke

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        code, out, err = invoke(
            ["evaluate", nan_pair / "nan.pth", nan_pair / "nan.keras", "--videos", nan_pair / "videos",
             "--frames", "2", "--size", "16x16", "--out", tmp_path / "run", "--json"], capsys)  # fmt: skip
        assert code == 1, err
        figures = json.loads(out)
        assert figures["nonfinite"] == 1 and figures["top1_agreement"] == 0.0, figures
        code, out, err = invoke(
            ["validate", nan_pair / "nan.pth", nan_pair / "nan.keras", "--no-sample", *SMALL], capsys
        )
        assert code == 1 and "NaN" in out + err, (out, err)
        code, out, err = invoke(["torch2keras", nan_pair / "inf.pth", tmp_path / "inf.keras", *SMALL], capsys)
        assert code == 1 and err.count("\n") == 1 and "NaN/Inf" in err, err
        assert not (tmp_path / "inf.keras").exists()
