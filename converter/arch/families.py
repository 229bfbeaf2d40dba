"""Every network family vrconvert knows, and the one place a variant finds its family.

A family is a hand-written description module (`spec` for the video ResNets, `s3d`, `swin3d`, `mvit`, ...) holding its
variants and the expansion that turns one into layer records; a new family is one line in `FAMILIES`.
Everything else looks variants up here (`get`, `VARIANTS`) and expands them here (`expand`).
"""

from __future__ import annotations

from collections.abc import Callable

from vrconvert.converter.arch import layers, mvit, s3d, spec, swin3d

Variant = spec.Arch | s3d.S3DArch | swin3d.Swin3D | mvit.MViTArch

# variant record type -> (the family's variants by name, the family's expansion into records)
FAMILIES: dict[type, tuple[dict[str, Variant], Callable[[Variant], tuple]]] = {
    spec.Arch: (spec.VARIANTS, layers.expand),
    s3d.S3DArch: (s3d.VARIANTS, s3d.expand),
    swin3d.Swin3D: (swin3d.VARIANTS, swin3d.expand),
    mvit.MViTArch: (mvit.VARIANTS, mvit.expand),
}
VARIANTS: dict[str, Variant] = {name: v for variants, _ in FAMILIES.values() for name, v in variants.items()}


def get(name: str) -> Variant:
    """The variant called `name`, or a KeyError that lists the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(VARIANTS)}") from None


def expand(arch: Variant) -> tuple:
    """`arch`'s ordered layer records, by its family's expansion."""
    return FAMILIES[type(arch)][1](arch)


def blocks(arch: Variant) -> dict[str, str]:
    """Each top-level block's name -> the record that ends it (the ResNets' stem and layer1..layer4)."""
    return layers.block_outputs(expand(arch), arch.blocks)


def published() -> dict[str, tuple[Variant, spec.Pretrained]]:
    """Every published weights file by the name `--pretrained` takes: a variant's own under its name, and
    further files (swin3d_b's ImageNet-22k one) under theirs."""
    out = {name: (v, v.pretrained) for name, v in VARIANTS.items() if v.pretrained is not None}
    return {**out, **swin3d.published()}
