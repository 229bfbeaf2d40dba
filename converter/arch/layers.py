"""Expansion of an architecture spec into the ordered layer records every other part walks.

A record is named by its exact torchvision module path (`layer2.0.conv1.0.3`, index gaps included),
and lists the records it reads from, so the list is a small dataflow graph in torchvision's
`state_dict()` order. The PyTorch builder, the Keras builder and the weight mapping are all loops over
this list; none of them knows anything about R3D, MC3 or R(2+1)D.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Literal

from vrconvert.converter.arch.spec import (
    CONV_KINDS,
    Arch,
    ConvKind,
    Padding,
    Pool,
    Triple,
    midplanes_formula,
    tran_width,
)

# conv, bn, dense: weighted modules; act: an activation module (`activation` says which); pool: a local
# average pool (the ResNet-D shortcut; with "same" padding its average excludes the padded cells);
# maxpool: a local max pool (with "torch" padding, padded cells never win); gap: a global average pool
# keeping dims (squeeze-excitation); avgpool: the head's global pool (flattened); add, mul, concat (on
# channels): functional steps with no module; dropout: identity at inference. A dense record reading a
# 5-D value (squeeze-excitation's) acts on the channel axis.
Op = Literal["conv", "bn", "act", "pool", "maxpool", "gap", "add", "mul", "avgpool", "dense", "concat", "dropout"]
ONE: Triple = (1, 1, 1)
INPUT = "input"
PREPROCESSING_PREFIX = "preprocess_"  # names the layers of a model's built-in eval transform
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
_COMPONENT = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class Layer:
    """One node: a torch module (conv, bn, relu, avgpool, dense) or a functional step (add)."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    channels_in: int = 0
    channels_out: int = 0
    kernel: Triple = (1, 1, 1)
    stride: Triple = (1, 1, 1)
    padding: Triple = (0, 0, 0)
    bias: bool = False
    activation: str = ""  # for op "act": relu, mish, hard_swish, sigmoid or softmax
    mid: bool = False  # the spatial conv of a factorised (2+1)D pair: its width is a "midplanes"
    padding_mode: Padding = "torch"  # conv and pools: "torch" = `padding` both sides; "same" = TF's rule
    epsilon: float = 1e-5  # bn
    momentum: float = 0.1  # bn, torch's convention (Keras' is 1 - this)
    rate: float = 0.0  # dropout: the probability of zeroing a value in training

    @property
    def has_weights(self) -> bool:
        return self.op in ("conv", "bn", "dense")

    @property
    def num_params(self) -> int:
        """Trainable parameters (BatchNorm statistics are buffers, not parameters)."""
        if self.op == "conv":
            return self.channels_in * self.channels_out * math.prod(self.kernel) + self.bias * self.channels_out
        if self.op == "bn":
            return 2 * self.channels_out
        if self.op == "dense":
            return self.channels_in * self.channels_out + self.bias * self.channels_out
        return 0

    @property
    def num_stats(self) -> int:
        """Non-trainable values: a BatchNorm's running mean and variance."""
        return 2 * self.channels_out if self.op == "bn" else 0


def keras_name(torch_path: str) -> str:
    """The Keras spelling of a module path: dots become underscores (Keras' torch backend refuses dots),
    and a component's own underscore is doubled (`pos_encoding` -> `pos__encoding`), so that names
    without one (every ResNet's) are spelled as before and the spelling stays invertible."""
    return torch_path.replace("_", "__").replace(".", "_")


def torch_path(keras_layer_name: str) -> str:
    """Inverse of `keras_name`: a doubled underscore is the component's own, a single one a dot."""
    return "_".join(part.replace("_", ".") for part in keras_layer_name.split("__"))


