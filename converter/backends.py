"""Which Keras backend a command runs on, chosen before anything imports Keras (Keras fixes its backend at
its first import), and which optional modules a command needs before it starts any work."""

from __future__ import annotations

import importlib.util
import os
import sys

from vrconvert.converter.errors import InputError

# Keras 3's backends; a parity-checking command given none runs on the first one installed.
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
    return next((b for b in KERAS_BACKENDS if backend_installed(b)), "tensorflow")


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
