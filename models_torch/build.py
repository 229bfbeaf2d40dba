"""Builds a torch module from the spec's layer records.

The module tree is created path by path from the record names, so `state_dict()` has torchvision's
keys in torchvision's order (parameter-free modules such as ReLUs keep the index gaps honest).
`forward` runs the records as a dataflow graph, freeing each activation after its last use.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vrconvert.converter.arch import families, swin3d
from vrconvert.converter.arch.families import expand
from vrconvert.converter.arch.layers import INPUT, Layer
from vrconvert.converter.arch.mvit import MViTArch
from vrconvert.converter.errors import InputError
from vrconvert.models_torch import mvit
from vrconvert.models_torch.modules import insert
from vrconvert.models_torch.preprocessing import KineticsPreprocessing

ACTIVATIONS = {
    "relu": nn.ReLU,
    "mish": nn.Mish,
    "hard_swish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "softmax": lambda: nn.Softmax(dim=1),
}


def same_padding(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """TensorFlow's padding="same" for an NCTHW input, as `F.pad` spells it (W first): per axis a total
    of max((ceil(n/s) - 1) * s + k - n, 0), the smaller half before. It depends on the input size."""
    pads: list[int] = []
    for n, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class SameConv3d(nn.Conv3d):
    """A Conv3d padded as TensorFlow's "same" at run time (the extra cell goes after)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, same_padding(x, self.kernel_size, self.stride)))


class SamePool3d(nn.Module):
    """Keras' max and average pooling with padding="same": the max ignores padded cells, and the
    average divides by the number of real cells in each window (not the window size)."""

    def __init__(self, kind: str, kernel: tuple[int, ...], stride: tuple[int, ...]) -> None:
        super().__init__()
        self.kind, self.kernel, self.stride = kind, tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding(x, self.kernel, self.stride)
        if self.kind == "max":
            return F.max_pool3d(F.pad(x, pads, value=-torch.inf), self.kernel, self.stride)
        total = F.avg_pool3d(F.pad(x, pads), self.kernel, self.stride)
        real = F.avg_pool3d(F.pad(torch.ones_like(x[:1, :1]), pads), self.kernel, self.stride)
        return total / real


def _module(layer: Layer) -> nn.Module | None:
    if layer.op == "conv":
        conv = SameConv3d if layer.padding_mode == "same" else nn.Conv3d
        return conv(layer.channels_in, layer.channels_out, layer.kernel, layer.stride, layer.padding, bias=layer.bias)
    if layer.op == "bn":
        return nn.BatchNorm3d(layer.channels_out, eps=layer.epsilon, momentum=layer.momentum)
    if layer.op == "act":
        return ACTIVATIONS[layer.activation]()
    if layer.op in ("pool", "maxpool") and layer.padding_mode == "same":
        return SamePool3d("max" if layer.op == "maxpool" else "avg", layer.kernel, layer.stride)
    if layer.op == "maxpool":  # "valid": floor, no padding; "torch": padded cells never win
        return nn.MaxPool3d(layer.kernel, layer.stride, layer.padding)
    if layer.op == "dropout":
        return nn.Dropout(layer.rate)
    if layer.op == "pool":  # the ResNet-D shortcut's pool over explicit zeros (AvgPool3d's own padding
        t, h, w = layer.padding  # refuses inputs smaller than the window, a single frame included)
        return nn.Sequential(nn.ConstantPad3d((w, w, h, h, t, t), 0.0), nn.AvgPool3d(layer.kernel, layer.stride))
    if layer.op in ("avgpool", "gap"):
        return nn.AdaptiveAvgPool3d((1, 1, 1))
    if layer.op == "dense":
        return nn.Linear(layer.channels_in, layer.channels_out, bias=layer.bias)
    return None  # functional steps (add, mul, concat) own no module


