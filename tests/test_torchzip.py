"""The torch-free checkpoint reader: same arrays as torch.load, refuses what it does not know, and lets
a Keras user convert and inspect torch checkpoints with neither torch nor TensorFlow imported."""

from __future__ import annotations

import json
import os
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from helpers import NO_TORCH, make_checkpoint, run_python, save_state

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.formats import torchzip


def _as_numpy(value):
    if isinstance(value, torchzip.Tensor):
        return value.float32() if value.dtype == "bfloat16" else np.asarray(value.array)
    return value.detach().float().numpy() if str(value.dtype) == "torch.bfloat16" else value.detach().numpy()


def _same(ours, theirs) -> None:
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs)
        for key in theirs:
            _same(ours[key], theirs[key])
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            _same(a, b)
    elif hasattr(theirs, "dtype") and hasattr(theirs, "detach"):
        assert ours.dtype == str(theirs.dtype).removeprefix("torch.")
        got, want = _as_numpy(ours), _as_numpy(theirs)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert ours == theirs


def test_reads_what_torch_reads(tmp_path, torch):
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4))
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {
        "model": model.state_dict(),  # an OrderedDict with _metadata
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4)}},
            "param_groups": [{"lr": 0.1, "params": [0, 1], "betas": (0.9, 0.99), "name": None}],
        },
        "epoch": 7,
        "half": torch.randn(3, 5).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "double": torch.randn(2).double(),
        "transposed": base.t(),
        "slice": base[1:3, 2:5],
        "shared": base,
        "param": torch.nn.Parameter(torch.ones(2)),
        "scalar": torch.tensor(5),
        "empty": torch.zeros(0, 3),
        "mask": torch.tensor([True, False]),
        "bytes": torch.arange(4, dtype=torch.uint8),
        "ints": torch.arange(3, dtype=torch.int32),
    }
    torch.save(obj, tmp_path / "c.pth")
    ours = torchzip.load(tmp_path / "c.pth")
    _same(ours, torch.load(tmp_path / "c.pth", weights_only=True))
    assert isinstance(ours["model"], OrderedDict) and hasattr(ours["model"], "_metadata")
    assert not ours["slice"].array.flags.writeable  # a read-only view of the memory-mapped file


def test_refuses_code_and_damage(tmp_path, torch):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": torch.ones(2), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(torchzip.Unsupported, match="global"):
        torchzip.load(tmp_path / "evil.pth")
    assert not marker.exists()

    _, state = make_checkpoint("mc3_18")
    save_state(state, tmp_path / "good.pth")
    with (
        zipfile.ZipFile(tmp_path / "good.pth") as src,
        zipfile.ZipFile(tmp_path / "deflated.pth", "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(torchzip.Unsupported, match="compressed"):
        torchzip.load(tmp_path / "deflated.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(torchzip.Refused, match="zip"):  # damage is refused outright, never handed on to torch
        torchzip.load(tmp_path / "cut.pth")


def test_torch2keras_without_torch_or_tensorflow(tmp_path, torch, keras):
    """`--no-validate` needs neither: the checkpoint is read with numpy, the file written without Keras."""
    from vrconvert.models_tf import weights as keras_weights

    _, state = make_checkpoint("r3d_18", seed=3)
    save_state(state, tmp_path / "r3d.pth")
    result = run_python(f"""
        import json, sys
        exec({NO_TORCH!r})  # any import of torch now fails
        from vrconvert.cli.main import main
        sys.argv = ["vrconvert", "torch2keras", "--no-validate", {str(tmp_path / "r3d.pth")!r},
                    {str(tmp_path / "r3d.keras")!r}]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        print(json.dumps({{"tensorflow": sys.modules.get("tensorflow") is not None,
                           "keras": sys.modules.get("keras") is not None}}))
    """)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"tensorflow": False, "keras": False}
    variant, variables = keras_weights.read_keras_file(tmp_path / "r3d.keras")  # here on TensorFlow
    assert variant.name == "r3d_18"
    for entry in mapping.entries(spec.get("r3d_18")):
        np.testing.assert_array_equal(entry.to_torch(variables[entry.keras_path]), state[entry.torch_key])


def test_inspect_and_legacy_fallback_without_torch(tmp_path, torch):
    _, state = make_checkpoint("mc3_18")
    save_state(state, tmp_path / "zip.pth")
    save_state(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    result = run_python(f"""
        import subprocess, sys
        exec({NO_TORCH!r})
        from vrconvert.cli.main import main
        for name in ("zip.pth", "legacy.pth"):
            sys.argv = ["vrconvert", "inspect", "--json", {str(tmp_path)!r} + "/" + name]
            try:
                main()
            except SystemExit as exc:
                print("exit", exc.code)
    """)
    lines = result.stdout.strip().splitlines()
    assert '"arch": "mc3_18"' in result.stdout and lines[-1] == "exit 2"
    assert "legacy" in result.stderr and "needs torch" in result.stderr and "pip install torch" in result.stderr
