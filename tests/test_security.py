"""One named regression test per class of the security review (issue 10). Every hostile file is made
here, and every run goes through `hostile.run_cases`: the real CLI, an 8 GB address-space limit, a
deadline, and a check that it ends with exit 2, exactly one line on stderr, and nothing left behind."""

from __future__ import annotations

import os
import pickle
import socketserver
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile import assert_refused, run_cases, state_pickle, state_zip, tensor_record, write_torch_zip

MARKER = b"\x7fELF-MARKER-vrconvert-leak-" * 8  # bytes that must never reach an output


@pytest.fixture(scope="module")
def r2d_state():
    """A real r2d_18 state dict with a 2-class head (the smallest network vrconvert knows)."""
    from helpers import make_checkpoint

    return make_checkpoint("r2d_18", num_classes=2, seed=5)[1]


def _case(tmp_path: Path, name: str, argv: list, **more) -> dict:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return {"id": name, "folder": folder, "argv": [str(a) for a in argv], **more}


def _tiny_zip(path: Path, **record) -> None:
    """One float32 tensor 'w' of 4 elements, with `record` overriding the tensor record's fields."""
    fields = {"dtype": "float32", "numel": 4, "offset": 0, "size": (4,), "stride": (1,)} | record
    data = record.pop("data", np.arange(4, dtype=np.float32).tobytes())
    write_torch_zip(path, state_pickle({"w": tensor_record("0", **{k: fields[k] for k in (
        "dtype", "numel", "offset", "size", "stride")})}), {"0": data}, {"archive/data/zz": MARKER})  # fmt: skip


# --- 1. out-of-bounds reads and leaks ----------------------------------------------------------------------


def test_negative_storage_offset_is_refused_without_reading_outside(tmp_path, r2d_state, torch):
    cases = []
    for name, record in {
        "negative_offset": {"offset": -204800},
        "small_negative_offset": {"offset": -2},
        "offset_past_end": {"offset": 3, "size": (4,)},
        "stride_past_end": {"stride": (2,)},
        "numel_past_member": {"numel": 1 << 40},
        "negative_size": {"size": (-4,)},
        "negative_stride": {"stride": (-1,)},
    }.items():
        case = _case(tmp_path, name, ["inspect", "w.pth"])
        _tiny_zip(Path(case["folder"]) / "w.pth", **record)
        cases.append(case)
    # a full network whose fc.bias is a one-element storage read at a negative offset, marker after it
    case = _case(tmp_path, "full_negative", ["torch2keras", "m.pth", "out.keras", "--no-validate"])
    state_zip(
        Path(case["folder"]) / "m.pth",
        r2d_state,
        {"fc.bias": {"numel": 1, "offset": -1, "data": b"\0\0\0\0"}},
        {"archive/data/zz": MARKER},
    )
    cases.append(case)
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result)
    assert "offset" in results["negative_offset"]["stderr"]


def test_leak_marker_after_a_storage_never_reaches_an_output(tmp_path, r2d_state, torch):
    """A marker right after fc.bias's storage: valid files convert without it, hostile records that
    would read it are refused; no output of any run contains the marker."""
    cases = []
    variants = {
        "valid": {},
        "bias_shifted": {"fc.bias": {"offset": 1, "numel": 2}},
        "bias_negative": {"fc.bias": {"offset": -2}},
        "bias_longer": {"fc.bias": {"numel": 4}},
        "bias_strided": {"fc.bias": {"stride": (3,)}},
    }
    for name, override in variants.items():
        for out in ("out.keras", "out.weights.h5") if name == "valid" else ("out.keras",):
            case = _case(tmp_path, f"{name}-{out}", ["torch2keras", "m.pth", out, "--no-validate"])
            state_zip(Path(case["folder"]) / "m.pth", r2d_state, override, {"archive/data/zz": MARKER})
            cases.append(case)
    results = run_cases(cases, tmp_path)
    for case in cases:
        result, folder = results[case["id"]], Path(case["folder"])
        if case["id"].startswith("valid"):
            assert result["code"] == 0, result["stderr"]
        else:
            assert_refused(result)
        for path in folder.rglob("*"):
            if path.is_file() and path.name != "m.pth":
                assert MARKER[:16] not in path.read_bytes(), (case["id"], path)
    # and back again: the valid conversion's torch file holds no marker either
    valid = Path(cases[0]["folder"])
    back = run_cases([_case(tmp_path, "back", ["keras2torch", valid / "out.keras", "back.pth"])], tmp_path)["back"]
    assert back["code"] == 0, back["stderr"]
    assert MARKER[:16] not in (tmp_path / "back" / "back.pth").read_bytes()


