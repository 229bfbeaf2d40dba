"""The one hand-written description of every network vrconvert knows.

Plain Python, no framework import. A variant is a frozen record (stem, stages, block, head, metadata);
`vrconvert.converter.arch.layers.expand` turns it into the ordered layer records that both model builders
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
ConvKindName = Literal[
    "3d",
    "2d",
    "2plus1d",
    "b3d",
    "b2plus1d",
    "p3db",
    "fast",
    "splitfast",
    "2plus1d_paper",
    "p3db_paper",
    "fast_paper",
    "splitfast_paper",
    "c2p1",
]
BlockName = Literal["basic", "bottleneck"]
Activation = Literal["relu", "mish", "hard_swish"]  # torch ReLU / Mish / Hardswish; Keras' built-ins
# "torch": symmetric padding of kernel // 2, explicit; "same": TensorFlow's rule, computed per input size
# (total max((ceil(n/s) - 1) * s + k - n, 0), the smaller half before); "valid": none.
Padding = Literal["torch", "same", "valid"]


@dataclass(frozen=True, kw_only=True)
class ConvKind:
    """How one "3x3x3" convolution of a block is realised, and how its shortcut strides.

    `temporal` says whether the kind convolves and strides over time; `factorised` splits it into a
    spatial (1,k,k) conv, BatchNorm, ReLU and a temporal (k,1,1) conv with `midplanes` channels.
    """

    name: ConvKindName
    temporal: bool
    factorised: bool
    # A *unit* kind brings its own BatchNorm(s) and activation (the Keras projects' `K(C, k, s, act)`):
    # `parts` are its sub-convs as (name, kernel axes kept from k, reads) where reads is the part
    # whose output it convolves (None: the unit's input); parts reading the same input run in
    # parallel and are summed. `mid_formula` is ResNet18-2Plus1DD's rounded-up Tran width.
    parts: tuple[tuple[str, Triple, str | None], ...] = ()
    mid_formula: bool = False
    # Which stride axes each part takes (None: all of them in every part, the builder's compounding);
    # and whether parallel parts are summed before the activation (True) or each ReLU'd (the builder's).
    part_strides: tuple[Triple, ...] | None = None
    act_after_sum: bool = False
    # R(2+1)D's width rule for a spatial-then-temporal pair: the first part has `tran_width` channels
    # (as many parameters as the full conv it replaces), not the unit's width (the builder's quirk).
    tran_mid: bool = False

    @property
    def unit(self) -> bool:
        return bool(self.parts) or self.mid_formula

    def shortcut_stride(self, stride: int) -> Triple:
        return (stride if self.temporal else 1, stride, stride)


CONV_KINDS: dict[str, ConvKind] = {
    "3d": ConvKind(name="3d", temporal=True, factorised=False),  # torchvision Conv3DSimple
    "2d": ConvKind(name="2d", temporal=False, factorised=False),  # torchvision Conv3DNoTemporal
    "2plus1d": ConvKind(name="2plus1d", temporal=True, factorised=True),  # torchvision Conv2Plus1D
    # 3D-ResNet-Builder-for-Keras' kernels: every part has the unit's width and the unit's full stride
    # (so strides compound in the sequential kinds), each part is Conv3D -> BN -> ReLU, and only the
    # last part's ReLU is optional (`use_activation` reaches no other).
    "b3d": ConvKind(name="b3d", temporal=True, factorised=False, parts=(("threed", (1, 1, 1), None),)),
    "b2plus1d": ConvKind(
        name="b2plus1d", temporal=True, factorised=True, parts=(("two", (0, 1, 1), None), ("one", (1, 0, 0), "two"))
    ),
    "p3db": ConvKind(
        name="p3db", temporal=True, factorised=True, parts=(("left", (0, 1, 1), None), ("right", (1, 0, 0), None))
    ),
    "fast": ConvKind(
        name="fast",
        temporal=True,
        factorised=True,
        parts=(("xy", (0, 1, 1), None), ("xt", (1, 1, 0), "xy"), ("yt", (1, 0, 1), "xt")),
    ),
    "splitfast": ConvKind(
        name="splitfast",
        temporal=True,
        factorised=True,
        parts=(("xy", (0, 1, 1), None), ("xt", (1, 1, 0), "xy"), ("yt", (1, 0, 1), "xy")),
    ),
    # The same kernels as their papers define them: the stride taken once (space by the spatial part,
    # time by the temporal one), BN -> ReLU between sequential parts, parallel parts summed, then [ReLU];
    # (2+1)D's mid width is Tran et al.'s.
    "2plus1d_paper": ConvKind(
        name="2plus1d_paper",
        temporal=True,
        factorised=True,
        parts=(("two", (0, 1, 1), None), ("one", (1, 0, 0), "two")),
        mid_formula=False,
        part_strides=((0, 1, 1), (1, 0, 0)),
        tran_mid=True,
    ),
    "p3db_paper": ConvKind(
        name="p3db_paper",
        temporal=True,
        factorised=True,
        parts=(("left", (0, 1, 1), None), ("right", (1, 0, 0), None)),
        mid_formula=False,
        part_strides=None,
        act_after_sum=True,
    ),
    "fast_paper": ConvKind(
        name="fast_paper",
        temporal=True,
        factorised=True,
        parts=(("xy", (0, 1, 1), None), ("xt", (1, 1, 0), "xy"), ("yt", (1, 0, 1), "xt")),
        mid_formula=False,
        part_strides=((0, 1, 1), (1, 0, 0), (0, 0, 0)),
    ),
    "splitfast_paper": ConvKind(
        name="splitfast_paper",
        temporal=True,
        factorised=True,
        parts=(("xy", (0, 1, 1), None), ("xt", (1, 1, 0), "xy"), ("yt", (1, 0, 1), "xy")),
        mid_formula=False,
        part_strides=((0, 1, 1), (1, 0, 0), (1, 0, 0)),
        act_after_sum=True,
    ),
    # ResNet18-2Plus1DD's Conv2Plus1DLayer: spatial (1,h,w) then temporal (t,1,1) through
    # ceil(t*h*w*Cin*Cout / (h*w*Cin + t*Cout)) channels, nothing between them, then BN -> [ReLU].
    "c2p1": ConvKind(name="c2p1", temporal=True, factorised=True, mid_formula=True),
}


@dataclass(frozen=True)
class Pool:
    """A local pooling layer: max or average (an average with 'same' padding excludes padded cells, as
    Keras computes it), with its window, stride and padding (per axis T, H, W)."""

    kind: Literal["max", "avg"]
    kernel: Triple
    stride: Triple
    padding: Padding


@dataclass(frozen=True)
class StemConv:
    """One conv of the stem, always followed by BatchNorm and ReLU; padding is kernel // 2.

    With `conv` naming a unit kind, the stem conv is that kind's unit (its own BN and ReLU)."""

    channels: int
    kernel: Triple
    stride: Triple
    conv: ConvKindName | None = None


