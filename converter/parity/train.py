"""`vrconvert validate --train`: do torch and Keras take the same SGD steps?

From identical weights on identical clips, BatchNorm in training mode, both frameworks take `steps`
SGD steps (cross-entropy; momentum and weight decay optional). Each step compares the training-mode
logits, the loss, every gradient, every weight after the step and every BatchNorm running statistic.

Gradients of a deep network are ill-conditioned, so no fixed tolerance is fair: each tensor is judged
against a float64 torch run, and Keras' error must be at most `FACTOR` x torch float32's own error
(or `FLOOR`, whichever is larger). A ReLU input within float32 rounding of zero may fall on either
side in any float32 run, and a different decision moves a gradient by far more than rounding does; so
each float32 run is judged against a float64 run that takes that run's own decision wherever (and only
where) the float64 value lies within `TIE` of zero, relative to its layer's largest value. The number of
such decisions is reported. Keras' running variance follows Keras' rule (the biased batch variance)
unless the model's BatchNorm is vrconvert's torch-rule layer: the float64 reference follows the same
rule, from the same float64 batch statistics.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.arch.layers import expand, keras_name
from vrconvert.converter.conversion.torch_model import load_state, torch_model_from_state
from vrconvert.converter.errors import InputError

FACTOR = 2.0
FLOOR = 1e-5
TIE = 1e-4
# torch float32's own error is a spread, not a number: the same run in another memory layout rounds in
# another order, and its error against float64 differs by up to 5x. Each tensor's own error is the largest
# among these equally valid torch float32 runs.
LAYOUTS = {"contiguous": "contiguous_format", "channels_last": "channels_last_3d"}


@dataclass(frozen=True, kw_only=True)
class Settings:
    steps: int = 2
    batch: int = 2
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    frames: int = 8
    size: tuple[int, int] = (56, 56)
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class Check:
    """One tensor at one step: Keras' and torch float32's relative errors against float64."""

    step: int
    what: str  # logits, loss, grad, weight, running_mean, running_var
    name: str
    keras_error: float
    torch_error: float

    @property
    def bound(self) -> float:
        return max(FLOOR, FACTOR * self.torch_error)

    @property
    def passed(self) -> bool:
        return bool(self.keras_error <= self.bound)

    @property
    def ratio(self) -> float:
        return self.keras_error / self.bound


@dataclass(kw_only=True)
class Report:
    arch: str
    num_classes: int
    backend: str
    settings: Settings
    batchnorm: str  # the running-variance rule the Keras model follows: "keras" (biased) or "torch"
    checks: list[Check] = field(default_factory=list)
    ties: dict[str, int] = field(default_factory=dict)  # ReLU decisions taken from each float32 run
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def worst(self) -> Check:
        return max(self.checks, key=lambda c: c.ratio)

    def as_dict(self) -> dict:
        worst = self.worst
        return {
            "passed": self.passed,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "backend": self.backend,
            "settings": asdict(self.settings),
            "batchnorm": self.batchnorm,
            "factor": FACTOR,
            "floor": FLOOR,
            "ties": self.ties,
            "worst": {**asdict(worst), "bound": worst.bound},
            "failures": [{**asdict(c), "bound": c.bound} for c in self.checks if not c.passed],
            "checks": len(self.checks),
            "seconds": self.seconds,
        }


def rel(got: np.ndarray | float, ref: np.ndarray | float) -> float:
    """The largest difference relative to the reference's largest magnitude."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), np.finfo(np.float64).tiny))


