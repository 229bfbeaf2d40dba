"""Walking a Keras model that may hold vrconvert's layers anywhere: inside nested Functional or
Sequential models, or reused in a new graph."""

from __future__ import annotations

import keras


def leaves(model) -> list:
    """Every layer that is not itself a model, depth first, each once (a reused layer is one layer)."""
    seen: dict[int, object] = {}

    def walk(container) -> None:
        for layer in container.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            elif id(layer) not in seen:
                seen[id(layer)] = layer

    walk(model)
    return list(seen.values())


def activation_of(model) -> str | None:
    """The network's activation as its config names it (the stem's first), in the spec's spelling."""
    try:
        layer = model.get_layer("stem_2")
    except ValueError:
        return None
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    if isinstance(layer, keras.layers.Activation):
        name = layer.get_config().get("activation")
        return {"hard_silu": "hard_swish"}.get(name, name) if isinstance(name, str) else None
    return None
