"""The install test: every documented install profile runs the commands the README promises for it.

Builds the wheel once, makes a fresh venv per profile from that wheel (never an editable install)
with `-c constraints.txt` (torch==2.13.0 first where torch is wanted), and runs each promised
command in it on a small checkpoint generated here once (with the test venv's torch), asserting exit
codes, outputs and parity against references computed in the test venv. Commands a profile does not
promise must exit 2 with one stderr line naming the extra to install.

    .venv/bin/python tools/install_profiles.py            # `make test-install`; all profiles
    .venv/bin/python tools/install_profiles.py P2 P5      # some
    .venv/bin/python tools/install_profiles.py --measure  # also times r2plus1d_18 file commands

PROFILES is the contract (the README's install section lists the same): a new profile is one row.
Everything lives under build/install-test/, wiped at the start of each run; only pip's cache (and
the local package index) is shared between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "install-test"
TORCH = "torch==2.13.0"
ARCH, CLASSES = "mc3_18", 5  # the small checkpoint every profile converts (11.7 M parameters)
CHECK = ["--frames", "8", "--size", "56x56"]  # validation clips: small
# The user's environment as it was before this process imported anything: Keras and JAX set
# variables (TF_CPP_MIN_LOG_LEVEL among them) that the commands under test must not inherit.
# Lines on stderr that are not vrconvert's: absl/TF C++ logging, Python warnings, tracebacks.
THIRD_PARTY = re.compile(
    r"^[IWEF]\d{4} |absl|oneDNN|cpu_feature_guard|\w+Warning: |^Traceback "
    r"|^\[\d{4}-\d\d-\d\d [\d:,]+ [IWEF] \d+ \d+\]"  # Ray's C++ logging
    r"|^\d{4}-\d\d-\d\d [\d:,]+\s+(INFO|WARNING|ERROR) \S+\.py:\d+ -- "  # Ray's Python logging
)
IN_PROCESS = threading.Lock()  # profiles run in threads; files are read back here one at a time
USER_ENV = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "VRCONVERT_DEBUG", "VIRTUAL_ENV")}


@dataclass(frozen=True)
class Profile:
    name: str
    extras: str  # what the user writes in vrconvert[...]; "" for the bare package
    env: dict[str, str]  # e.g. KERAS_BACKEND
    runs: tuple[str, ...]  # promised checks (CHECKS keys), in order
    refuses: tuple[tuple[str, str], ...] = ()  # (REFUSALS key, the extra its one line must name; "a|b": either)
    absent: tuple[str, ...] = ()  # distributions this install must not contain

    @property
    def torch(self) -> bool:
        return "torch" in self.extras.split(",") or "all" in self.extras.split(",")


PROFILES = [
    Profile(
        "P1",
        "all",
        {},
        ("help", "list", "mapping", "inspect-pth", "t2k-novalidate", "t2k", "inspect-keras", "k2t", "validate",
         "predict", "build", "finetune", "validate-train"),
        absent=("jax", "jaxlib", "scipy"),
    ),
    Profile(
        "P2",
        "tensorflow,video",
        {},
        ("help", "inspect-pth", "t2k-novalidate", "inspect-keras", "predict"),
        refuses=(("k2t", "torch"), ("validate", "torch"), ("t2k", "torch"), ("finetune", "torch"),
                 ("validate-train", "torch")),
        absent=("torch", "jax", "scipy"),
    ),
    Profile(
        "P3",
        "torch,keras,video",
        {"KERAS_BACKEND": "torch"},
        ("help", "t2k", "k2t", "validate", "predict", "finetune", "validate-train"),
        absent=("tensorflow-cpu", "tensorflow", "jax", "scipy"),
    ),
    Profile(
        "P4",
        "torch,jax,video",
        {"KERAS_BACKEND": "jax"},
        ("help", "t2k", "k2t", "validate", "predict", "finetune", "validate-train"),
        absent=("tensorflow-cpu", "tensorflow"),
    ),
    Profile(
        "P6",
        "all,export,evaluate",
        {},
        ("export", "evaluate", "validate-report", "finetune", "validate-train"),
        absent=("jax", "jaxlib"),
    ),
    Profile(
        "P5",
        "",
        {},
        ("help", "list", "mapping", "inspect-pth"),
        refuses=(("t2k", "torch"), ("t2k-novalidate", "tensorflow"), ("k2t", "torch"),
                 ("validate", "video|tensorflow|torch"), ("predict", "tensorflow"), ("inspect-keras", "tensorflow")),
        absent=("torch", "tensorflow-cpu", "keras", "jax", "av", "safetensors"),
    ),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Running commands


class Failed(AssertionError):
    pass


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path = WORK, log=None, timeout: int = 600):
    """Runs cmd; returns (status, stdout, stderr, seconds), logging all of it."""
    start = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=cwd, env={**USER_ENV, **(env or {})}, timeout=timeout
    )
    seconds = time.perf_counter() - start
    if log is not None:
        log.write(f"$ {' '.join(map(str, cmd))}  [{done.returncode}, {seconds:.1f} s]\n{done.stdout}{done.stderr}\n")
        log.flush()
    return done.returncode, done.stdout, done.stderr, seconds


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


@dataclass
class Venv:
    profile: Profile
    path: Path
    log: object
    seconds: dict[str, float] = field(default_factory=dict)

    def vrconvert(self, *args: str, status: int = 0, cwd: Path | None = None) -> tuple[str, str]:
        """Runs the installed entry point from a scratch folder (or `cwd`); checks the status; (stdout, stderr)."""
        got, out, err, seconds = run(
            [str(self.path / "bin" / "vrconvert"), *args], env=self.profile.env, cwd=cwd or self.scratch, log=self.log
        )
        self.seconds[" ".join(args[:1])] = self.seconds.get(" ".join(args[:1]), 0) + seconds
        expect(got == status, f"vrconvert {' '.join(args)}: exit {got}, expected {status}: {err.strip()[-400:]}")
        noise = [line for line in err.splitlines() if THIRD_PARTY.search(line)]
        expect(not noise, f"vrconvert {args[0]}: third-party lines on stderr: {noise[:3]}")
        return out, err

    @property
    def scratch(self) -> Path:
        return self.path.parent / f"{self.profile.name}-files"


# ---------------------------------------------------------------------------------------------------
# References, made once in the test venv (this interpreter, which has torch and Keras)


@dataclass
class Fixtures:
    checkpoint: Path  # torch.save of a random mc3_18 state dict, small head
    state: dict[str, np.ndarray]
    keras: Path  # the same weights as .keras, converted (and parity-checked) by the test venv
    video: Path
    predict: dict  # the test venv's predict on `video` with the torch checkpoint
    mapping: str


def make_fixtures(folder: Path, log) -> Fixtures:
    import torch

    from vrconvert import models_torch

    folder.mkdir(parents=True)
    model = models_torch.build(ARCH, num_classes=CLASSES)
    rng = np.random.default_rng(0)
    state = {}
    for key, tensor in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(7, dtype=np.int64)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, tuple(tensor.shape)).astype(np.float32)
        else:  # weights and BatchNorm statistics all random, so a swapped mapping would show
            state[key] = (rng.normal(0, 1, tuple(tensor.shape)) * np.sqrt(2 / max(1, tensor[0].numel()))).astype(
                np.float32
            )
    state["fc.weight"] *= 1e-4  # logits of order one (random BatchNorm statistics make features large)
    checkpoint = folder / f"{ARCH}.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, checkpoint)
    vr = [sys.executable, "-m", "vrconvert"]
    keras = folder / f"{ARCH}.keras"
    got, _, err, _ = run([*vr, "torch2keras", str(checkpoint), str(keras), *CHECK], cwd=folder, log=log)
    expect(got == 0, f"reference torch2keras failed: {err}")
    video = ROOT / "converter" / "data" / "vtest_clip.mp4"
    got, out, err, _ = run([*vr, "predict", str(video), str(checkpoint), "--json"], cwd=folder, log=log)
    expect(got == 0, f"reference predict failed: {err}")
    got, mapping, err, _ = run([*vr, "mapping", ARCH, "--json"], cwd=folder, log=log)
    expect(got == 0, f"reference mapping failed: {err}")
    predicted = json.loads(out)
    expect(min(label["probability"] for label in predicted["top"]) > 1e-3, f"saturated reference: {predicted}")
    return Fixtures(checkpoint, state, keras, video, predicted, mapping)


# ---------------------------------------------------------------------------------------------------
# Checks: each runs one command in a profile's venv and checks what it did


def read_state(path: Path) -> dict[str, np.ndarray]:
    from vrconvert.converter.formats import checkpoint

    with IN_PROCESS:
        return checkpoint.read_checkpoint(path).state


def keras_state(keras_file: Path) -> dict[str, np.ndarray]:
    """A Keras file's weights read here (the test venv), under torch names."""
    from vrconvert.converter.arch import mapping
    from vrconvert.converter.backends import select_backend_for_files
    from vrconvert.models_tf import weights as keras_weights

    with IN_PROCESS:
        select_backend_for_files()
        variant, variables = keras_weights.read_keras_file(keras_file)
    expect((variant.name, variant.num_classes) == (ARCH, CLASSES), f"{keras_file}: {variant.name}")
    return mapping.to_torch(variant, variables)


