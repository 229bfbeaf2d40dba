"""One training step of a Keras model on any backend, with what a parity check needs from it: the
training-mode logits, the loss, every gradient and chosen activations, BatchNorm statistics updated as
Keras updates them. The update is Keras' own SGD; weight decay is torch's coupled L2 (added to each
gradient before the optimizer), so both frameworks take the same step."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True, kw_only=True)
class StepOut:
    """What one step computed, as float64 numpy arrays (gradients keyed by variable path)."""

    logits: np.ndarray
    loss: float
    grads: dict[str, np.ndarray]
    activations: dict[str, np.ndarray]


def _loss(labels, logits):
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


class Trainer:
    """SGD steps on `model` (a flat functional model); `watch` names layers whose training-mode outputs
    each step returns too (for the ReLU decisions a check compares)."""

    def __init__(self, model, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, watch=()) -> None:
        self.model = model
        self.watch = tuple(watch)
        outputs = [model.outputs[0], *(model.get_layer(n).output for n in self.watch)]
        self.probe = keras.Model(model.inputs[0], outputs)  # one input, as the model is called
        self.weight_decay = weight_decay
        self.optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
        self.variables = list(model.trainable_variables)
        self.optimizer.build(self.variables)

    def step(self, clips: np.ndarray, labels: np.ndarray) -> StepOut:
        outs, loss, grads = _GRADIENTS[keras.backend.backend()](self, clips, labels)
        result = StepOut(  # the loss's own gradients, as torch's `.grad` holds them
            logits=_np(outs[0]),
            loss=float(_np(loss)),
            grads={v.path: _np(g) for v, g in zip(self.variables, grads, strict=True)},
            activations={n: _np(o) for n, o in zip(self.watch, outs[1:], strict=True)},
        )
        if self.weight_decay:
            grads = [g + self.weight_decay * v.value for g, v in zip(grads, self.variables, strict=True)]
        self.optimizer.apply(grads, self.variables)
        return result


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _tensorflow(trainer: Trainer, clips, labels):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        outs = trainer.probe(clips, training=True)
        loss = _loss(labels, outs[0])
    return outs, loss, tape.gradient(loss, trainer.variables)


def _torch(trainer: Trainer, clips, labels):
    import torch

    outs = trainer.probe(clips, training=True)
    loss = _loss(labels, outs[0])
    grads = torch.autograd.grad(loss, [v.value for v in trainer.variables])
    return [o.detach() for o in outs], loss.detach(), list(grads)


def _jax(trainer: Trainer, clips, labels):
    import jax

    probe = trainer.probe
    fixed = [v.value for v in probe.non_trainable_variables]
    order = {id(v): i for i, v in enumerate(probe.trainable_variables)}

    def loss_of(trainable):
        outs, stats = probe.stateless_call(trainable, fixed, clips, training=True)
        return _loss(labels, outs[0]), (outs, stats)

    (loss, (outs, stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
        [v.value for v in probe.trainable_variables]
    )
    for variable, value in zip(probe.non_trainable_variables, stats, strict=True):
        variable.assign(value)
    return outs, loss, [grads[order[id(v)]] for v in trainer.variables]


_GRADIENTS = {"tensorflow": _tensorflow, "torch": _torch, "jax": _jax}
