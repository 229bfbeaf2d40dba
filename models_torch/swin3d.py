"""The torch side of the Swin3D family, built from its records (`converter.arch.swin3d`).

Modules are created path by path from the record names, so `state_dict()` has torchvision's keys in
torchvision's order; `forward` runs the records as a dataflow graph. The window attention, patch embedding
and patch merging are written here from torchvision's definitions (the wheel does not run here); they are
the twins of `models_tf.swin3d`'s layers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vrconvert.converter.arch import swin3d
from vrconvert.converter.arch.swin3d import INPUT, Node
from vrconvert.models_torch.modules import insert
from vrconvert.models_torch.preprocessing import KineticsPreprocessing


def _pad_end(x: torch.Tensor, sizes: tuple[int, ...], multiples: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    """Zeros after the end of each spatio-temporal axis up to a multiple (F.pad spells the last axis first)."""
    pads = [(m - n % m) % m for n, m in zip(sizes, multiples, strict=True)]
    spec = [0, 0] if channels_last else []
    for pad in reversed(pads):
        spec += [0, pad]
    return F.pad(x, spec) if any(pads) else x


class PatchEmbed(nn.Conv3d):
    """PatchEmbed3d's `proj`: the clip (N, C, T, H, W) padded at the end to a multiple of the patch, then a
    conv whose stride is its kernel; returns channels-last tokens (N, T', H', W', C)."""

    def __init__(self, node: Node) -> None:
        super().__init__(node.channels_in, node.channels_out, node.kernel, node.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_end(x, tuple(x.shape[2:]), self.kernel_size, False)
        return super().forward(x).permute(0, 2, 3, 4, 1)


class PatchMerging(nn.Module):
    """torchvision's PatchMerging on (N, T, H, W, C): H and W padded to even, each 2x2 neighbourhood's four
    cells concatenated ((0,0), (1,0), (0,1), (1,1)), LayerNorm, then a Linear without bias to 2C."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * node.channels_in, node.channels_out, bias=False)
        self.norm = nn.LayerNorm(4 * node.channels_in, eps=node.epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[3] % 2, 0, x.shape[2] % 2))
        parts = [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(parts, -1)))


class WindowAttention(nn.Module):
    """ShiftedWindowAttention3d: multi-head self-attention inside (shifted) windows with a relative position
    bias, all windows and heads in one batched matmul."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.window, self.shift, self.heads = node.window, node.shift, node.heads
        dim = node.channels_in
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(node.table_rows, node.heads))
        index = torch.tensor(swin3d.relative_position_index(node.window), dtype=torch.int64)
        self.register_buffer("relative_position_index", index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        window, shift = swin3d.effective_window((t, h, w), self.window, self.shift)
        x = _pad_end(x, (t, h, w), window, True)
        padded = tuple(x.shape[1:4])
        if any(shift):
            x = torch.roll(x, tuple(-s for s in shift), (1, 2, 3))
        grid = tuple(p // k for p, k in zip(padded, window, strict=True))
        n = window[0] * window[1] * window[2]
        x = x.reshape(b, grid[0], window[0], grid[1], window[1], grid[2], window[2], c)
        x = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, n, c)
        qkv = self.qkv(x).reshape(x.shape[0], n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (c // self.heads) ** -0.5, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        rows = self.relative_position_index[:n, :n].reshape(-1)
        attn = attn + self.relative_position_bias_table[rows].reshape(n, n, -1).permute(2, 0, 1)[None]
        if any(shift):
            mask = torch.as_tensor(_mask(padded, window, shift), dtype=attn.dtype, device=attn.device)
            attn = (attn.reshape(b, -1, self.heads, n, n) + mask[None, :, None]).reshape(-1, self.heads, n, n)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
        x = self.proj(x).reshape(b, *grid, *window, c)
        x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, *padded, c)
        if any(shift):
            x = torch.roll(x, shift, (1, 2, 3))
        return x[:, :t, :h, :w].contiguous()


def _mask(padded: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]):
    """(windows, n, n): 0 where two tokens of a window come from one shift region, else MASK_VALUE."""
    import numpy as np

    labels = [np.array(swin3d.region_labels(p, k, s)) for p, k, s in zip(padded, window, shift, strict=True)]
    grid = labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :]
    g = [p // k for p, k in zip(padded, window, strict=True)]
    grid = grid.reshape(g[0], window[0], g[1], window[1], g[2], window[2]).transpose(0, 2, 4, 1, 3, 5)
    grid = grid.reshape(-1, window[0] * window[1] * window[2])
    return np.where(grid[:, None, :] != grid[:, :, None], swin3d.MASK_VALUE, 0.0)


def _module(node: Node) -> nn.Module | None:
    if node.op == "embed":
        return PatchEmbed(node)
    if node.op == "norm":
        return nn.LayerNorm(node.channels_out, eps=node.epsilon)
    if node.op == "attn":
        return WindowAttention(node)
    if node.op == "merge":
        return PatchMerging(node)
    if node.op == "dense":
        return nn.Linear(node.channels_in, node.channels_out, bias=node.bias)
    if node.op == "gelu":
        return nn.GELU()
    return None  # add, pool


class SwinTransformer3d(nn.Module):
    """A torchvision-compatible Swin3D driven by its records; input (N, 3, T, H, W), logits out."""

    def __init__(self, arch: swin3d.Swin3D) -> None:
        super().__init__()
        self.arch = arch
        self.nodes = swin3d.expand(arch)
        self._steps: list[tuple[Node, nn.Module | None]] = []
        for node in self.nodes:
            module = _module(node)
            if module is not None:
                insert(self, node.name, module)
            self._steps.append((node, module))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.nodes[-1].name]

    def run(self, x: torch.Tensor, keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """Runs the records; returns the logits plus every record named in `keep`."""
        keep = set(keep) | {self.nodes[-1].name}
        values = {INPUT: x}
        last = {name: i for i, node in enumerate(self.nodes) for name in node.inputs}
        for i, (node, module) in enumerate(self._steps):
            args = [values[name] for name in node.inputs]
            if node.op == "add":
                out = args[0] + args[1]
            elif node.op == "pool":
                out = F.adaptive_avg_pool3d(args[0].permute(0, 4, 1, 2, 3), 1).flatten(1)
            else:
                out = module(args[0])
            values[node.name] = out
            for name in [n for n in node.inputs if last[n] == i and n not in keep]:
                del values[name]
        return values


class PreprocessedSwinTransformer3d(SwinTransformer3d):
    """Fed decoded uint8 frames (N, T, H, W, 3): torchvision's eval transform in front; the state dict is the
    network's alone (the transform's mean and std are not persistent)."""

    def __init__(self, arch: swin3d.Swin3D) -> None:
        super().__init__(arch)
        self.preprocess = KineticsPreprocessing(arch.preprocessing)

    def run(self, frames: torch.Tensor, keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        return super().run(self.preprocess(frames), keep)


def with_preprocessing(model: SwinTransformer3d) -> PreprocessedSwinTransformer3d:
    """`model` fed uint8 frames: the same network and weights."""
    if isinstance(model, PreprocessedSwinTransformer3d):
        return model
    out = PreprocessedSwinTransformer3d(model.arch)
    out.load_state_dict(model.state_dict(), strict=True)
    return out.to(next(model.parameters()).device).train(model.training)


def build(
    arch: str | swin3d.Swin3D, num_classes: int = 400, *, include_preprocessing: bool = False
) -> SwinTransformer3d:
    variant = swin3d.get(arch) if isinstance(arch, str) else arch
    kind = PreprocessedSwinTransformer3d if include_preprocessing else SwinTransformer3d
    return kind(variant.with_classes(num_classes))