# --- 2. tiny files, huge allocations -------------------------------------------------------------------


def _memo_bomb(path: Path) -> None:
    body = b"\x80\x02}q\x00" + b"r" + (1 << 28).to_bytes(4, "little") + b"."  # LONG_BINPUT 2**28
    write_torch_zip(path, body, {})


def _deflated_pickle(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02(" + b"N" * (80 << 20) + b"t.")  # 80 MB of NONE, ~80 KB deflated


def _shared_unaligned(path: Path) -> None:
    data = np.zeros(1 << 20, np.float32).tobytes()
    records = {f"t{i}": tensor_record("0", "float32", 1 << 20, 0, (1 << 20,), (1,)) for i in range(300)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", state_pickle(records))
        z.writestr("archive/data/0x", b"")  # shifts the storage to an odd offset
        info = zipfile.ZipInfo("archive/data/0")
        info.extra = b"\0"  # an extra field of odd length: the storage starts unaligned
        z.writestr(info, data)


def test_tiny_files_cannot_allocate_gigabytes(tmp_path, torch):
    cases = []
    case = _case(tmp_path, "stride0_half", ["inspect", "w.pth"])
    write_torch_zip(
        Path(case["folder"]) / "w.pth",
        state_pickle({"w": tensor_record("0", "float16", 1, 0, (2_000_000_000,), (0,))}),
        {"0": b"\0\0"},
    )
    cases.append(case)
    for name, make in (("memo", _memo_bomb), ("deflated_pickle", _deflated_pickle), ("shared", _shared_unaligned)):
        case = _case(tmp_path, name, ["inspect", "w.pth"])
        make(Path(case["folder"]) / "w.pth")
        cases.append(case)
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result, max_rss_mb=2000)  # the worker's own imports are ~400 MB of that
    assert "limit" in results["memo"]["stderr"] and "limit" in results["deflated_pickle"]["stderr"]


# --- 3. tiny files that hang ----------------------------------------------------------------------------


def _nested_tuple(depth: int) -> bytes:
    """Pushes a tuple nested `depth` deep through the memo: t(i+1) = (t(i), t(i)), so that hashing or
    repr'ing it takes 2**depth steps although the pickle is a few bytes per level."""
    out = b")q\x000"  # t0 = (), memo 0, popped
    for i in range(depth):
        out += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1]) + b"0"
    return out + b"h" + bytes([depth])


def test_nested_pickles_cannot_hang(tmp_path, torch):
    key = _case(tmp_path, "nested_key", ["inspect", "w.pth"])
    write_torch_zip(Path(key["folder"]) / "w.pth", b"\x80\x02}" + _nested_tuple(60) + b"Ns.", {})
    pid = _case(tmp_path, "nested_pid", ["inspect", "w.pth"])
    write_torch_zip(Path(pid["folder"]) / "w.pth", b"\x80\x02}X\x01\x00\x00\x00w" + _nested_tuple(60) + b"Qs.", {})
    deep = _case(tmp_path, "deep", ["inspect", "w.pth"])
    write_torch_zip(Path(deep["folder"]) / "w.pth", b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".", {})
    legacy = _case(tmp_path, "legacy_nested_key", ["inspect", "w.pth"])
    (Path(legacy["folder"]) / "w.pth").write_bytes(b"\x80\x02}" + _nested_tuple(60) + b"Ns.")
    results = run_cases([{**c, "deadline": 20} for c in (key, pid, deep, legacy)], tmp_path)
    for result in results.values():
        assert_refused(result)
        assert result["seconds"] < 15
    assert "dict key" in results["nested_key"]["stderr"] and "dict key" in results["legacy_nested_key"]["stderr"]
    assert "storage reference (a tuple)" in results["nested_pid"]["stderr"]
    assert "nested deeper" in results["deep"]["stderr"]