def same_weights(keras_file: Path, fx: Fixtures) -> None:
    """The Keras file holds exactly the checkpoint's weights."""
    back = keras_state(keras_file)
    for key, value in fx.state.items():
        if not key.endswith("num_batches_tracked"):
            expect(np.array_equal(back[key], value), f"{keras_file}: {key} differs from the checkpoint")


def check_help(v: Venv, fx: Fixtures) -> None:
    out, _ = v.vrconvert("--help")
    expect("torch2keras" in out and "keras2torch" in out, "--help lists no commands")


def check_list(v: Venv, fx: Fixtures) -> None:
    out, _ = v.vrconvert("list")
    expect(ARCH in out and "r2plus1d_18" in out, "list misses architectures")


def check_mapping(v: Venv, fx: Fixtures) -> None:
    out, _ = v.vrconvert("mapping", ARCH, "--json")
    expect(out == fx.mapping, "mapping differs from the test venv's")


def check_inspect_pth(v: Venv, fx: Fixtures) -> None:
    info = json.loads(v.vrconvert("inspect", str(fx.checkpoint), "--json")[0])
    expect((info["arch"], info["num_classes"]) == (ARCH, CLASSES), f"inspect .pth: {info}")


def check_inspect_keras(v: Venv, fx: Fixtures) -> None:
    info = json.loads(v.vrconvert("inspect", str(fx.keras), "--json")[0])
    expect((info["arch"], info["num_classes"], info["format"]) == (ARCH, CLASSES, ".keras"), f"inspect: {info}")


