"""Where the two models run: device and TF32, set up identically on both sides (the Keras backend is
chosen in `converter.backends`, before Keras is imported). On Ampere and
Hopper GPUs torch, TensorFlow and XLA may all compute float32 convolutions in TF32 by default;
strict parity switches it off everywhere, and every report says which was used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

from vrconvert.converter.backends import current_backend, resolve_backend
from vrconvert.converter.errors import InputError

Device = Literal["cpu", "cuda"]


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