class TorchRun:
    """A torch model taking SGD steps; a float64 one may take given ReLU decisions at ties."""

    def __init__(
        self, arch: spec.Arch, state: dict, dtype, settings: Settings, relus: list[str], layout: str = "contiguous"
    ) -> None:
        import torch

        self.torch = torch
        self.layout = getattr(torch, LAYOUTS[layout])
        self.model = torch_model_from_state(arch, state).to(dtype).to(memory_format=self.layout).train()
        self.dtype, self.relus = dtype, relus
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        self.given: dict[str, np.ndarray] = {}
        self.taken = 0
        self.batch_var: dict[str, np.ndarray] = {}
        modules = dict(self.model.named_modules())
        for name in relus:
            modules[name].register_forward_hook(self._relu_hook(name))
        for layer in expand(arch):
            if layer.op == "bn":
                modules[layer.name].register_forward_hook(self._bn_hook(layer.name))

    def _relu_hook(self, name: str):
        def hook(module, inputs, output):
            if name not in self.given:
                return None
            x = inputs[0]
            own = x > 0
            tie = x.abs() <= TIE * x.abs().max()
            given = self.torch.from_numpy(self.given[name]).to(x.device)
            mask = self.torch.where(tie, given, own)
            self.taken += int((mask != own).sum())
            return x * mask  # the decision taken: a tie decided 'active' passes its (tiny) input and gradient

        return hook

    def _bn_hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            self.batch_var[name] = x.var(dim=(0, 2, 3, 4), unbiased=False).double().cpu().numpy()

        return hook

    def step(self, clips: np.ndarray, labels: np.ndarray, given: dict[str, np.ndarray] | None = None):
        """(logits, loss, grads by torch key, ReLU outputs by torch name) of one step, then the update."""
        torch = self.torch
        self.given = given or {}
        self.optimizer.zero_grad()
        x = torch.from_numpy(clips).to(self.dtype).contiguous(memory_format=self.layout)
        values = self.model.run(x, keep=self.relus)
        logits = values[self.model.layers[-1].name]
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels).long())
        loss.backward()
        grads = {k: p.grad.detach().double().numpy() for k, p in self.model.named_parameters()}
        acts = {k: values[k].detach().double().numpy() for k in self.relus}
        self.optimizer.step()
        return logits.detach().double().numpy(), loss.item(), grads, acts

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().double().numpy() for k, v in self.model.state_dict().items()}


def batches(settings: Settings, num_classes: int):
    """The same seeded clips (N, C, T, H, W) and labels for every run, one batch per step."""
    rng = np.random.default_rng(settings.seed)
    for _ in range(settings.steps):
        clips = rng.standard_normal((settings.batch, 3, settings.frames, *settings.size)).astype(np.float32)
        yield clips, rng.integers(0, num_classes, settings.batch)


