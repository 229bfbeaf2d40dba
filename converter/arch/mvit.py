"""The MViT family (torchvision's `mvit_v1_b`, `mvit_v2_s`): its description and its expansion.

Plain Python. A variant is a patch embedding, a stack of multiscale blocks described stage by stage
(depth, width, heads; pooling strides follow from the stage), and a class-token head. `expand` turns it
into ordered records named after torchvision's modules, in torchvision's registration order (so the
torch twin's `state_dict()` is torchvision's), each listing the records it reads; `dataflow` orders them
for execution. Both builders and the weight mapping walk these records.

MViT v1 ("Multiscale Vision Transformers", Fan et al., 2021) adds an absolute space-time position
embedding to its tokens; v2 (Li et al., 2022) replaces it by decomposed relative position terms inside
the attention, adds the pooled query back to the attention output (residual pooling) and widens the
channels inside the attention rather than in the MLP.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Literal

from vrconvert.converter.arch.layers import INPUT, ONE
from vrconvert.converter.arch.spec import Preprocessing, Pretrained, Triple


@dataclass(frozen=True, kw_only=True)
class Stage:
    """`depth` blocks of width `dim` and `heads` heads; the first block of every stage but the first
    halves the token grid in space (query pooling), and keys/values are pooled `kv_stride` in space."""

    depth: int
    dim: int
    heads: int
    kv_stride: int


@dataclass(frozen=True, kw_only=True)
class Block:
    """One `MultiscaleBlock`: widths, heads, and the pooling of queries and keys/values (kernel None:
    not pooled). `thw` is the token grid it receives."""

    dim_in: int
    dim_out: int
    heads: int
    kernel_q: Triple | None
    stride_q: Triple
    kernel_kv: Triple | None
    stride_kv: Triple
    thw: Triple

    attn_dim: int  # the attention's width: v2's output width, v1's input width


@dataclass(frozen=True, kw_only=True)
class MViTArch:
    """A complete MViT: everything a builder or the mapping needs, nothing framework-bound."""

    name: str
    version: Literal[1, 2]
    stages: tuple[Stage, ...]
    frames: int = 16
    size: int = 224
    patch_kernel: Triple = (3, 7, 7)
    patch_stride: Triple = (2, 4, 4)
    epsilon: float = 1e-6
    num_classes: int = 400
    activation: str = "gelu"
    categories: str | None = "kinetics400_classes.txt"
    preprocessing: Preprocessing = field(default_factory=lambda: MVIT_PREPROCESSING)
    pretrained: Pretrained | None = None
    num_params: int | None = None  # as published by torchvision, checked against the expansion
    description: str = ""

    def with_classes(self, num_classes: int) -> MViTArch:
        return replace(self, num_classes=num_classes)

    @property
    def clip(self) -> Triple:
        """The one input size (T, H, W) its weights fit: the position tables fix the token grid."""
        return (self.frames, self.size, self.size)

    @property
    def blocks(self) -> tuple[str, ...]:
        """The top-level blocks, in order: where per-block means are read."""
        depth = sum(stage.depth for stage in self.stages)
        return ("conv_proj", "pos_encoding", *(f"blocks.{i}" for i in range(depth)), "norm", "head.0", "head.1")

    @property
    def grid(self) -> Triple:
        """The token grid after the patch embedding (T, H, W)."""
        return (
            self.frames // self.patch_stride[0],
            self.size // self.patch_stride[1],
            self.size // self.patch_stride[2],
        )

    def settings(self) -> tuple[Block, ...]:
        """The per-block settings torchvision lists, derived from the stages.

        v2 widens at the first block of a stage (inside the attention); v1 widens at the last block of
        the stage before (in the MLP). Queries are pooled by a 3x3x3 window in every v2 block and only
        where they stride in v1; keys and values always by a 3x3x3 window."""
        out: list[Block] = []
        thw, dim = self.grid, self.stages[0].dim
        for s, stage in enumerate(self.stages):
            for b in range(stage.depth):
                stride_q = (1, 2, 2) if s > 0 and b == 0 else ONE
                last = b == stage.depth - 1 and s + 1 < len(self.stages)
                widen = self.version == 1 and last  # v1 widens in the MLP of a stage's last block
                dim_out = self.stages[s + 1].dim if widen else stage.dim
                pooled_q = self.version == 2 or stride_q != ONE
                out.append(
                    Block(
                        dim_in=dim,
                        dim_out=dim_out,
                        heads=stage.heads,
                        kernel_q=(3, 3, 3) if pooled_q else None,
                        stride_q=stride_q,
                        kernel_kv=(3, 3, 3),
                        stride_kv=(1, stage.kv_stride, stage.kv_stride),
                        thw=thw,
                        attn_dim=dim_out if self.version == 2 else dim,
                    )
                )
                thw = tuple(n // st for n, st in zip(thw, stride_q, strict=True))
                dim = dim_out
        return tuple(out)


Op = Literal["conv", "tokens", "posenc", "layernorm", "attention", "tokenpool", "dense", "act", "add", "classtoken"]


@dataclass(frozen=True, kw_only=True)
class Record:
    """One node, named by its torchvision module path (functional steps get a name of their own).

    conv: the patch embedding (`padding` both sides); tokens: (N, T, H, W, C) -> (N, T*H*W, C);
    posenc: prepends the class token (and, `absolute`, adds v1's position embedding); layernorm, dense,
    act (GELU) act on the last axis; attention: a `MultiscaleAttention` (`block` holds its settings);
    tokenpool: a max pool over the token grid, class token kept (the skip path of a query-pooling
    block); add; classtoken: the class token's features."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    channels_in: int = 0
    channels_out: int = 0
    kernel: Triple = ONE
    stride: Triple = ONE
    padding: Triple = (0, 0, 0)
    bias: bool = True
    epsilon: float = 1e-6
    thw: Triple = ONE
    absolute: bool = False  # posenc: v1's absolute position embedding
    block: Block | None = None  # attention
    rel_pos: bool = False  # attention: v2's decomposed relative position terms
    residual_pool: bool = False  # attention: v2's pooled-query residual

    @property
    def has_weights(self) -> bool:
        return self.op in ("conv", "dense", "layernorm", "posenc", "attention")

    @property
    def num_stats(self) -> int:
        return 0

    def tensors(self) -> dict[str, tuple[int, ...]]:
        """torch key suffix -> shape, in torchvision's state_dict order."""
        c_in, c_out = self.channels_in, self.channels_out
        if self.op == "conv":
            return {"weight": (c_out, c_in, *self.kernel), "bias": (c_out,)}
        if self.op == "dense":
            return {"weight": (c_out, c_in), "bias": (c_out,)}
        if self.op == "layernorm":
            return {"weight": (c_out,), "bias": (c_out,)}
        if self.op == "posenc":
            t, h, w = self.thw
            extra = {"spatial_pos": (h * w, c_out), "temporal_pos": (t, c_out), "class_pos": (c_out,)}
            return {"class_token": (c_out,), **(extra if self.absolute else {})}
        if self.op == "attention":
            return dict(attention_tensors(self))
        return {}

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.tensors().values())