def check_t2k_novalidate(v: Venv, fx: Fixtures) -> None:
    out = v.scratch / "novalidate.keras"
    v.vrconvert("torch2keras", str(fx.checkpoint), str(out), "--no-validate")
    same_weights(out, fx)


def check_t2k(v: Venv, fx: Fixtures) -> None:
    out = v.scratch / "validated.keras"
    result = json.loads(v.vrconvert("torch2keras", str(fx.checkpoint), str(out), *CHECK, "--json")[0])
    expect(result["passed"] is True, f"torch2keras parity: {result}")
    expect(len(result["cases"]) == 2, "torch2keras checked no real clip (PyAV missing?)")
    backend = v.profile.env.get("KERAS_BACKEND", "tensorflow")
    expect(result["keras_backend"] == backend, f"torch2keras ran on {result['keras_backend']}, not {backend}")
    same_weights(out, fx)


def check_k2t(v: Venv, fx: Fixtures) -> None:
    with_safetensors = {"all", "safetensors"} & set(v.profile.extras.split(","))
    for suffix in (".pth", ".safetensors") if with_safetensors else (".pth",):
        out = v.scratch / f"back{suffix}"
        v.vrconvert("keras2torch", str(fx.keras), str(out))
        back = read_state(out)
        expect(set(back) == set(fx.state), f"keras2torch {suffix}: other keys")
        for key, value in fx.state.items():
            if not key.endswith("num_batches_tracked"):
                expect(np.array_equal(back[key], value), f"keras2torch {suffix}: {key} differs")


def check_validate(v: Venv, fx: Fixtures) -> None:
    report = json.loads(v.vrconvert("validate", str(fx.checkpoint), str(fx.keras), *CHECK, "--json")[0])
    expect(report["passed"] is True and len(report["cases"]) == 2, f"validate: {report}")
    backend = v.profile.env.get("KERAS_BACKEND", "tensorflow")
    expect(report["keras_backend"] == backend, f"validate ran on {report['keras_backend']}, not {backend}")


