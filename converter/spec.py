"""The one hand-written description of every network vrconvert knows.

Plain Python, no framework import. A variant is a frozen record (stem, stages, block, head, metadata);
`vrconvert.converter.layers.expand` turns it into the ordered layer records that both model builders
and the weight mapping walk, so nothing about an architecture is ever written twice.

The vocabulary follows torchvision's `models/video/resnet.py` and the paper "A Closer Look at
Spatiotemporal Convolutions for Action Recognition" (Tran et al., 2018):
- a *conv kind* is what torchvision calls a conv builder: full 3D (`Conv3DSimple`), 2D in space only
  (`Conv3DNoTemporal`, kernel 1x3x3) or factorised (2+1)D (`Conv2Plus1D`); each kind owns the
  stride of its shortcut, as in torchvision;
- MCx, rMCx and R2D differ from R3D only in the conv kind of each stage (and the stem);
- a *block* is basic (two 3x3x3-like convs) or bottleneck (1x1x1, conv kind, 1x1x1, expansion 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Triple = tuple[int, int, int]
ConvKindName = Literal["3d", "2d", "2plus1d"]
BlockName = Literal["basic", "bottleneck"]


@dataclass(frozen=True)
class ConvKind:
    """How one "3x3x3" convolution of a block is realised, and how its shortcut strides.

    `temporal` says whether the kind convolves and strides over time; `factorised` splits it into a
    spatial (1,k,k) conv, BatchNorm, ReLU and a temporal (k,1,1) conv with `midplanes` channels.
    """

    name: ConvKindName
    temporal: bool
    factorised: bool

    def shortcut_stride(self, stride: int) -> Triple:
        return (stride if self.temporal else 1, stride, stride)


CONV_KINDS: dict[str, ConvKind] = {
    "3d": ConvKind("3d", temporal=True, factorised=False),  # torchvision Conv3DSimple
    "2d": ConvKind("2d", temporal=False, factorised=False),  # torchvision Conv3DNoTemporal
    "2plus1d": ConvKind("2plus1d", temporal=True, factorised=True),  # torchvision Conv2Plus1D
}


@dataclass(frozen=True)
class StemConv:
    """One conv of the stem, always followed by BatchNorm and ReLU; padding is kernel // 2."""

    channels: int
    kernel: Triple
    stride: Triple


@dataclass(frozen=True)
class Stage:
    """One `layerN` of the network: `blocks` residual blocks, the first one striding."""

    planes: int
    blocks: int
    stride: int
    conv: ConvKindName


@dataclass(frozen=True)
class Preprocessing:
    """torchvision's `VideoClassification` eval transform for Kinetics-400."""

    resize: tuple[int, int] = (128, 171)
    crop: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
    frames: int = 16


@dataclass(frozen=True)
class Pretrained:
    """Where torchvision publishes a variant's Kinetics-400 weights and what they score."""

    url: str
    acc1: float
    acc5: float

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """torchvision names its files `NAME-<first 8 hex digits of the SHA-256>.pth`."""
        return self.filename.rsplit("-", 1)[-1].split(".", 1)[0]


@dataclass(frozen=True)
class Arch:
    """A complete network: everything a builder or the mapping needs, and nothing framework-bound.

    `midplanes` overrides the R(2+1)D mid-channel formula with one width per block (in network
    order) for checkpoints trained with other widths; `None` means torchvision's formula.
    """

    name: str
    stem: tuple[StemConv, ...]
    stages: tuple[Stage, ...]
    block: BlockName = "basic"
    num_classes: int = 400
    midplanes: tuple[int, ...] | None = None
    categories: str | None = "kinetics400_classes.txt"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    pretrained: Pretrained | None = None
    num_params: int | None = None  # as published by torchvision, checked against the expansion

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    def with_classes(self, num_classes: int) -> Arch:
        return replace(self, num_classes=num_classes)


def midplanes_formula(inplanes: int, planes: int) -> int:
    """R(2+1)D's width rule: as many parameters as the full 3x3x3 conv it replaces (rounded down)."""
    return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


# The stems of the paper's family. The R(2+1)D stem's 45 channels are torchvision's literal.
STEM_3D = (StemConv(64, (3, 7, 7), (1, 2, 2)),)
STEM_2D = (StemConv(64, (1, 7, 7), (1, 2, 2)),)
STEM_2PLUS1D = (StemConv(45, (1, 7, 7), (1, 2, 2)), StemConv(64, (3, 1, 1), (1, 1, 1)))

PLANES = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
DEPTH_18 = (2, 2, 2, 2)


def _stages(kinds: tuple[ConvKindName, ...], blocks: tuple[int, ...] = DEPTH_18) -> tuple[Stage, ...]:
    return tuple(Stage(p, b, s, k) for p, b, s, k in zip(PLANES, blocks, STRIDES, kinds))


VARIANTS: dict[str, Arch] = {
    arch.name: arch
    for arch in (
        Arch(
            "r3d_18",
            STEM_3D,
            _stages(("3d",) * 4),
            pretrained=Pretrained("https://download.pytorch.org/models/r3d_18-b3b3357e.pth", 63.200, 83.479),
            num_params=33_371_472,
        ),
        Arch(
            "mc3_18",
            STEM_3D,
            _stages(("3d", "2d", "2d", "2d")),
            pretrained=Pretrained("https://download.pytorch.org/models/mc3_18-a90a0ba3.pth", 63.960, 84.130),
            num_params=11_695_440,
        ),
        Arch(
            "r2plus1d_18",
            STEM_2PLUS1D,
            _stages(("2plus1d",) * 4),
            pretrained=Pretrained("https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth", 67.463, 86.175),
            num_params=31_505_325,
        ),
    )
}


def category_names(arch: Arch | str) -> list[str] | None:
    """The class names of `arch`'s logits, in order (Kinetics-400's ship with vrconvert); None if unnamed."""
    from importlib.resources import files

    variant = get(arch) if isinstance(arch, str) else arch
    if variant.categories is None:
        return None
    names = files(__package__).joinpath("data", variant.categories).read_text(encoding="utf-8").splitlines()
    return names if len(names) == variant.num_classes else None


def get(name: str) -> Arch:
    """The variant called `name`, or a KeyError that lists the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(VARIANTS)}") from None
