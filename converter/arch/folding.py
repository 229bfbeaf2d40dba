"""BatchNorm folding as records and arrays (no framework): every BatchNorm merged into the conv before it.

`folded_layers` drops each foldable `bn` record, gives the conv it reads from a bias and re-wires the
records that read the BatchNorm to read the conv; `models_tf.fold` builds the Keras graph from them. The
weights are computed in float64:

    scale = gamma / sqrt(running_var + eps);  kernel' = kernel * scale;  bias' = (bias - running_mean) * scale + beta
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vrconvert.converter.arch import accounting, families, mapping
from vrconvert.converter.arch.families import expand
from vrconvert.converter.arch.layers import Layer, keras_name
from vrconvert.converter.errors import InputError

BN_EPSILON = 1e-5  # torch BatchNorm3d's default, for records that do not carry their own
BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")
FOLDED_SUFFIX = "_bnfolded"  # the folded Keras model's name ends with it


def foldable(arch: families.Variant) -> dict[str, str]:
    """BatchNorm record -> the conv it folds into: every BatchNorm that reads a conv nothing else reads."""
    records = expand(arch)
    by_name = {r.name: r for r in records}
    readers: dict[str, int] = {}
    for r in records:
        for i in r.inputs:
            readers[i] = readers.get(i, 0) + 1
    return {
        r.name: r.inputs[0]
        for r in records
        if r.op == "bn"
        and by_name.get(r.inputs[0]) is not None
        and by_name[r.inputs[0]].op == "conv"
        and readers[r.inputs[0]] == 1
    }


def folded_layers(arch: families.Variant) -> tuple[Layer, ...]:
    """`arch`'s records with every foldable BatchNorm folded into its conv (which gets a bias)."""
    absorbed = foldable(arch)
    biased = set(absorbed.values())
    return tuple(
        replace(r, inputs=tuple(absorbed.get(i, i) for i in r.inputs), bias=r.bias or r.name in biased)
        for r in expand(arch)
        if r.name not in absorbed
    )


def probe_pairs(arch: families.Variant) -> list[tuple[str, str, str]]:
    """(torch module, Keras layer, op) whose outputs are comparable in a folded model: a folded conv's
    output is its BatchNorm's output in torch (the BatchNorm records themselves have no Keras layer)."""
    folded_into = {conv: bn for bn, conv in foldable(arch).items()}
    return [(folded_into.get(r.name, r.name), keras_name(r.name), r.op) for r in folded_layers(arch)]


def folded_shapes(arch: families.Variant) -> dict[str, tuple[int, ...]]:
    """The folded model's Keras variable path -> shape, in the records' order."""
    out = {}
    for r in folded_layers(arch):
        name = keras_name(r.name)
        if r.op == "conv":
            out[f"{name}/kernel"] = (*r.kernel, r.channels_in, r.channels_out)
        elif r.op == "dense":
            out[f"{name}/kernel"] = (r.channels_in, r.channels_out)
        if r.op in ("conv", "dense") and r.bias:
            out[f"{name}/bias"] = (r.channels_out,)
        if r.op == "bn":
            out.update({f"{name}/{v}": (r.channels_out,) for v in BN_VARIABLES})
    return out


def folded_variables(arch: families.Variant, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The folded model's variables (Keras layout, float32) from a torch-named, accounted-for state dict."""
    keras = mapping.to_keras(arch, state)
    absorbed = foldable(arch)
    out = {}
    for r in expand(arch):
        name = keras_name(r.name)
        if r.op in ("conv", "dense") or (r.op == "bn" and r.name not in absorbed):
            prefix = f"{name}/"
            out.update({k: v for k, v in keras.items() if k.startswith(prefix) and "/" not in k[len(prefix) :]})
        elif r.op == "bn":
            conv = keras_name(absorbed[r.name])
            gamma, beta, mean, var = (keras[f"{name}/{v}"].astype(np.float64) for v in BN_VARIABLES)
            scale = gamma / np.sqrt(var + getattr(r, "epsilon", BN_EPSILON))
            bias = out.get(f"{conv}/bias", np.zeros_like(mean)).astype(np.float64)
            out[f"{conv}/kernel"] = (out[f"{conv}/kernel"].astype(np.float64) * scale).astype(np.float32)
            out[f"{conv}/bias"] = ((bias - mean) * scale + beta).astype(np.float32)
    return out


def detect(
    shapes: dict[str, tuple[int, ...]], arch: str | None = None, activation: str | None = None
) -> families.Variant:
    """The one architecture whose folded variables are exactly `shapes` (Keras path -> shape): the head's
    width from the Dense kernel, R(2+1)D mid-channel widths from the spatial kernels, as for checkpoints."""
    torch_named = accounting.torch_shapes_of(shapes)
    names = (
        [arch]
        if arch
        else [  # the families with BatchNorms to fold carry an activation
            n for n, v in families.VARIANTS.items() if hasattr(v, "activation") and activation in (None, v.activation)
        ]
    )
    fits = []
    for name in names:
        variant = families.get(name)
        variant = variant.with_classes(accounting.num_classes_of(torch_named, variant) or 400)
        variant = accounting.with_checkpoint_midplanes(variant, torch_named) or variant
        if folded_shapes(variant) == {k: tuple(v) for k, v in shapes.items()}:
            fits.append(variant)
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise InputError(f"ambiguous folded model: it fits {', '.join(v.name for v in fits)}; pass --arch")
    raise InputError(
        f"a BatchNorm-folded Keras model ({len(shapes)} variables) that fits no known architecture"
        + (f" as {arch}" if arch else "")
    )