def check_predict(v: Venv, fx: Fixtures) -> None:
    got = json.loads(v.vrconvert("predict", str(fx.video), str(fx.keras), "--json")[0])
    ref = {label["index"]: label["probability"] for label in fx.predict["top"]}
    mine = {label["index"]: label["probability"] for label in got["top"]}
    expect(got["framework"] != fx.predict["framework"], "predict did not run the Keras file")
    expect(set(mine) == set(ref), f"predict: classes {sorted(mine)} vs torch's {sorted(ref)}")
    worst = max(abs(mine[i] - ref[i]) for i in ref)
    expect(worst <= 1e-5, f"predict: probabilities differ from torch's by {worst:.2e}")


def check_build(v: Venv, fx: Fixtures) -> None:
    """Untrained models on both sides, read back here: every key of the checkpoint's, same shapes."""
    for name in ("untrained.keras", "untrained.pth"):
        v.vrconvert("build", ARCH, name, "--num-classes", str(CLASSES))
        state = keras_state(v.scratch / name) if name.endswith(".keras") else read_state(v.scratch / name)
        shapes = {k: np.shape(a) for k, a in state.items() if not k.endswith("num_batches_tracked")}
        expect(shapes == {k: a.shape for k, a in fx.state.items() if not k.endswith("num_batches_tracked")}, name)


EXPORTS = {"saved_model": "model", "litert": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}
INT8_EXPORTS = {"openvino": "int8.xml", "onnx": "int8.onnx"}
CALIBRATION = ROOT / "tests" / "fixtures" / "clips" / "tree_15fps.mp4"  # another scene than the check's clip


def check_export(v: Venv, fx: Fixtures) -> None:
    """Every format, each loaded by its own runtime and checked against torch by the command itself."""
    for fmt, name in EXPORTS.items():
        doc = json.loads(
            v.vrconvert("export", str(fx.checkpoint), name, "--frames", "4", "--size", "32x32", "--json")[0]
        )
        expect(doc["passed"] is True and doc["format"] == fmt, f"export {fmt}: {doc}")
        expect(doc["input_shape"] == [None, 4, 32, 32, 3], f"export {fmt}: input {doc['input_shape']}")
        expect((v.scratch / name).exists(), f"export {fmt}: no {name}")
    for fmt, name in INT8_EXPORTS.items():  # NNCF and ONNX Runtime's static quantization, from this install
        args = ["export", str(fx.checkpoint), name, "--int8", "--calibration", str(CALIBRATION), "--frames", "4"]
        args += ["--size", "112x112", "--calibration-clips", "1", "--check-clips", "1", "--json"]
        doc = json.loads(v.vrconvert(*args)[0])
        expect(doc["passed"] is True and doc["precision"] == "int8", f"export --int8 {fmt}: {doc}")
        expect((v.scratch / name).exists(), f"export --int8 {fmt}: no {name}")


