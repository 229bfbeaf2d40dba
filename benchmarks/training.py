"""Training benchmark (part of `make bench`; alone: `benchmarks/run.py --only training`): one SGD step
of Keras' compiled train function (`model.compile` with its defaults, then `train_on_batch`: the step
`fit` runs per batch) on each Keras backend against torch's own loop (`zero_grad`, forward, cross-entropy,
`backward`, `optimizer.step()`), BatchNorm in training mode, the same weights, batch and clips.

The design is benchmarks/inference.py's: each side in a process of its own, one side computing at a
time, the starting side rotating round by round, medians; every side's first step (which traces or
compiles) is not timed, its loss is compared with torch's as a check that the sides do the same work.
The Keras model is the channels-last one `models_tf.build` gives (what a user compiles and fits); on
the torch backend it is also timed as the channels-first twin (`models_tf.layout.derive`), which
`vrconvert finetune` and `validate --train` train there. The torch model is `models_torch.build`. Usage:

    python benchmarks/training.py [--quick] [--arch A] [--batch N] [--frames T] [--size S] [--rounds N] [--out DIR]

`--serve SIDE` is a worker, as in benchmarks/inference.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from inference import KERAS_BACKENDS, Side  # noqa: E402  (the same worker protocol)

TARGETS = {"tensorflow": 1.0, "torch": 1.0}  # Keras/torch step time, at most; JAX has none
# (Keras backend, model layout) per timed Keras side; the side's name is "keras-" + backend [+ "-first"]
KERAS_SIDES = (*((b, "channels_last") for b in KERAS_BACKENDS), ("torch", "channels_first"))
LR, MOMENTUM = 0.01, 0.9


def batch_of(batch: int, frames: int, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The timed clips (torch layout N, 3, T, H, W) and labels; every side draws the same."""
    rng = np.random.default_rng(0)
    clips = rng.standard_normal((batch, 3, frames, size, size)).astype(np.float32)
    return clips, rng.integers(0, classes, batch)


def _torch_side():
    import torch

    from vrconvert import models_torch

    def load(arch: str, state: str):
        if not os.path.exists(state):  # the torch side draws the weights; every Keras side reads them
            torch.manual_seed(0)
            np.savez(state, **{k: v.numpy() for k, v in models_torch.build(arch).state_dict().items()})
        model = models_torch.build(arch)
        with np.load(state) as z:
            model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

        def step(clips: np.ndarray, labels: np.ndarray) -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(clips)), torch.from_numpy(labels))
            loss.backward()
            optimizer.step()
            return loss.item()

        return step, model.arch.num_classes

    return load


def side_name(backend: str, data_format: str) -> str:
    return f"keras-{backend}" + ("-first" if data_format == "channels_first" else "")


def _keras_side(backend: str, data_format: str):
    os.environ["KERAS_BACKEND"] = backend
    import keras

    import vrconvert
    from vrconvert.models_tf import layout

    def load(arch: str, state: str):
        with np.load(state) as z:
            model = vrconvert.state_dict_to_keras({k: z[k] for k in z.files}, arch)  # models_tf.build's model
        if data_format == "channels_first":
            model = layout.derive(model, data_format, contiguous=True)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

        def step(clips: np.ndarray, labels: np.ndarray) -> float:
            logs = model.train_on_batch(np.ascontiguousarray(clips.transpose(0, 2, 3, 4, 1)), labels, return_dict=True)
            return float(logs["loss"])

        return step, model.output_shape[-1]

    return load