# --- 4. Keras files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory, r2d_state):
    """A real r2d_18 (2 classes) as .keras and .weights.h5, made in a subprocess (Keras stays out of here)."""
    from helpers import run_python

    folder = tmp_path_factory.mktemp("keras")
    np.savez(folder / "state.npz", **r2d_state)
    run_python(
        f"""
        import numpy as np
        from vrconvert.converter.arch import spec
        from vrconvert.models_tf import weights as keras_weights
        state = dict(np.load({str(folder / "state.npz")!r}))
        model = keras_weights.build_model(spec.get("r2d_18").with_classes(2), state)
        model.save({str(folder / "m.keras")!r})
        model.save_weights({str(folder / "m.weights.h5")!r})
    """,
        backend="numpy",
    )
    return folder


def _keras_with_config(src: Path, dst: Path, edit) -> None:
    import json

    with zipfile.ZipFile(src) as z_in, zipfile.ZipFile(dst, "w") as z_out:
        for info in z_in.infolist():
            data = z_in.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            z_out.writestr(info, data)


def test_keras_files_are_checked_before_keras_loads_them(tmp_path, keras_files):
    import json

    cases = []

    def huge_dense(config):
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["units"] = 32768
                layer["build_config"]["input_shape"][-1] = 32768

    case = _case(tmp_path, "huge_dense", ["keras2torch", "m.keras", "out.pth"])
    _keras_with_config(keras_files / "m.keras", Path(case["folder"]) / "m.keras", huge_dense)
    cases.append(case)
    # tiny: only a config.json declaring the layer (the review's 991-byte file)
    case = _case(tmp_path, "tiny_huge_dense", ["inspect", "m.keras"])
    with zipfile.ZipFile(keras_files / "m.keras") as z:
        config = json.loads(z.read("config.json"))
    huge_dense(config)
    with zipfile.ZipFile(Path(case["folder"]) / "m.keras", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", b"")
    cases.append(case)
    case = _case(tmp_path, "big_config", ["inspect", "m.keras"])
    with zipfile.ZipFile(Path(case["folder"]) / "m.keras", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", b"[" + b" " * (100 << 20) + b"]")  # 100 MB, ~100 KB deflated
        z.writestr("model.weights.h5", b"")
    cases.append(case)
    case = _case(tmp_path, "members_3gb", ["inspect", "m.keras"])
    path = Path(case["folder"]) / "m.keras"
    path.write_bytes((keras_files / "m.keras").read_bytes())
    _claim_size(path, "model.weights.h5", 3 << 30)
    cases.append(case)
    case = _case(tmp_path, "extra_member", ["inspect", "m.keras"])
    with zipfile.ZipFile(keras_files / "m.keras") as z_in, zipfile.ZipFile(Path(case["folder"]) / "m.keras", "w") as z:
        for info in z_in.infolist():
            z.writestr(info, z_in.read(info))
        z.writestr("../evil.h5", b"x")
    cases.append(case)
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result, max_rss_mb=2000)


def test_stored_member_window_reads_what_zipfile_reads_and_no_further(tmp_path, keras_files):
    """HDF5 reads the weights member through a window onto the archive file (zipfile's reader re-reads
    from the start on every backward seek): the same bytes as zipfile at any position, never a byte past
    the member, and a local header that points elsewhere is refused in one line."""
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.formats import keras_archive

    path = keras_files / "m.keras"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
        assert info.compress_type == zipfile.ZIP_STORED  # what Keras writes
        whole = archive.read(info)
        rng = np.random.default_rng(0)
        with keras_archive._member(archive, info, path) as window:
            for at in [*rng.integers(0, len(whole), 40), len(whole) - 3, len(whole), len(whole) + 100]:
                window.seek(int(at))
                assert window.read(1000) == whole[at : at + 1000]
            window.seek(-10, 2)
            assert window.read() == whole[-10:]
    damaged = bytearray(path.read_bytes())
    damaged[info.header_offset : info.header_offset + 4] = b"PK\x00\x00"
    (tmp_path / "bad.keras").write_bytes(bytes(damaged))
    with zipfile.ZipFile(tmp_path / "bad.keras") as archive, pytest.raises(InputError, match="local header"):
        keras_archive._member(archive, archive.getinfo("model.weights.h5"), tmp_path / "bad.keras")


def _claim_size(path: Path, member: str, size: int) -> None:
    """Rewrites the central directory so that `member` claims `size` bytes uncompressed."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_len = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + name_len] == name:
            data[at + 24 : at + 28] = size.to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_weights_h5_groups_and_dtypes(tmp_path, keras_files):
    import h5py

    cases = []
    for name in ("renamed_group", "int8_bias"):
        case = _case(tmp_path, name, ["keras2torch", "m.weights.h5", "out.pth"])
        path = Path(case["folder"]) / "m.weights.h5"
        path.write_bytes((keras_files / "m.weights.h5").read_bytes())
        with h5py.File(path, "r+") as f:
            if name == "renamed_group":
                f.move("layers/conv3d_1", "layers/conv3d_x")
            else:
                bias = f["layers/dense/vars/1"]
                values = bias[()]
                del f["layers/dense/vars/1"]
                f["layers/dense/vars/1"] = values.astype(np.int8)
        cases.append(case)
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result)
    assert "dtype" in results["int8_bias"]["stderr"]


# --- 5. video -------------------------------------------------------------------------------------------


def _video(path: Path, width: int, height: int) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=10)  # lossless, any size
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def test_huge_video_frames_are_refused_before_decoding(tmp_path):
    pytest.importorskip("av")
    case = _case(tmp_path, "wide_video", [], call=["vrconvert.converter.video.decode:load_clips", "wide.mkv"])
    _video(Path(case["folder"]) / "wide.mkv", 8200, 16)  # wider than limits.VIDEO_SIDE
    result = run_cases([case], tmp_path)["wide_video"]
    assert_refused(result, contains="limit", max_rss_mb=2000)


# --- 6. downloads ----------------------------------------------------------------------------------------


class _Hostile(socketserver.StreamRequestHandler):
    """Answers by the request path: endless, oversized, trickling or malformed responses."""

    def handle(self):
        path = self.rfile.readline().split()[1].decode()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        mode = path.split("/")[1]  # the base URL names the misbehaviour: http://host:port/MODE
        write = self.wfile.write
        try:
            if mode == "endless":
                write(b"HTTP/1.1 200 OK\r\n\r\n")
                while True:
                    write(b"\0" * (1 << 20))
            elif mode == "too_long":
                write(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n")
            elif mode == "trickle":
                import time

                write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
            elif mode == "bad_status":
                write(b"HTTP/1.1 OK-ish\r\n\r\n")
            elif mode == "bad_length":
                write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nxyz")
            elif mode == "bad_chunk":
                write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
            elif mode == "headers":
                write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n")
            elif mode == "negative":
                write(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nxyz")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def hostile_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_hostile_download_server(tmp_path, hostile_server):
    base = f"http://127.0.0.1:{hostile_server.server_address[1]}"
    cases = []
    for mode in ("endless", "too_long", "trickle", "bad_status", "bad_length", "bad_chunk", "headers", "negative"):
        env = {
            "VRCONVERT_PRETRAINED_BASE_URL": f"{base}/{mode}",
            "TORCH_HOME": str(tmp_path / mode / "tmp" / "torch"),
            "VRCONVERT_DOWNLOAD_SECONDS": "4",
        }
        cases.append(
            _case(tmp_path, mode, ["torch2keras", "--pretrained", "mc3_18", "out.keras"], env=env, deadline=30)
        )
    results = run_cases(cases, tmp_path)
    for mode, result in results.items():
        err = result["stderr"]
        assert result["code"] == 2 and err.count("\n") == 1 and err.startswith("error: "), (mode, result["code"], err)
        left = [p for p in result["new_files"] if "partial" in p or p.endswith(".pth")]
        hub = tmp_path / mode / "tmp" / "torch" / "hub" / "checkpoints"
        assert not left and (not hub.exists() or not list(hub.iterdir())), (mode, result["new_files"])
        assert result["seconds"] < 25, (mode, result["seconds"])
    assert "limit" in results["endless"]["stderr"] or "more than" in results["endless"]["stderr"]
    assert "longer than" in results["trickle"]["stderr"]


def test_sigterm_during_download_removes_the_partial_file(tmp_path, hostile_server):
    env = {
        "VRCONVERT_PRETRAINED_BASE_URL": f"http://127.0.0.1:{hostile_server.server_address[1]}/trickle",
        "TORCH_HOME": str(tmp_path / "sig" / "torch"),
    }
    case = _case(tmp_path, "sig", ["torch2keras", "--pretrained", "mc3_18", "out.keras"], env=env, kill_after=3)
    result = run_cases([case], tmp_path)["sig"]
    assert result["code"] == 128 + 15, result
    hub = tmp_path / "sig" / "torch" / "hub" / "checkpoints"
    assert not hub.exists() or not list(hub.iterdir()), list(hub.iterdir())


# --- 7 and 8. what used to be exit 3 or a silent cast ------------------------------------------------------


def test_odd_records_and_dtypes_are_one_line_refusals(tmp_path, r2d_state, torch):
    cases = []

    def add(name, make, argv=("inspect", "w.pth")):
        case = _case(tmp_path, name, list(argv))
        make(Path(case["folder"]) / "w.pth")
        cases.append(case)

    add("int_key", lambda p: torch.save({1: torch.zeros(2)}, p))
    add(
        "build_gadget",
        lambda p: write_torch_zip(
            p,
            b"\x80\x02}X\x01\x00\x00\x00w"
            + tensor_record("0", "float32", 1, 0, (1,), (1,))
            + b"}X\x05\x00\x00\x00arrayX\x01\x00\x00\x00ssbs.",
            {"0": b"\0\0\0\0"},
        ),
    )
    add("float8", lambda p: torch.save({"w": torch.zeros(2).to(torch.float8_e4m3fn)}, p))
    add("sparse", lambda p: torch.save({"w": torch.eye(2).to_sparse()}, p))
    add("quantized", lambda p: torch.save({"w": torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)}, p))
    for dtype in ("int8", "bool", "uint16", "complex64"):

        def make(p, dtype=dtype):
            state = {k: torch.from_numpy(v) for k, v in r2d_state.items()}
            state["fc.weight"] = state["fc.weight"].to(getattr(torch, dtype))
            torch.save(state, p)

        add(f"dtype_{dtype}", make, ("torch2keras", "w.pth", "out.keras", "--no-validate"))
    add(
        "safetensors_int8",
        lambda p: __import__("safetensors.numpy").numpy.save_file(
            {**r2d_state, "fc.bias": r2d_state["fc.bias"].astype(np.int8)}, str(p)
        ),
    )
    add(
        "legacy_int8",
        lambda p: torch.save({"w": torch.zeros(2, dtype=torch.int8)}, p, _use_new_zipfile_serialization=False),
    )
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result)
    for name in ("dtype_int8", "dtype_bool", "dtype_uint16", "dtype_complex64", "safetensors_int8", "legacy_int8"):
        assert "wrong dtype" in results[name]["stderr"], results[name]["stderr"]


def test_size_and_write_failures_are_one_line(tmp_path, r2d_state, keras_files, torch):
    from helpers import save_state

    from vrconvert.cli.options import parse_size

    with pytest.raises(__import__("click").BadParameter, match="limit"):  # validate and torch2keras share it
        parse_size("3000x3000")
    cases = [_case(tmp_path, "size", ["torch2keras", "a.pth", "b.keras", "--size", "3000x3000"])]
    case = _case(tmp_path, "fsize", ["torch2keras", "m.pth", "out.keras", "--no-validate"], fsize=1 << 20)
    save_state(r2d_state, Path(case["folder"]) / "m.pth")
    cases.append(case)
    case = _case(tmp_path, "fsize_k2t", ["keras2torch", keras_files / "m.keras", "out.pth"], fsize=1 << 20)
    cases.append(case)
    case = _case(tmp_path, "fifo", ["inspect", "fifo.pth"], deadline=20)
    os.mkfifo(Path(case["folder"]) / "fifo.pth")
    cases.append(case)
    case = _case(tmp_path, "fifo_keras", ["inspect", "fifo.keras"], deadline=20)
    os.mkfifo(Path(case["folder"]) / "fifo.keras")
    cases.append(case)
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result)
    assert "1024" in results["size"]["stderr"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_destination_is_one_line(tmp_path, r2d_state, torch):
    from helpers import save_state

    case = _case(tmp_path, "ro", ["torch2keras", "m.pth", "ro/out.keras", "--no-validate"])
    save_state(r2d_state, Path(case["folder"]) / "m.pth")
    (Path(case["folder"]) / "ro").mkdir()
    (Path(case["folder"]) / "ro").chmod(0o555)
    assert_refused(run_cases([case], tmp_path)["ro"])


# --- 10. outputs ------------------------------------------------------------------------------------------


def test_outputs_are_never_clobbered(tmp_path):
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.formats.output import atomic_path, check_target

    dst = tmp_path / "out.pth"
    check_target(dst, False, (".pth",))
    with pytest.raises(InputError, match="appeared"), atomic_path(dst, ".pth") as tmp:
        tmp.write_bytes(b"ours")
        dst.write_bytes(b"theirs")  # another run (or anyone) got there first
    assert dst.read_bytes() == b"theirs" and list(tmp_path.iterdir()) == [dst]
    link = tmp_path / "dangling.pth"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="already exists"):
        check_target(link, False, (".pth",))
    check_target(dst, True, (".pth",))
    with atomic_path(dst, ".pth") as tmp:
        tmp.write_bytes(b"forced")
    assert dst.read_bytes() == b"forced" and sorted(tmp_path.iterdir()) == [link, dst]


def test_sigterm_while_writing_leaves_no_partial_file(tmp_path):
    case = _case(tmp_path, "term", [], call=["test_security:_write_then_sigterm", str(tmp_path / "term" / "o.pth")])
    result = run_cases([case], tmp_path)["term"]
    assert result["code"] == 128 + 15 and result["new_files"] == [], result


def _write_then_sigterm(dst: str) -> None:
    import signal

    from vrconvert.converter.formats.output import atomic_path, check_target

    check_target(Path(dst), False, (".pth",))
    with atomic_path(Path(dst), ".pth") as tmp:
        tmp.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)


def test_keras_layer_allowlist_covers_every_variant():
    """keras_archive's allowlist holds every Keras layer class vrconvert's model builders use (read
    from their source: `layers.Conv3D(` and the like), so no model vrconvert writes is refused."""
    import re

    import vrconvert.models_tf as models_tf
    from vrconvert.converter.formats.keras_archive import LAYER_CLASSES, VRCONVERT_CLASSES

    used = set()
    for source in Path(models_tf.__file__).parent.glob("*.py"):
        used |= set(re.findall(r"layers\.([A-Z][A-Za-z0-9]*)\(", source.read_text()))
    allowed = LAYER_CLASSES | set(VRCONVERT_CLASSES)  # built-ins, and vrconvert's registered layers
    assert used and used <= allowed, sorted(used - allowed)


def test_pickle_scan_refuses_without_building(tmp_path):
    """The pre-scan alone, in-process: each hostile pickle is refused by a rule, not by running out."""
    import io

    from vrconvert.converter.formats import torchzip

    hostile = {
        "memo": b"\x80\x02}r" + (1 << 28).to_bytes(4, "little") + b".",
        "nested_key": b"\x80\x02}" + _nested_tuple(60) + b"Ns.",
        "deep": b"\x80\x02" + b"]" * 100 + b"a" * 99 + b".",
        "inst": b"(i__main__\nX\n.",
        "build_on_global": b"cos\nsystem\n}b.",
    }
    rules = {"memo": "memo", "nested_key": "dict key", "deep": "nested", "inst": "INST", "build_on_global": "BUILD"}
    for name, data in hostile.items():
        with pytest.raises(torchzip.Refused, match=rules[name]):
            torchzip.scan_pickle(io.BytesIO(data))
    good = pickle.dumps({"a": [1, 2, (3, 4)], "b": {"c": None}}, protocol=2)
    assert torchzip.scan_pickle(io.BytesIO(good)) == []
