"""Where the two models run: device, Keras backend and TF32, set up identically on both sides.

Keras fixes its backend when it is first imported, so `select_backend` must run before anything
imports Keras; the CLI re-runs a command in a child process when that is too late. On Ampere and
Hopper GPUs torch, TensorFlow and XLA may all compute float32 convolutions in TF32 by default;
strict parity switches it off everywhere, and every report says which was used.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Literal

from vrconvert.converter.errors import InputError

Device = Literal["cpu", "cuda"]
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def current_backend() -> str | None:
    """The Keras backend already fixed in this process, or None while Keras is not imported."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    return keras.backend.backend()


def installed(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it (False where it was hidden)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent missing, or sys.modules[module] set to None
        return False


# What each Keras backend imports beyond Keras itself: its numpy backend needs both jax and scipy.
BACKEND_NEEDS = {
    "tensorflow": ("tensorflow",),
    "jax": ("jax", "jaxlib"),
    "torch": ("torch",),
    "numpy": ("jax", "scipy"),
}
# The backend a parity-checking command uses when none is asked for: the first one installed.
RUN_BACKENDS = ("tensorflow", "jax", "torch")
# The backend for commands that only read and write Keras files, first installed wins; ordered by
# the measured start-up of `keras2torch`/`torch2keras --no-validate` (README, "Which Keras backend").
FILE_BACKENDS = ("numpy", "torch", "tensorflow", "jax")


def backend_installed(name: str) -> bool:
    return all(installed(module) for module in BACKEND_NEEDS[name])


def resolve_backend(name: str | None) -> str:
    """The backend a command asked for: `name`, else $KERAS_BACKEND, else the first of TensorFlow,
    JAX and torch that is installed (TensorFlow when none is, so the error names it)."""
    chosen = name or os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen
    return next((b for b in RUN_BACKENDS if backend_installed(b)), "tensorflow")


def require(*modules: str) -> None:
    """Before a command starts any work: a ModuleNotFoundError naming the first of `modules` that is not
    installed (the CLI turns it into one line naming the extra), rather than failing half-way."""
    for module in modules:
        if not installed(module):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def require_parity_check() -> None:
    """torch, Keras and the backend Keras will run on: what running both models needs."""
    require("torch", "keras", *BACKEND_NEEDS.get(current_backend() or resolve_backend(None), ()))


def select_backend(name: str) -> bool:
    """Arranges for Keras to use `name`; False when Keras already runs on another one in this process."""
    if name not in KERAS_BACKENDS:
        raise InputError(f"unknown Keras backend {name!r}; choose one of {', '.join(KERAS_BACKENDS)}")
    fixed = current_backend()
    if fixed is None:
        os.environ["KERAS_BACKEND"] = name
        return True
    return fixed == name


def select_backend_for_files() -> str:
    """For commands that build, load or save Keras models but never run them (`torch2keras
    --no-validate`, `keras2torch`, `inspect`, `build`): the files are the same on every backend, so
    Keras runs on the quickest one to start that this install can import (FILE_BACKENDS), whatever
    $KERAS_BACKEND says. Off TensorFlow, TensorFlow is kept out as if it were not installed (a
    configuration Keras supports; otherwise its serializer imports TensorFlow just to rule out TF
    types). A no-op once Keras is imported (in-process API use keeps the user's backend).
    Returns the backend Keras uses.
    """
    fixed = current_backend()
    if fixed is not None:
        return fixed
    if not installed("keras"):
        raise ModuleNotFoundError("No module named 'keras'", name="keras")
    chosen = next((b for b in FILE_BACKENDS if backend_installed(b)), None)
    if chosen is None:  # the CLI names the extra to install from `name`
        raise ModuleNotFoundError("Keras has none of its backends (TensorFlow, torch, JAX)", name="tensorflow")
    os.environ["KERAS_BACKEND"] = chosen
    if chosen != "tensorflow":
        sys.modules.setdefault("tensorflow", None)  # type: ignore[assignment]
    return chosen


@dataclass(frozen=True)
class Runtime:
    """The settings both models run under, as the report states them."""

    device: Device
    keras_backend: str
    tf32: bool
    dtype: str = "float32"

    def describe(self) -> str:
        tf32 = "TF32 on" if self.tf32 else "TF32 off"
        return f"device {self.device}, Keras backend {self.keras_backend}, {self.dtype}, {tf32}"

    def as_dict(self) -> dict:
        return {"device": self.device, "keras_backend": self.keras_backend, "dtype": self.dtype, "tf32": self.tf32}

    def torch_device(self):
        import torch

        return torch.device(self.device)

    def keras_scope(self):
        """A scope in which Keras creates variables and runs on this device."""
        import keras

        return keras.device("gpu:0" if self.device == "cuda" else "cpu:0")


def prepare(device: Device, allow_tf32: bool = False) -> Runtime:
    """Checks that both frameworks can use `device` and sets TF32 on both sides; returns the settings."""
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, not {device!r}")
    import torch

    backend = current_backend() or resolve_backend(None)
    if device == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise InputError(f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU on this machine")
        _check_keras_gpu(backend)
    _set_tf32(backend, device == "cuda" and allow_tf32)
    return Runtime(device, backend, tf32=device == "cuda" and allow_tf32)


def _check_keras_gpu(backend: str) -> None:
    hint = "; run Keras on another backend with --keras-backend jax or torch"
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            raise InputError(f"--device cuda: TensorFlow {tf.__version__} sees no GPU (a CPU-only build?){hint}")
    elif backend == "jax":
        import jax

        try:
            jax.devices("gpu")
        except RuntimeError as exc:
            raise InputError(f"--device cuda: JAX {jax.__version__} sees no GPU (a CPU-only jaxlib?)") from exc


def _set_tf32(backend: str, allow: bool) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers fp32_precision; the flags still apply
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(allow)
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if allow else "highest")