@dataclass(frozen=True)
class Stage:
    """One `layerN` of the network: `blocks` residual blocks, the first one striding."""

    planes: int
    blocks: int
    stride: int | Triple  # an int strides time as a torchvision conv kind says; a triple as given
    conv: ConvKindName


@dataclass(frozen=True)
class Preprocessing:
    """torchvision's `VideoClassification` eval transform for Kinetics-400. `resize` is (H, W), or (S,):
    the short side to S, the aspect ratio kept (torchvision's one-number resize)."""

    resize: tuple[int, int] | tuple[int] = (128, 171)
    crop: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
    frames: int = 16

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) a frame of `height` x `width` is resized to: `resize`, or torchvision's short-side
        rule (the long side `int(S * long / short)`)."""
        if len(self.resize) == 2:
            return self.resize
        short, long = sorted((height, width))
        side, other = self.resize[0], int(self.resize[0] * long / short)
        return (side, other) if height <= width else (other, side)


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

    `midplanes` overrides the R(2+1)D mid-channel formula with one width per factorised conv, in
    network order (checkpoints such as the IG65M ports use other widths); `None` means torchvision's
    formula, computed once per block from (inplanes, planes).

    The "Bag of Tricks" options (He et al., 2019, as the public Keras video-ResNet projects use them):
    `stride_on="second"` strides a basic block's second conv instead of its first (ResNet-B);
    `shortcut="avgpool"` downsamples the shortcut by average pooling, then a 1x1x1 conv (ResNet-D; the
    pool rounds up, so odd sizes shrink exactly as the strided branch does); `activation` picks ReLU,
    Mish or Hard-Swish everywhere. `se_ratio` adds squeeze-and-excitation after each residual branch.

    The public Keras projects' vocabulary: `padding` ("same" is TensorFlow's, per input size),
    `batchnorm` (epsilon, torch-convention momentum; Keras' defaults are (1e-3, 0.01)), `stem_pool`,
    `shortcut="unit"` (a projection by the stage's unit kind with a 1x1x1 kernel, ReLU'd when
    `shortcut_act`; after `shortcut_pool` when given, which strides instead), `stride_on="entry"` (a
    bottleneck strides its first 1x1x1 conv), `se_dense` (SE through Dense layers) and
    `head_activation` (an activation after the head, e.g. softmax; None returns logits).
    """

    name: str
    stem: tuple[StemConv, ...]
    stages: tuple[Stage, ...]
    block: BlockName = "basic"
    num_classes: int = 400
    midplanes: tuple[int, ...] | None = None
    activation: Activation = "relu"
    stride_on: Literal["first", "second", "entry"] = "first"
    shortcut: Literal["conv", "avgpool", "unit"] = "conv"
    se_ratio: int | None = None
    padding: Padding = "torch"
    batchnorm: tuple[float, float] = (1e-5, 0.1)
    stem_pool: Pool | None = None
    shortcut_act: bool = False
    shortcut_pool: Pool | None = None
    se_dense: bool = False
    head_activation: str | None = None
    origin: str | None = None  # the public project whose weight files this variant reads (formats.project_weights)
    categories: str | None = "kinetics400_classes.txt"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    pretrained: Pretrained | None = None
    num_params: int | None = None  # as published by torchvision, checked against the expansion
    description: str = ""

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def blocks(self) -> tuple[str, ...]:
        """The top-level blocks, in order: where per-block means are read."""
        return ("stem", *(f"layer{i}" for i in range(1, len(self.stages) + 1)))

    def with_classes(self, num_classes: int) -> Arch:
        return replace(self, num_classes=num_classes)