def _videos(v: Venv, fx: Fixtures) -> Path:
    """Two labelled copies of the packaged clip and one file that is not a video."""
    videos = v.scratch / "videos"
    for label in ("a", "b"):
        (videos / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(fx.video, videos / label / "clip.mp4")
    (videos / "a" / "broken.mp4").write_text("not a video\n")
    return videos


def check_evaluate(v: Venv, fx: Fixtures) -> None:
    """One worker with a report, then the same videos on a local Ray cluster started from this venv."""
    videos = _videos(v, fx)
    one = _evaluate(v, fx, videos, "one", "--threads", "1", "--report", "report.html")  # as each Ray actor
    ray = [str(v.path / "bin" / "ray")]
    head = ["start", "--head", "--node-ip-address=127.0.0.1", "--port=6391", "--num-cpus=2"]
    got, _, err, _ = run([*ray, *head, "--include-dashboard=false"], cwd=v.scratch, log=v.log)
    expect(got == 0, f"ray start: {err.strip()[-400:]}")
    try:  # from the repository's root, where a folder named vrconvert would shadow the installed package
        on_ray = _evaluate(v, fx, videos, "ray", "--ray", "127.0.0.1:6391", "--workers", "2", cwd=ROOT)
    finally:
        run([*ray, "stop", "--force"], cwd=v.scratch, log=v.log)
    expect(one == on_ray, "evaluate: Ray's results differ from one worker's")
    page = (v.scratch / "report.html").read_text()
    expect(page.count("data:image/png;base64,") == 2, "evaluate --report: the page lacks its two figures")


def _evaluate(v: Venv, fx: Fixtures, videos: Path, name: str, *extra: str, cwd: Path | None = None) -> list[str]:
    """One evaluate run into eval-NAME, its summary checked; its records without timings, sorted."""
    args = ["evaluate", str(fx.checkpoint), str(fx.keras), "--videos", str(videos), *CHECK, "--json"]
    summary = json.loads(v.vrconvert(*args, "--out", str(v.scratch / f"eval-{name}"), *extra, cwd=cwd)[0])
    counts = (summary["videos"], summary["evaluated"], summary["failures"])
    expect(counts == (3, 2, 1), f"evaluate {name}: {summary}")
    expect(summary["top1_agreement"] == 1.0 and summary["beyond_tolerance"] == 0, f"evaluate {name}: {summary}")
    records = (v.scratch / f"eval-{name}" / "results.jsonl").read_text().splitlines()
    return sorted(
        json.dumps({k: x for k, x in r.items() if k not in ("seconds", "worker")}, sort_keys=True)
        for r in map(json.loads, records)
    )


def check_validate_report(v: Venv, fx: Fixtures) -> None:
    v.vrconvert("validate", str(fx.checkpoint), str(fx.keras), *CHECK, "--report", "validate.html")
    expect("data:image/png;base64," in (v.scratch / "validate.html").read_text(), "validate --report: no figure")


def _class_folders(v: Venv, fx: Fixtures) -> Path:
    """Two classes of two copies each of the packaged clip: enough for the command to run end to end."""
    videos = v.scratch / "classes"
    for label in ("a", "b"):
        (videos / label).mkdir(parents=True, exist_ok=True)
        for i in (1, 2):
            shutil.copy(fx.video, videos / label / f"clip{i}.mp4")
    return videos


FINETUNE = ["--epochs", "1", "--frames", "4", "--size", "32", "--batch-size", "2", "--val-split", "0.5", "--lr", "1e-4"]


def check_finetune(v: Venv, fx: Fixtures) -> None:
    """One epoch from the checkpoint's backbone, a fresh 2-class head: model.pth in torchvision's layout."""
    out = v.scratch / "finetuned"
    doc = json.loads(v.vrconvert("finetune", str(_class_folders(v, fx)), str(out), "--weights", str(fx.checkpoint),
                                 *FINETUNE, "--json")[0])  # fmt: skip
    expect([e["epoch"] for e in doc["epochs"]] == [1] and doc["classes"] == ["a", "b"], f"finetune: {doc}")
    expect(doc["parity_max_rel_diff"] <= 1e-4, f"finetune: model.keras and model.pth differ: {doc}")
    back = read_state(out / "model.pth")
    expect(set(back) == set(fx.state) and back["fc.weight"].shape == (2, fx.state["fc.weight"].shape[1]), "finetune")
    files = {"model.keras", "model.pth", "history.json", "run.json"}
    files |= {"curves.html"} if "evaluate" in v.profile.extras else set()  # the page needs matplotlib
    expect({p.name for p in out.iterdir()} == files, f"finetune: {sorted(p.name for p in out.iterdir())}")


def check_validate_train(v: Venv, fx: Fixtures) -> None:
    """One SGD step in torch and Keras from the same weights: logits, loss, every gradient, weight and
    BatchNorm statistic judged against float64 torch (passes for this mc3_18 pair at 4x32x32 on TensorFlow)."""
    out, _ = v.vrconvert("validate", str(fx.checkpoint), str(fx.keras), "--train", "--steps", "1", "--frames", "4",
                         "--size", "32x32", "--json")  # fmt: skip
    report = json.loads(out)
    backend = v.profile.env.get("KERAS_BACKEND", "tensorflow")
    expect(report["passed"] is True and report["backend"] == backend, f"validate --train: {report}")


CHECKS: dict[str, Callable[[Venv, Fixtures], None]] = {
    "help": check_help,
    "list": check_list,
    "mapping": check_mapping,
    "inspect-pth": check_inspect_pth,
    "inspect-keras": check_inspect_keras,
    "t2k-novalidate": check_t2k_novalidate,
    "t2k": check_t2k,
    "k2t": check_k2t,
    "validate": check_validate,
    "predict": check_predict,
    "build": check_build,
    "export": check_export,
    "evaluate": check_evaluate,
    "validate-report": check_validate_report,
    "finetune": check_finetune,
    "validate-train": check_validate_train,
}

# The same commands where the profile lacks what they need: (arguments, given the fixtures)
REFUSALS: dict[str, Callable[[Venv, Fixtures], list[str]]] = {
    "t2k": lambda v, fx: ["torch2keras", str(fx.checkpoint), "refused.keras"],
    "t2k-novalidate": lambda v, fx: ["torch2keras", str(fx.checkpoint), "refused.keras", "--no-validate"],
    "k2t": lambda v, fx: ["keras2torch", str(fx.keras), "refused.pth"],
    "validate": lambda v, fx: ["validate", str(fx.checkpoint), str(fx.keras)],
    "predict": lambda v, fx: ["predict", str(fx.video), str(fx.keras)],
    "inspect-keras": lambda v, fx: ["inspect", str(fx.keras)],
    "finetune": lambda v, fx: ["finetune", str(_class_folders(v, fx)), "refused.d", "--weights", str(fx.checkpoint)],
    "validate-train": lambda v, fx: ["validate", str(fx.checkpoint), str(fx.keras), "--train"],
}


def check_refusal(v: Venv, fx: Fixtures, key: str, extra: str) -> None:
    args = REFUSALS[key](v, fx)
    _, err = v.vrconvert(*args, status=2)
    lines = err.splitlines()
    expect(len(lines) == 1, f"{args[0]}: {len(lines)} stderr lines, not one: {err[-600:]}")
    named = [e for e in extra.split("|") if f"pip install 'vrconvert[{e}]'" in lines[0]]  # a|b: either will do
    expect(bool(named), f"{args[0]}: names no [{extra}] extra: {lines[0]}")
    expect(not any(v.scratch.glob("refused.*")), f"{args[0]}: left an output behind")


# ---------------------------------------------------------------------------------------------------
# Profiles


PACKAGE_DIRS = ("package", "converter", "cli", "models_tf", "models_torch")  # setup.py's package_dir


def build_wheel(log) -> Path:
    folder = WORK / "wheel"
    got, _, err, _ = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(folder), str(ROOT)],
        cwd=ROOT,
        log=log,
    )
    expect(got == 0, f"building the wheel failed: {err[-2000:]}")
    (wheel,) = folder.glob("vrconvert-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        f"vrconvert/{'' if top == 'package' else top + '/'}{path.relative_to(ROOT / top)}"
        for top in PACKAGE_DIRS
        for path in (ROOT / top).rglob("*.py")
    }
    missing = sorted(sources - shipped)
    expect(not missing, f"the wheel leaves out {missing} (a subpackage missing from pyproject's packages?)")
    return wheel


