"""The Swin3D family (torchvision's `swin3d_t`, `swin3d_s`, `swin3d_b`): its description and its expansion.

A variant is a frozen record (embedding width, blocks and heads per stage, window, patch); `expand` turns it
into ordered records named by torchvision's module paths, in `state_dict()` order, which the PyTorch
builder, the Keras builder and the weight mapping walk. One record is one torchvision module that owns
tensors (or a step that owns none), so a module's tensors keep torchvision's order inside it.
Plain Python: no framework import.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

from vrconvert.converter.arch.spec import Preprocessing, Pretrained

Triple = tuple[int, int, int]
INPUT = "input"
# embed: PatchEmbed3d's conv (input padded at the end to a multiple of the patch); norm: a LayerNorm over
# channels; attn: ShiftedWindowAttention3d; merge: PatchMerging (its reduction, then its norm); dense: a
# Linear on the last axis; gelu: the exact (erf) GELU; add: the residual sum; pool: the mean over time and
# space (the head's AdaptiveAvgPool3d, flattened)
SwinOp = Literal["embed", "norm", "attn", "merge", "dense", "gelu", "add", "pool"]
BLOCKS = ("patch_embed", "pos_drop", "features.0", "features.1", "features.2", "features.3")
MASK_VALUE = -100.0  # what torchvision adds to the attention logits of token pairs from different regions


@dataclass(frozen=True, kw_only=True)
class Swin3D:
    """A Video Swin Transformer as torchvision's `SwinTransformer3d` builds it (evaluation mode: dropout and
    stochastic depth are identities)."""

    name: str
    embed_dim: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    window: Triple = (8, 7, 7)
    patch: Triple = (2, 4, 4)
    mlp_ratio: int = 4
    epsilon: float = 1e-5  # torchvision's LayerNorm epsilon
    num_classes: int = 400
    num_params: int = 0  # torchvision's published count (400 classes)
    pretrained: Pretrained | None = None  # torchvision's KINETICS400_V1
    more_weights: tuple[tuple[str, Pretrained], ...] = ()  # other published files, by the name that fetches them
    description: str = ""
    resize: int = 256  # the eval transform: short side resized to this, then a centre crop
    crop: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    frames: int = 16

    family = "swin3d"

    def with_classes(self, num_classes: int) -> Swin3D:
        return self if num_classes == self.num_classes else replace(self, num_classes=num_classes)

    @property
    def preprocessing(self) -> Preprocessing:
        """torchvision's eval transform: the short side resized (a one-value `resize`), then a centre crop."""
        return Preprocessing(resize=(self.resize,), crop=self.crop, mean=self.mean, std=self.std, frames=self.frames)

    @property
    def width(self) -> int:
        """The channel count of the last stage (the head's input)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


_URL = "https://download.pytorch.org/models/"
VARIANTS: dict[str, Swin3D] = {
    "swin3d_t": Swin3D(
        name="swin3d_t",
        embed_dim=96,
        depths=(2, 2, 6, 2),
        heads=(3, 6, 12, 24),
        num_params=28158070,
        pretrained=Pretrained(url=_URL + "swin3d_t-7615ae03.pth", acc1=77.715, acc5=93.519),
        description="Video Swin-T (Liu et al., 2022), torchvision's swin3d_t",
    ),
    "swin3d_s": Swin3D(
        name="swin3d_s",
        embed_dim=96,
        depths=(2, 2, 18, 2),
        heads=(3, 6, 12, 24),
        num_params=49816678,
        pretrained=Pretrained(url=_URL + "swin3d_s-da41c237.pth", acc1=79.521, acc5=94.158),
        description="Video Swin-S, torchvision's swin3d_s",
    ),
    "swin3d_b": Swin3D(
        name="swin3d_b",
        embed_dim=128,
        depths=(2, 2, 18, 2),
        heads=(4, 8, 16, 32),
        num_params=88048984,
        pretrained=Pretrained(url=_URL + "swin3d_b_1k-24f7c7c6.pth", acc1=79.427, acc5=94.386),
        more_weights=(("swin3d_b_22k", Pretrained(url=_URL + "swin3d_b_22k-7c6ae6fa.pth", acc1=81.643, acc5=95.574)),),
        description="Video Swin-B, torchvision's swin3d_b (swin3d_b_22k: ImageNet-22k pretrained, 81.6% top-1)",
    ),
}


def published() -> dict[str, tuple[Swin3D, Pretrained]]:
    """Every published weights file by the name `--pretrained` takes: a variant's own (torchvision's
    KINETICS400_V1) under its name, and the others (swin3d_b's KINETICS400_IMAGENET22K_V1) under theirs."""
    out: dict[str, tuple[Swin3D, Pretrained]] = {}
    for variant in VARIANTS.values():
        if variant.pretrained is not None:
            out[variant.name] = (variant, variant.pretrained)
        out.update({name: (variant, weights) for name, weights in variant.more_weights})
    return out


@dataclass(frozen=True, kw_only=True)
class Node:
    """One record: a torchvision module (named by its path) or a step without one (`add`)."""

    name: str
    op: SwinOp
    inputs: tuple[str, ...]
    channels_in: int = 0
    channels_out: int = 0
    kernel: Triple = (1, 1, 1)  # embed: the patch (kernel and stride)
    heads: int = 0  # attn
    window: Triple = (1, 1, 1)  # attn: the configured window (it shrinks to the input where that is smaller)
    shift: Triple = (0, 0, 0)  # attn: the cyclic shift (dropped on axes where the window shrank)
    bias: bool = True
    epsilon: float = 1e-5  # norm, merge

    @property
    def has_weights(self) -> bool:
        return self.op in ("embed", "norm", "attn", "merge", "dense")

    @property
    def table_rows(self) -> int:
        """attn: rows of the relative position bias table, one per relative offset in the window."""
        t, h, w = self.window
        return (2 * t - 1) * (2 * h - 1) * (2 * w - 1)

    @property
    def num_params(self) -> int:
        cin, cout = self.channels_in, self.channels_out
        if self.op == "embed":
            return cin * cout * self.kernel[0] * self.kernel[1] * self.kernel[2] + cout
        if self.op == "norm":
            return 2 * cout
        if self.op == "dense":
            return cin * cout + self.bias * cout
        if self.op == "attn":
            return self.table_rows * self.heads + cin * 3 * cin + 3 * cin + cin * cin + cin
        if self.op == "merge":
            return 4 * cin * cout + 2 * 4 * cin
        return 0


def get(name: str) -> Swin3D:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown Swin3D variant {name!r}; known: {', '.join(VARIANTS)}") from None


@functools.lru_cache(maxsize=16)
def expand(arch: Swin3D) -> tuple[Node, ...]:
    """The records of `arch` in torchvision's module order (which is also a valid order to run them in)."""
    nodes: list[Node] = []

    def add(name: str, op: SwinOp, inputs: tuple[str, ...], **attrs) -> str:
        nodes.append(Node(name=name, op=op, inputs=inputs, epsilon=arch.epsilon, **attrs))
        return name

    dim = arch.embed_dim
    x = add("patch_embed.proj", "embed", (INPUT,), channels_in=3, channels_out=dim, kernel=arch.patch)
    x = add("patch_embed.norm", "norm", (x,), channels_in=dim, channels_out=dim)
    index = 0
    for stage, (depth, heads) in enumerate(zip(arch.depths, arch.heads, strict=True)):
        for b in range(depth):
            p = f"features.{index}.{b}"
            shift = tuple(w // 2 for w in arch.window) if b % 2 else (0, 0, 0)
            y = add(f"{p}.norm1", "norm", (x,), channels_in=dim, channels_out=dim)
            y = add(
                f"{p}.attn",
                "attn",
                (y,),
                channels_in=dim,
                channels_out=dim,
                heads=heads,
                window=arch.window,
                shift=shift,
            )
            x = add(f"{p}.add1", "add", (x, y))
            y = add(f"{p}.norm2", "norm", (x,), channels_in=dim, channels_out=dim)
            hidden = dim * arch.mlp_ratio
            y = add(f"{p}.mlp.0", "dense", (y,), channels_in=dim, channels_out=hidden)
            y = add(f"{p}.mlp.1", "gelu", (y,))
            y = add(f"{p}.mlp.3", "dense", (y,), channels_in=hidden, channels_out=dim)
            x = add(f"{p}.add2", "add", (x, y))
        index += 1
        if stage < len(arch.depths) - 1:
            x = add(f"features.{index}", "merge", (x,), channels_in=dim, channels_out=2 * dim)
            dim, index = 2 * dim, index + 1
    x = add("norm", "norm", (x,), channels_in=dim, channels_out=dim)
    x = add("avgpool", "pool", (x,))
    add("head", "dense", (x,), channels_in=dim, channels_out=arch.num_classes)
    return tuple(nodes)


def count_params(arch: Swin3D) -> int:
    return sum(node.num_params for node in expand(arch))


def block_outputs(arch: Swin3D) -> dict[str, str]:
    """The record whose output ends each top-level block (`patch_embed`, `features.N`, `norm`): where the
    per-block means that localise a divergence are read (`pos_drop` is the patch embedding's output)."""
    ends: dict[str, str] = {}
    for node in expand(arch):
        if node.op == "pool":
            break
        top = node.name.split(".")[0]
        key = top if top != "features" else ".".join(node.name.split(".")[:2])
        ends[key] = node.name
    ends["pos_drop"] = ends["patch_embed"]
    return ends


def relative_position_index(window: Triple) -> list[list[int]]:
    """torchvision's `relative_position_index` for a window: for tokens i, j (flattened T-major), the row of
    the bias table holding their offset (each axis' offset shifted to start at 0, then mixed radix)."""
    t, h, w = window
    coords = [(a, b, c) for a in range(t) for b in range(h) for c in range(w)]
    return [
        [
            (ai - aj + t - 1) * (2 * h - 1) * (2 * w - 1) + (bi - bj + h - 1) * (2 * w - 1) + (ci - cj + w - 1)
            for aj, bj, cj in coords
        ]
        for ai, bi, ci in coords
    ]


def effective_window(size: Triple, window: Triple, shift: Triple) -> tuple[Triple, Triple]:
    """torchvision's rule: on an axis no longer than the window, the window becomes the axis and the shift 0."""
    win = tuple(min(n, w) for n, w in zip(size, window, strict=True))
    step = tuple(0 if n <= w else s for n, w, s in zip(size, window, shift, strict=True))
    return win, step


def region_labels(padded: int, window: int, shift: int) -> list[int]:
    """Along one axis of the (padded, rolled) grid, which of torchvision's three shift regions each cell is in
    (all 0 without a shift); tokens of one window attend across regions only through `MASK_VALUE`."""
    if shift == 0:
        return [0] * padded
    return [int(i >= padded - window) + int(i >= padded - shift) for i in range(padded)]
