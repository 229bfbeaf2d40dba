"""The Swin3D records' weight mapping: one small rule table per record op.

Each rule names a tensor of the torch module (its suffix after the module path) and where it lives in Keras
(appended to the module's Keras name: a variable of the layer, of a nested Dense, or of a sibling layer),
with the permutation from torch's layout to Keras'. `relative_position_index` is a torch-only buffer:
derived from the window, never stored in Keras, checked on the way in and rebuilt on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vrconvert.converter.arch import swin3d
from vrconvert.converter.arch.entries import Entry


@dataclass(frozen=True, kw_only=True)
class Rule:
    torch_suffix: str
    keras_suffix: str
    permutation: tuple[int, ...] | None = None  # torch axes in Keras order


LINEAR = (1, 0)  # torch Linear (out, in) -> Keras Dense kernel (in, out)
RULES: dict[str, tuple[Rule, ...]] = {
    # torch Conv3d weight (O, I, T, H, W) -> Keras Conv3D kernel (T, H, W, I, O)
    "embed": (
        Rule(torch_suffix="weight", keras_suffix="/kernel", permutation=(2, 3, 4, 1, 0)),
        Rule(torch_suffix="bias", keras_suffix="/bias"),
    ),
    "norm": (Rule(torch_suffix="weight", keras_suffix="/gamma"), Rule(torch_suffix="bias", keras_suffix="/beta")),
    "dense": (
        Rule(torch_suffix="weight", keras_suffix="/kernel", permutation=LINEAR),
        Rule(torch_suffix="bias", keras_suffix="/bias"),
    ),
    "attn": (
        Rule(torch_suffix="relative_position_bias_table", keras_suffix="/relative_position_bias_table"),
        Rule(torch_suffix="qkv.weight", keras_suffix="/qkv/kernel", permutation=LINEAR),
        Rule(torch_suffix="qkv.bias", keras_suffix="/qkv/bias"),
        Rule(torch_suffix="proj.weight", keras_suffix="/proj/kernel", permutation=LINEAR),
        Rule(torch_suffix="proj.bias", keras_suffix="/proj/bias"),
    ),
    "merge": (
        Rule(torch_suffix="reduction.weight", keras_suffix="_reduction/kernel", permutation=LINEAR),
        Rule(torch_suffix="norm.weight", keras_suffix="_norm/gamma"),
        Rule(torch_suffix="norm.bias", keras_suffix="_norm/beta"),
    ),
}
INDEX = "relative_position_index"


def _shape(node: swin3d.Node, suffix: str) -> tuple[int, ...]:
    cin, cout = node.channels_in, node.channels_out
    return {
        ("embed", "weight"): (cout, cin, *node.kernel),
        ("dense", "weight"): (cout, cin),
        ("attn", "relative_position_bias_table"): (node.table_rows, node.heads),
        ("attn", "qkv.weight"): (3 * cin, cin),
        ("attn", "qkv.bias"): (3 * cin,),
        ("attn", "proj.weight"): (cin, cin),
        ("attn", "proj.bias"): (cin,),
        ("merge", "reduction.weight"): (cout, 4 * cin),
        ("merge", "norm.weight"): (4 * cin,),
        ("merge", "norm.bias"): (4 * cin,),
    }.get((node.op, suffix), (cout,))


def _keras_name(path: str) -> str:
    return path.replace(".", "_")


def _walk(arch: swin3d.Swin3D):
    """(node, rule) for every torch tensor in state_dict order; rule None for a relative position index."""
    for node in swin3d.expand(arch):
        for i, rule in enumerate(RULES.get(node.op, ())):
            if rule.torch_suffix == "bias" and not node.bias:
                continue
            yield node, rule
            if node.op == "attn" and i == 0:  # the buffer follows the table, as torchvision registers it
                yield node, None


def entries(arch: swin3d.Swin3D) -> tuple[Entry, ...]:
    """Every mapped tensor of `arch`, in torchvision's state_dict order."""
    return tuple(
        Entry(
            torch_key=f"{node.name}.{rule.torch_suffix}",
            keras_path=_keras_name(node.name) + rule.keras_suffix,
            torch_shape=_shape(node, rule.torch_suffix),
            permutation=rule.permutation,
        )
        for node, rule in _walk(arch)
        if rule is not None
    )


def buffers(arch: swin3d.Swin3D) -> dict[str, np.ndarray]:
    """The torch-only buffers (each attention's relative position index), as torchvision builds them."""
    out: dict[str, np.ndarray] = {}
    for node, rule in _walk(arch):
        if rule is None:
            out[f"{node.name}.{INDEX}"] = np.asarray(swin3d.relative_position_index(node.window), dtype=np.int64)
    return out


def torch_shapes(arch: swin3d.Swin3D) -> dict[str, tuple[int, ...]]:
    """torchvision's state_dict layout: keys in order, shapes, buffers included."""
    return {
        f"{node.name}.{rule.torch_suffix if rule else INDEX}": _shape(node, rule.torch_suffix)
        if rule
        else (node.window[0] * node.window[1] * node.window[2],) * 2
        for node, rule in _walk(arch)
    }


def to_keras(arch: swin3d.Swin3D, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torch-named arrays -> Keras variable path -> array."""
    return {e.keras_path: np.require(e.to_keras(state[e.torch_key]), requirements="C") for e in entries(arch)}


def to_torch(arch: swin3d.Swin3D, variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras variable path -> array  ->  a torchvision state dict (numpy), buffers included, in order."""
    tensors = {e.torch_key: np.require(e.to_torch(variables[e.keras_path]), requirements="C") for e in entries(arch)}
    tensors.update(buffers(arch))
    return {key: tensors[key] for key in torch_shapes(arch)}


def keras_shapes(arch: swin3d.Swin3D) -> dict[str, tuple[int, ...]]:
    """The Keras model's variables of `arch`: path -> shape."""
    return {e.keras_path: e.keras_shape for e in entries(arch)}


def detect(shapes: dict[str, tuple[int, ...]], *, keras: bool = False) -> swin3d.Swin3D | None:
    """The variant whose every tensor fits `shapes` (torch keys, or Keras variable paths with `keras`), its
    head's width read from the head's weight; None when no variant fits exactly."""
    head = shapes.get("head/kernel" if keras else "head.weight")
    if head is None or len(head) != 2:
        return None
    found = {k: tuple(v) for k, v in shapes.items()}
    for variant in swin3d.VARIANTS.values():
        variant = variant.with_classes(head[1] if keras else head[0])
        if found == (keras_shapes(variant) if keras else torch_shapes(variant)):
            return variant
    return None


def wrong_buffers(arch: swin3d.Swin3D, state: dict[str, np.ndarray]) -> list[str]:
    """The relative position indices of `state` that differ from torchvision's (Keras derives them from the
    window and cannot carry another)."""
    return [key for key, index in buffers(arch).items() if key in state and not np.array_equal(state[key], index)]


def torch_only_keys(arch: swin3d.Swin3D) -> tuple[str, ...]:
    return tuple(buffers(arch))


def iter_keras(arch: swin3d.Swin3D, state: dict[str, np.ndarray]):
    """(Keras variable path, array) one at a time."""
    for e in entries(arch):
        yield e.keras_path, np.require(e.to_keras(state[e.torch_key]), requirements="C")


def complete(arch: swin3d.Swin3D, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state` in torchvision's key order, the relative position indices it lacks filled in."""
    index = buffers(arch)
    return {key: state[key] if key in state else index[key] for key in torch_shapes(arch)}