def site_packages_mb(venv: Path) -> float:
    (site,) = venv.glob("lib/python*/site-packages")
    return sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def install(profile: Profile, wheel: Path, log) -> Venv:
    path = WORK / profile.name
    v = Venv(profile, path, log)
    v.scratch.mkdir(parents=True)
    start = time.perf_counter()
    got, _, err, _ = run([sys.executable, "-m", "venv", str(path)], log=log)
    expect(got == 0, f"venv: {err}")
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if profile.torch:
        got, _, err, _ = run([*pip, TORCH], log=log)
        expect(got == 0, f"pip install {TORCH}: {err[-2000:]}")
    target = f"{wheel}[{profile.extras}]" if profile.extras else str(wheel)
    got, _, err, _ = run([*pip, "-c", str(ROOT / "constraints.txt"), target], log=log)
    expect(got == 0, f"pip install {target}: {err[-2000:]}")
    v.seconds["install"] = time.perf_counter() - start
    got, out, err, _ = run([str(path / "bin" / "python"), "-m", "pip", "list", "--format=json"], log=log)
    have = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}
    expect(have.get("vrconvert") == "0.1.0", "vrconvert not installed from the wheel")
    extra_found = sorted(set(profile.absent) & set(have))
    expect(not extra_found, f"{profile.name} installs {extra_found}, which it must not")
    if profile.torch:
        expect(have.get("torch", "").startswith("2.13.0"), f"torch {have.get('torch')}, not 2.13.0")
    got, out, _, _ = run([str(path / "bin" / "python"), "-c", "import vrconvert; print(vrconvert.__file__)"], log=log)
    expect(str(path) in out, f"vrconvert imported from {out.strip()}, not the venv")  # not the repo
    return v


