"""Mutation fuzzing of every input format vrconvert reads (issue 10).

Valid files of a real network (r2d_18, 2 classes) in each format are mutated a few hundred ways:
bytes flipped (in the structure or anywhere), truncated, blocks zeroed, pickle integers (offsets,
sizes, strides, numels, memo indices) and JSON numbers (shapes, offsets, units, filters) replaced by
hostile values, zip members swapped, dropped or duplicated. Each case runs through the real CLI in a
forked child under an 8 GB address-space limit and a deadline (`hostile.run_cases`), and must end
either with exit 0 and the right answer (inspect: r2d_18 with 2 classes; a conversion: its output
file) or with exit 2 and exactly one line on stderr; never a signal, a traceback, exit 3, a hang, or a
file left behind. Deterministic: case i uses random seed i.
"""

from __future__ import annotations

import io
import json
import pickletools
import random
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile import run_cases

HOSTILE_INTS = [0, 1, -1, 2, 7, 255, 65535, -(2**31), 2**31 - 1, 1 << 20, 1 << 30, -204800, 32768]
FORMATS = {  # format -> number of cases (about 300 in all, a minute or so on 2 cores)
    "zip.pth": 110,
    "legacy.pth": 45,
    "st.safetensors": 45,
    "m.keras": 40,
    "m.h5": 25,
    "m.weights.h5": 25,
}
CONVERSIONS = 8  # of the zip cases, also converted (torch2keras), to check outputs and leftovers


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """The valid files every case starts from, made once."""
    pytest.importorskip("torch")
    from helpers import make_checkpoint, run_python, save_state
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("seeds")
    state = make_checkpoint("r2d_18", num_classes=2, seed=11)[1]
    save_state(state, folder / "zip.pth")
    save_state(state, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(state, str(folder / "st.safetensors"))
    np.savez(folder / "state.npz", **state)
    run_python(
        f"""
        import numpy as np
        from vrconvert.converter.arch import spec
        from vrconvert.models_tf import weights as keras_weights
        model = keras_weights.build_model(spec.get("r2d_18").with_classes(2), dict(np.load({str(folder / "state.npz")!r})))
        for name in ("m.keras", "m.h5", "m.weights.h5"):
            path = {str(folder)!r} + "/" + name
            model.save_weights(path) if name.endswith(".weights.h5") else model.save(path)
        """,
        backend="numpy",
    )
    return folder


# --- mutations (run in the worker, before the fork) --------------------------------------------------------


def _flip(data: bytearray, rng: random.Random, lo: int, hi: int, count: int) -> None:
    for _ in range(count):
        if hi > lo:
            data[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)


def _structural(size: int, rng: random.Random) -> tuple[int, int]:
    """The file's first or last 64 KB: headers, pickles, central directories, HDF5 metadata, JSON."""
    return (0, min(size, 1 << 16)) if rng.random() < 0.6 else (max(0, size - (1 << 16)), size)


def _hostile_int_in_pickle(data: bytes, rng: random.Random) -> bytes:
    """One integer argument of the pickle (BININT*, LONG1, BINPUT...) replaced by a hostile value."""
    spots = []
    for op, _arg, pos in pickletools.genops(io.BytesIO(data)):
        if op.name in ("BININT", "BININT1", "BININT2", "BINPUT", "LONG_BINPUT", "BINGET", "LONG1"):
            spots.append((op.name, pos))
    if not spots:
        return data
    name, pos = rng.choice(spots)
    value = rng.choice(HOSTILE_INTS)
    out = bytearray(data)
    if name in ("BININT", "LONG_BINPUT"):
        fmt = "<i" if name == "BININT" else "<I"
        out[pos + 1 : pos + 5] = struct.pack(
            fmt, value % (1 << 32) if fmt == "<I" else max(-(2**31), min(value, 2**31 - 1))
        )
    elif name in ("BININT1", "BINPUT", "BINGET"):
        out[pos + 1] = value & 0xFF
    elif name == "BININT2":
        out[pos + 1 : pos + 3] = struct.pack("<H", value & 0xFFFF)
    else:  # LONG1: keep its length byte, change its digits
        length = out[pos + 1]
        out[pos + 2 : pos + 2 + length] = (value % (1 << (8 * length))).to_bytes(length, "little") if length else b""
    return bytes(out)


def _rewrite_zip(src: Path, dst: Path, edit) -> None:
    """A copy of the zip with `edit(members)` applied to its list of [name, bytes, compress_type]."""
    with zipfile.ZipFile(src) as z:
        members = [[i.filename, z.read(i), i.compress_type] for i in z.infolist()]
    edit(members)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data, compress in members:
            z.writestr(zipfile.ZipInfo(name), data, compress_type=compress)


def _json_numbers(obj, path=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _json_numbers(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _json_numbers(value, (*path, index))
    elif isinstance(obj, int) and not isinstance(obj, bool):
        yield path


def _hostile_json(text: bytes, rng: random.Random) -> bytes:
    doc = json.loads(text)
    spots = list(_json_numbers(doc))
    if spots:
        *parents, last = rng.choice(spots)
        node = doc
        for key in parents:
            node = node[key]
        node[last] = rng.choice(HOSTILE_INTS)
    return json.dumps(doc).encode()


def mutate(seed: str, out: str, fmt: str, number: int) -> None:
    """Writes case `number`'s mutation of the seed file to `out` (deterministic)."""
    rng = random.Random(number)
    src, dst = Path(seed), Path(out)
    data = bytearray(src.read_bytes())
    generic = ["flip_structure", "flip_structure", "flip_anywhere", "truncate", "zero_block"]
    special = {
        "zip.pth": ["pickle_int", "pickle_int", "pickle_int", "pickle_flip", "swap", "drop", "duplicate"],
        "legacy.pth": ["pickle_int", "pickle_int", "pickle_int"],
        "st.safetensors": ["header_json", "header_json", "header_json"],
        "m.keras": ["config_json", "config_json", "weights_flip", "duplicate", "drop"],
        "m.h5": [],
        "m.weights.h5": [],
    }[fmt]
    kind = rng.choice(generic + special)
    if kind == "flip_structure":
        _flip(data, rng, *_structural(len(data), rng), rng.choice([1, 2, 8, 32]))
    elif kind == "flip_anywhere":
        _flip(data, rng, 0, len(data), rng.choice([1, 16, 256]))
    elif kind == "truncate":
        cut = rng.choice([rng.randrange(len(data)), len(data) - rng.randrange(1, 4096)])
        del data[max(0, cut) :]
    elif kind == "zero_block":
        lo, hi = _structural(len(data), rng)
        at = rng.randrange(lo, max(lo + 1, hi - 4096))
        data[at : at + 4096] = bytes(len(data[at : at + 4096]))
    elif kind == "pickle_int" and fmt == "legacy.pth":
        end = _legacy_pickles_end(bytes(data))
        data[:end] = _hostile_int_in_pickle_stream(bytes(data[:end]), rng)
    elif kind == "header_json":
        length = struct.unpack("<Q", data[:8])[0]
        header = _hostile_json(bytes(data[8 : 8 + length]), rng)
        data = bytearray(struct.pack("<Q", len(header)) + header + data[8 + length :])
    else:
        _rewrite_zip(src, dst, lambda members: _edit_members(members, kind, rng))
        return
    dst.write_bytes(bytes(data))


def _edit_members(members: list, kind: str, rng: random.Random) -> None:
    names = [m[0] for m in members]
    if kind in ("pickle_int", "pickle_flip"):
        entry = next(m for m in members if m[0].endswith("data.pkl"))
        if kind == "pickle_int":
            entry[1] = _hostile_int_in_pickle(entry[1], rng)
        else:
            flipped = bytearray(entry[1])
            _flip(flipped, rng, 0, len(flipped), rng.choice([1, 4]))
            entry[1] = bytes(flipped)
    elif kind == "config_json":
        entry = next(m for m in members if m[0] == "config.json")
        entry[1] = _hostile_json(entry[1], rng)
    elif kind == "weights_flip":
        entry = next(m for m in members if m[0] == "model.weights.h5")
        flipped = bytearray(entry[1])
        _flip(flipped, rng, 0, min(len(flipped), 1 << 16), rng.choice([1, 8, 64]))
        entry[1] = bytes(flipped)
    elif kind == "swap":
        storages = [i for i, n in enumerate(names) if "/data/" in n]
        a, b = rng.sample(storages, 2)
        members[a][0], members[b][0] = members[b][0], members[a][0]
    elif kind == "drop":
        del members[rng.randrange(len(members))]
    elif kind == "duplicate":
        members.append(list(members[rng.randrange(len(members))]))


def _legacy_pickles_end(data: bytes) -> int:
    """Where the legacy format's pickles end (the raw storages follow)."""
    stream = io.BytesIO(data)
    for _ in range(5):
        for _op in pickletools.genops(stream):
            pass
    return stream.tell()


def _hostile_int_in_pickle_stream(data: bytes, rng: random.Random) -> bytes:
    """As `_hostile_int_in_pickle`, on the fourth pickle of a legacy file (the object tree)."""
    stream = io.BytesIO(data)
    starts = [0]
    for _ in range(5):
        for _op in pickletools.genops(stream):
            pass
        starts.append(stream.tell())
    lo, hi = starts[3], starts[4]
    return data[:lo] + _hostile_int_in_pickle(data[lo:hi], rng) + data[hi:]


# --- the test ----------------------------------------------------------------------------------------


def _cases(seeds: Path, tmp_path: Path) -> list[dict]:
    cases = []
    number = 0
    for fmt, count in FORMATS.items():
        for index in range(count):
            number += 1
            folder = tmp_path / f"{fmt}-{index}"
            folder.mkdir()
            name = f"in.{fmt.split('.', 1)[1]}"
            convert = fmt == "zip.pth" and index < CONVERSIONS
            argv = ["torch2keras", name, "out.keras", "--no-validate"] if convert else ["inspect", name, "--json"]
            cases.append(
                {
                    "id": f"{fmt}-{index}",
                    "folder": folder,
                    "argv": argv,
                    "prepare": ["test_fuzz:mutate", str(seeds / fmt), str(folder / name), fmt, number],
                    "deadline": 60,
                    "cleanup": True,
                    "convert": convert,
                }
            )
    return cases


@pytest.mark.slow
def test_fuzz_every_format(seeds, tmp_path):
    cases = _cases(seeds, tmp_path)
    results = run_cases(cases, tmp_path, workers=2)
    failures = []
    for case in cases:
        result = results[case["id"]]
        err, code = result["stderr"], result["code"]
        if code == 0:
            if case["convert"]:
                ok = result["new_files"] == ["out.keras"]
            else:
                doc = json.loads(result["stdout"])
                ok = doc["arch"] == "r2d_18" and doc["num_classes"] == 2 and result["new_files"] == []
        else:
            ok = code == 2 and err.count("\n") == 1 and err.startswith("error: ") and result["new_files"] == []
        if not ok:
            failures.append((case["id"], code, err[-600:], result["new_files"]))
    seconds = sorted((r["seconds"], r["id"]) for r in results.values())
    worst = max(results.values(), key=lambda r: r["rss_mb"])
    codes = {code: sum(r["code"] == code for r in results.values()) for code in {r["code"] for r in results.values()}}
    cpu = {fmt: sum(r["cpu_seconds"] for i, r in results.items() if i.startswith(fmt)) for fmt in FORMATS}
    slowest_cpu = max(results.values(), key=lambda r: r["cpu_seconds"])
    print(
        f"\nCPU seconds by format { ({fmt: round(t, 1) for fmt, t in cpu.items()}) }, in all {sum(cpu.values()):.0f}; "
        f"most CPU {slowest_cpu['id']} {slowest_cpu['cpu_seconds']:.1f} s"
    )
    print(
        f"\nfuzz: {len(results)} cases, exit codes {codes}; slowest {seconds[-1][1]} {seconds[-1][0]:.1f} s; "
        f"peak RSS {worst['rss_mb']:.0f} MB ({worst['id']})"
    )
    assert not failures, f"{len(failures)} of {len(cases)} cases broke the policy: {failures[:8]}"
    assert seconds[-1][0] < 30
    assert worst["rss_mb"] < 4000


def test_fuzz_mutations_are_deterministic(seeds, tmp_path):
    for fmt in FORMATS:
        mutate(str(seeds / fmt), str(tmp_path / "a"), fmt, 7)
        mutate(str(seeds / fmt), str(tmp_path / "b"), fmt, 7)
        assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    shutil.rmtree(tmp_path)