def pool_padding(kernel: Triple) -> Triple:
    return tuple(k // 2 for k in kernel)


def rel_pos_sizes(block: Block) -> tuple[int, int]:
    """torchvision's table lengths (spatial, temporal), fixed by the block's input grid."""
    t, h, w = block.thw
    size = max(h, w)
    q_size, kv_size = size // block.stride_q[1], size // block.stride_kv[1]
    return 2 * max(q_size, kv_size) - 1, 2 * t - 1


def attention_tensors(record: Record) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """A `MultiscaleAttention`'s tensors in torchvision's state_dict order: (key suffix, torch shape)."""
    block = record.block
    hd = block.attn_dim // block.heads
    out: list[tuple[str, tuple[int, ...]]] = []
    if record.rel_pos:
        spatial, temporal = rel_pos_sizes(block)
        out += [("rel_pos_h", (spatial, hd)), ("rel_pos_w", (spatial, hd)), ("rel_pos_t", (temporal, hd))]
    out += [
        ("qkv.weight", (3 * block.attn_dim, block.dim_in)),
        ("qkv.bias", (3 * block.attn_dim,)),
        ("project.0.weight", (block.attn_dim, block.attn_dim)),
        ("project.0.bias", (block.attn_dim,)),
    ]
    for which, kernel in (("q", block.kernel_q), ("k", block.kernel_kv), ("v", block.kernel_kv)):
        if kernel is not None:
            out += [
                (f"pool_{which}.pool.weight", (hd, 1, *kernel)),
                (f"pool_{which}.norm_act.0.weight", (hd,)),
                (f"pool_{which}.norm_act.0.bias", (hd,)),
            ]
    return tuple(out)


def rel_pos_index(q: int, k: int) -> tuple[tuple[int, ...], ...]:
    """Row i, column j: the relative position table's row for query cell i and key cell j of one axis,
    the coarser grid's steps scaled so that both grids span the same extent (torchvision's rule)."""
    q_ratio, k_ratio = max(k / q, 1.0), max(q / k, 1.0)
    return tuple(tuple(int(i * q_ratio - (j + 1 - k) * k_ratio) for j in range(k)) for i in range(q))


def pooled(thw: Triple, kernel: Triple | None, stride: Triple) -> Triple:
    """The grid after a pool of `kernel`/`stride` padded by kernel // 2 (torch's floor rule)."""
    if kernel is None:
        return thw
    return tuple((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(thw, kernel, stride, strict=True))


@functools.lru_cache(maxsize=16)
def expand(arch: MViTArch) -> tuple[Record, ...]:
    """The ordered records of `arch`, in torchvision's module registration order."""
    recs: list[Record] = []

    def add(name: str, op: Op, inputs: tuple[str, ...], **attrs) -> str:
        recs.append(Record(name=name, op=op, inputs=inputs, **attrs))
        return name

    dim0 = arch.stages[0].dim
    x = add(
        "conv_proj",
        "conv",
        (INPUT,),
        channels_in=3,
        channels_out=dim0,
        kernel=arch.patch_kernel,
        stride=arch.patch_stride,
        padding=pool_padding(arch.patch_kernel),
    )
    x = add("tokens", "tokens", (x,), channels_out=dim0, thw=arch.grid)
    x = add("pos_encoding", "posenc", (x,), channels_out=dim0, thw=arch.grid, absolute=arch.version == 1)
    for i, block in enumerate(arch.settings()):
        x = _block(add, f"blocks.{i}", x, block, arch)
    last = arch.stages[-1].dim
    x = add("norm", "layernorm", (x,), channels_out=last, epsilon=arch.epsilon)
    x = add("head.0", "classtoken", (x,), channels_out=last)
    add("head.1", "dense", (x,), channels_in=last, channels_out=arch.num_classes)
    return tuple(recs)


def _block(add, p: str, x: str, block, arch: MViTArch) -> str:
    """One multiscale block's records (`add` appends one and returns its name); returns its output."""
    v2 = arch.version == 2
    skip_in = x
    if block.stride_q != ONE:  # registered first in torchvision; reads what the skip path carries
        kernel = tuple(s + 1 if s > 1 else s for s in block.stride_q)
        skip_in = f"{p}.project" if v2 and block.dim_in != block.dim_out else x
        skip = add(
            f"{p}.pool_skip",
            "tokenpool",
            (skip_in,),
            channels_out=block.dim_out if v2 else block.dim_in,
            kernel=kernel,
            stride=block.stride_q,
            padding=pool_padding(kernel),
            thw=block.thw,
        )
    else:
        skip = f"{p}.project" if v2 and block.dim_in != block.dim_out else x
    norm1 = add(f"{p}.norm1", "layernorm", (x,), channels_out=block.dim_in, epsilon=arch.epsilon)
    attn_add = f"{p}.attnadd"
    norm2 = add(f"{p}.norm2", "layernorm", (attn_add,), channels_out=block.attn_dim, epsilon=arch.epsilon)
    attn = add(
        f"{p}.attn",
        "attention",
        (norm1,),
        channels_in=block.dim_in,
        channels_out=block.attn_dim,
        thw=block.thw,
        epsilon=arch.epsilon,
        block=block,
        rel_pos=v2,
        residual_pool=v2,
    )
    hidden = add(f"{p}.mlp.0", "dense", (norm2,), channels_in=block.attn_dim, channels_out=4 * block.attn_dim)
    hidden = add(f"{p}.mlp.1", "act", (hidden,))
    mlp = add(f"{p}.mlp.3", "dense", (hidden,), channels_in=4 * block.attn_dim, channels_out=block.dim_out)
    shortcut = attn_add
    if block.dim_in != block.dim_out:  # v2 projects the attention's input, v1 the MLP's
        shortcut = add(
            f"{p}.project",
            "dense",
            (norm1 if v2 else norm2,),
            channels_in=block.dim_in if v2 else block.attn_dim,
            channels_out=block.dim_out,
        )
        shortcut = attn_add if v2 else shortcut
    add(attn_add, "add", (skip, attn))
    x = add(f"{p}.mlpadd", "add", (shortcut, mlp))
    return x


def dataflow(records: tuple[Record, ...]) -> tuple[Record, ...]:
    """`records` in an order that runs: each after the records it reads, otherwise as listed."""
    done, order, pending = {INPUT}, [], list(records)
    while pending:
        ready = next(r for r in pending if all(name in done for name in r.inputs))
        pending.remove(ready)
        order.append(ready)
        done.add(ready.name)
    return tuple(order)


def count_params(arch: MViTArch) -> int:
    return sum(r.num_params for r in expand(arch))


# Both variants' stages (torchvision lists them block by block): depth, width, heads, key/value stride.
STAGES = tuple(
    Stage(depth=d, dim=c, heads=h, kv_stride=s)
    for d, c, h, s in zip((1, 2, 11, 2), (96, 192, 384, 768), (1, 2, 4, 8), (8, 4, 2, 1), strict=True)
)
# torchvision's eval transform for both: short side to 256, centre crop 224, Kinetics' mean and std.
MVIT_PREPROCESSING = Preprocessing(resize=(256,), crop=(224, 224), mean=(0.45,) * 3, std=(0.225,) * 3)


_TORCHVISION = "https://download.pytorch.org/models/"
VARIANTS: dict[str, MViTArch] = {
    arch.name: arch
    for arch in (
        MViTArch(
            name="mvit_v1_b",
            version=1,
            stages=STAGES,
            num_params=36_610_672,
            pretrained=Pretrained(_TORCHVISION + "mvit_v1_b-dbeb1030.pth", 78.477, 93.582),
            description="MViT-B (v1), torchvision's mvit_v1_b: absolute position embedding; 16x224x224 only",
        ),
        MViTArch(
            name="mvit_v2_s",
            version=2,
            stages=STAGES,
            num_params=34_537_744,
            pretrained=Pretrained(_TORCHVISION + "mvit_v2_s-ae3be167.pth", 80.757, 94.665),
            description="MViTv2-S, torchvision's mvit_v2_s: relative positions, residual pooling; 16x224x224 only",
        ),
    )
}
