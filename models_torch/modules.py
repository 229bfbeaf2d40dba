"""Placing a module at its torchvision path (`layer2.0.conv1.0`) inside a root module, intermediate
containers created as plain `nn.Module`s, so that `state_dict()` keys are torchvision's."""

from __future__ import annotations

from torch import nn


def insert(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    *parents, leaf = path.split(".")
    for part in parents:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(leaf, module)
