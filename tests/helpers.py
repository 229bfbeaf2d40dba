"""Test helpers that deliberately do NOT use vrconvert's mapping: the simplest weight copy there is,
so that the builders are checked independently of the converter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np


def copy_to_keras(model, state: dict[str, np.ndarray]) -> None:
    """Copies a torch-named numpy state dict into a vrconvert Keras model, layer by layer."""
    import keras

    for layer in model.layers:
        path = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv3D):
            layer.set_weights([state[path + ".weight"].transpose(2, 3, 4, 1, 0)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([state[f"{path}.{s}"] for s in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, keras.layers.Dense):
            layer.set_weights([state[path + ".weight"].T, state[path + ".bias"]])


def random_state_dict(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights for a torch model, BatchNorm statistics randomised too (a swapped mapping shows)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if key.endswith("num_batches_tracked"):
            out[key] = np.array(rng.integers(0, 1000), dtype=np.int64)
        elif not tensor.is_floating_point():  # index buffers (Swin3D's relative positions) are structure
            out[key] = tensor.numpy().copy()
        elif key.endswith("running_var") or (key.endswith("weight") and len(shape) == 1):
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) == 1:
            out[key] = rng.normal(0, 0.1, shape).astype(np.float32)
        else:
            out[key] = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape).astype(np.float32)
    return out


def run_python(code: str, *, backend: str = "tensorflow", timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (not in the repo folder, so nothing is imported by accident)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def make_checkpoint(arch: str, num_classes: int = 400, seed: int = 0):
    """(torch model with random weights and BatchNorm statistics, its numpy state dict)."""
    import torch

    from vrconvert import models_torch

    model = models_torch.build(arch, num_classes=num_classes).eval()
    state = random_state_dict(model, seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model, state


def save_state(state: dict[str, np.ndarray], path, **options) -> None:
    """Saves a numpy state dict exactly as torchvision's users do: torch.save of tensors."""
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path, **options)


def torch_logits(model, clip: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(clip)).numpy()


def invoke(args: list[str], capsys) -> tuple[int, str, str]:
    """Runs the real CLI entry point in-process (error table included): (exit status, stdout, stderr)."""
    from vrconvert.cli.errors import run_guarded
    from vrconvert.cli.main import cli

    capsys.readouterr()
    try:
        run_guarded(lambda: cli.main(args=[str(a) for a in args], standalone_mode=False))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def write_video(path, *, frames: int = 12, size: tuple[int, int] = (120, 160), seed: int = 0) -> None:
    """A small MPEG-4 video of moving, noisy colour gradients (a stand-in for more real footage)."""
    import av

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]]
    phase = rng.integers(0, 256, 3)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.height, stream.width, stream.pix_fmt = *size, "yuv420p"
        for t in range(frames):
            image = np.stack([(cols * (1 + k) + rows * (2 - k) + 7 * t + phase[k]) % 256 for k in range(3)], -1)
            image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())


# Code that makes torch unimportable in a child process, as if not installed. A meta-path finder rather than
# `sys.modules["torch"] = None`: SciPy's array API helpers (pulled in by scikit-learn, an NNCF dependency,
# when Keras is imported) dereference whatever `sys.modules["torch"]` holds.
NO_TORCH = (
    "import importlib.abc, sys\n"
    "class _NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, _NoTorch())\n"
)
