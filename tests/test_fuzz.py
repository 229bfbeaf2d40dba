"""Mutation fuzzing of every input format vrconvert reads (issue 10).

Valid files of a real network (r2d_18, 2 classes) in each format are mutated a few hundred ways:
bytes flipped (in the structure or anywhere), truncated, blocks zeroed, pickle integers (offsets,
sizes, strides, numels, memo indices) and JSON numbers (shapes, offsets, units, filters) replaced by
hostile values, zip members swapped, dropped or duplicated. Each case runs through the real CLI in a
forked child under an 8 GB address-space limit and a deadline (`hostile.run_cases`), and must end
either with exit 0 and the right answer (inspect: r2d_18 with 2 classes; a conversion: its output
file) or with exit 2 and exactly one line on stderr; never a signal, a traceback, exit 3, a hang, or a
file left behind. Deterministic: case i uses random seed i.

Two more families (slow set): HDF5 structure (links into the tree, out of the file and into a FIFO,
chunk bombs, chunks larger than their dataset, filters, external storage, attribute, name and group
counts, nesting, loops, float64, renames, deletions, legal gzip) of `.h5`, `.weights.h5` and a
3D-ResNet-Builder file; and `evaluate`'s output folder on --resume (symbolic links in or out, dangling
links, FIFOs, directories, retyped and dropped fields, torn, garbage, duplicated and huge lines), where
nothing outside --out may change. Same rule, within seconds and under 1.5 GB.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
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


# --- HDF5 structure: links, chunking, filters, attribute and name counts ------------------------------------

H5_CASES = {"m.h5": 30, "m.weights.h5": 30, "builder.h5": 24}  # seed file -> cases (about 45 CPU-seconds)
H5_KINDS = (
    "soft_link", "external_link", "fifo_link", "chunk_bomb", "chunk_bigger", "scaleoffset", "external_storage",
    "attributes", "names", "groups", "deep", "loop", "float64", "rename", "delete", "gzip",
)  # fmt: skip


def _h5_paths(f) -> tuple[list[str], list[str]]:
    import h5py

    groups, datasets = [], []
    f.visititems(lambda n, o: (datasets if isinstance(o, h5py.Dataset) else groups).append(n))
    return groups, datasets


def mutate_h5(seed: str, out: str, number: int) -> str:
    """Case `number`'s structural mutation of an HDF5 seed file, written to `out` (deterministic); the kind.
    A mutation h5py cannot write leaves the copy as it got (perhaps half-mutated): still a case."""
    import h5py

    rng = random.Random(number)
    shutil.copyfile(seed, out)
    kind = rng.choice(H5_KINDS)
    with (
        h5py.File(out, "r+", libver=("earliest", "latest")) as f,
        contextlib.suppress(OSError, ValueError, KeyError, TypeError, RuntimeError),
    ):
        _apply_h5(f, kind, rng, Path(out).parent)
    return kind


def _apply_h5(f, kind: str, rng: random.Random, folder: Path) -> None:
    import hostile_h5

    groups, datasets = _h5_paths(f)
    group, dataset = rng.choice(groups), rng.choice(datasets)
    if kind in ("soft_link", "external_link"):
        hostile_h5.link(f, rng.choice([group, dataset]), kind.split("_")[0], "/" + rng.choice(datasets))
    elif kind == "fifo_link":
        hostile_h5.fifo_link(f, rng.choice([group, dataset]), folder)
    elif kind == "chunk_bomb":
        hostile_h5.chunk_bomb(f, dataset, elements=1 << rng.choice([26, 28, 29]))
    elif kind == "chunk_bigger":  # a modest chunk, still larger than the dataset
        hostile_h5.chunk_bomb(f, dataset, elements=int(np.prod(f[dataset].shape)) + rng.choice([1, 64, 4096]))
    elif kind == "scaleoffset":
        hostile_h5.plugin_filter(f, dataset)
    elif kind == "external_storage":
        hostile_h5.external_storage(f, dataset)
    elif kind == "attributes":
        hostile_h5.many_attributes(f[group], rng.choice([10, 2_000]))
    elif kind == "names":  # a Keras 2 name list (layer_names, weight_names) inflated, or pointed astray
        _inflate_names(f, groups, rng)
    elif kind == "groups":
        hostile_h5.many_groups(f, rng.choice([50, 12_000]), group)
    elif kind == "deep":
        hostile_h5.deep_groups(f[group], rng.choice([5, 40]))
    elif kind == "loop":
        hostile_h5.hard_cycle(f, group)
    elif kind == "float64":
        data = f[dataset][()]
        del f[dataset]
        f[dataset] = data.astype(np.float64)
    elif kind == "rename":
        f.move(dataset, dataset + "_x")
    elif kind == "delete":
        del f[rng.choice([group, dataset])]
    elif kind == "gzip":  # legal: chunked and compressed, no chunk larger than its dataset
        data = f[dataset][()]
        del f[dataset]
        f.create_dataset(dataset, data=data, chunks=True, compression="gzip")


def _inflate_names(f, groups: list[str], rng: random.Random) -> None:
    target = next((g for g in ["/", *groups] if {"layer_names", "weight_names"} & set(f[g].attrs)), None)
    if target is None:
        return
    key = "layer_names" if "layer_names" in f[target].attrs else "weight_names"
    values = list(f[target].attrs[key])
    values = values * rng.choice([2, 20_000]) if values else [b"nowhere"]
    del f[target].attrs[key]
    f[target].attrs[key] = np.array(values)


@pytest.fixture(scope="module")
def h5_seeds(seeds, tmp_path_factory):
    from test_keras_projects import keys, write_original

    folder = tmp_path_factory.mktemp("h5seeds")
    for name in ("m.h5", "m.weights.h5"):
        shutil.copyfile(seeds / name, folder / name)
    shapes = [tuple(w["shape"]) for w in keys("A18_3D")["weights"]]
    rng = np.random.default_rng(0)
    write_original("A18_3D", folder / "builder.h5", [rng.standard_normal(s).astype(np.float32) for s in shapes])
    return folder


@pytest.mark.slow
def test_fuzz_hdf5_structure(h5_seeds, tmp_path):
    """Every HDF5 layout mutated structurally: exit 0 with the right answer, or exit 2 and one line;
    within seconds, under 1.5 GB, never a hang (external links into FIFOs among the cases)."""
    cases = []
    for fmt, count in H5_CASES.items():
        for index in range(count):
            folder = tmp_path / f"{fmt}-{index}"
            folder.mkdir()
            name = "in.weights.h5" if fmt == "m.weights.h5" else "in.h5"
            argv = ["keras2torch", name, "out.pth"] if fmt == "builder.h5" else ["inspect", name, "--json"]
            cases.append({
                "id": f"{fmt}-{index}", "folder": folder, "argv": argv, "deadline": 30, "cleanup": True,
                "prepare": ["test_fuzz:mutate_h5", str(h5_seeds / fmt), str(folder / name), 1000 + index],
            })  # fmt: skip
    results = run_cases(cases, tmp_path, workers=2)
    failures = []
    for case in cases:
        result = results[case["id"]]
        err, code = result["stderr"], result["code"]
        if code == 0:
            if case["argv"][0] == "keras2torch":
                ok = result["new_files"] == ["out.pth"]
            else:
                doc = json.loads(result["stdout"])
                ok = doc["arch"] == "r2d_18" and doc["num_classes"] == 2 and result["new_files"] == []
        else:
            ok = code == 2 and err.count("\n") == 1 and err.startswith("error: ") and result["new_files"] == []
        ok = ok and result["rss_mb"] < 1500 and result["seconds"] < 20
        if not ok:
            failures.append((case["id"], code, err[-400:], result["new_files"], round(result["rss_mb"])))
    codes = {c: sum(r["code"] == c for r in results.values()) for c in {r["code"] for r in results.values()}}
    worst = max(results.values(), key=lambda r: r["rss_mb"])
    slowest = max(results.values(), key=lambda r: r["seconds"])
    print(f"\nfuzz hdf5: {len(results)} cases, exit codes {codes}; slowest {slowest['id']} {slowest['seconds']:.1f} s; "
          f"peak RSS {worst['rss_mb']:.0f} MB ({worst['id']})")  # fmt: skip
    assert not failures, f"{len(failures)} of {len(cases)} cases broke the policy: {failures[:8]}"


# --- evaluate's output folder: symlinks, tampered and huge records -------------------------------------------

FOLDER_CASES = 40


def mutate_folder(finished: str, case: str, number: int) -> str:
    """Case `number`'s state of an evaluate folder: `case`/out made from the finished run's folder."""
    rng = random.Random(number)
    out = Path(case) / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(finished, out)
    (Path(case) / "victim.txt").write_text("untouched\n")
    name = rng.choice(["results.jsonl", "run.json", "lock", "layers.json"])
    kind = rng.choice(["link_outside", "link_dangling", "fifo", "retype", "drop_key", "truncate", "garbage", "huge", "duplicate", "directory"])  # fmt: skip
    path = out / name
    if kind in ("link_outside", "link_dangling", "fifo", "directory"):
        if path.exists():
            path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            path.mkdir()
        else:
            path.symlink_to("../victim.txt" if kind == "link_outside" else "../created.txt")
        return f"{name} {kind}"
    results = out / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    if kind in ("retype", "drop_key"):
        record = json.loads(lines[0])
        key = rng.choice(sorted(record))
        if kind == "drop_key":
            del record[key]
        else:
            record[key] = rng.choice([None, "x", 1e400, -1, [], {}, True, "<b>" * 3])
        lines[0] = json.dumps(record) + "\n"
    elif kind == "truncate":
        lines[-1] = lines[-1][: rng.randrange(1, len(lines[-1]))]
    elif kind == "garbage":
        lines.append(rng.choice(["\x00" * 100 + "\n", "{" * 5000 + "\n", "nul\n", "[]\n", '"x"\n']))
    elif kind == "duplicate":
        lines += lines
    results.write_text("".join(lines))
    if kind == "huge":
        with open(results, "r+b") as f:
            f.seek(0, os.SEEK_END)
            f.write(b'{"key": "')
            f.seek(rng.choice([2 << 20, 64 << 20]), os.SEEK_CUR)
            f.write(b'"}\n')
    return f"results.jsonl {kind}"


@pytest.fixture(scope="module")
def finished_folder(tmp_path_factory):
    """A torch r2d_18 (2 classes), one short video, and a finished evaluate folder made by the CLI."""
    from helpers import make_checkpoint, save_state

    from vrconvert.converter import video

    root = tmp_path_factory.mktemp("evaluate")
    save_state(make_checkpoint("r2d_18", num_classes=2, seed=3)[1], root / "m.pth")
    (root / "videos").mkdir()
    shutil.copyfile(video.SAMPLE_CLIP, root / "videos" / "v.mp4")
    base = {"id": "base", "folder": root / "base", "argv": _evaluate_argv(root)}
    (root / "base").mkdir()
    result = run_cases([base], root)["base"]
    assert result["code"] == 0, result["stderr"]
    return root


def _evaluate_argv(root: Path, *extra: str) -> list[str]:
    return ["evaluate", str(root / "m.pth"), "--videos", str(root / "videos"), "--frames", "2", "--size", "16x16",
            "--out", "out", *extra]  # fmt: skip


@pytest.mark.slow
def test_fuzz_evaluate_folder_states(finished_folder, tmp_path):
    """--resume (and --report) on a folder in a hostile state: exit 0 with the finished video counted, or
    exit 2 and one line; never a write outside --out, never a hang, under 1.5 GB."""
    cases = []
    for index in range(FOLDER_CASES):
        folder = tmp_path / f"folder-{index}"
        folder.mkdir()
        extra = ["--resume", "--json"] + (["--report", "r.html"] if index % 4 == 0 else [])
        cases.append({
            "id": f"folder-{index}", "folder": folder, "argv": _evaluate_argv(finished_folder, *extra), "deadline": 60,
            "prepare": ["test_fuzz:mutate_folder", str(finished_folder / "base" / "out"), str(folder), 2000 + index],
        })  # fmt: skip
    results = run_cases(cases, tmp_path, workers=2)
    failures = []
    for case in cases:
        result, folder = results[case["id"]], Path(case["folder"])
        err, code = result["stderr"], result["code"]
        if code == 0:
            ok = json.loads(result["stdout"])["videos"] >= 1
        else:
            ok = code == 2 and err.count("\n") == 1 and err.startswith("error: ")
        outside = sorted(p.name for p in folder.iterdir() if p.name not in ("out", "victim.txt", "tmp", ".stdout", ".stderr", "r.html"))  # fmt: skip
        ok = ok and not outside and (folder / "victim.txt").read_text() == "untouched\n"
        ok = ok and result["rss_mb"] < 1500 and result["seconds"] < 30
        if not ok:
            failures.append((case["id"], code, err[-400:], outside, round(result["rss_mb"])))
    codes = {c: sum(r["code"] == c for r in results.values()) for c in {r["code"] for r in results.values()}}
    worst = max(results.values(), key=lambda r: r["rss_mb"])
    print(f"\nfuzz evaluate folder: {len(results)} cases, exit codes {codes}; peak RSS {worst['rss_mb']:.0f} MB")
    assert not failures, f"{len(failures)} of {len(cases)} cases broke the policy: {failures[:8]}"
