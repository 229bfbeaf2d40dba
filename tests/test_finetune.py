"""`vrconvert finetune` on real video: three scenes of the opencv-doc clips as three classes.

Each class folder holds its clip's 64 frames split into 4 files of 16 frames (re-encoded here with PyAV,
H.264 at 160x120), so the split by file holds one video of each class out; 3 clips of 4 frames are
sampled per file. r2plus1d_18 at a 32x32 crop keeps a run to seconds per epoch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from oracle import recipe_state_dict

av = pytest.importorskip("av")

CLIPS = Path(__file__).parent / "fixtures" / "clips"
CLASSES = ("megamind_25fps", "tree_15fps", "vtest_10fps")
SMALL = {"frames": 4, "size": 32, "clips": 3, "val_split": 0.25, "batch_size": 4, "workers": 2}
FILES = {"curves.html", "history.json", "model.keras", "model.pth", "run.json"}


def split_video(src: Path, folder: Path, parts: int = 4) -> None:
    with av.open(str(src)) as inp:
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    size = len(frames) // parts
    for part in range(parts):
        with av.open(str(folder / f"part{part}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=Fraction(10))
            stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
            for i, array in enumerate(frames[part * size : (part + 1) * size]):
                frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(160, 120, "yuv420p")
                frame.pts, frame.time_base = i, Fraction(1, 10)
                out.mux(stream.encode(frame))
            out.mux(stream.encode())


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name in CLASSES:
        (root / name).mkdir()
        split_video(CLIPS / f"{name}.mp4", root / name)
    return root


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """The oracle's seeded recipe weights as a torchvision checkpoint with a 400-class head."""
    import torch

    path = tmp_path_factory.mktemp("weights") / "r2plus1d_18.pth"
    torch.save({k: torch.from_numpy(v) for k, v in recipe_state_dict("r2plus1d_18").items()}, path)
    return path


