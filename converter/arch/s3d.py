"""S3D (Xie et al., "Rethinking Spatiotemporal Feature Learning", 2018) as torchvision defines it.

The family's one description: `features` is torchvision's `S3D.features` in order, each entry one of
its module kinds; `expand` turns a variant into the same torchvision-named layer records the ResNets
expand into, so both builders and the weight mapping walk S3D without knowing it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from vrconvert.converter.arch.layers import INPUT, Layer
from vrconvert.converter.arch.spec import Preprocessing, Pretrained, Triple


@dataclass(frozen=True, kw_only=True)
class Unit:
    """torchvision's `Conv3dNormActivation` (kernel 1x1x1, stride 1, no padding), or with `separable`
    its `TemporalSeparableConv`: a (1,k,k) then a (k,1,1) one, each with its BatchNorm and ReLU."""

    channels: int
    kernel: int = 1
    stride: int = 1
    separable: bool = False


@dataclass(frozen=True, kw_only=True)
class MaxPool:
    """`nn.MaxPool3d`: padded cells never win (torch pads with minus infinity)."""

    kernel: Triple
    stride: Triple
    padding: Triple


@dataclass(frozen=True, kw_only=True)
class Inception:
    """`SepInceptionBlock3D`: four branches joined on channels (1x1x1; 1x1x1 then separable 3; the
    same; a 3x3x3 max pool then 1x1x1)."""

    b0: int
    b1_mid: int
    b1: int
    b2_mid: int
    b2: int
    b3: int


Feature = Unit | MaxPool | Inception


def _inception(*widths: int) -> Inception:
    return Inception(**dict(zip(("b0", "b1_mid", "b1", "b2_mid", "b2", "b3"), widths, strict=True)))


_SPATIAL_POOL = MaxPool(kernel=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
FEATURES: tuple[Feature, ...] = (
    Unit(channels=64, kernel=7, stride=2, separable=True),
    _SPATIAL_POOL,
    Unit(channels=64),
    Unit(channels=192, kernel=3, separable=True),
    _SPATIAL_POOL,
    _inception(64, 96, 128, 16, 32, 32),
    _inception(128, 128, 192, 32, 96, 64),
    MaxPool(kernel=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)),
    _inception(192, 96, 208, 16, 48, 64),
    _inception(160, 112, 224, 24, 64, 64),
    _inception(128, 128, 256, 24, 64, 64),
    _inception(112, 144, 288, 32, 64, 64),
    _inception(256, 160, 320, 32, 128, 128),
    MaxPool(kernel=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0)),
    _inception(256, 160, 320, 32, 128, 128),
    _inception(384, 192, 384, 48, 128, 128),
)


@dataclass(frozen=True, kw_only=True)
class S3DArch:
    """An S3D variant: its features and head, and the metadata flows read on a variant of any family."""

    name: str
    features: tuple[Feature, ...] = FEATURES
    head_pool: Triple = (2, 7, 7)  # torchvision's `avgpool`: a stride-1 window, not a global pool
    dropout: float = 0.2
    batchnorm: tuple[float, float] = (1e-3, 1e-3)  # epsilon, torch-convention momentum
    num_classes: int = 400
    categories: str | None = "kinetics400_classes.txt"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    pretrained: Pretrained | None = None
    num_params: int | None = None  # as published by torchvision, checked against the expansion
    description: str = ""
    activation: str = "relu"  # what detection compares with a Keras file's activation
    head_activation: str | None = None  # the head returns logits

    def with_classes(self, num_classes: int) -> S3DArch:
        return replace(self, num_classes=num_classes)

    @property
    def blocks(self) -> tuple[str, ...]:
        """torchvision's top-level blocks, in order: where per-block means are read."""
        return (*(f"features.{i}" for i in range(len(self.features))), "classifier.0", "classifier.1")