def serve(side: str) -> None:
    """Answers commands until stdin closes: load (arch, state file, batch shape) -> seconds; step ->
    seconds and the loss."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the replies
    sides = {side_name(b, f): (b, f) for b, f in KERAS_SIDES}
    load = _torch_side() if side == "torch" else _keras_side(*sides[side])
    step, data = None, None
    for line in sys.stdin:
        command = json.loads(line)
        start = time.perf_counter()
        loss = None
        if command["op"] == "load":
            step, classes = load(command["arch"], command["state"])
            data = batch_of(command["batch"], command["frames"], command["size"], classes)
        else:
            loss = step(*data)
        replies.write(json.dumps({"seconds": time.perf_counter() - start, "loss": loss}) + "\n")


def measure(arch: str, batch: int, frames: int, size: int, rounds: int, env: dict) -> list[dict]:
    names = ["torch"] + [side_name(b, f) for b, f in KERAS_SIDES]
    sides = [Side(n, env, Path(__file__).resolve()) for n in names]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = os.path.join(tmp, f"{arch}.npz")
            shape = {"batch": batch, "frames": frames, "size": size}
            prepare = {s.name: s.ask(op="load", arch=arch, state=state, **shape) for s in sides}
            first = {s.name: s.reply(op="step") for s in sides}  # traces/compiles; its loss is compared
            times: dict[str, list[float]] = {s.name: [] for s in sides}
            for rep in range(rounds):
                for s in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
                    times[s.name].append(s.ask(op="step"))
            torch_s = statistics.median(times["torch"])
            for backend, data_format in KERAS_SIDES:
                name = side_name(backend, data_format)
                keras_s = statistics.median(times[name])
                rows.append(
                    {
                        "arch": arch,
                        "batch": batch,
                        "clip": [frames, size, size],
                        "keras_backend": backend,
                        "data_format": data_format,
                        "rounds": rounds,
                        "torch_s_per_step": torch_s,
                        "keras_s_per_step": keras_s,
                        "ratio": keras_s / torch_s,
                        "torch_spread": [min(times["torch"]), max(times["torch"])],
                        "keras_spread": [min(times[name]), max(times[name])],
                        "keras_prepare_s": prepare[name],
                        "keras_first_step_s": first[name]["seconds"],
                        "torch_first_loss": first["torch"]["loss"],
                        "keras_first_loss": first[name]["loss"],
                        "first_loss_rel_diff": abs(first[name]["loss"] - first["torch"]["loss"])
                        / abs(first["torch"]["loss"]),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for s in sides:
            s.close()
    return rows


def markdown(doc: dict) -> str:
    from run import describe

    m = doc["machine"]
    lines = [
        f"Measured {doc['date']} on {describe(m)}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; {doc['mode']}: {doc['rounds']} rounds, {doc['wall_s'] / 60:.0f} min in all.",
        "",
        "| training step (SGD, momentum 0.9, cross-entropy, BatchNorm in training mode) | batch | clip | "
        "torch s/step | Keras s/step | Keras/torch | target | first-step loss rel diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["rows"]:
        backend, data_format = r["keras_backend"], r.get("data_format", "channels_last")
        target = TARGETS.get(backend)
        form = ""
        if backend == "torch" and data_format == "channels_last":  # judged: the twin vrconvert trains there
            target, form = None, " (the channels-last model as built)"
        elif data_format == "channels_first":
            form = " (the channels-first twin `finetune` trains)"
        verdict = "none" if target is None else f"<= {target} ({'met' if r['ratio'] <= target else 'missed'})"
        lines.append(
            f"| {r['arch']}, Keras `train_on_batch` on {backend}{form} | {r['batch']} | "
            f"{'x'.join(map(str, r['clip']))} | {r['torch_s_per_step']:.2f} | {r['keras_s_per_step']:.2f} | "
            f"**{r['ratio']:.2f}** | {verdict} | {r['first_loss_rel_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="two rounds (a smoke run)")
    parser.add_argument("--arch", default="r2plus1d_18")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--rounds", type=int, help="default 5, --quick 2")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    rounds = args.rounds if args.rounds is not None else 2 if args.quick else 5
    if min(rounds, args.batch, args.frames, args.size) < 1:
        parser.error("rounds, batch, frames and size must be at least 1")
    from run import ENV, machine

    start = time.perf_counter()
    doc = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "mode": "quick" if args.quick else "full"}
    doc["rows"] = measure(args.arch, args.batch, args.frames, args.size, rounds, ENV)
    doc.update(rounds=rounds, wall_s=time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("training.json", json.dumps(doc, indent=2) + "\n"), ("training.md", markdown(doc))):
        tmp = args.out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, args.out / name)
    print(markdown(doc))


if __name__ == "__main__":
    main()
