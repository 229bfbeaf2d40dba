"""`vrconvert finetune`: class folders of videos -> a fine-tuned Keras model and its torchvision twin.

    scan + split by file -> decode in worker threads -> backbone with `weights`, fresh head of K
    classes, torchvision's transform inside (uint8 frames in) -> Keras `fit`, results and a checkpoint
    per epoch -> model.keras + model.pth (keras2torch, parity checked) + the curves page.

Everything the user gave is checked (folders, every video, the weights) before OUT is created. OUT then
holds `run.json` (settings and the split), the results file and the last checkpoint; `resume` continues
from that checkpoint (weights, optimizer state, epoch), with the same settings. `model.keras` and
`model.pth` appear together at the end, only once they agree.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import families, spec
from vrconvert.converter.arch.families import expand
from vrconvert.converter.errors import InputError
from vrconvert.converter.training import callbacks, dataset
from vrconvert.converter.training.callbacks import write_json

RUN = "run.json"
CURVES = "curves.html"
PRECISIONS = ("float32", "mixed_bfloat16")
OPTIMIZERS = ("sgd", "adam")
HEAD_STAGES = ("avgpool", "fc")
# the settings a resumed run must share with the run it continues (epochs may grow)
FIXED = (
    "arch",
    "frames",
    "size",
    "clips",
    "val_split",
    "freeze_until",
    "lr",
    "momentum",
    "batch_size",
    "seed",
    "precision",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    arch: str | None = None
    epochs: int = 5
    batch_size: int = 8
    frames: int = 16
    size: int = 112
    clips: int = 1
    freeze_until: str | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    val_split: float = 0.2
    seed: int = 0
    precision: str = "float32"
    workers: int | None = None
    verbose: int | str = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneResult:
    out: str
    arch: str
    classes: tuple[str, ...]
    train_clips: int
    val_clips: int
    epochs: list[dict]
    resumed_from: int | None
    parity_max_rel_diff: float
    seconds: float


def variant_for(arch: str, classes: int, size: int) -> spec.Arch:
    """The arch with K classes and torchvision's transform scaled to a `size` crop (112: Kinetics' own
    128x171 resize; otherwise the same 128:112 and 171:112 ratios, rounded)."""
    try:
        variant = families.get(arch)
    except KeyError as exc:
        raise InputError(exc.args[0]) from None
    if type(variant) is not spec.Arch:
        raise InputError(
            f"finetune covers the video ResNets (r3d_18, mc3_18, r2plus1d_18 and their family); {arch} is not "
            "one: its stage names for --freeze-until and its fixed-size transform are not mapped yet "
            "(fine-tune it in Python with models_tf.build(..., weights=...) and keras2torch)"
        )
    crop = variant.preprocessing.crop[0]
    resize = tuple(round(n * size / crop) for n in variant.preprocessing.resize)
    preprocessing = dataclasses.replace(variant.preprocessing, resize=resize, crop=(size, size))
    return dataclasses.replace(variant.with_classes(classes), preprocessing=preprocessing)


def stages(variant: spec.Arch) -> list[str]:
    """The backbone's stages in network order (stem, layer1, ...), the head's left out."""
    names = []
    for layer in expand(variant):
        stage = layer.name.split(".")[0]
        if stage not in names and stage not in HEAD_STAGES:
            names.append(stage)
    return names


def detect_arch(weights) -> str:
    """The arch of a weights file, as `keras2torch` and `torch2keras` detect it."""
    from vrconvert.converter.formats.keras_io import keras_suffix

    path = Path(weights)
    if not path.exists():
        raise InputError(f"{weights}: no such file (a pretrained name such as 'kinetics400' needs --arch)")
    if keras_suffix(path) is not None:
        from vrconvert.models_tf import weights as keras_weights

        return keras_weights.read_keras_file(path, None, None, None)[0].name
    from vrconvert.converter.conversion.torch_model import load_state

    return load_state(path, None)[1].name


def curves_available() -> bool:
    """Whether the curves page can be drawn (matplotlib and Jinja2 come with the `evaluate` extra)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("matplotlib", "jinja2"))


