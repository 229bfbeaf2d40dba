"""torch -> Keras for every variant and Keras format, checked in a fresh process with plain Keras;
bit-exact round trips both ways; the mapping covers every tensor exactly once."""

from pathlib import Path

import numpy as np
import pytest
from helpers import make_checkpoint, run_python, save_state, torch_logits
from oracle import ARCHS, keys, rel_err

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.conversion import convert

FORMATS = (".keras", ".h5", ".weights.h5")

RELOAD = """
    import sys, numpy as np, keras
    x = np.load({x!r})
    full = keras.models.load_model({keras_file!r}, compile=False, safe_mode=True)
    np.save({out!r} + ".keras.npy", keras.ops.convert_to_numpy(full(x, training=False)))
    legacy = keras.models.load_model({h5_file!r}, compile=False)
    np.save({out!r} + ".h5.npy", keras.ops.convert_to_numpy(legacy(x, training=False)))
    for v in full.weights:  # prove the .weights.h5 carries every weight: wipe, then load it
        v.assign(np.zeros(v.shape, v.dtype))
    full.load_weights({weights_file!r})
    np.save({out!r} + ".weights.h5.npy", keras.ops.convert_to_numpy(full(x, training=False)))
    assert not any(m.split(".")[0] == "vrconvert" for m in sys.modules)
"""


@pytest.mark.parametrize("arch", [a if a == "r2plus1d_18" else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS])
def test_torch_to_keras_all_formats_reload_in_fresh_process(arch, tmp_path, torch):
    model, state = make_checkpoint(arch, seed=11)
    src = tmp_path / f"{arch}.pth"
    save_state(state, src)
    clip = np.random.default_rng(2).standard_normal((1, 3, 4, 64, 64)).astype(np.float32)
    files = {}
    for suffix in FORMATS:
        files[suffix] = tmp_path / f"out{suffix}"
        result = convert.torch_to_keras(src, files[suffix], validate=suffix == ".keras", clips={"small": clip})
        assert result.arch == arch and result.num_classes == 400
        assert files[suffix].is_file()
    assert result.num_params == spec.get(arch).num_params
    np.save(tmp_path / "x.npy", clip.transpose(0, 2, 3, 4, 1))
    run_python(
        RELOAD.format(
            x=str(tmp_path / "x.npy"),
            keras_file=str(files[".keras"]),
            h5_file=str(files[".h5"]),
            weights_file=str(files[".weights.h5"]),
            out=str(tmp_path / "logits"),
        )
    )
    expected = torch_logits(model, clip)
    for suffix in FORMATS:
        got = np.load(tmp_path / f"logits{suffix}.npy")
        assert rel_err(got, expected) <= 1e-5, suffix
        assert (np.argsort(-got)[:, :5] == np.argsort(-expected)[:, :5]).all(), suffix


@pytest.mark.parametrize("arch", [a if a == "r2plus1d_18" else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS])
def test_round_trip_torch_keras_torch_is_bit_exact(arch, tmp_path, torch):
    _, state = make_checkpoint(arch, seed=5)
    state = {k: (np.array(0, np.int64) if k.endswith("num_batches_tracked") else v) for k, v in state.items()}
    src = tmp_path / "src.pth"
    save_state(state, src)
    for keras_suffix, torch_suffix in ((".keras", ".pth"), (".weights.h5", ".safetensors")):
        mid, back = tmp_path / f"mid{keras_suffix}", tmp_path / f"back{torch_suffix}"
        convert.torch_to_keras(src, mid, validate=False)
        convert.keras_to_torch(mid, back)
        if torch_suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(back))
        else:
            loaded = torch.load(back, weights_only=True)
        expected_keys = [e["key"] for e in keys(arch)]  # buffers included
        if torch_suffix == ".pth":
            assert list(loaded) == expected_keys  # torchvision's order (safetensors always sorts its keys)
        assert sorted(loaded) == sorted(expected_keys)
        for key, value in state.items():
            np.testing.assert_array_equal(loaded[key].numpy(), value, err_msg=key)
            assert loaded[key].dtype == torch.from_numpy(value).dtype


def test_round_trip_keras_torch_keras_is_bit_exact(tmp_path, keras):
    from vrconvert import models_tf

    for arch in ARCHS:
        model = models_tf.build(arch, num_classes=7)
        rng = np.random.default_rng(9)
        for v in model.weights:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        src = tmp_path / f"{arch}.keras"
        model.save(src)
        convert.keras_to_torch(src, tmp_path / f"{arch}.pth")
        convert.torch_to_keras(tmp_path / f"{arch}.pth", tmp_path / f"{arch}_back.keras", validate=False)
        back = keras.models.load_model(tmp_path / f"{arch}_back.keras", compile=False)
        before = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
        after = {v.path: keras.ops.convert_to_numpy(v) for v in back.weights}
        assert before.keys() == after.keys()
        for path in before:
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)


@pytest.mark.parametrize("arch", ARCHS)
def test_mapping_covers_every_tensor_exactly_once(arch, keras):
    from vrconvert import models_tf

    variant = spec.get(arch)
    entries = mapping.entries(variant)
    torch_keys = [e.torch_key for e in entries] + list(mapping.torch_only_keys(variant))
    assert sorted(torch_keys) == sorted(e["key"] for e in keys(arch))
    assert len(set(torch_keys)) == len(torch_keys)
    model = models_tf.build(arch)
    variables = {v.path: tuple(v.shape) for v in model.weights}
    assert {e.keras_path: e.keras_shape for e in entries} == variables
    for e in entries:  # inverse of the permutation really inverts it
        x = np.arange(np.prod(e.torch_shape), dtype=np.float32).reshape(e.torch_shape)
        np.testing.assert_array_equal(e.to_torch(e.to_keras(x)), x)


def test_in_memory_api(torch):
    import vrconvert

    model, state = make_checkpoint("mc3_18", num_classes=12, seed=4)
    kmodel = vrconvert.state_dict_to_keras(model.state_dict())
    assert kmodel.output_shape == (None, 12)
    back = vrconvert.keras_to_state_dict(kmodel)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value)
    clip = np.random.default_rng(0).standard_normal((1, 3, 4, 32, 32)).astype(np.float32)
    got = kmodel.predict_on_batch(clip.transpose(0, 2, 3, 4, 1))
    assert rel_err(got, torch_logits(model, clip)) <= 1e-5


def test_python_api_files(tmp_path, torch):
    import vrconvert

    _, state = make_checkpoint("r3d_18", seed=1)
    save_state(state, tmp_path / "a.pth")
    result = vrconvert.torch_to_keras(tmp_path / "a.pth", tmp_path / "a.keras", validate=False)
    assert result.arch == "r3d_18" and Path(result.dst).is_file()
    assert vrconvert.keras_to_torch(tmp_path / "a.keras", tmp_path / "b.pth").arch == "r3d_18"
