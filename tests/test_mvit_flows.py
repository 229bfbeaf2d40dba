"""MViT through vrconvert's commands and files: the catalogue, detection from key names and shapes, the
mapping's round trips, the `.keras` file in safe mode after `import vrconvert` (and not in plain Keras),
and, at the native size (slow), torch2keras/keras2torch bit-exact both ways and `--pretrained`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import zoo_oracle
from helpers import invoke, run_python
from test_mvit import _tiny

from vrconvert.converter.arch import accounting, families, mapping
from vrconvert.converter.conversion import convert
from vrconvert.converter.formats import checkpoint

ARCHS = ("mvit_v1_b", "mvit_v2_s")


def test_list_shows_parameters_and_published_top1(capsys):
    code, out, err = invoke(["list", "--json"], capsys)
    assert code == 0, err
    rows = {row["arch"]: row for row in json.loads(out)["variants"]}
    for name in ARCHS:
        meta = zoo_oracle.meta(name)
        assert rows[name]["num_params"] == meta["num_params"]
        assert rows[name]["acc1"] == meta["weights"]["KINETICS400_V1"]["acc@1"]


@pytest.mark.parametrize("name", ARCHS)
def test_detected_from_torch_keys_and_from_keras_variables(name):
    arch = families.get(name)
    assert accounting.detect(mapping.torch_shapes(arch)) == arch
    keras_shapes = {e.keras_path: e.keras_shape for e in mapping.entries(arch)}
    assert accounting.torch_shapes_of(keras_shapes) == {e.torch_key: e.torch_shape for e in mapping.entries(arch)}
    assert accounting.detect(accounting.torch_shapes_of(keras_shapes)) == arch
    head = dict(mapping.torch_shapes(arch), **{"head.1.weight": (7, 768), "head.1.bias": (7,)})
    assert accounting.detect(head).num_classes == 7


@pytest.mark.parametrize("version", (pytest.param(1, marks=pytest.mark.slow), 2))
def test_round_trip_and_safe_mode_reload_after_import_vrconvert(version, tmp_path):
    """torch -> Keras -> torch is bit-exact; the saved `.keras` reloads in a fresh process in safe mode
    after `import vrconvert` (registration happens as Keras is imported) and gives the same logits,
    while plain Keras refuses it."""
    import keras

    from vrconvert.models_tf import weights as keras_weights

    arch = _tiny(version)
    rng = np.random.default_rng(10 + version)
    state = {k: rng.normal(0.0, 0.3, s).astype(np.float32) for k, s in mapping.torch_shapes(arch).items()}
    model = keras_weights.build_model(arch, state)
    back = mapping.to_torch(arch, keras_weights.variables_of(model))
    assert list(back) == list(state) and all(np.array_equal(back[k], state[k]) for k in state)
    clip = rng.standard_normal((1, *arch.clip, 3)).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    np.save(tmp_path / "logits.npy", keras.ops.convert_to_numpy(model(clip)))
    model.save(tmp_path / "tiny.keras")
    check = f"""
        import numpy as np
        import keras
        model = keras.models.load_model({str(tmp_path / "tiny.keras")!r}, safe_mode=True, compile=False)
        got = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "clip.npy")!r})))
        assert np.array_equal(got, np.load({str(tmp_path / "logits.npy")!r}))
    """
    run_python("import vrconvert\n" + "\n".join(line[8:] for line in check.splitlines()))
    with pytest.raises(AssertionError, match="Could not locate class"):
        run_python("\n".join(line[8:] for line in check.splitlines()))


@pytest.mark.slow
def test_torch2keras_and_keras2torch_are_bit_exact_both_ways(tmp_path):
    name = "mvit_v2_s"
    state = zoo_oracle.recipe_state_dict(name)
    checkpoint.write_torch(state, tmp_path / "a.pth")
    convert.torch_to_keras(tmp_path / "a.pth", tmp_path / "a.keras", validate=False)
    convert.keras_to_torch(tmp_path / "a.keras", tmp_path / "b.pth")
    back = checkpoint.read_checkpoint(tmp_path / "b.pth").state
    assert list(back) == list(state) and all(np.array_equal(back[k], state[k]) for k in state)
    convert.torch_to_keras(tmp_path / "b.pth", tmp_path / "b.keras", validate=False)
    from vrconvert.models_tf import weights as keras_weights

    first = keras_weights.read_keras_file(tmp_path / "a.keras")[1]
    second = keras_weights.read_keras_file(tmp_path / "b.keras")[1]
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_pretrained_from_a_local_server(tmp_path, capsys, monkeypatch):
    import http.server
    import threading

    name = "mvit_v1_b"
    root = tmp_path / "www"
    root.mkdir()
    checkpoint.write_torch(zoo_oracle.recipe_state_dict(name), root / "tmp.pth")
    filename = f"{name}-{hashlib.sha256((root / 'tmp.pth').read_bytes()).hexdigest()[:8]}.pth"
    (root / "tmp.pth").rename(root / filename)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        arch = families.get(name)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{filename}"
        monkeypatch.setitem(families.VARIANTS, name, replace(arch, pretrained=replace(arch.pretrained, url=url)))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
        code, _, err = invoke(["torch2keras", "--pretrained", name, tmp_path / "k.weights.h5", "--no-validate"], capsys)
    finally:
        httpd.shutdown()
    assert code == 0, err
    assert (tmp_path / "k.weights.h5").is_file()
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / filename).is_file()


def test_parity_clips_are_redrawn_at_the_size_the_weights_fix():
    from vrconvert.converter import parity
    from vrconvert.converter.parity import validate as validator

    small = {"random(seed=3, 16x112x112)": parity.random_clip(3, 16, (112, 112))}
    fitted = validator.fit_clips(families.get("mvit_v2_s"), small)
    assert list(fitted) == ["random(seed=3, 16x224x224)"]
    assert np.array_equal(fitted["random(seed=3, 16x224x224)"], parity.random_clip(3, 16, (224, 224)))
    assert validator.fit_clips(families.get("r3d_18"), small) is small
    with pytest.warns(UserWarning, match="other.mp4 left out: mvit_v2_s takes 16x224x224 clips only"):
        assert validator.fit_clips(families.get("mvit_v2_s"), {"other.mp4": small["random(seed=3, 16x112x112)"]}) == {}