class _Graph:
    """Accumulates records; each helper returns the name of the record it added."""

    def __init__(self, arch: Arch | None = None) -> None:
        self.layers: list[Layer] = []
        self.padding: Padding = arch.padding if arch else "torch"
        self.batchnorm = arch.batchnorm if arch else (1e-5, 0.1)

    def add(self, name: str, op: Op, inputs: tuple[str, ...], **attrs) -> str:
        if not all(_COMPONENT.fullmatch(part) for part in name.split(".")):
            raise ValueError(f"module path {name!r} must be dot-separated alphanumeric components")
        self.layers.append(Layer(name, op, inputs, **attrs))
        return name

    def conv(
        self,
        name: str,
        x: str,
        cin: int,
        cout: int,
        kernel: Triple,
        stride: Triple,
        *,
        bias: bool = False,
        mid: bool = False,
    ) -> str:
        padding = tuple(k // 2 for k in kernel) if self.padding == "torch" else (0, 0, 0)
        return self.add(
            name,
            "conv",
            (x,),
            channels_in=cin,
            channels_out=cout,
            kernel=kernel,
            stride=stride,
            padding=padding,
            bias=bias,
            mid=mid,
            padding_mode=self.padding,
        )

    def bn(self, name: str, x: str) -> str:
        channels = self.channels(x)
        eps, momentum = self.batchnorm
        return self.add(name, "bn", (x,), channels_in=channels, channels_out=channels, epsilon=eps, momentum=momentum)

    def pool(self, name: str, x: str, pool: Pool, stride: Triple | None = None) -> str:
        """A stem's or a shortcut's local pool; `stride` overrides the pool's (a block's stride)."""
        op = "maxpool" if pool.kind == "max" else "pool"
        return self.add(name, op, (x,), kernel=pool.kernel, stride=stride or pool.stride, padding_mode=pool.padding)

    def unit(self, name: str, x: str, kind: ConvKind, cin: int, cout: int, kernel: Triple, stride: Triple, act) -> str:
        """A unit kind's `K(cout, kernel, stride, act)`: its convs, BatchNorms and activations, summing
        parallel parts; `act` (an activation name or None) reaches only the last part, as in the originals."""
        if kind.mid_formula:  # ResNet18-2Plus1DD: nothing between the two convs, then BN -> [act]
            t, h, w = kernel
            mid = tran_width(kernel, cin, cout, round_up=True)
            x = self.conv(f"{name}.spatial", x, cin, mid, (1, h, w), (1, stride[1], stride[2]))
            x = self.conv(f"{name}.temporal", x, mid, cout, (t, 1, 1), (stride[0], 1, 1))
            x = self.bn(f"{name}.bn", x)
            return self.act(f"{name}.relu", x, act) if act else x
        outs: dict[str, str] = {}
        leaves = [part for part, _, _ in kind.parts if all(reads != part for _, _, reads in kind.parts)]
        masks = kind.part_strides or ((1, 1, 1),) * len(kind.parts)
        mid = tran_width(kernel, cin, cout) if kind.tran_mid else cout  # width of the parts before the last
        for (part, keep, reads), mask in zip(kind.parts, masks, strict=True):
            sub = tuple(k if kept else 1 for k, kept in zip(kernel, keep, strict=True))
            step = tuple(s if m else 1 for s, m in zip(stride, mask, strict=True))
            src, c_in = (x, cin) if reads is None else (outs[reads], self.channels(outs[reads]))
            c_out = cout if part in leaves else mid
            y = self.bn(f"{name}.{part}.bn", self.conv(f"{name}.{part}.conv", src, c_in, c_out, sub, step))
            if kind.act_after_sum and len(leaves) > 1 and part in leaves:
                pass  # summed first, activated after the sum
            elif part not in leaves or part != kind.parts[-1][0]:  # between parts, and the builder's other
                y = self.act(f"{name}.{part}.relu", y, "relu")  # branches: always a ReLU
            elif act:  # `act` (use_activation) reaches the last part only
                y = self.act(f"{name}.{part}.relu", y, act)
            outs[part] = y
        if len(leaves) == 1:
            return outs[leaves[0]]
        y = self.add(f"{name}.add", "add", tuple(outs[part] for part in leaves))
        return self.act(f"{name}.relu", y, act) if act and kind.act_after_sum else y

    def act(self, name: str, x: str, activation: str) -> str:
        return self.add(name, "act", (x,), activation=activation)

    def channels(self, name: str) -> int:
        """The channel count of a record's output (activations and pools pass theirs through)."""
        for layer in reversed(self.layers):
            if layer.name == name:
                return layer.channels_out if layer.op in ("conv", "bn", "dense") else self.channels(layer.inputs[0])
        raise KeyError(name)

    def conv_of_kind(self, name: str, x: str, kind: ConvKind, cin: int, cout: int, mid: int, stride: int) -> str:
        """torchvision's conv builders: `Conv3DSimple`, `Conv3DNoTemporal`, `Conv2Plus1D` (its inner
        activation is always a ReLU, as in torchvision)."""
        if kind.factorised:
            x = self.conv(f"{name}.0", x, cin, mid, (1, 3, 3), (1, stride, stride), mid=True)
            x = self.bn(f"{name}.1", x)
            x = self.act(f"{name}.2", x, "relu")
            return self.conv(f"{name}.3", x, mid, cout, (3, 1, 1), (stride, 1, 1))
        if kind.temporal:
            return self.conv(name, x, cin, cout, (3, 3, 3), (stride,) * 3)
        return self.conv(name, x, cin, cout, (1, 3, 3), (1, stride, stride))

    def squeeze_excite(self, prefix: str, x: str, channels: int, ratio: int, dense: bool = False) -> str:
        """Squeeze-and-excitation: global pool, 1x1x1 conv (or Dense) down, ReLU, up, sigmoid, scale."""
        squeezed = max(1, channels // ratio)
        gate = self.add(f"{prefix}.pool", "gap", (x,))
        if dense:  # 3D-ResNet-Builder's form: Dense layers (with biases) on the pooled channels
            gate = self.add(f"{prefix}.fc1", "dense", (gate,), channels_in=channels, channels_out=squeezed, bias=True)
            gate = self.act(f"{prefix}.act", gate, "relu")
            gate = self.add(f"{prefix}.fc2", "dense", (gate,), channels_in=squeezed, channels_out=channels, bias=True)
            gate = self.act(f"{prefix}.gate", gate, "sigmoid")
            return self.add(f"{prefix}.scale", "mul", (x, gate))
        gate = self.conv(f"{prefix}.fc1", gate, channels, squeezed, (1, 1, 1), (1, 1, 1), bias=True)
        gate = self.act(f"{prefix}.act", gate, "relu")
        gate = self.conv(f"{prefix}.fc2", gate, squeezed, channels, (1, 1, 1), (1, 1, 1), bias=True)
        gate = self.act(f"{prefix}.gate", gate, "sigmoid")
        return self.add(f"{prefix}.scale", "mul", (x, gate))

    def shortcut(self, prefix: str, x: str, arch: Arch, kind: ConvKind, cin: int, cout: int, stride: int) -> str:
        """torchvision's strided 1x1x1 conv + BatchNorm, or ResNet-D's average pool (when striding),
        1x1x1 conv and BatchNorm (named as the Sequential(pool or Identity, conv, bn) it stands for).

        The pool is 3 wide with stride 2 and one zero of padding each side (zeros counted), so its
        output has the strided branch's size for any input, odd or a single frame, where ResNet-D's
        2-wide ceil-mode pool fails on inputs smaller than its window."""
        step = kind.shortcut_stride(stride)
        if arch.shortcut == "conv":
            x = self.conv(f"{prefix}.0", x, cin, cout, (1, 1, 1), step)
            return self.bn(f"{prefix}.1", x)
        if stride != 1:  # a 3-wide, zero-padded window per strided axis: the conv branch's output size
            kernel = tuple(3 if st > 1 else 1 for st in step)  # for every input size, even 1
            x = self.add(f"{prefix}.0", "pool", (x,), kernel=kernel, stride=step, padding=tuple(k // 2 for k in kernel))
        x = self.conv(f"{prefix}.1", x, cin, cout, (1, 1, 1), (1, 1, 1))
        return self.bn(f"{prefix}.2", x)


@functools.lru_cache(maxsize=64)
def expand(arch: Arch) -> tuple[Layer, ...]:
    """The ordered layer records of `arch`, named and ordered as torchvision's modules.

    Cached: records and specs are immutable, and mapping, accounting and builders all walk them."""
    g = _Graph(arch)
    x, channels = _stem(g, arch)
    widths = _Widths(arch)
    for s, stage in enumerate(arch.stages, start=1):
        kind = CONV_KINDS[stage.conv]
        for b in range(stage.blocks):
            if kind.unit:
                triple = stage.stride if isinstance(stage.stride, tuple) else (stage.stride,) * 3
                x = _unit_block(g, arch, f"layer{s}.{b}", x, kind, channels, stage.planes, triple if b == 0 else ONE)
            else:
                x = _block(
                    g, arch, f"layer{s}.{b}", x, kind, channels, stage.planes, stage.stride if b == 0 else 1, widths
                )
            channels = stage.planes * arch.expansion
    widths.check_used()
    x = g.add("avgpool", "avgpool", (x,))
    x = g.add("fc", "dense", (x,), channels_in=channels, channels_out=arch.num_classes, bias=True)
    if arch.head_activation:
        g.act("head", x, arch.head_activation)
    return tuple(g.layers)


def _stem(g: _Graph, arch: Arch) -> tuple[str, int]:
    """The stem's records (and its pool); returns (output, channels)."""
    x, channels, act = INPUT, 3, arch.activation
    for i, stem in enumerate(arch.stem):
        if stem.conv is not None:  # a unit kind's K(channels, kernel, stride, act)
            x = g.unit(f"stem.{i}", x, CONV_KINDS[stem.conv], channels, stem.channels, stem.kernel, stem.stride, act)
        else:
            x = g.conv(f"stem.{3 * i}", x, channels, stem.channels, stem.kernel, stem.stride)
            x = g.bn(f"stem.{3 * i + 1}", x)
            x = g.act(f"stem.{3 * i + 2}", x, act)
        channels = stem.channels
    if arch.stem_pool is not None:
        x = g.pool("stem.pool", x, arch.stem_pool)
    return x, channels


class _Widths:
    """The factorised convs' mid-channel widths: the arch's override, one value per conv in network order,
    or torchvision's formula."""

    def __init__(self, arch: Arch) -> None:
        self.arch = arch
        self.values = iter(arch.midplanes) if arch.midplanes is not None else None

    def next(self, kind: ConvKind, formula: int) -> int:
        if self.values is None or not kind.factorised:
            return formula
        try:
            return next(self.values)
        except StopIteration:
            raise ValueError(f"{self.arch.name}: too few midplanes ({len(self.arch.midplanes)})") from None

    def check_used(self) -> None:
        if self.values is not None and next(self.values, None) is not None:
            raise ValueError(f"{self.arch.name}: more midplanes ({len(self.arch.midplanes)}) than factorised convs")


def _block(
    g: _Graph, arch: Arch, p: str, x: str, kind: ConvKind, channels: int, planes: int, stride: int, widths: _Widths
) -> str:
    """One torchvision residual block (basic or bottleneck), its shortcut and activation."""
    act, out_planes, block_in = arch.activation, planes * arch.expansion, x
    formula = midplanes_formula(channels, planes)  # once per block, as torchvision does
    if arch.block == "basic":
        first, second = (stride, 1) if arch.stride_on == "first" else (1, stride)
        x = g.conv_of_kind(f"{p}.conv1.0", x, kind, channels, planes, widths.next(kind, formula), first)
        x = g.act(f"{p}.conv1.2", g.bn(f"{p}.conv1.1", x), act)
        x = g.conv_of_kind(f"{p}.conv2.0", x, kind, planes, planes, widths.next(kind, formula), second)
        x = g.bn(f"{p}.conv2.1", x)
    else:
        x = g.conv(f"{p}.conv1.0", x, channels, planes, (1, 1, 1), (1, 1, 1))
        x = g.act(f"{p}.conv1.2", g.bn(f"{p}.conv1.1", x), act)
        x = g.conv_of_kind(f"{p}.conv2.0", x, kind, planes, planes, widths.next(kind, formula), stride)
        x = g.act(f"{p}.conv2.2", g.bn(f"{p}.conv2.1", x), act)
        x = g.conv(f"{p}.conv3.0", x, planes, out_planes, (1, 1, 1), (1, 1, 1))
        x = g.bn(f"{p}.conv3.1", x)
    if arch.se_ratio:
        x = g.squeeze_excite(f"{p}.se", x, out_planes, arch.se_ratio)
    shortcut = block_in
    if stride != 1 or channels != out_planes:
        shortcut = g.shortcut(f"{p}.downsample", block_in, arch, kind, channels, out_planes, stride)
    x = g.add(f"{p}.add", "add", (x, shortcut))
    return g.act(f"{p}.{'relu' if act == 'relu' else 'act'}", x, act)  # torchvision's name for the last one


def _unit_block(g: _Graph, arch: Arch, p: str, x: str, kind: ConvKind, cin: int, planes: int, stride: Triple) -> str:
    """A residual block of unit kinds (the public Keras projects' blocks), in their weight order:
    the residual branch, the projection shortcut, then squeeze-and-excitation on the branch."""
    act, out_planes = arch.activation, planes * arch.expansion
    if arch.block == "basic":
        first, second = (ONE, stride) if arch.stride_on == "second" else (stride, ONE)
        y = g.unit(f"{p}.conv1", x, kind, cin, planes, (3, 3, 3), first, act)
        y = g.unit(f"{p}.conv2", y, kind, planes, planes, (3, 3, 3), second, None)
    else:  # the 1x1x1 convs are always the full-3D unit; only the middle conv is of the stage's kind
        entry, middle = (stride, ONE) if arch.stride_on == "entry" else (ONE, stride)
        point = CONV_KINDS["b3d"]
        y = g.unit(f"{p}.conv1", x, point, cin, planes, ONE, entry, act)
        y = g.unit(f"{p}.conv2", y, kind, planes, planes, (3, 3, 3), middle, act)
        y = g.unit(f"{p}.conv3", y, point, planes, out_planes, ONE, ONE, None)
    shortcut = x
    if (stride != ONE or cin != out_planes) and arch.shortcut == "conv":  # torchvision's 1x1x1 conv + BN
        shortcut = g.bn(f"{p}.downsample.1", g.conv(f"{p}.downsample.0", x, cin, out_planes, ONE, stride))
    elif stride != ONE or cin != out_planes:
        step = stride
        if arch.shortcut_pool is not None:  # pool first (it strides), then the 1x1x1 unit
            shortcut, step = g.pool(f"{p}.shortcut.pool", x, arch.shortcut_pool, stride), ONE
        shortcut = g.unit(
            f"{p}.shortcut", shortcut, kind, cin, out_planes, ONE, step, act if arch.shortcut_act else None
        )
    if arch.se_ratio:
        y = g.squeeze_excite(f"{p}.se", y, out_planes, arch.se_ratio, dense=arch.se_dense)
    x = g.add(f"{p}.add", "add", (y, shortcut))
    return g.act(f"{p}.relu", x, act)


def midplane_convs(arch: Arch) -> tuple[Layer, ...]:
    """The spatial convs of the (2+1)D pairs, in network order: their widths are `arch.midplanes`."""
    return tuple(layer for layer in expand(arch) if layer.mid)


def count_params(layers: tuple[Layer, ...]) -> int:
    """Trainable parameters of the expanded network, computed from the records alone."""
    return sum(layer.num_params for layer in layers)


def count_stats(layers: tuple[Layer, ...]) -> int:
    """Non-trainable values (BatchNorm running statistics), as Keras counts them."""
    return sum(layer.num_stats for layer in layers)


def stage_outputs(layers: tuple[Layer, ...]) -> dict[str, str]:
    """The record whose output ends each stage (stem, layer1..layer4): where per-stage means are read."""
    ends: dict[str, str] = {}
    for layer in layers:
        stage = layer.name.split(".", 1)[0]
        if stage in STAGES:
            ends[stage] = layer.name
    return ends


def block_outputs(layers: tuple[Layer, ...], blocks: tuple[str, ...]) -> dict[str, str]:
    """The record whose output ends each block (a module path such as `features.5`): the last record at
    or under that path. Where a family's per-block means are read and a divergence is placed."""
    ends: dict[str, str] = {}
    for layer in layers:
        for block in blocks:
            if layer.name == block or layer.name.startswith(block + "."):
                ends[block] = layer.name
    return {block: ends[block] for block in blocks if block in ends}