def cli(*args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must keep TensorFlow quiet by itself
    return subprocess.run(
        [sys.executable, "-m", "vrconvert", "finetune", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_a_linear_head_on_a_frozen_backbone_separates_three_real_videos(videos, recipe, tmp_path):
    """Linear probe: everything up to layer4 frozen (Keras semantics: BatchNorm in inference mode), so
    the backbone's tensors come back bit-identical in model.pth; the held-out videos' clips are all
    classified right, checked here on model.keras itself, not only through Keras' metric."""
    import keras
    import torch

    from vrconvert import models_torch
    from vrconvert.converter.training import dataset
    from vrconvert.converter.training.finetune import finetune, variant_for
    from vrconvert.models_tf.preprocessing import split

    out = tmp_path / "run"
    # Adam: the recipe backbone's features are large (mean |f| about 6) and SGD on them oscillated (held-out
    # accuracy 1.0 then 0.78 at lr 3e-5 and 1e-4); Adam 1e-3 reached 1.0 at epoch 6 and held it to epoch 10.
    settings = {"epochs": 10, "freeze_until": "layer4", "optimizer": "adam", "lr": 1e-3, "verbose": 0}
    result = finetune(videos, out, weights=recipe, **settings, **SMALL)
    assert {p.name for p in out.iterdir()} == FILES
    assert [e["epoch"] for e in result.epochs] == list(range(1, 11))
    assert [e["val_accuracy"] for e in result.epochs[-3:]] == [1.0, 1.0, 1.0]  # learnt, and it stays learnt
    assert result.classes == CLASSES
    assert json.loads((out / "history.json").read_text())["epochs"] == result.epochs
    assert "<img" in (out / "curves.html").read_text()

    model = keras.saving.load_model(out / "model.keras")
    variant = variant_for("r2plus1d_18", 3, SMALL["size"])
    held_out = dataset.split(dataset.scan(videos), SMALL["val_split"]).val
    assert sorted(label for _, label in held_out) == [0, 1, 2]
    val = dataset.decode(
        videos, held_out, frames=SMALL["frames"], clips=SMALL["clips"], preprocessing=variant.preprocessing
    )
    assert (np.argmax(model.predict(val.frames, verbose=0), axis=1) == val.labels).all()

    # back in torch: strict load into the K-class model, the frozen backbone untouched, the same logits
    state = torch.load(out / "model.pth", weights_only=True)
    net = models_torch.build("r2plus1d_18", num_classes=3)
    net.load_state_dict(state, strict=True)
    recipe_state = recipe_state_dict("r2plus1d_18")
    for key, value in state.items():
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(value.numpy(), recipe_state[key], err_msg=key)
    clip = np.random.default_rng(5).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    keras_logits = np.asarray(split(model)[1](clip, training=False))
    with torch.no_grad():
        torch_logits = net.eval()(torch.from_numpy(clip.transpose(0, 4, 1, 2, 3))).numpy()
    assert np.abs(keras_logits - torch_logits).max() / np.abs(torch_logits).max() <= 1e-5


@pytest.mark.slow  # about 2.5 min under load: two CLI runs and a checkpoint load
def test_killed_with_sigkill_and_resumed(videos, recipe, tmp_path):
    """layer4 and the head train (momentum state to restore); SIGKILL once the first epoch's checkpoint
    exists; `--resume` restores the weights, the optimizer's state and step count and the epoch, and ends
    with the files and the epoch count of an uninterrupted run."""
    import keras

    out = tmp_path / "run"
    args = [videos, out, "--weights", recipe, "--epochs", 2, "--lr", 1e-5, "--freeze-until", "layer3"]
    args += [x for k, v in SMALL.items() for x in (f"--{k.replace('_', '-')}", v)]
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vrconvert", "finetune", *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = out / "checkpoint" / "epoch-0001.keras"
    deadline = time.monotonic() + 400
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the first epoch's checkpoint never appeared"
    assert not (out / "model.keras").exists() and not (out / "model.pth").exists()
    saved = keras.saving.load_model(checkpoint)
    assert int(saved.optimizer.iterations.numpy()) == 7  # 27 training clips in batches of 4: 7 steps an epoch
    del saved

    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "2 epochs, resumed after epoch " in resumed.stdout
    assert {p.name for p in out.iterdir()} == FILES
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]
    assert all(np.isfinite(e["loss"]) for e in history)
    assert "warning" not in resumed.stderr.lower() and "tensorflow" not in resumed.stderr.lower()

    again = cli(*args, "--resume")  # a finished run is not resumed
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1


def _make_bad(kind: str, videos: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    if kind == "empty folder":
        root.mkdir()
    elif kind == "one class":
        (root / "a").mkdir(parents=True)
        (root / "a" / "x.mp4").write_bytes((videos / CLASSES[0] / "part0.mp4").read_bytes())
    elif kind == "empty class":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "a" / "x.mp4").write_bytes((videos / CLASSES[0] / "part0.mp4").read_bytes())
    elif kind == "unreadable video":
        for name in CLASSES[:2]:
            (root / name).mkdir(parents=True)
            for part in (0, 1):
                (root / name / f"p{part}.mp4").write_bytes((videos / name / f"part{part}.mp4").read_bytes())
        (root / CLASSES[1] / "p1.mp4").write_text("#EXTM3U\nhttp://example.com/x.ts\n")
    else:  # too short
        for name in CLASSES[:2]:
            (root / name).mkdir(parents=True)
            for part in (0, 1):
                (root / name / f"p{part}.mp4").write_bytes((videos / name / f"part{part}.mp4").read_bytes())
    return root


MADE = ("empty folder", "one class", "empty class", "unreadable video", "too short")
BAD = {
    "empty folder": ({}, "no class folder"),
    "one class": ({}, "one class (a)"),
    "empty class": ({}, "an empty class folder"),
    "unreadable video": ({}, "p1.mp4: not a video file"),
    "too short": ({"frames": 40}, "16 frames, too short for a 40-frame clip"),
    "zoo arch": ({"arch": "s3d"}, "s3d is not one"),
    "bad stage": ({"freeze_until": "layer9"}, "--freeze-until must be one of stem, layer1"),
    "resume nothing": ({"resume": True}, "no run to resume here"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_one_error_and_leaves_nothing(kind, videos, recipe, tmp_path):
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.training.finetune import finetune

    options, message = BAD[kind]
    folder = _make_bad(kind, videos, tmp_path) if kind in MADE else videos
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(message)):
        finetune(folder, out, weights=recipe, verbose=0, **{**SMALL, "val_split": 0.5, **options})
    assert not out.exists()


def test_the_command_refuses_in_one_line(videos, recipe, tmp_path):
    """OUT already there (and not --resume): one line on stderr, exit 2, no traceback, OUT untouched."""
    out = tmp_path / "out"
    out.mkdir()
    result = cli(videos, out, "--weights", recipe, "--frames", 4, "--size", 32)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {out}: already exists (pass --resume to continue a run there)"
    ]
    assert list(out.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18"])
def test_the_other_resnets_finetune(arch, videos, tmp_path):
    import torch

    from vrconvert import models_torch

    weights = tmp_path / "w.pth"
    torch.manual_seed(0)
    torch.save(models_torch.build(arch, num_classes=400).state_dict(), weights)
    from vrconvert.converter.training.finetune import finetune

    result = finetune(videos, tmp_path / "run", weights=weights, epochs=1, lr=1e-3, verbose=0, **SMALL)
    assert result.arch == arch and result.parity_max_rel_diff <= 1e-4
    state = torch.load(tmp_path / "run" / "model.pth", weights_only=True)
    models_torch.build(arch, num_classes=3).load_state_dict(state, strict=True)


@pytest.mark.slow
def test_mixed_bfloat16_trains_with_a_float32_head_and_transform(videos, recipe, tmp_path):
    import keras

    from vrconvert.converter.training.finetune import finetune

    result = finetune(
        videos, tmp_path / "run", weights=recipe, epochs=1, lr=1e-5, precision="mixed_bfloat16", verbose=0, **SMALL
    )
    assert np.isfinite(result.epochs[0]["loss"])
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}  # model.keras is float32


def test_the_python_api_keeps_tensorflow_off_stderr(videos, recipe, tmp_path):
    """`vrconvert.finetune` imports Keras (and TensorFlow) quietly, as the command does: a call that fails
    after that import leaves nothing on stderr but what the caller prints."""
    bad = tmp_path / "one"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "x.mp4").write_bytes((videos / CLASSES[0] / "part0.mp4").read_bytes())
    code = (
        "import sys, vrconvert\n"
        "from vrconvert.converter.errors import InputError\n"
        f"try: vrconvert.finetune({str(bad)!r}, {str(tmp_path / 'out')!r}, weights={str(recipe)!r})\n"
        "except InputError: pass\n"
        "assert 'tensorflow' in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "VRCONVERT_DEBUG")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env={**env, "KERAS_BACKEND": "tensorflow"},
    )
    assert done.returncode == 0 and done.stderr == ""


def test_a_run_trained_on_keras_torch_backend_resumes_only_there(tmp_path, keras):
    """On Keras' torch backend finetune trains the channels-first twin, so its checkpoints hold it;
    TensorFlow's CPU convolutions are channels-last only, so a resume elsewhere is refused in one line."""
    from vrconvert import models_tf
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.training.finetune import _load_checkpoint
    from vrconvert.models_tf import layout

    path = tmp_path / "epoch-0001.keras"
    layout.derive(models_tf.build("mc3_18", num_classes=3), "channels_first").save(path)
    with pytest.raises(InputError, match="KERAS_BACKEND=torch"):
        _load_checkpoint(path)
    plain = tmp_path / "plain.keras"
    models_tf.build("mc3_18", num_classes=3).save(plain)
    assert _load_checkpoint(plain).name == "mc3_18"
