"""Keras 3 implementations of the spec's video ResNets (channels-last, built-in layers only), and the
fast way to run them (`predictor`: one compiled graph per input shape)."""

from . import build as _builder  # noqa: F401 (loaded first: `build` below is then the function)
from .infer import predictor
from .pretrained import build  # `models_tf.build.build` with `weights=`

__all__ = ["build", "predictor"]
