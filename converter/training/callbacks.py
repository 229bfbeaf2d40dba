"""What `fit` leaves behind each epoch, so that a killed run resumes where it stopped.

Per epoch, in this order: the results file (every epoch so far, one atomic write), then the checkpoint
(`checkpoint/epoch-NNNN.keras`: weights, optimizer state and step count, one atomic write; the older one
is removed after). A kill between the two leaves results one epoch ahead of the checkpoint, which a
resume trims: the checkpoint's epoch is the truth.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from vrconvert.converter.formats.output import atomic_path

HISTORY = "history.json"
CHECKPOINTS = "checkpoint"
_EPOCH_FILE = re.compile(r"epoch-(\d{4})\.keras")
KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def write_json(path: Path, value) -> None:
    with atomic_path(path, path.suffix, force=True) as tmp:
        tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


def read_history(out: Path) -> list[dict]:
    path = out / HISTORY
    return json.loads(path.read_text(encoding="utf-8"))["epochs"] if path.exists() else []


def latest_checkpoint(out: Path) -> tuple[int, Path | None]:
    """(the last completed epoch, its checkpoint) or (0, None); temporary files a kill left are removed."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return 0, None
    found = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):  # an atomic write cut short by a kill
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        elif match := _EPOCH_FILE.fullmatch(entry.name):
            found.append((int(match[1]), entry))
    return max(found) if found else (0, None)


def epoch_checkpoint(out: Path, history: list[dict]):
    """The Keras callback writing the results file and the checkpoint after each epoch."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            record = {"epoch": epoch + 1, **{k: _number(logs.get(k)) for k in KEYS}}
            record["seconds"] = round(time.perf_counter() - self.start, 3)
            del history[epoch:]
            history.append(record)
            write_json(out / HISTORY, {"epochs": history})
            folder = out / CHECKPOINTS
            folder.mkdir(exist_ok=True)
            target = folder / f"epoch-{epoch + 1:04d}.keras"
            with atomic_path(target, ".keras", force=True) as tmp:
                self.model.save(str(tmp))
            for older in folder.glob("epoch-*.keras"):
                if older != target:
                    older.unlink()

    return EpochCheckpoint()


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(np.asarray(value))
    return value if np.isfinite(value) else None
