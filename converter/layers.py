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

from .spec import CONV_KINDS, Arch, ConvKind, Triple, midplanes_formula

Op = Literal["conv", "bn", "relu", "add", "avgpool", "dense"]
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

    def conv(self, name: str, x: str, cin: int, cout: int, kernel: Triple, stride: Triple) -> str:
        padding = tuple(k // 2 for k in kernel)
        return self.add(name, "conv", (x,), channels_in=cin, channels_out=cout, kernel=kernel, stride=stride,
                        padding=padding)

    def bn(self, name: str, x: str) -> str:
        channels = next(layer.channels_out for layer in reversed(self.layers) if layer.name == x)
        return self.add(name, "bn", (x,), channels_in=channels, channels_out=channels)

    def relu(self, name: str, x: str) -> str:
        return self.add(name, "relu", (x,))

    def conv_of_kind(self, name: str, x: str, kind: ConvKind, cin: int, cout: int, mid: int, stride: int) -> str:
        """torchvision's conv builders: `Conv3DSimple`, `Conv3DNoTemporal`, `Conv2Plus1D`."""
        if kind.factorised:
            x = self.conv(f"{name}.0", x, cin, mid, (1, 3, 3), (1, stride, stride))
            x = self.bn(f"{name}.1", x)
            x = self.relu(f"{name}.2", x)
            return self.conv(f"{name}.3", x, mid, cout, (3, 1, 1), (stride, 1, 1))
        if kind.temporal:
            return self.conv(name, x, cin, cout, (3, 3, 3), (stride,) * 3)
        return self.conv(name, x, cin, cout, (1, 3, 3), (1, stride, stride))


@functools.lru_cache(maxsize=64)
def expand(arch: Arch) -> tuple[Layer, ...]:
    """The ordered layer records of `arch`, named and ordered as torchvision's modules.

    Cached: records and specs are immutable, and mapping, accounting and builders all walk them."""
    g = _Graph()
    x, channels = INPUT, 3
    for i, stem in enumerate(arch.stem):
        x = g.conv(f"stem.{3 * i}", x, channels, stem.channels, stem.kernel, stem.stride)
        x = g.bn(f"stem.{3 * i + 1}", x)
        x = g.relu(f"stem.{3 * i + 2}", x)
        channels = stem.channels

    total_blocks = sum(stage.blocks for stage in arch.stages)
    if arch.midplanes is not None and len(arch.midplanes) != total_blocks:
        raise ValueError(f"{arch.name}: {len(arch.midplanes)} midplanes given for {total_blocks} blocks")
    block_index = 0
    for s, stage in enumerate(arch.stages, start=1):
        kind = CONV_KINDS[stage.conv]
        planes, out_planes = stage.planes, stage.planes * arch.expansion
        for b in range(stage.blocks):
            stride = stage.stride if b == 0 else 1
            mid = arch.midplanes[block_index] if arch.midplanes else midplanes_formula(channels, planes)
            block_index += 1
            p, block_in = f"layer{s}.{b}", x
            if arch.block == "basic":
                x = g.conv_of_kind(f"{p}.conv1.0", x, kind, channels, planes, mid, stride)
                x = g.relu(f"{p}.conv1.2", g.bn(f"{p}.conv1.1", x))
                x = g.conv_of_kind(f"{p}.conv2.0", x, kind, planes, planes, mid, 1)
                x = g.bn(f"{p}.conv2.1", x)
            else:
                x = g.conv(f"{p}.conv1.0", x, channels, planes, (1, 1, 1), (1, 1, 1))
                x = g.relu(f"{p}.conv1.2", g.bn(f"{p}.conv1.1", x))
                x = g.conv_of_kind(f"{p}.conv2.0", x, kind, planes, planes, mid, stride)
                x = g.relu(f"{p}.conv2.2", g.bn(f"{p}.conv2.1", x))
                x = g.conv(f"{p}.conv3.0", x, planes, out_planes, (1, 1, 1), (1, 1, 1))
                x = g.bn(f"{p}.conv3.1", x)
            shortcut = block_in
            if stride != 1 or channels != out_planes:
                shortcut = g.conv(f"{p}.downsample.0", block_in, channels, out_planes, (1, 1, 1),
                                  kind.shortcut_stride(stride))
                shortcut = g.bn(f"{p}.downsample.1", shortcut)
            x = g.add(f"{p}.add", "add", (x, shortcut))
            x = g.relu(f"{p}.relu", x)
            channels = out_planes

    x = g.add("avgpool", "avgpool", (x,))
    g.add("fc", "dense", (x,), channels_in=channels, channels_out=arch.num_classes, bias=True)
    return tuple(g.layers)


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
