"""torchvision's MViT (`mvit_v1_b`, `mvit_v2_s`) in torch, built from the family's records: the twin of
`models_tf.mvit`, whose `state_dict()` is torchvision's key for key.

Tokens are (N, L, C) with the class token first and the rest in (T, H, W) order, as torchvision's. The
modules torch lacks (class token and position embedding, pooling attention, the skip path's token max
pool) are written here, each the twin of a layer of `models_tf.mvit_layers`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vrconvert.converter.arch.layers import INPUT
from vrconvert.converter.arch.mvit import (
    MViTArch,
    Record,
    dataflow,
    expand,
    pool_padding,
    pooled,
    rel_pos_index,
    rel_pos_sizes,
)
from vrconvert.converter.errors import InputError
from vrconvert.models_torch.modules import insert


class PositionalEncoding(nn.Module):
    """Prepends the class token; v1 also adds its space-time position embedding (time + space, and
    the class token's own)."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        t, h, w = record.thw
        c = record.channels_out
        self.class_token = nn.Parameter(torch.zeros(c))
        self.absolute = record.absolute
        if record.absolute:
            self.spatial_pos = nn.Parameter(torch.zeros(h * w, c))
            self.temporal_pos = nn.Parameter(torch.zeros(t, c))
            self.class_pos = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.class_token.expand(x.shape[0], 1, -1), x), dim=1)
        if not self.absolute:
            return x
        grid = (self.temporal_pos[:, None, :] + self.spatial_pos[None, :, :]).flatten(0, 1)
        return x + torch.cat((self.class_pos[None], grid), dim=0)[None]


class Pool(nn.Module):
    """A depthwise Conv3d over the token grid of every head, class token kept, then LayerNorm."""

    def __init__(self, channels: int, kernel, stride, epsilon: float) -> None:
        super().__init__()
        self.pool = nn.Conv3d(channels, channels, kernel, stride, pool_padding(kernel), groups=channels, bias=False)
        self.norm_act = nn.Sequential(nn.LayerNorm(channels, eps=epsilon))

    def forward(self, x: torch.Tensor, thw) -> torch.Tensor:
        b, n, _, c = x.shape
        cls, grid = x[:, :, :1], x[:, :, 1:]
        grid = grid.transpose(2, 3).reshape(b * n, c, *thw)
        grid = self.pool(grid).reshape(b, n, c, -1).transpose(2, 3)
        return self.norm_act(torch.cat((cls, grid), dim=2))


class MultiscaleAttention(nn.Module):
    """Multi-head attention whose queries and keys/values are pooled over the token grid."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        block = record.block
        self.heads, self.dim = block.heads, block.attn_dim
        hd = self.dim // self.heads
        self.scale = 1.0 / (hd**0.5)
        self.residual_pool = record.residual_pool
        self.thw = block.thw
        self.q_thw = pooled(block.thw, block.kernel_q, block.stride_q)
        self.k_thw = pooled(block.thw, block.kernel_kv, block.stride_kv)
        if record.rel_pos:
            spatial, temporal = rel_pos_sizes(block)
            self.rel_pos_h = nn.Parameter(torch.zeros(spatial, hd))
            self.rel_pos_w = nn.Parameter(torch.zeros(spatial, hd))
            self.rel_pos_t = nn.Parameter(torch.zeros(temporal, hd))
            for axis, (q, k) in zip("thw", zip(self.q_thw, self.k_thw, strict=True), strict=True):
                self.register_buffer(f"index_{axis}", torch.tensor(rel_pos_index(q, k)), persistent=False)
        self.rel_pos = record.rel_pos
        self.qkv = nn.Linear(block.dim_in, 3 * self.dim)
        self.project = nn.Sequential(nn.Linear(self.dim, self.dim))
        eps = record.epsilon
        self.pool_q = Pool(hd, block.kernel_q, block.stride_q, eps) if block.kernel_q else None
        self.pool_k = Pool(hd, block.kernel_kv, block.stride_kv, eps) if block.kernel_kv else None
        self.pool_v = Pool(hd, block.kernel_kv, block.stride_kv, eps) if block.kernel_kv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if self.pool_q is not None:
            q = self.pool_q(q, self.thw)
        if self.pool_k is not None:
            k = self.pool_k(k, self.thw)
            v = self.pool_v(v, self.thw)
        attn = torch.matmul(q * self.scale, k.transpose(2, 3))
        if self.rel_pos:
            attn = attn + F.pad(self.rel_pos_terms(q), (1, 0, 1, 0))
        x = torch.matmul(attn.softmax(dim=-1), v)
        if self.residual_pool:
            x = x + F.pad(q[:, :, 1:], (0, 0, 1, 0))
        return self.project(x.transpose(1, 2).reshape(b, -1, self.dim))

    def rel_pos_terms(self, q: torch.Tensor) -> torch.Tensor:
        """The decomposed relative position terms (time, height, width) of every query-key pair of the
        grids (the class token's row and column excluded)."""
        b, heads, _, hd = q.shape
        (qt, qh, qw), (kt, kh, kw) = self.q_thw, self.k_thw
        grid = q[:, :, 1:].reshape(b, heads, qt, qh, qw, hd)
        rt = torch.einsum("bnthwc,tkc->bnthwk", grid, self.rel_pos_t[self.index_t])
        rh = torch.einsum("bnthwc,hkc->bnthwk", grid, self.rel_pos_h[self.index_h])
        rw = torch.einsum("bnthwc,wkc->bnthwk", grid, self.rel_pos_w[self.index_w])
        terms = rh[..., None, :, None] + rw[..., None, None, :] + rt[..., :, None, None]
        return terms.reshape(b, heads, qt * qh * qw, kt * kh * kw)


class TokenMaxPool(nn.Module):
    """Max pool over the token grid (padded with -inf, as torch's MaxPool3d), class token kept."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.thw, self.kernel, self.stride, self.padding = record.thw, record.kernel, record.stride, record.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        grid = x[:, 1:].transpose(1, 2).reshape(b, c, *self.thw)
        grid = F.max_pool3d(grid, self.kernel, self.stride, self.padding).flatten(2).transpose(1, 2)
        return torch.cat((x[:, :1], grid), dim=1)


class ClassToken(nn.Module):
    """The class token's features (torchvision's `x[:, 0]` before its head's dropout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _module(r: Record) -> nn.Module | None:
    if r.op == "conv":
        return nn.Conv3d(r.channels_in, r.channels_out, r.kernel, r.stride, r.padding, bias=r.bias)
    if r.op == "layernorm":
        return nn.LayerNorm(r.channels_out, eps=r.epsilon)
    if r.op == "dense":
        return nn.Linear(r.channels_in, r.channels_out, bias=r.bias)
    modules = {
        "posenc": PositionalEncoding,
        "attention": MultiscaleAttention,
        "tokenpool": TokenMaxPool,
        "act": lambda _: nn.GELU(),
        "classtoken": lambda _: ClassToken(),
    }
    return modules[r.op](r) if r.op in modules else None  # tokens and add own no module


class MViT(nn.Module):
    """A torchvision-compatible MViT driven by its records; `run` keeps any record's output."""

    def __init__(self, arch: MViTArch) -> None:
        super().__init__()
        self.arch = arch
        self.layers = expand(arch)
        modules = {}
        for record in self.layers:  # registration order: torchvision's state_dict order
            modules[record.name] = module = _module(record)
            if module is not None:
                insert(self, record.name, module)
        self._steps = [(record, modules[record.name]) for record in dataflow(self.layers)]
        last = {name: i for i, (record, _) in enumerate(self._steps) for name in record.inputs}
        self._frees = [[name for name, at in last.items() if at == i] for i in range(len(self._steps))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.layers[-1].name]

    def run(self, x: torch.Tensor, keep=(), until: str | None = None) -> dict[str, torch.Tensor]:
        """Runs the records in data-flow order (up to the record `until`, if given); returns the last
        output and every record named in `keep`."""
        check_clip(self.arch, tuple(x.shape[2:]))
        keep = set(keep) | {until or self.layers[-1].name}
        values = {INPUT: x}
        for i, (record, module) in enumerate(self._steps):
            args = [values[name] for name in record.inputs]
            if record.op == "add":
                out = args[0] + args[1]
            elif record.op == "tokens":
                out = args[0].flatten(2).transpose(1, 2)
            else:
                out = module(args[0])
            values[record.name] = out
            for name in self._frees[i]:
                if name not in keep:
                    del values[name]
            if record.name == until:
                break
        return values


def check_clip(arch: MViTArch, thw: tuple[int, ...]) -> None:
    """One line for a clip of another size than the weights fix."""
    if tuple(thw) != arch.clip:
        t, h, w = arch.clip
        got = "x".join(str(n) for n in thw)
        raise InputError(f"{arch.name} takes clips of exactly {t}x{h}x{w} (its weights fix the token grid), not {got}")


def build(arch: MViTArch, num_classes: int | None = None) -> MViT:
    """An untrained MViT of `arch` (torch's default initialisation) with a `num_classes`-way head."""
    return MViT(arch.with_classes(num_classes or arch.num_classes))
