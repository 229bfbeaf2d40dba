"""`--pretrained` against a local HTTP server on 127.0.0.1: good hash, bad hash, and offline."""

import hashlib
import http.server
import threading
from dataclasses import replace

import pytest
from helpers import invoke, make_checkpoint, save_state

from vrconvert.converter.arch import families, spec


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _publish(root, torch, name_hash: str | None = None):
    """Serves a generated mc3_18 checkpoint under a torchvision-style name; returns (filename, sha256)."""
    _, state = make_checkpoint("mc3_18", seed=8)
    tmp = root / "tmp.pth"
    save_state(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    filename = f"mc3_18-{name_hash or digest[:8]}.pth"
    tmp.rename(root / filename)
    return filename


def _point_spec_at(monkeypatch, base, filename):
    arch = spec.get("mc3_18")
    moved = replace(arch, pretrained=replace(arch.pretrained, url=f"{base}/{filename}"))
    monkeypatch.setitem(spec.VARIANTS, "mc3_18", moved)
    monkeypatch.setitem(families.VARIANTS, "mc3_18", moved)  # where commands look variants up


def test_download_good_hash_then_cached(server, tmp_path, torch, capsys, monkeypatch):
    root, base = server
    filename = _publish(root, torch)
    _point_spec_at(monkeypatch, base, filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    code, out, err = invoke(
        ["torch2keras", "--pretrained", "mc3_18", tmp_path / "k.keras", "--frames", "4", "--size", "64"], capsys
    )
    assert code == 0, err
    assert "parity PASS" in out and (tmp_path / "k.keras").is_file()
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / filename
    assert cached.is_file()
    (root / filename).unlink()  # served no more: the second run must use the cache
    code, out, err = invoke(
        ["torch2keras", "--pretrained", "mc3_18", tmp_path / "k2.weights.h5", "--no-validate"], capsys
    )
    assert code == 0, err


def test_download_bad_hash_keeps_nothing(server, tmp_path, torch, capsys, monkeypatch):
    root, base = server
    filename = _publish(root, torch, name_hash="00000000")
    _point_spec_at(monkeypatch, base, filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    code, _, err = invoke(["torch2keras", "--pretrained", "mc3_18", tmp_path / "k.keras"], capsys)
    assert code == 2 and "does not match 00000000" in err
    assert not (tmp_path / "k.keras").exists()
    assert list((tmp_path / "torch_home" / "hub" / "checkpoints").iterdir()) == []


def test_offline_fails_fast_naming_the_url(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("VRCONVERT_PRETRAINED_BASE_URL", "http://127.0.0.1:9")  # discard port: refused
    code, _, err = invoke(["torch2keras", "--pretrained", "r2plus1d_18", tmp_path / "k.keras"], capsys)
    assert code == 2
    assert "http://127.0.0.1:9/r2plus1d_18-91a641e6.pth" in err and "pass the file" in err
    assert not (tmp_path / "k.keras").exists()