def _own_errors(runs, clips: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """One step of every torch float32 run and its float64 twin: torch float32's own error per tensor,
    the largest over the runs."""
    own: dict[str, float] = {}

    def judged(name: str, error: float) -> None:
        own[name] = max(own.get(name, 0.0), error)

    for t32, ref in runs:
        logits32, loss32, grads32, acts32 = t32.step(clips, labels)
        logits_a, loss_a, grads_a, _ = ref.step(clips, labels, {n: a > 0 for n, a in acts32.items()})
        judged("logits", rel(logits32, logits_a))
        judged("loss", rel(loss32, loss_a))
        for key, grad in grads32.items():
            judged(f"grad {key}", rel(grad, grads_a[key]))
        s32, sa = t32.state(), ref.state()
        for key in s32:
            if not key.endswith(mapping.TORCH_ONLY_SUFFIX):
                judged(f"after {key}", rel(s32[key], sa[key]))
    return own


def compare_training(arch: spec.Arch, state: dict, keras_model, settings: Settings) -> Report:
    """Steps the torch float32 runs, Keras, and a float64 torch run for each (taking its ReLU ties) in turn."""
    import keras
    import torch

    from vrconvert.models_tf.batchnorm import running_variance_rule
    from vrconvert.models_tf.layout import channels_first
    from vrconvert.models_tf.step import Trainer

    start = time.perf_counter()
    relus = [r.name for r in expand(arch) if r.op == "act" and r.activation == "relu"]
    runs = {  # each torch float32 run with the float64 run that takes its ReLU ties
        layout: (
            TorchRun(arch, state, torch.float32, settings, relus, layout),
            TorchRun(arch, state, torch.float64, settings, relus, layout),
        )
        for layout in LAYOUTS
    }
    refk = TorchRun(arch, state, torch.float64, settings, relus)  # judges Keras
    trainer = Trainer(
        keras_model,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        watch=[keras_name(n) for n in relus],
    )
    rule = running_variance_rule(keras_model)
    # Keras' activations in torch's layout (a channels-first twin's already are)
    to_torch = (lambda a: a) if channels_first(keras_model) else (lambda a: a.transpose(0, 4, 1, 2, 3))
    entries = {e.keras_path: e for e in mapping.entries(arch)}
    bns = {r.name: r for r in expand(arch) if r.op == "bn"}
    keras_var = {n: state[f"{n}.running_var"].astype(np.float64) for n in bns}  # the reference under Keras' rule
    report = Report(
        arch=arch.name, num_classes=arch.num_classes, backend=keras.backend.backend(), settings=settings, batchnorm=rule
    )
    for step, (clips, labels) in enumerate(batches(settings, arch.num_classes)):
        own = _own_errors(runs.values(), clips, labels)
        out = trainer.step(np.ascontiguousarray(clips.transpose(0, 2, 3, 4, 1)), labels)
        acts_k = {n: to_torch(out.activations[keras_name(n)]) > 0 for n in relus}
        logits_b, loss_b, grads_b, _ = refk.step(clips, labels, acts_k)
        report.checks += [
            Check(
                step=step,
                what="logits",
                name="logits",
                keras_error=rel(out.logits, logits_b),
                torch_error=own["logits"],
            ),
            Check(step=step, what="loss", name="loss", keras_error=rel(out.loss, loss_b), torch_error=own["loss"]),
        ]
        report.checks += _gradient_checks(step, out.grads, entries, grads_b, own)
        sb = refk.state()
        for name, layer in bns.items():  # the reference's running variance under the Keras model's rule
            m = layer.momentum
            keras_var[name] = (
                (1 - m) * keras_var[name] + m * refk.batch_var[name] if rule == "keras" else sb[f"{name}.running_var"]
            )
        report.checks += _weight_checks(step, keras_model, entries, sb, keras_var, own)
    report.ties = {**{f"torch float32 ({k})": ref.taken for k, (_, ref) in runs.items()}, "keras": refk.taken}
    report.seconds = time.perf_counter() - start
    return report


def _gradient_checks(step: int, grads: dict, entries: dict, reference: dict, own: dict) -> list[Check]:
    """Each Keras gradient (in torch's layout) against the float64 run's, beside torch float32's own error."""
    checks = []
    for path, grad in grads.items():
        key = entries[path].torch_key
        error = rel(entries[path].to_torch(grad), reference[key])
        checks.append(Check(step=step, what="grad", name=key, keras_error=error, torch_error=own[f"grad {key}"]))
    return checks


def _weight_checks(step: int, keras_model, entries: dict, reference: dict, keras_var: dict, own: dict) -> list[Check]:
    """Each Keras variable after the step (weights and BatchNorm statistics; the running variance against
    the reference under the Keras model's own rule)."""
    import keras

    checks = []
    for variable in keras_model.weights:
        e = entries[variable.path]
        key = e.torch_key
        kind = key.rsplit(".", 1)[1]
        what = kind if kind in ("running_mean", "running_var") else "weight"
        ref = keras_var[key.rsplit(".", 1)[0]] if what == "running_var" else reference[key]
        value = np.asarray(keras.ops.convert_to_numpy(variable), np.float64)
        error = rel(e.to_torch(value), ref)
        checks.append(Check(step=step, what=what, name=key, keras_error=error, torch_error=own[f"after {key}"]))
    return checks


def validate_training(
    torch_file: str | Path, keras_file: str | Path, settings: Settings, *, head: str | None = None
) -> Report:
    """`vrconvert validate --train`: the files' networks must be the same; the Keras side trains as a
    flat model with the file's own BatchNorm settings (a wrapped backbone's Dropout has no torch twin)."""
    ckpt, variant = load_state(torch_file)
    if not isinstance(variant, spec.Arch):  # the step comparison walks the ResNet records
        raise InputError(
            f"validate --train compares the video ResNets' training steps; {variant.name} is not supported yet "
            "(its forward parity: vrconvert validate without --train)"
        )
    from vrconvert.models_tf import layout, nested
    from vrconvert.models_tf import weights as keras_weights

    keras_variant, model = keras_weights.load_keras_model(Path(keras_file), head=head)
    if (variant.name, variant.num_classes) != (keras_variant.name, keras_variant.num_classes):
        raise InputError(
            f"the two files hold different networks: {torch_file} is {variant.name} with "
            f"{variant.num_classes} classes, {keras_file} is {keras_variant.name} with "
            f"{keras_variant.num_classes} classes"
        )
    flat = nested.flat_copy(model, keras_variant, head)
    flat = layout.for_training(flat)  # what finetune trains on this backend
    return compare_training(variant, mapping.complete(variant, ckpt.state), flat, settings)