def run_profile(profile: Profile, wheel: Path, fx: Fixtures) -> dict:
    log_path = WORK / f"{profile.name}.log"
    with log_path.open("w") as log:
        result = {"profile": profile.name, "extras": profile.extras, "failures": []}
        try:
            v = install(profile, wheel, log)
        except Failed as exc:
            result["failures"].append(f"install: {exc}")
            return result
        result["site_packages_mb"] = round(site_packages_mb(v.path))
        for key in profile.runs:
            try:
                CHECKS[key](v, fx)
            except Failed as exc:
                result["failures"].append(f"{key}: {exc}")
        for key, extra in profile.refuses:
            try:
                check_refusal(v, fx, key, extra)
            except Failed as exc:
                result["failures"].append(f"refuses {key}: {exc}")
        result["seconds"] = {k: round(s, 1) for k, s in v.seconds.items()}
        log.write(json.dumps(result, indent=1) + "\n")
        return result


# ---------------------------------------------------------------------------------------------------
# Optional measurement: start-up cost of the file-only commands on a full-size r2plus1d_18


MEASURED = ("P1", "P2")  # the README's figures: a user of everything, and a Keras user without torch


def measure(names: list[str], repeats: int, log) -> list[dict]:
    folder = WORK / "measure"
    folder.mkdir()
    vr = [sys.executable, "-m", "vrconvert"]
    ckpt, keras = folder / "r2plus1d_18.pth", folder / "r2plus1d_18.keras"
    expect(run([*vr, "build", "r2plus1d_18", str(ckpt)], cwd=folder, log=log)[0] == 0, "build r2plus1d_18")
    expect(run([*vr, "torch2keras", str(ckpt), str(keras), "--no-validate"], cwd=folder, log=log)[0] == 0, "t2k")
    commands = {
        "torch2keras --no-validate": lambda p: ["torch2keras", str(ckpt), str(folder / f"{p}.keras"), "--no-validate"],
        "keras2torch": lambda p: ["keras2torch", str(keras), str(folder / f"{p}.pth")],
    }
    times: dict[tuple[str, str], list[float]] = {}
    outcome: dict[tuple[str, str], str] = {}
    profiles = [p for p in PROFILES if p.name in names and p.name in MEASURED]
    for _ in range(repeats):  # profiles alternate within each round (the machine is shared)
        for label, args in commands.items():
            for p in profiles:
                exe = str(WORK / p.name / "bin" / "vrconvert")
                got, _, err, seconds = run([exe, *args(p.name), "--force"], env=p.env, cwd=folder, log=log)
                times.setdefault((p.name, label), []).append(seconds)
                outcome[(p.name, label)] = "ok" if got == 0 else f"exit {got}: {err.strip()}"
    return [
        {"profile": p, "command": c, "median_s": round(statistics.median(t), 2), "runs": [round(x, 2) for x in t],
         "outcome": outcome[(p, c)]}
        for (p, c), t in times.items()
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="*", help="profile names (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="profiles installed and checked at once")
    parser.add_argument("--measure", action="store_true", help="also time r2plus1d_18 file commands (P1, P2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    chosen = [p for p in PROFILES if not args.profiles or p.name in args.profiles]
    if not chosen:
        parser.error(f"no such profile; known: {', '.join(p.name for p in PROFILES)}")
    start = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with (WORK / "setup.log").open("w") as log:
        wheel = build_wheel(log)
        fx = make_fixtures(WORK / "fixtures", log)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda p: run_profile(p, wheel, fx), chosen))
    failed = False
    for r in results:
        status = "ok" if not r["failures"] else "FAILED"
        failed |= bool(r["failures"])
        print(f"{r['profile']} vrconvert[{r['extras']}]: {status}; site-packages {r.get('site_packages_mb', '?')} MB; "
              f"seconds {json.dumps(r.get('seconds', {}))}")  # fmt: skip
        for failure in r["failures"]:
            print(f"    {failure}")
    if args.measure:
        with (WORK / "measure.log").open("w") as log:
            rows = measure([p.name for p in chosen], args.repeats, log)
        for row in rows:
            print(json.dumps(row))
    print(f"install test: {'FAILED' if failed else 'passed'} in {time.perf_counter() - start:.0f} s (logs: {WORK})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