def tran_width(kernel: Triple, cin: int, cout: int, *, round_up: bool = False) -> int:
    """Tran et al.'s (2+1)D mid width: floor(t*h*w*Cin*Cout / (h*w*Cin + t*Cout)), as many parameters
    as the full (t, h, w) conv it replaces (ResNet18-2Plus1DD rounds up)."""
    t, h, w = kernel
    top, bottom = t * h * w * cin * cout, h * w * cin + t * cout
    return -(-top // bottom) if round_up else top // bottom


def midplanes_formula(inplanes: int, planes: int) -> int:
    """torchvision's R(2+1)D width: Tran's for a 3x3x3 conv, computed once per block from (inplanes,
    planes) and used for both of its convs."""
    return tran_width((3, 3, 3), inplanes, planes)


# The stems of the paper's family. The R(2+1)D stem's 45 channels are torchvision's literal.
STEM_3D = (StemConv(64, (3, 7, 7), (1, 2, 2)),)
STEM_2D = (StemConv(64, (1, 7, 7), (1, 2, 2)),)
STEM_2PLUS1D = (StemConv(45, (1, 7, 7), (1, 2, 2)), StemConv(64, (3, 1, 1), (1, 1, 1)))
# ResNet-C's three-conv stem, factorised as R(2+1)D factorises: two spatial 3x3s, then a temporal 3.
STEM_BAG_OF_TRICKS = (
    StemConv(32, (1, 3, 3), (1, 2, 2)),
    StemConv(32, (1, 3, 3), (1, 1, 1)),
    StemConv(64, (3, 1, 1), (1, 1, 1)),
)

PLANES = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
DEPTH_18 = (2, 2, 2, 2)
DEPTH_34 = (3, 4, 6, 3)  # also the 50-layer bottleneck network's block counts


def _stages(kinds: tuple[ConvKindName, ...], blocks: tuple[int, ...] = DEPTH_18) -> tuple[Stage, ...]:
    return tuple(Stage(p, b, s, k) for p, b, s, k in zip(PLANES, blocks, STRIDES, kinds, strict=True))


def _mixed(x: int, reverse: bool) -> tuple[tuple[StemConv, ...], tuple[Stage, ...]]:
    """MCx: 3D convolutions in groups conv1..conv(x-1), 2D from conv(x) on; rMCx the reverse.
    The paper's groups: conv1 is the stem, conv2..conv5 are layer1..layer4."""
    early, late = ("2d", "3d") if reverse else ("3d", "2d")
    kinds = tuple(early if group < x else late for group in range(2, 6))
    return (STEM_2D if reverse else STEM_3D), _stages(kinds)


_TORCHVISION = "https://download.pytorch.org/models/"

_ARCHS = (
    Arch(
        "r3d_18",
        STEM_3D,
        _stages(("3d",) * 4),
        num_params=33_371_472,
        pretrained=Pretrained(_TORCHVISION + "r3d_18-b3b3357e.pth", 63.200, 83.479),
        description="R3D-18, torchvision's r3d_18",
    ),
    Arch(
        "mc3_18",
        *_mixed(3, reverse=False),
        num_params=11_695_440,
        pretrained=Pretrained(_TORCHVISION + "mc3_18-a90a0ba3.pth", 63.960, 84.130),
        description="MC3-18, torchvision's mc3_18",
    ),
    Arch(
        "r2plus1d_18",
        STEM_2PLUS1D,
        _stages(("2plus1d",) * 4),
        num_params=31_505_325,
        pretrained=Pretrained(_TORCHVISION + "r2plus1d_18-91a641e6.pth", 67.463, 86.175),
        description="R(2+1)D-18, torchvision's r2plus1d_18",
    ),
    Arch("r2d_18", STEM_2D, _stages(("2d",) * 4), description="R2D-18: 2D convolutions only, time untouched"),
    *(
        Arch(f"mc{x}_18", *_mixed(x, reverse=False), description=f"MC{x}-18: 3D up to conv{x - 1}, then 2D")
        for x in (2, 4, 5)
    ),
    *(
        Arch(f"rmc{x}_18", *_mixed(x, reverse=True), description=f"rMC{x}-18: 2D up to conv{x - 1}, then 3D")
        for x in (2, 3, 4, 5)
    ),
    Arch("r3d_34", STEM_3D, _stages(("3d",) * 4, DEPTH_34), description="R3D-34"),
    Arch(
        "r2plus1d_34",
        STEM_2PLUS1D,
        _stages(("2plus1d",) * 4, DEPTH_34),
        description="R(2+1)D-34 (mid-channel widths read from a checkpoint's shapes when they differ)",
    ),
    Arch(
        "r3d_50",
        STEM_3D,
        _stages(("3d",) * 4, DEPTH_34),
        block="bottleneck",
        description="R3D-50: bottleneck blocks (1x1x1, 3x3x3, 1x1x1; expansion 4)",
    ),
    *(
        Arch(
            f"r2plus1d_18_bot{suffix}",
            STEM_BAG_OF_TRICKS,
            _stages(("2plus1d",) * 4),
            activation=act,
            stride_on="second",
            shortcut="avgpool",
            description=f"Bag-of-Tricks R(2+1)D-18: 3-conv stem, stride on conv2, avg-pool shortcut, {act}",
        )
        for suffix, act in (("", "relu"), ("_mish", "mish"), ("_hardswish", "hard_swish"))
    ),
    Arch(
        "r3d_18_se",
        STEM_3D,
        _stages(("3d",) * 4),
        se_ratio=16,
        description="R3D-18 with squeeze-and-excitation (ratio 16) after each residual branch",
    ),
    Arch(
        "r2plus1d_18_se",
        STEM_2PLUS1D,
        _stages(("2plus1d",) * 4),
        se_ratio=16,
        description="R(2+1)D-18 with squeeze-and-excitation (ratio 16) after each residual branch",
    ),
)

# The public Keras video ResNets, faithful: Keras' BatchNorm defaults, TensorFlow's 'same' padding.
KERAS_BATCHNORM = (1e-3, 0.01)  # epsilon 1e-3, Keras momentum 0.99
_BUILDER = "3D-ResNet-Builder-for-Keras @238f436"
_BUILDER_DEPTHS = {
    18: ("basic", DEPTH_18),
    34: ("basic", DEPTH_34),
    50: ("bottleneck", DEPTH_34),
    101: ("bottleneck", (3, 4, 23, 3)),  # the builder's "102"
    152: ("bottleneck", (3, 8, 36, 3)),
}
_BUILDER_KERNELS = {"3d": "b3d", "2plus1d": "b2plus1d", "p3db": "p3db", "fast": "fast", "splitfast": "splitfast"}
_BUILDER_LABELS = {
    "3d": "'3D'",
    "2plus1d": "'(2+1)D'",
    "p3db": "'P3D-B'",
    "fast": "'FAST'",
    "splitfast": "'split-FAST'",
}


def _builder(depth: int, kernel: str, se: bool = False, clean: bool = False) -> Arch:
    """thauptmann's `build_three_d_resnet_<depth>(kernel_name=..., squeeze_and_excitation=se)`, quirks
    included: every stride is (s, s, s) and sits in every part of a kernel (so '(2+1)D' and 'split-FAST'
    compound it to s^2, 'FAST' to s^3), a 'valid' 3/2 max-pool after the stem, a ReLU'd projection
    shortcut of the stage's kernel, bottlenecks stride their first 1x1x1 conv, softmax head (10 classes
    as the oracle built it; a file's own head width is read from it).

    `clean`: the same body with the kernel as its paper defines it (the stride taken once, parallel parts
    summed before the ReLU, (2+1)D at Tran's mid width), where the original crashes (bottleneck '(2+1)D',
    'split-FAST') or collapses short clips; such a variant reads no original file."""
    block, blocks = _BUILDER_DEPTHS[depth]
    kind = f"{kernel}_paper" if clean else _BUILDER_KERNELS[kernel]
    return Arch(
        f"builder_r{depth}_{'se_' if se else ''}{kernel}{'_clean' if clean else ''}",
        (StemConv(64, (7, 7, 7), (2, 2, 2), conv=kind),),
        tuple(Stage(p, b, (s, s, s), kind) for p, b, s in zip(PLANES, blocks, STRIDES, strict=True)),
        block=block,
        num_classes=10,
        stride_on="entry" if block == "bottleneck" else "first",
        shortcut="unit",
        shortcut_act=True,
        se_ratio=16 if se else None,
        se_dense=True,
        padding="same",
        batchnorm=KERAS_BATCHNORM,
        stem_pool=Pool("max", (3, 3, 3), (2, 2, 2), "valid"),
        head_activation="softmax",
        categories=None,
        origin=None if clean else "builder",
        description=f"{_BUILDER}: ResNet-{depth}{' SE' if se else ''}, kernel {_BUILDER_LABELS[kernel]} "
        + ("as its paper defines it (clean)" if clean else "(faithful)"),
    )


_C2P1_STEM = (
    StemConv(32, (3, 3, 3), (2, 2, 2), conv="c2p1"),
    StemConv(32, (3, 3, 3), (1, 1, 1), conv="c2p1"),
    StemConv(64, (3, 3, 3), (1, 1, 1), conv="c2p1"),
)
_KERAS_PROJECTS = (
    Arch(
        "resnet18_2plus1dd",
        _C2P1_STEM,
        (
            Stage(64, 1, (1, 1, 1), "c2p1"),
            Stage(128, 2, (1, 2, 2), "c2p1"),
            Stage(256, 2, (1, 2, 1), "c2p1"),  # the original's (1,2,1): W is downsampled only 16x
            Stage(512, 2, (1, 2, 2), "c2p1"),
        ),
        num_classes=256,  # a linear 256-d embedding, no classifier
        stride_on="second",
        shortcut="unit",
        shortcut_pool=Pool("avg", (2, 2, 2), (1, 1, 1), "same"),  # strided by the block
        padding="same",
        batchnorm=KERAS_BATCHNORM,
        stem_pool=Pool("max", (2, 2, 2), (2, 2, 2), "same"),
        categories=None,
        origin="2plus1dd",
        description="ResNet18-2Plus1DD @5cdec23 (AliKHaliliT): 7 blocks, (1,2,1) stride, 256-d embedding (faithful)",
    ),
    *(_builder(18, kernel) for kernel in _BUILDER_KERNELS),
    _builder(18, "3d", se=True),
    _builder(34, "3d"),
    _builder(50, "3d"),
    _builder(50, "p3db"),
    _builder(101, "3d"),
    _builder(152, "3d"),
    *(_builder(depth, kernel, clean=True) for depth in (18, 50) for kernel in ("2plus1d", "fast", "splitfast")),
    *(
        Arch(
            f"r3d_18_{kernel}",
            STEM_3D,
            _stages((f"{kernel}_paper",) * 4),
            description=f"R3D-18's torchvision body with the {_BUILDER_LABELS[kernel]} kernel as its paper defines it",
        )
        for kernel in ("p3db", "fast", "splitfast")
    ),
)
VARIANTS: dict[str, Arch] = {arch.name: arch for arch in (*_ARCHS, *_KERAS_PROJECTS)}


def category_names(arch: Arch | str) -> list[str] | None:
    """The class names of `arch`'s logits, in order (Kinetics-400's ship with vrconvert); None if unnamed."""
    from importlib.resources import files

    variant = get(arch) if isinstance(arch, str) else arch
    if variant.categories is None:
        return None
    names = files("vrconvert.converter").joinpath("data", variant.categories).read_text(encoding="utf-8").splitlines()
    return names if len(names) == variant.num_classes else None


def get(name: str) -> Arch:
    """The variant called `name`, or a KeyError that lists the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(VARIANTS)}") from None