def _check(settings: Settings) -> None:
    if settings.optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {settings.optimizer!r}")
    if settings.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {settings.precision!r}")
    for name in ("epochs", "batch_size", "frames", "size", "clips"):
        if getattr(settings, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if not settings.lr > 0:
        raise InputError(f"--lr must be positive, not {settings.lr}")


def _fixed(settings: Settings, arch: str) -> dict:
    return {**{k: getattr(settings, k) for k in FIXED}, "arch": arch}


def finetune(videos: str | Path, out: str | Path, *, weights, resume: bool = False, **options) -> FinetuneResult:
    """Fine-tunes `weights` (a file vrconvert reads, or "kinetics400" with `arch`) on the class folders
    in `videos`; writes OUT/model.keras, OUT/model.pth, OUT/history.json and OUT/curves.html.
    `options` are `Settings`' fields."""
    import importlib.util

    from vrconvert.converter.stderr import third_party_quiet

    start = time.perf_counter()
    if importlib.util.find_spec("torch") is None:  # said before hours of training, not at the end
        raise InputError(
            "finetune writes model.pth and checks it against torch, which is not installed: "
            "pip install 'vrconvert[torch]'"
        )
    settings, out = Settings(**options), Path(out)
    _check(settings)
    record = _check_out(out, resume)  # before Keras is imported: a refusal is instant
    if not curves_available():  # said before training, not after it
        warnings.warn(
            f"{out / CURVES} will not be written: it needs matplotlib (pip install 'vrconvert[evaluate]'); "
            f"{out / callbacks.HISTORY} holds the same figures",
            stacklevel=2,
        )
    with third_party_quiet():
        return _finetune(Path(videos), out, weights, record, settings, start)


def _check_out(out: Path, resume: bool) -> dict | None:
    """The run record to resume, or None for a new run; refuses an OUT that does not fit."""
    if resume:
        if not (out / RUN).is_file():
            raise InputError(f"{out}: no run to resume here (no {RUN})")
        if (out / "model.pth").exists():
            raise InputError(f"{out}: this run is complete (model.keras and model.pth are there)")
        try:
            return json.loads((out / RUN).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{out / RUN}: unreadable ({type(exc).__name__})") from None
    if out.exists():
        raise InputError(f"{out}: already exists (pass --resume to continue a run there)")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such directory")
    return None


def _finetune(videos: Path, out: Path, weights, record: dict | None, settings: Settings, start: float):
    resume, resumed = record is not None, None
    arch = settings.arch or (record["settings"]["arch"] if resume else detect_arch(weights))
    files = dataset.scan(videos)
    split = dataset.split(files, settings.val_split)
    variant = variant_for(arch, len(split.classes), settings.size)
    names = stages(variant)
    if settings.freeze_until is not None and settings.freeze_until not in names:
        raise InputError(f"--freeze-until must be one of {', '.join(names)}, not {settings.freeze_until!r}")
    if resume:
        _same_run(record, {"settings": _fixed(settings, arch), "split": split.as_dict()}, out)
    decode = {"frames": settings.frames, "clips": settings.clips, "preprocessing": variant.preprocessing}
    train = dataset.decode(videos, split.train, workers=settings.workers, **decode)
    val = dataset.decode(videos, split.val, workers=settings.workers, **decode) if split.val else None

    import keras

    keras.utils.set_random_seed(settings.seed)
    done, checkpoint = callbacks.latest_checkpoint(out) if resume else (0, None)
    if checkpoint is not None:
        model = _load_checkpoint(checkpoint)
        resumed = done
    else:
        model = build(variant, weights, settings, names)  # raises on bad weights before OUT exists
        if not resume:
            out.mkdir()
        write_json(out / RUN, {"settings": _fixed(settings, arch), "split": split.as_dict(), "weights": str(weights)})
    history = callbacks.read_history(out)[:done]
    if done < settings.epochs:
        model.fit(
            train.frames,
            train.labels,
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            initial_epoch=done,
            validation_data=(val.frames, val.labels) if val is not None else None,
            shuffle=True,
            callbacks=[callbacks.epoch_checkpoint(out, history)],
            verbose=settings.verbose,
        )
    parity = finish(model, variant, out, val or train)
    run = {
        "arch": arch,
        "weights": str(weights),
        "classes": list(split.classes),
        "train_clips": len(train.labels),
        "val_clips": 0 if val is None else len(val.labels),
        "frames": settings.frames,
        "size": settings.size,
    }
    return _report(out, run, history, resumed=resumed, parity=parity, start=start)


def _same_run(record: dict, mine: dict, out: Path) -> None:
    """A resumed run must have the settings and the split of the run it continues."""
    for key in ("settings", "split"):
        theirs = record[key] if key == "split" else {k: record[key].get(k) for k in FIXED}
        if mine[key] != theirs:
            what = [k for k in FIXED if mine[key].get(k) != theirs.get(k)] if key == "settings" else ["the videos"]
            raise InputError(f"{out}: the run there was started with other {', '.join(what)}; resume with the same")


def _report(out: Path, run: dict, history: list, *, resumed, parity: float, start: float) -> FinetuneResult:
    """The curves page, the checkpoints gone, and what the run did."""
    if curves_available():
        from vrconvert.converter.evaluate import report

        report.training_page(run, history, out / CURVES)
    shutil.rmtree(out / callbacks.CHECKPOINTS, ignore_errors=True)
    return FinetuneResult(
        out=str(out),
        arch=run["arch"],
        classes=tuple(run["classes"]),
        train_clips=run["train_clips"],
        val_clips=run["val_clips"],
        epochs=history,
        resumed_from=resumed,
        parity_max_rel_diff=parity,
        seconds=time.perf_counter() - start,
    )


def _load_checkpoint(path: Path):
    import keras

    from vrconvert.models_tf import layout

    try:
        model = keras.saving.load_model(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot load this checkpoint ({type(exc).__name__}); start a new run") from None
    # a torch-backend run trains the channels-first twin; TensorFlow's CPU convolutions are channels-last only
    if layout.channels_first(model) and keras.backend.backend() != "torch":
        raise InputError(f"{path}: this run was trained on Keras' torch backend; resume it with KERAS_BACKEND=torch")
    return model


def build(variant: spec.Arch, weights, settings: Settings, names: list[str]):
    """The compiled training model: uint8 frames in, `weights`' backbone, a fresh head of K classes."""
    import keras

    from vrconvert import models_tf
    from vrconvert.models_tf import layout
    from vrconvert.models_tf.preprocessing import PREFIX

    network = models_tf.build(variant.name, weights=weights, num_classes=variant.num_classes)
    model = models_tf.build(variant, include_preprocessing=True, input_shape=(settings.frames, None, None, 3))
    if settings.precision != "float32":  # the transform (its uint8 rounding) and the head stay float32

        def clone(layer):
            keep = layer.name.startswith(PREFIX) or layer.name == "fc"
            return layer.__class__.from_config(
                {**layer.get_config(), "dtype": "float32" if keep else settings.precision}
            )

        model = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(network.get_layer(layer.name).get_weights())
    model = layout.for_training(model)  # on torch: about half the step time of the channels-last model
    if settings.freeze_until is not None:
        frozen = set(names[: names.index(settings.freeze_until) + 1])
        for layer in model.layers:
            if layer.name.split("_")[0] in frozen:
                layer.trainable = False  # Keras' semantics: a frozen BatchNorm runs in inference mode
    if settings.optimizer == "adam":
        optimizer = keras.optimizers.Adam(settings.lr)
    else:
        optimizer = keras.optimizers.SGD(settings.lr, momentum=settings.momentum)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def finish(model, variant: spec.Arch, out: Path, clips: dataset.Clips) -> float:
    """model.keras (float32, no optimizer) and model.pth through keras2torch, checked against each other
    on real clips; both removed again if they disagree. The worst relative logits difference."""
    from vrconvert import models_tf
    from vrconvert.converter.conversion.convert import keras_to_torch
    from vrconvert.converter.formats import checkpoint
    from vrconvert.converter.parity import validate as validator
    from vrconvert.models_tf import weights as keras_weights

    final = models_tf.build(variant, include_preprocessing=True, input_shape=(clips.frames.shape[1], None, None, 3))
    for layer in final.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    keras_weights.save(final, out / "model.keras", ".keras")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the note that a state dict has no input contract: said in the README
            keras_to_torch(out / "model.keras", out / "model.pth")
        state = checkpoint.read_checkpoint(out / "model.pth").state
        picked = np.linspace(0, len(clips.labels) - 1, min(2, len(clips.labels))).round().astype(int)
        cases = {f"clip {i}": clips.frames[i : i + 1] for i in picked}
        report = validator.check_conversion(variant, state, final, cases, validator.FRAMES_TOLERANCE)
    except BaseException:
        for name in ("model.keras", "model.pth"):
            (out / name).unlink(missing_ok=True)
        raise
    return float(report.worst.max_rel_diff)
