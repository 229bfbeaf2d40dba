"""Builds a torch module from the spec's layer records.

The module tree is created path by path from the record names, so `state_dict()` has torchvision's
keys in torchvision's order (parameter-free modules such as ReLUs keep the index gaps honest).
`forward` runs the records as a dataflow graph, freeing each activation after its last use.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vrconvert.converter.arch import spec
from vrconvert.converter.arch.layers import INPUT, Layer, expand

ACTIVATIONS = {"relu": nn.ReLU, "mish": nn.Mish, "hard_swish": nn.Hardswish, "sigmoid": nn.Sigmoid}


def _module(layer: Layer) -> nn.Module | None:
    if layer.op == "conv":
        return nn.Conv3d(
            layer.channels_in, layer.channels_out, layer.kernel, layer.stride, layer.padding, bias=layer.bias
        )
    if layer.op == "bn":
        return nn.BatchNorm3d(layer.channels_out, eps=1e-5, momentum=0.1)
    if layer.op == "act":
        return ACTIVATIONS[layer.activation]()
    if layer.op == "pool":  # the ResNet-D shortcut's pool over explicit zeros (AvgPool3d's own padding
        t, h, w = layer.padding  # refuses inputs smaller than the window, a single frame included)
        return nn.Sequential(nn.ConstantPad3d((w, w, h, h, t, t), 0.0), nn.AvgPool3d(layer.kernel, layer.stride))
    if layer.op in ("avgpool", "gap"):
        return nn.AdaptiveAvgPool3d((1, 1, 1))
    if layer.op == "dense":
        return nn.Linear(layer.channels_in, layer.channels_out, bias=layer.bias)
    return None  # functional steps (add, mul) own no module


class VideoResNet(nn.Module):
    """A torchvision-compatible video ResNet driven by `layers` (see `vrconvert.converter.layers`)."""

    def __init__(self, arch: spec.Arch, layers: tuple[Layer, ...]) -> None:
        super().__init__()
        self.arch = arch
        self.layers = layers
        self._steps: list[tuple[Layer, nn.Module | None]] = []
        for layer in layers:
            module = _module(layer)
            if module is not None:
                self._insert(layer.name, module)
            self._steps.append((layer, module))
        self._last_use = _last_use(layers)

    def _insert(self, path: str, module: nn.Module) -> None:
        parent: nn.Module = self
        *parents, leaf = path.split(".")
        for part in parents:
            child = parent._modules.get(part)
            if child is None:
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.layers[-1].name]

    def run(self, x: torch.Tensor, keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """Runs the graph; returns the final output plus every record named in `keep`."""
        keep = set(keep) | {self.layers[-1].name}
        values = {INPUT: x}
        for i, (layer, module) in enumerate(self._steps):
            args = [values[name] for name in layer.inputs]
            if layer.op == "add":
                out = args[0] + args[1]
            elif layer.op == "mul":
                out = args[0] * args[1]
            elif layer.op == "avgpool":
                out = torch.flatten(module(args[0]), 1)
            else:
                out = module(args[0])
            values[layer.name] = out
            for name in self._last_use[i]:
                if name not in keep:
                    del values[name]
        return values


def _last_use(layers: tuple[Layer, ...]) -> list[tuple[str, ...]]:
    """For each step, the values no later step reads (so they can be freed right after it)."""
    last: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for name in layer.inputs:
            last[name] = i
    frees: list[list[str]] = [[] for _ in layers]
    for name, i in last.items():
        frees[i].append(name)
    return [tuple(names) for names in frees]


def build(arch: str | spec.Arch, num_classes: int = 400) -> VideoResNet:
    """An untrained (torch-default-initialised) model of `arch` with a `num_classes`-way head."""
    variant = spec.get(arch) if isinstance(arch, str) else arch
    variant = variant.with_classes(num_classes)
    return VideoResNet(variant, expand(variant))
