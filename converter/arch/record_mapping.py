"""The layer-name mapping of the families described by layer records (the ResNets, S3D, MViT): one small
rule table per op.

Each weight-bearing record contributes one entry per tensor: torch key <-> Keras variable path, with the
axis permutation from torch's layout to Keras'. Inverses are computed (argsort), never written down.
`num_batches_tracked` is a torch-only buffer (no Keras counterpart): it maps to nothing and is written
back as 0 by `to_torch`, which torchvision loads strictly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vrconvert.converter.arch import mvit
from vrconvert.converter.arch.entries import Entry
from vrconvert.converter.arch.families import Variant as Arch
from vrconvert.converter.arch.families import expand
from vrconvert.converter.arch.layers import Layer, keras_name

TORCH_ONLY_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class Rule:
    """How one tensor of an op is spelled and laid out on each side."""

    torch_suffix: str
    keras_var: str
    permutation: tuple[int, ...] | None = None  # torch axes in Keras order


RULES: dict[str, tuple[Rule, ...]] = {
    # torch Conv3d weight (O, I, T, H, W) -> Keras Conv3D kernel (T, H, W, I, O)
    "conv": (Rule("weight", "kernel", (2, 3, 4, 1, 0)), Rule("bias", "bias")),
    "bn": (
        Rule("weight", "gamma"),
        Rule("bias", "beta"),
        Rule("running_mean", "moving_mean"),
        Rule("running_var", "moving_variance"),
    ),
    # torch Linear weight (out, in) -> Keras Dense kernel (in, out)
    "dense": (Rule("weight", "kernel", (1, 0)), Rule("bias", "bias")),
    "layernorm": (Rule("weight", "gamma"), Rule("bias", "beta")),
    # MViT's class token and v1's position embedding (models_tf.mvit_layers.ClassPositionEmbedding)
    "posenc": tuple(Rule(name, name) for name in ("class_token", "spatial_pos", "temporal_pos", "class_pos")),
    # MViT's pooling attention (models_tf.mvit_layers.MultiscaleAttention): its sublayers' variables
    "attention": (
        *(Rule(f"rel_pos_{axis}", f"rel_pos_{axis}") for axis in "hwt"),
        Rule("qkv.weight", "qkv/kernel", (1, 0)),
        Rule("qkv.bias", "qkv/bias"),
        Rule("project.0.weight", "project/kernel", (1, 0)),
        Rule("project.0.bias", "project/bias"),
        *(
            rule
            for which in "qkv"
            for rule in (
                Rule(f"pool_{which}.pool.weight", f"pool_{which}/kernel", (2, 3, 4, 1, 0)),
                Rule(f"pool_{which}.norm_act.0.weight", f"pool_{which}_norm/gamma"),
                Rule(f"pool_{which}.norm_act.0.bias", f"pool_{which}_norm/beta"),
            )
        ),
    ),
}


def rule_for_keras(var: str, ndim: int) -> Rule | None:
    """The rule for a Keras variable name of a given rank (a 5-D kernel is a conv's, a 2-D one a Dense's)."""
    for rules in RULES.values():
        for rule in rules:
            if rule.keras_var == var and (rule.permutation is None or len(rule.permutation) == ndim):
                return rule
    return None


def _torch_shape(layer: Layer, suffix: str) -> tuple[int, ...]:
    if isinstance(layer, mvit.Record):
        return layer.tensors()[suffix]
    if layer.op == "conv" and suffix == "weight":
        return (layer.channels_out, layer.channels_in, *layer.kernel)
    if layer.op == "dense" and suffix == "weight":
        return (layer.channels_out, layer.channels_in)
    return (layer.channels_out,)


def _walk(arch: Arch):
    """(layer, rule) for every torch tensor in state_dict order; rule None for `num_batches_tracked`."""
    for layer in expand(arch):
        if not layer.has_weights:
            continue
        if isinstance(layer, mvit.Record):  # its tensors, in torchvision's order
            rules = {rule.torch_suffix: rule for rule in RULES[layer.op]}
            yield from ((layer, rules[suffix]) for suffix in layer.tensors())
            continue
        for rule in RULES[layer.op]:
            if rule.torch_suffix != "bias" or layer.bias or layer.op == "bn":
                yield layer, rule
        if layer.op == "bn":
            yield layer, None


def entries(arch: Arch) -> tuple[Entry, ...]:
    """Every mapped tensor of `arch`, in torchvision's state_dict order."""
    return tuple(
        Entry(
            torch_key=f"{layer.name}.{rule.torch_suffix}",
            keras_path=f"{keras_name(layer.name)}/{rule.keras_var}",
            torch_shape=_torch_shape(layer, rule.torch_suffix),
            permutation=rule.permutation,
        )
        for layer, rule in _walk(arch)
        if rule is not None
    )


def torch_only_keys(arch: Arch) -> tuple[str, ...]:
    """The buffers torch has and Keras does not: one `num_batches_tracked` per BatchNorm."""
    return tuple(f"{layer.name}.{TORCH_ONLY_SUFFIX}" for layer, rule in _walk(arch) if rule is None)


def torch_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """torchvision's state_dict layout for `arch`: keys in order, shapes, buffers included."""
    return {
        f"{layer.name}.{rule.torch_suffix if rule else TORCH_ONLY_SUFFIX}": _torch_shape(layer, rule.torch_suffix)
        if rule
        else ()
        for layer, rule in _walk(arch)
    }


def iter_keras(arch: Arch, state: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """(Keras variable path, array) one at a time, so a caller can assign each and let it go."""
    for e in entries(arch):
        yield e.keras_path, np.require(e.to_keras(state[e.torch_key]), requirements="C")


def to_keras(arch: Arch, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torch-named arrays -> Keras variable path -> array (the state must already be accounted for)."""
    return dict(iter_keras(arch, state))


def complete(arch: Arch, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state` in torchvision's key order with the torch-only buffers it lacks (`num_batches_tracked`,
    absent from Keras and from pre-1.0 checkpoints) filled with 0."""
    return {key: state[key] if key in state else np.zeros((), np.int64) for key in torch_shapes(arch)}


def to_torch(arch: Arch, variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras variable path -> array  ->  a torchvision state dict (numpy), buffers included, in order."""
    return complete(
        arch, {e.torch_key: np.require(e.to_torch(variables[e.keras_path]), requirements="C") for e in entries(arch)}
    )
