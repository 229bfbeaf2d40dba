"""BatchNorm as torch trains it, for those who ask: an opt-in Keras layer.

Keras' BatchNormalization updates its moving variance with the biased batch variance (divided by n),
torch's with the unbiased one (divided by n - 1), where n is the number of values per channel in the
batch. Fine-tuning for long with Keras' rule settles the running variance about (n - 1)/n of torch's.
`TorchBatchNormalization` normalises exactly as Keras does and only updates the moving variance with
torch's rule. It is registered (`vrconvert>TorchBatchNormalization`), so a `.keras` file holding it
needs vrconvert installed to load; models are built with it only when asked (`build(batchnorm="torch")`).
"""

from __future__ import annotations

import keras
from keras import ops

from vrconvert.models_tf.walk import leaves

RULES = ("keras", "torch")


@keras.saving.register_keras_serializable(package="vrconvert")
class TorchBatchNormalization(keras.layers.BatchNormalization):
    """A BatchNormalization whose moving variance follows torch (the unbiased batch variance)."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(x, None)
        count = ops.cast(ops.size(x) // ops.shape(x)[self.axis], x.dtype)
        unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
        self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, x.dtype) * self.momentum + unbiased * (1.0 - self.momentum)
        )
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        out = ops.batch_normalization(x, mean, variance, axis=self.axis, offset=beta, scale=gamma, epsilon=self.epsilon)
        return ops.cast(out, self.compute_dtype)


def layer_class(rule: str):
    if rule not in RULES:
        raise ValueError(f"batchnorm must be one of {RULES}, not {rule!r}")
    return TorchBatchNormalization if rule == "torch" else keras.layers.BatchNormalization


def running_variance_rule(model) -> str:
    """ "torch" when every BatchNorm of `model` is the torch-rule layer, "keras" when none is."""
    norms = [layer for layer in leaves(model) if isinstance(layer, keras.layers.BatchNormalization)]
    torch_rule = [isinstance(layer, TorchBatchNormalization) for layer in norms]
    if any(torch_rule) and not all(torch_rule):
        raise ValueError("the model mixes Keras' and torch's BatchNorm rules")
    return "torch" if torch_rule and all(torch_rule) else "keras"


def freeze_like_torch(model) -> None:
    """torch's `requires_grad_(False)` under `train()`: every weight frozen, BatchNorm still normalising
    with batch statistics and updating its running ones. (Keras' `trainable = False` freezes BatchNorm
    into inference mode instead.) Call before `compile`; the BatchNorm layers stay `trainable` in
    Keras' sense, but their gamma and beta are no longer trained."""
    for layer in leaves(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in (layer.gamma, layer.beta):
                if variable is not None:
                    variable.trainable = False
        elif layer.weights:
            layer.trainable = False