class VideoResNet(nn.Module):
    """A torchvision-compatible video ResNet driven by `layers` (see `vrconvert.converter.arch.layers`)."""

    def __init__(self, arch: families.Variant, layers: tuple[Layer, ...]) -> None:
        super().__init__()
        self.arch = arch
        self.layers = layers
        self._steps: list[tuple[Layer, nn.Module | None]] = []
        for layer in layers:
            module = _module(layer)
            if module is not None:
                insert(self, layer.name, module)
            self._steps.append((layer, module))
        self._last_use = _last_use(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.layers[-1].name]

    def run(self, x: torch.Tensor, keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """Runs the graph; returns the final output plus every record named in `keep`."""
        keep = set(keep) | {self.layers[-1].name}
        values = {INPUT: x}
        for i, (layer, module) in enumerate(self._steps):
            args = [values[name] for name in layer.inputs]
            if layer.op in ("maxpool", "pool") and layer.padding_mode != "same":
                _check_window(self.arch.name, layer, args[0])
            if layer.op == "add":
                out = args[0] + args[1]
            elif layer.op == "concat":
                out = torch.cat(args, 1)
            elif layer.op == "mul":
                out = args[0] * args[1]
            elif layer.op == "avgpool":
                out = torch.flatten(module(args[0]), 1)
            elif layer.op == "dense" and args[0].ndim == 5:  # squeeze-excitation's Dense on pooled channels
                out = module(torch.flatten(args[0], 1))[:, :, None, None, None]
            else:
                out = module(args[0])
            values[layer.name] = out
            for name in self._last_use[i]:
                if name not in keep:
                    del values[name]
        return values


def _check_window(arch: str, layer: Layer, x: torch.Tensor) -> None:
    """A pool that is not "same"-padded needs its window on every padded axis: the builder's faithful
    variants collapse short clips exactly as the original does, and S3D's head pool needs 2x7x7 of
    features; say so in one line instead of a torch error."""
    t, h, w = x.shape[2:]
    if any(n + 2 * p < k for n, k, p in zip((t, h, w), layer.kernel, layer.padding, strict=True)):
        from vrconvert.converter.errors import InputError

        kind = "max-pool" if layer.op == "maxpool" else "average pool"
        raise InputError(
            f"{arch}: the clip is too small: {layer.name} (a '{layer.padding_mode}' {layer.kernel} {kind}) receives "
            f"{t}x{h}x{w}; the original network cannot run it either (use more frames or a larger size)"
        )


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


def build(
    arch: str | families.Variant,
    num_classes: int | None = None,
    *,
    include_preprocessing: bool = False,
    weights: str | None = None,
) -> nn.Module:
    """A model of `arch`, torch-default-initialised or with a file's weights.

    Args:
        arch: a variant name (`vrconvert list`) or a spec record.
        num_classes: the head's width; None keeps the variant's own (as `models_tf.build` does), or the
            file's with `weights`; another width than the file's gets a fresh head, said in one warning.
        include_preprocessing: fed uint8 frames (N, T, H, W, 3), torchvision's transform in front.
        weights: a `.pth`/`.pt`/`.safetensors` checkpoint or the pretrained name "kinetics400"; every
            backbone tensor is accounted for strictly (missing, unexpected, mismatched are errors).
    """
    variant = families.get(arch) if isinstance(arch, str) else arch
    if weights is not None:
        return _with_weights(variant, weights, num_classes, include_preprocessing)
    variant = variant.with_classes(num_classes or variant.num_classes)
    if (own := OWN_BUILDERS.get(type(variant))) is not None:  # the transformers have twins of their own
        return own(variant, include_preprocessing)
    if include_preprocessing:
        return PreprocessedVideoResNet(variant, expand(variant))
    return VideoResNet(variant, expand(variant))


def _mvit(variant, include_preprocessing: bool):
    if include_preprocessing:
        raise InputError(f"{variant.name}: include_preprocessing is not supported yet")
    return mvit.build(variant)


def _swin3d(variant, include_preprocessing: bool):
    from vrconvert.models_torch import swin3d as swin3d_torch

    return swin3d_torch.build(variant, variant.num_classes, include_preprocessing=include_preprocessing)


# family record type -> its own twin; the families described by layer records build `VideoResNet`
OWN_BUILDERS = {MViTArch: _mvit, swin3d.Swin3D: _swin3d}


class PreprocessedVideoResNet(VideoResNet):
    """A `VideoResNet` fed decoded uint8 frames (N, T, H, W, 3); its state dict is the network's alone."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.preprocess = KineticsPreprocessing(self.arch.preprocessing)

    def run(self, frames: torch.Tensor, keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        return super().run(self.preprocess(frames), keep)


def with_preprocessing(model: VideoResNet) -> PreprocessedVideoResNet:
    """`model` fed uint8 frames: the same network and weights, torchvision's transform in front."""
    if isinstance(model, PreprocessedVideoResNet):
        return model
    if isinstance(getattr(model, "arch", None), swin3d.Swin3D):  # a family with its own twin
        from vrconvert.models_torch import swin3d as swin3d_torch

        return swin3d_torch.with_preprocessing(model)
    if not isinstance(model, VideoResNet):
        raise InputError(f"{model.arch.name}: include_preprocessing is not supported yet")
    out = PreprocessedVideoResNet(model.arch, model.layers)
    out.load_state_dict(model.state_dict(), strict=True)
    return out.to(next(model.parameters()).device).train(model.training)


def _with_weights(
    variant: families.Variant, weights, num_classes: int | None, include_preprocessing: bool
) -> VideoResNet:
    """`build` with a file's weights: the backbone strictly, the head kept only at the file's width."""
    import numpy as np

    from vrconvert.converter.arch import accounting, mapping
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.formats import checkpoint, weights_source
    from vrconvert.converter.formats.keras_io import keras_suffix

    path = weights_source.resolve(weights, variant)
    if keras_suffix(path) is not None:
        raise InputError(f"{weights}: a Keras file; convert it first (vrconvert keras2torch {path.name} OUT.pth)")
    state = checkpoint.read_checkpoint(path).state
    file_arch = weights_source.backbone_arch(variant, accounting.shapes_of(state), str(weights))
    head_keys = weights_source.head_keys(file_arch)
    has_head = head_keys[0] in state
    plan = weights_source.plan(file_arch, has_head, True, num_classes, str(weights))
    model = build(plan.arch, plan.arch.num_classes, include_preprocessing=include_preprocessing)
    kept = state if plan.load_head else weights_source.backbone_state(state, file_arch)
    fresh = {} if plan.load_head else {k: model.state_dict()[k].numpy() for k in head_keys}
    full = mapping.complete(plan.arch, {**kept, **fresh})  # num_batches_tracked where the file has none
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in full.items()}, strict=True)
    return model
