"""Hostile HDF5 structure made with h5py: links, chunk bombs, name and object counts, attributes.

Shared by the security tests and the fuzzer; every function writes into a file it is given and
needs nothing but h5py and numpy (the fuzzer calls them in its forking worker, before the fork)."""

from __future__ import annotations

import os
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np

BOMB_ELEMENTS = 1 << 29  # float32: one 2 GiB chunk, as the review's file


@cache
def inflating(size: int, block: int = 4 << 20) -> bytes:
    """zlib bytes that inflate to `size` zero bytes (a multiple of `block`), made without ever holding
    `size` bytes: one block compressed, repeated after full flushes, then the stream's end and Adler-32
    (for n zero bytes from the initial 1: a stays 1, b is n modulo 65521)."""
    zero = bytes(block)
    c = zlib.compressobj(9)
    first = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    adler = ((size % 65521) << 16) | 1
    return first + again * (size // block - 1) + b"\x03\x00" + struct.pack(">I", adler)


def chunk_bomb(f, name: str, shape: tuple[int, ...] | None = None, elements: int = BOMB_ELEMENTS) -> None:
    """Replaces dataset `name` (keeping its shape, float32) by one stored as a single gzip chunk of
    `elements` float32 zeros, resizable (`maxshape` unlimited): a few MB on disk, 2 GiB inflated."""
    if shape is None:
        shape = f[name].shape
        del f[name]
    chunk = (elements,) + (1,) * (len(shape) - 1)
    dataset = f.create_dataset(
        name, shape=shape, maxshape=(None,) * len(shape), chunks=chunk, dtype="f4", compression="gzip"
    )
    dataset.id.write_direct_chunk((0,) * len(shape), inflating(elements * 4), 0)


def link(f, name: str, kind: str, target: str = "/", file: str = "elsewhere.h5") -> None:
    """Replaces `name` (a group or dataset) by a soft or external link."""
    import h5py

    if name in f:
        del f[name]
    f[name] = h5py.SoftLink(target) if kind == "soft" else h5py.ExternalLink(file, target)


def fifo_link(f, name: str, folder: Path) -> None:
    """`name` becomes an external link into a FIFO next to the file (opening it would block forever)."""
    fifo = folder / "pipe.h5"
    if not fifo.exists():
        os.mkfifo(fifo)
    link(f, name, "external", "/x", str(fifo))


def builder_name_bomb(path: Path, layers: int = 60_000, names: int = 3_000) -> None:
    """A 3D-ResNet-Builder-style file whose layer_names list one group `layers` times, each with `names`
    weight names (about 110 KB)."""
    import h5py

    with h5py.File(path, "w", libver="latest") as f:  # attributes over 64 KB need dense storage
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["layer_names"] = np.array([b"g"] * layers)
        f.create_group("g").attrs["weight_names"] = np.array([b"conv3d/kernel:0"] * names)


def many_groups(f, count: int, where: str = "") -> None:
    """`count` empty groups (the seed layouts' walks once counted datasets only)."""
    base = f.require_group(where) if where else f
    for i in range(count):
        base.create_group(f"g{i}")


def many_attributes(f, count: int) -> None:
    for i in range(count):
        f.attrs[f"a{i}"] = i


def deep_groups(f, depth: int) -> None:
    group = f
    for _ in range(depth):
        group = group.create_group("d")


def hard_cycle(f, where: str) -> None:
    """A group that hard-links back to the root: a walk that does not count loops forever."""
    f[f"{where}/loop"] = f["/"]


def external_storage(f, name: str, target: str = "/etc/hostname") -> None:
    """Dataset `name` (kept shape, float32) stored in another file (HDF5's external storage)."""
    shape = f[name].shape
    del f[name]
    f.create_dataset(name, shape=shape, dtype="f4", external=[(target, 0, int(np.prod(shape)) * 4)])


def plugin_filter(f, name: str) -> None:
    """Dataset `name` stored with scale-offset, a filter outside vrconvert's list (lossy packing)."""
    data = f[name][()]
    del f[name]
    f.create_dataset(name, data=data, chunks=data.shape, scaleoffset=4)
