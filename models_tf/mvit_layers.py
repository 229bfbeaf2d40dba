"""Keras layers for the MViT parts Keras has no built-in for: the class token and position embedding,
multiscale (pooling) attention with decomposed relative position terms, and the skip path's token max
pool. Each runs on every Keras backend and is registered, so a `.keras` file that uses them loads in
safe mode once this module is imported. Their torch twins are in `models_torch.mvit`.

Tokens are (N, L, C), class token first, the rest in (T, H, W) order: torchvision's layout.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from vrconvert.converter.arch.mvit import pooled, rel_pos_index

PACKAGE = "vrconvert"


def _triple(value) -> tuple[int, int, int] | None:
    return None if value is None else tuple(int(v) for v in value)


def _split_class_token(x, thw, lead: int):
    """(..., L, C) -> class token (..., 1, C) and the grid (-1, T, H, W, C); `lead` axes before L."""
    index = (slice(None),) * lead
    return x[(*index, slice(0, 1))], ops.reshape(x[(*index, slice(1, None))], (-1, *thw, x.shape[-1]))


def _taps(x, kernel, stride):
    """The strided views of a padded (B, T, H, W, C) grid, one per kernel tap (a, b, c): tap (a, b, c) of
    every output cell of a valid window `kernel` moved by `stride`."""
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:4], kernel, stride, strict=True)]
    for a in range(kernel[0]):
        for b in range(kernel[1]):
            for c in range(kernel[2]):
                yield (
                    (a, b, c),
                    x[
                        :,
                        a : a + stride[0] * (out[0] - 1) + 1 : stride[0],
                        b : b + stride[1] * (out[1] - 1) + 1 : stride[1],
                        c : c + stride[2] * (out[2] - 1) + 1 : stride[2],
                    ],
                )


def depthwise_conv(x, weights, kernel, stride):
    """A depthwise (groups = channels) valid Conv3D as the sum over its taps of a strided view times that
    tap's per-channel weights (`weights`: Keras' grouped kernel, (kt, kh, kw, 1, C)). Same products as the
    convolution, summed in tap order; every export format runs it (LiteRT's CONV_3D has no groups, tf2onnx
    leaves TensorFlow's grouped Conv3D as an XLA call)."""
    total = None
    for (a, b, c), view in _taps(x, kernel, stride):
        term = view * weights[a, b, c, 0]
        total = term if total is None else total + term
    return total


def max_pool(x, kernel, stride):
    """A valid 3-D max pool of (B, T, H, W, C) as the maximum over its taps' strided views (LiteRT has no
    MaxPool3D; the maximum is exact in any order)."""
    total = None
    for _, view in _taps(x, kernel, stride):
        total = view if total is None else ops.maximum(total, view)
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassPositionEmbedding(keras.layers.Layer):
    """Prepends the learned class token; `absolute` (MViT v1) also adds the space-time position
    embedding: one vector per frame plus one per spatial cell, and the class token's own."""

    def __init__(self, channels: int, grid, absolute: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.channels, self.grid, self.absolute = int(channels), _triple(grid), bool(absolute)

    def build(self, input_shape) -> None:
        t, h, w = self.grid
        c = self.channels
        self.class_token = self.add_weight(shape=(c,), name="class_token", initializer="zeros")
        if self.absolute:
            self.spatial_pos = self.add_weight(shape=(h * w, c), name="spatial_pos", initializer="zeros")
            self.temporal_pos = self.add_weight(shape=(t, c), name="temporal_pos", initializer="zeros")
            self.class_pos = self.add_weight(shape=(c,), name="class_pos", initializer="zeros")

    def call(self, x):
        token = ops.broadcast_to(ops.cast(self.class_token, x.dtype)[None, None], (ops.shape(x)[0], 1, self.channels))
        x = ops.concatenate([token, x], axis=1)
        if not self.absolute:
            return x
        grid = ops.reshape(self.temporal_pos[:, None] + self.spatial_pos[None], (-1, self.channels))
        return x + ops.concatenate([self.class_pos[None], grid], axis=0)[None]

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, self.channels)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "grid": self.grid, "absolute": self.absolute}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiscaleAttention(keras.layers.Layer):
    """Multi-head attention whose queries and keys/values are pooled over the token grid.

    Each pool is a depthwise convolution (per head, shared by the heads, class token kept; its kernel held by
    a grouped `Conv3D`, computed tap by tap) and a `LayerNormalization`. With `rel_pos` (MViT v2) the decomposed relative position terms of time,
    height and width are added to the grid's attention logits; with `residual_pool` the pooled queries
    are added to the grid's outputs. Sublayers and tables carry torchvision's names (`qkv`, `project`,
    `pool_q`, `pool_q_norm`, `rel_pos_h`...)."""

    def __init__(
        self,
        dim_in: int,
        dim: int,
        heads: int,
        grid,
        kernel_q,
        stride_q,
        kernel_kv,
        stride_kv,
        rel_pos: bool,
        residual_pool: bool,
        epsilon: float,
        rel_pos_sizes=None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dim_in, self.dim, self.heads = int(dim_in), int(dim), int(heads)
        self.grid = _triple(grid)
        self.kernel_q, self.stride_q = _triple(kernel_q), _triple(stride_q)
        self.kernel_kv, self.stride_kv = _triple(kernel_kv), _triple(stride_kv)
        self.rel_pos, self.residual_pool, self.epsilon = bool(rel_pos), bool(residual_pool), float(epsilon)
        self.rel_pos_sizes = None if rel_pos_sizes is None else tuple(int(n) for n in rel_pos_sizes)
        self.head_dim = self.dim // self.heads
        self.q_grid = pooled(self.grid, self.kernel_q, self.stride_q)
        self.kv_grid = pooled(self.grid, self.kernel_kv, self.stride_kv)
        self.qkv = keras.layers.Dense(3 * self.dim, name="qkv")
        self.project = keras.layers.Dense(self.dim, name="project")
        self.pools = {}
        for which, kernel, stride in (
            ("q", self.kernel_q, self.stride_q),
            ("k", self.kernel_kv, self.stride_kv),
            ("v", self.kernel_kv, self.stride_kv),
        ):
            if kernel is not None:
                conv = keras.layers.Conv3D(
                    self.head_dim, kernel, strides=stride, groups=self.head_dim, use_bias=False, name=f"pool_{which}"
                )
                norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name=f"pool_{which}_norm")
                self.pools[which] = (kernel, conv, norm)

    def build(self, input_shape) -> None:
        length = 1 + int(np.prod(self.grid))
        self.qkv.build((None, length, self.dim_in))
        self.project.build((None, None, self.dim))
        for kernel, conv, norm in self.pools.values():
            padded = tuple(n + 2 * (k // 2) for n, k in zip(self.grid, kernel, strict=True))
            conv.build((None, *padded, self.head_dim))
            norm.build((None, None, None, self.head_dim))
        if self.rel_pos:
            spatial, temporal = self.rel_pos_sizes
            self.rel_pos_h = self.add_weight(shape=(spatial, self.head_dim), name="rel_pos_h", initializer="zeros")
            self.rel_pos_w = self.add_weight(shape=(spatial, self.head_dim), name="rel_pos_w", initializer="zeros")
            self.rel_pos_t = self.add_weight(shape=(temporal, self.head_dim), name="rel_pos_t", initializer="zeros")

    def _pool(self, x, which: str):
        """(N, heads, L, hd) -> (N, heads, L', hd): the grid pooled per head, class token kept, normed."""
        if which not in self.pools:
            return x
        kernel, conv, norm = self.pools[which]
        token, grid = _split_class_token(x, self.grid, lead=2)
        pad = [[0, 0], *([k // 2, k // 2] for k in kernel), [0, 0]]
        grid = ops.pad(grid, pad)
        if keras.backend.backend() == "torch":  # torch's own grouped convolution is the faster there
            grid = conv(grid)
        else:  # XLA's grouped Conv3D on CPU is several times slower than the taps
            grid = depthwise_conv(grid, ops.cast(conv.kernel, grid.dtype), kernel, conv.strides)
        grid = ops.reshape(grid, (-1, self.heads, grid.shape[1] * grid.shape[2] * grid.shape[3], self.head_dim))
        return norm(ops.concatenate([token, grid], axis=2))

    def _rel_pos_terms(self, q):
        """The grid part's decomposed relative position logits: (N, heads, Lq - 1, Lk - 1)."""
        (qt, qh, qw), (kt, kh, kw) = self.q_grid, self.kv_grid
        grid = ops.reshape(q[:, :, 1:], (-1, self.heads, qt, qh, qw, self.head_dim))
        tables = {}
        for axis, table, n_q, n_k in (
            ("t", self.rel_pos_t, qt, kt),
            ("h", self.rel_pos_h, qh, kh),
            ("w", self.rel_pos_w, qw, kw),
        ):
            tables[axis] = ops.take(ops.cast(table, q.dtype), np.asarray(rel_pos_index(n_q, n_k), np.int32), axis=0)
        rh = ops.einsum("bnthwc,hkc->bnthwk", grid, tables["h"])
        rw = ops.einsum("bnthwc,wkc->bnthwk", grid, tables["w"])
        rt = ops.einsum("bnthwc,tkc->bnthwk", grid, tables["t"])
        # one query cell per row, broadcast over the key grid: 4-D (LiteRT's ops take 5 or 6 axes at most)
        rows = (-1, 1, kh, 1), (-1, 1, 1, kw), (-1, kt, 1, 1)
        terms = ops.reshape(rh, rows[0]) + ops.reshape(rw, rows[1]) + ops.reshape(rt, rows[2])
        return ops.reshape(terms, (-1, self.heads, qt * qh * qw, kt * kh * kw))

    def call(self, x):
        length = x.shape[1]
        qkv = ops.reshape(self.qkv(x), (-1, length, 3, self.heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        q, k, v = self._pool(qkv[0], "q"), self._pool(qkv[1], "k"), self._pool(qkv[2], "v")
        attn = ops.matmul(q * self.head_dim**-0.5, ops.transpose(k, (0, 1, 3, 2)))
        if self.rel_pos:
            attn = attn + ops.pad(self._rel_pos_terms(q), [[0, 0], [0, 0], [1, 0], [1, 0]])
        out = ops.matmul(ops.softmax(attn, axis=-1), v)
        if self.residual_pool:
            out = out + ops.pad(q[:, :, 1:], [[0, 0], [0, 0], [1, 0], [0, 0]])
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, out.shape[2], self.dim))
        return self.project(out)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1 + int(np.prod(self.q_grid)), self.dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "dim_in": self.dim_in,
            "dim": self.dim,
            "heads": self.heads,
            "grid": self.grid,
            "kernel_q": self.kernel_q,
            "stride_q": self.stride_q,
            "kernel_kv": self.kernel_kv,
            "stride_kv": self.stride_kv,
            "rel_pos": self.rel_pos,
            "residual_pool": self.residual_pool,
            "epsilon": self.epsilon,
            "rel_pos_sizes": self.rel_pos_sizes,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenMaxPool(keras.layers.Layer):
    """A max pool over the token grid, padded with -inf as torch's `MaxPool3d`; the class token kept."""

    def __init__(self, grid, kernel, stride, padding, **kwargs) -> None:
        super().__init__(**kwargs)
        self.grid, self.kernel = _triple(grid), _triple(kernel)
        self.stride, self.padding = _triple(stride), _triple(padding)

    def call(self, x):
        token, grid = _split_class_token(x, self.grid, lead=1)
        pad = [[0, 0], *([p, p] for p in self.padding), [0, 0]]
        grid = ops.pad(grid, pad, constant_values=-np.inf)
        grid = max_pool(grid, self.kernel, self.stride)
        grid = ops.reshape(grid, (-1, grid.shape[1] * grid.shape[2] * grid.shape[3], x.shape[-1]))
        return ops.concatenate([token, grid], axis=1)

    def compute_output_shape(self, input_shape):
        t, h, w = (
            (n + 2 * p - k) // s + 1
            for n, k, s, p in zip(self.grid, self.kernel, self.stride, self.padding, strict=True)
        )
        return (input_shape[0], 1 + t * h * w, input_shape[-1])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "grid": self.grid,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }
