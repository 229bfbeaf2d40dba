"""A classifier head found by its role, not its name.

Users build around a backbone the Keras way (`build(include_top=False)`, then `Dense(K, name="anything")`,
perhaps after Dropout or pooling). torchvision's model has one head, `fc`. Among a model's weighted
layers the backbone's are named after torchvision's modules; the head is the one Dense layer that is
not a backbone layer (or the one the user names), and is renamed `fc` so the usual mapping applies.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vrconvert.converter.arch import families
from vrconvert.converter.arch.layers import keras_name
from vrconvert.converter.errors import InputError

HEAD = "fc"  # torchvision's name for the classifier, and the Keras builder's
RESNET_PREFIXES = ("stem_", "layer1_")  # the video ResNets' Keras layer names (the family a user's head fits)


@dataclass(frozen=True, kw_only=True)
class Weighted:
    """One layer that owns weights: its name, its Keras class and its variables' shapes."""

    name: str
    kind: str
    shapes: dict[str, tuple[int, ...]]


def head_record(variant: families.Variant):
    """A variant's classifier: its last conv or dense record (`fc`, S3D's `classifier.1`, Swin3D's `head`,
    MViT's `head.1`)."""
    return next(r for r in reversed(families.expand(variant)) if r.op in ("conv", "dense"))


@functools.cache
def head_names() -> frozenset[str]:
    """Every known network's classifier, as the Keras builders name it."""
    return frozenset(keras_name(head_record(v).name) for v in families.VARIANTS.values())


@functools.cache
def _backbone_records() -> tuple:
    """Every known variant's records but its classifier (each variant expanded once: comparing every record
    with `head_record` inside the loop re-walked the variant per record)."""
    out = []
    for variant in families.VARIANTS.values():
        head = head_record(variant)
        out += [r for r in families.expand(variant) if r is not head]
    return tuple(out)


@functools.cache
def _backbone_dense_names() -> frozenset[str]:
    """Dense layers that belong inside a backbone (squeeze-excitation's, the transformers' own), in every
    known variant of every family."""
    return frozenset(keras_name(r.name) for r in _backbone_records() if r.op == "dense")


@functools.cache
def known_names() -> frozenset[str]:
    """Every weighted layer name a known variant's backbone has."""
    return frozenset(keras_name(r.name) for r in _backbone_records() if r.has_weights)


@functools.cache
def _plain_names() -> frozenset[str]:
    """Known weighted records' paths with dots as single underscores: how Swin3D's builder names its layers."""
    return frozenset(r.name.replace(".", "_") for r in _backbone_records() if r.has_weights)


@functools.cache
def _record_prefixes() -> tuple[str, ...]:
    """Known weighted records' names as prefixes: a record built as several Keras layers names them
    `<record>_<part>` (Swin3D's patch merging: `features_1_reduction`, `features_1_norm`)."""
    return tuple(f"{name}_" for name in known_names() | _plain_names())


def is_known(name: str) -> bool:
    """Whether a Keras layer name belongs to a known network (a record, a part of one, or a classifier)."""
    names = known_names() | _plain_names() | head_names()
    return name in names or name.startswith(_record_prefixes())


def refuse_foreign(layers: list[Weighted], head: str | None) -> None:
    """One line naming the first weighted layer that is neither the head nor a backbone layer."""
    for layer in layers:
        if layer.name != head and not is_known(layer.name):
            raise InputError(
                f"layer {layer.name} ({layer.kind}) has no counterpart in torchvision's model; it cannot be converted"
            )


def find_head(layers: list[Weighted], head: str | None = None) -> str | None:
    """The name of the head among `layers` (None when there is none), or a one-line InputError when the
    named head is absent or not a Dense layer, or when more than one Dense could be it."""
    by_name = {layer.name: layer for layer in layers}
    if head is not None:
        chosen = by_name.get(head)
        if chosen is None:
            raise InputError(f"--head {head}: no layer of that name holds weights ({_some(list(by_name))})")
        if chosen.kind != "Dense":
            raise InputError(f"--head {head}: a {chosen.kind} layer, not a Dense one")
        return head
    candidates = [
        layer.name
        for layer in layers
        if layer.kind == "Dense"
        and layer.name not in _backbone_dense_names()
        and not layer.name.startswith(_record_prefixes())
    ]
    if len(candidates) > 1:
        raise InputError(f"more than one layer could be the head ({', '.join(candidates)}); pass --head NAME")
    return candidates[0] if candidates else None


def renamed(layers: list[Weighted], head: str | None) -> dict[str, tuple[int, ...]]:
    """Every variable's shape keyed `layer/var`, the head's layer named `fc`; a backbone that kept its own
    `fc` beside another chosen head is refused in one line (torch's model has room for one)."""
    shapes: dict[str, tuple[int, ...]] = {}
    rename = head is not None and head not in head_names()  # a network's own classifier keeps its name
    if rename and not any(layer.name.startswith(RESNET_PREFIXES) for layer in layers):
        raise InputError(
            f"layer {head}: a head of a user's own is read back on the video ResNets only; for the other families "
            "keep the network's own classifier: models_tf.build(arch, weights=..., num_classes=K)"
        )
    for layer in layers:
        name = HEAD if rename and layer.name == head else layer.name
        if name == HEAD and layer.name != head and rename:
            raise InputError(f"layer {layer.name} is a second classifier besides the head {head}; torch has one fc")
        for var, shape in layer.shapes.items():
            shapes[f"{name}/{var}"] = tuple(shape)
    return shapes


def _some(names: list[str], limit: int = 6) -> str:
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return "layers with weights: " + ", ".join(names[:limit]) + more if names else "no layer holds weights"
