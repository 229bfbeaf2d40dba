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

from vrconvert.converter.arch.spec import CONV_KINDS, Arch, ConvKind, Triple, midplanes_formula

# conv, bn, dense: weighted modules; act: an activation module (`activation` says which); pool: a local
# average pool (the ResNet-D shortcut); gap: a global average pool keeping dims (squeeze-excitation);
# avgpool: the head's global pool (flattened); add, mul: functional steps with no module.
Op = Literal["conv", "bn", "act", "pool", "gap", "add", "mul", "avgpool", "dense"]
INPUT = "input"
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
    activation: str = ""  # for op "act": relu, mish, hard_swish or sigmoid
    mid: bool = False  # the spatial conv of a factorised (2+1)D pair: its width is a "midplanes"

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


def keras_name(torch_path: str) -> str:
    """The Keras spelling of a module path: dots become underscores (Keras' torch backend refuses dots)."""
    return torch_path.replace(".", "_")


def torch_path(keras_layer_name: str) -> str:
    """Inverse of `keras_name`; exact because no path component contains an underscore."""
    return keras_layer_name.replace("_", ".")


class _Graph:
    """Accumulates records; each helper returns the name of the record it added."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []

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
        padding = tuple(k // 2 for k in kernel)
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
        )

    def bn(self, name: str, x: str) -> str:
        channels = self.channels(x)
        return self.add(name, "bn", (x,), channels_in=channels, channels_out=channels)

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

    def squeeze_excite(self, prefix: str, x: str, channels: int, ratio: int) -> str:
        """Squeeze-and-excitation: global pool, 1x1x1 conv down, ReLU, 1x1x1 conv up, sigmoid, scale."""
        squeezed = max(1, channels // ratio)
        gate = self.add(f"{prefix}.pool", "gap", (x,))
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
    g = _Graph()
    act = arch.activation
    x, channels = INPUT, 3
    for i, stem in enumerate(arch.stem):
        x = g.conv(f"stem.{3 * i}", x, channels, stem.channels, stem.kernel, stem.stride)
        x = g.bn(f"stem.{3 * i + 1}", x)
        x = g.act(f"stem.{3 * i + 2}", x, act)
        channels = stem.channels

    widths = iter(arch.midplanes) if arch.midplanes is not None else None

    def width(kind: ConvKind, formula: int) -> int:
        """The next factorised conv's mid-channel width: the override's next value, or the formula."""
        if widths is None or not kind.factorised:
            return formula
        try:
            return next(widths)
        except StopIteration:
            raise ValueError(f"{arch.name}: too few midplanes ({len(arch.midplanes)})") from None

    block_act = "relu" if act == "relu" else "act"  # torchvision's name for a block's last activation
    for s, stage in enumerate(arch.stages, start=1):
        kind = CONV_KINDS[stage.conv]
        planes, out_planes = stage.planes, stage.planes * arch.expansion
        for b in range(stage.blocks):
            stride = stage.stride if b == 0 else 1
            formula = midplanes_formula(channels, planes)  # once per block, as torchvision does
            p, block_in = f"layer{s}.{b}", x
            if arch.block == "basic":
                first, second = (stride, 1) if arch.stride_on == "first" else (1, stride)
                x = g.conv_of_kind(f"{p}.conv1.0", x, kind, channels, planes, width(kind, formula), first)
                x = g.act(f"{p}.conv1.2", g.bn(f"{p}.conv1.1", x), act)
                x = g.conv_of_kind(f"{p}.conv2.0", x, kind, planes, planes, width(kind, formula), second)
                x = g.bn(f"{p}.conv2.1", x)
            else:
                x = g.conv(f"{p}.conv1.0", x, channels, planes, (1, 1, 1), (1, 1, 1))
                x = g.act(f"{p}.conv1.2", g.bn(f"{p}.conv1.1", x), act)
                x = g.conv_of_kind(f"{p}.conv2.0", x, kind, planes, planes, width(kind, formula), stride)
                x = g.act(f"{p}.conv2.2", g.bn(f"{p}.conv2.1", x), act)
                x = g.conv(f"{p}.conv3.0", x, planes, out_planes, (1, 1, 1), (1, 1, 1))
                x = g.bn(f"{p}.conv3.1", x)
            if arch.se_ratio:
                x = g.squeeze_excite(f"{p}.se", x, out_planes, arch.se_ratio)
            shortcut = block_in
            if stride != 1 or channels != out_planes:
                shortcut = g.shortcut(f"{p}.downsample", block_in, arch, kind, channels, out_planes, stride)
            x = g.add(f"{p}.add", "add", (x, shortcut))
            x = g.act(f"{p}.{block_act}", x, act)
            channels = out_planes
    if widths is not None and next(widths, None) is not None:
        raise ValueError(f"{arch.name}: more midplanes ({len(arch.midplanes)}) than factorised convs")

    x = g.add("avgpool", "avgpool", (x,))
    g.add("fc", "dense", (x,), channels_in=channels, channels_out=arch.num_classes, bias=True)
    return tuple(g.layers)


def midplane_convs(arch: Arch) -> tuple[Layer, ...]:
    """The spatial convs of the (2+1)D pairs, in network order: their widths are `arch.midplanes`."""
    return tuple(layer for layer in expand(arch) if layer.mid)


def count_params(layers: tuple[Layer, ...]) -> int:
    """Trainable parameters of the expanded network, computed from the records alone."""
    return sum(layer.num_params for layer in layers)


def stage_outputs(layers: tuple[Layer, ...]) -> dict[str, str]:
    """The record whose output ends each stage (stem, layer1..layer4): where per-stage means are read."""
    ends: dict[str, str] = {}
    for layer in layers:
        stage = layer.name.split(".", 1)[0]
        if stage in STAGES:
            ends[stage] = layer.name
    return ends
