"""Running a Keras model the fast way on each backend; the caller always hands in channels-last clips.

The `.keras` contract is channels-last (N, T, H, W, C) input. Each backend then runs the layout and
kernels it is fastest with (measured by `make bench`, see benchmarks/results.md):

- TensorFlow: the model as it is, a `tf.function` traced once per input shape (TensorFlow's CPU
  convolutions are channels-last).
- JAX: a jitted `stateless_call` of the model as it is (XLA picks its own layouts).
- torch: a channels-first twin (`layout.derive`: one transpose at the input, torch's own conv
  padding, strided shortcuts as selection + 1x1x1 conv), its conv kernels stored in torch's
  (out, in, T, H, W) order so no kernel is copied per call, called under `torch.inference_mode`.
  A model with a layer the twin cannot re-lay (see `layout.derive`) runs as it is.

Use it as

    run = predictor(model)
    logits = run(clip_nthwc)   # numpy in, numpy out; a multi-output model gives a list
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import layout


def _to_numpy(out):
    import keras

    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def torch_kernel_order(model) -> int:
    """Stores each Conv3D kernel of `model` (Keras' torch backend) so that the (out, in, T, H, W)
    view Keras hands to torch is contiguous: the same values, but torch stops copying every kernel
    into its order on every call (a strided copy that cost up to a quarter of a forward pass).

    Keras keeps a variable's torch tensor in `Variable._value` and assigns into it in place, so the
    new strides survive `set_weights`. Returns how many kernels were re-laid; 0 (and the model left
    as it was) if this Keras stores variables some other way."""
    import keras
    import torch

    done = 0
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv3D):
            continue
        variable = layer.kernel
        current = getattr(variable, "_value", None)
        if not isinstance(current, torch.nn.Parameter) or current.ndim != 5:
            return done
        torch_order = current.detach().permute(4, 3, 0, 1, 2).contiguous()
        variable._value = torch.nn.Parameter(torch_order.permute(2, 3, 4, 1, 0), requires_grad=current.requires_grad)
        done += 1
    return done


def torch_runner(model) -> Callable[[np.ndarray], np.ndarray | list[np.ndarray]]:
    """The Keras-on-torch path: a channels-first twin of `model`, kernels in torch order."""
    import torch

    try:
        twin = layout.derive(model, "channels_first", split_strided=True, merge_padding=True)
    except ValueError:  # a layer with no known channels-first form (e.g. built-in preprocessing): as it is
        twin = model
    else:
        torch_kernel_order(twin)

    def run(x: np.ndarray):
        with torch.inference_mode():
            return _to_numpy(twin(torch.from_numpy(np.ascontiguousarray(x)), training=False))

    return run


def predictor(model) -> Callable[[np.ndarray], np.ndarray | list[np.ndarray]]:
    """A function (N, T, H, W, 3) float32 array -> numpy output(s), on the current Keras backend's
    fastest path (compiled once per input shape where the backend compiles)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        graph = tf.function(lambda x: model(x, training=False), autograph=False, reduce_retracing=False)
        return lambda x: _to_numpy(graph(tf.convert_to_tensor(x)))
    if backend == "jax":
        import jax

        variables = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        step = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        return lambda x: _to_numpy(step(*variables, x))
    if backend == "torch":
        return torch_runner(model)
    return lambda x: _to_numpy(model(x, training=False))
