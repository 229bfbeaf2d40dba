"""PyTorch implementations of the spec's video ResNets, state_dict-compatible with torchvision."""

from .build import VideoResNet, build

__all__ = ["VideoResNet", "build"]