class _Records:
    """Accumulates records; each helper returns the name of the record it added."""

    def __init__(self, arch: S3DArch) -> None:
        self.layers: list[Layer] = []
        self.eps, self.momentum = arch.batchnorm

    def add(self, name: str, op: str, inputs: tuple[str, ...], **attrs) -> str:
        self.layers.append(Layer(name=name, op=op, inputs=inputs, **attrs))
        return name

    def cna(self, name: str, x: str, cin: int, cout: int, kernel: Triple, stride: Triple) -> str:
        """`Conv3dNormActivation`: conv (no bias, padding kernel // 2), BatchNorm, ReLU as `.0 .1 .2`."""
        padding = tuple(k // 2 for k in kernel)
        x = self.add(
            f"{name}.0", "conv", (x,), channels_in=cin, channels_out=cout, kernel=kernel, stride=stride, padding=padding
        )
        x = self.add(
            f"{name}.1", "bn", (x,), channels_in=cout, channels_out=cout, epsilon=self.eps, momentum=self.momentum
        )
        return self.add(f"{name}.2", "act", (x,), activation="relu")

    def unit(self, name: str, x: str, cin: int, unit: Unit) -> str:
        if not unit.separable:
            return self.cna(name, x, cin, unit.channels, (1, 1, 1), (1, 1, 1))
        k, s, c = unit.kernel, unit.stride, unit.channels
        x = self.cna(f"{name}.0", x, cin, c, (1, k, k), (1, s, s))
        return self.cna(f"{name}.1", x, c, c, (k, 1, 1), (s, 1, 1))

    def maxpool(self, name: str, x: str, pool: MaxPool) -> str:
        return self.add(
            name, "maxpool", (x,), kernel=pool.kernel, stride=pool.stride, padding=pool.padding, padding_mode="torch"
        )

    def inception(self, name: str, x: str, cin: int, block: Inception) -> str:
        b0 = self.unit(f"{name}.branch0", x, cin, Unit(channels=block.b0))
        b1 = self.unit(f"{name}.branch1.0", x, cin, Unit(channels=block.b1_mid))
        b1 = self.unit(f"{name}.branch1.1", b1, block.b1_mid, Unit(channels=block.b1, kernel=3, separable=True))
        b2 = self.unit(f"{name}.branch2.0", x, cin, Unit(channels=block.b2_mid))
        b2 = self.unit(f"{name}.branch2.1", b2, block.b2_mid, Unit(channels=block.b2, kernel=3, separable=True))
        b3 = self.maxpool(f"{name}.branch3.0", x, MaxPool(kernel=(3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1)))
        b3 = self.unit(f"{name}.branch3.1", b3, cin, Unit(channels=block.b3))
        return self.add(f"{name}.cat", "concat", (b0, b1, b2, b3), channels_out=out_channels(block, cin))


def out_channels(feature: Feature, cin: int) -> int:
    """A feature's output width given its input width."""
    if isinstance(feature, Unit):
        return feature.channels
    if isinstance(feature, Inception):
        return feature.b0 + feature.b1 + feature.b2 + feature.b3
    return cin


@functools.lru_cache(maxsize=16)
def expand(arch: S3DArch) -> tuple[Layer, ...]:
    """The ordered records of `arch`, named as torchvision's modules (`features.5.branch1.1.0.0`)."""
    g = _Records(arch)
    x, channels = INPUT, 3
    for i, feature in enumerate(arch.features):
        name = f"features.{i}"
        if isinstance(feature, Unit):
            x = g.unit(name, x, channels, feature)
        elif isinstance(feature, MaxPool):
            x = g.maxpool(name, x, feature)
        else:
            x = g.inception(name, x, channels, feature)
        channels = out_channels(feature, channels)
    x = g.add("avgpool", "pool", (x,), kernel=arch.head_pool)
    x = g.add("classifier.0", "dropout", (x,), rate=arch.dropout)
    x = g.add(
        "classifier.1", "conv", (x,), channels_in=channels, channels_out=arch.num_classes, kernel=(1, 1, 1), bias=True
    )
    g.add("mean", "avgpool", (x,))  # torch.mean over T, H and W: the logits
    return tuple(g.layers)


_TORCHVISION = "https://download.pytorch.org/models/"
VARIANTS: dict[str, S3DArch] = {
    "s3d": S3DArch(
        name="s3d",
        num_params=8_320_048,
        preprocessing=Preprocessing(resize=(256, 256), crop=(224, 224)),
        pretrained=Pretrained(_TORCHVISION + "s3d-d76dad2f.pth", 68.368, 88.050),
        description="S3D, torchvision's s3d: separable 3D convolutions in inception blocks",
    ),
}
