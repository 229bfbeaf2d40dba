"""Keras files written and read without Keras (`formats.keras_config`, `formats.keras_file`), against
Keras' own saver and loader: the config key for key, the weights files byte for byte, the variables
read back name for name and value for value, and every other file left to Keras."""

import json
import re
import zipfile

import numpy as np
import pytest
from helpers import make_checkpoint, run_python, save_state

from vrconvert.converter.arch import mapping, spec
from vrconvert.converter.formats import keras_config, keras_file

# one variant per Keras layer kind and option the config spells (the rest of the family: slow)
FAST = ("mc3_18", "r2plus1d_18", "builder_r18_se_3d", "resnet18_2plus1dd", "r2plus1d_18_bot_hardswish")
SHARED_ID = re.compile(rb'"shared_object_id": \d+')


def _normalised(config: bytes) -> bytes:
    """Keras writes a shared object's id() (a memory address): equal up to that number."""
    return SHARED_ID.sub(b'"shared_object_id": 0', config)


def _random_state(arch: spec.Arch, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        key: rng.uniform(0.5, 1.5, shape).astype(np.float32)
        for key, shape in mapping.torch_shapes(arch).items()
        if not key.endswith(mapping.TORCH_ONLY_SUFFIX)
    }


@pytest.mark.parametrize("arch", [a if a in FAST else pytest.param(a, marks=pytest.mark.slow) for a in spec.VARIANTS])
def test_config_is_the_one_keras_writes(arch, tmp_path, keras):
    from vrconvert import models_tf

    variant = spec.get(arch).with_classes(7)
    assert keras_config.supported(variant)
    models_tf.build(variant).save(tmp_path / "keras.keras")
    with zipfile.ZipFile(tmp_path / "keras.keras") as archive:
        theirs = archive.read("config.json")
    assert _normalised(json.dumps(keras_config.model_config(variant)).encode()) == _normalised(theirs)


def test_files_are_the_ones_keras_writes(tmp_path, keras):
    """Same state, both writers: the weights files are byte-identical, the archives alike member for member."""
    from vrconvert.models_tf import weights

    variant = spec.get("mc3_18").with_classes(5)
    state = _random_state(variant)
    model = weights.build_model(variant, state)
    model.save(tmp_path / "keras.keras")
    model.save_weights(tmp_path / "keras.weights.h5")
    keras_file.write(tmp_path / "mine.keras", variant, state)
    keras_file.write(tmp_path / "mine.weights.h5", variant, state)
    assert (tmp_path / "mine.weights.h5").read_bytes() == (tmp_path / "keras.weights.h5").read_bytes()
    with zipfile.ZipFile(tmp_path / "keras.keras") as theirs, zipfile.ZipFile(tmp_path / "mine.keras") as mine:
        members = [(i.filename, i.compress_type, i.external_attr, i.file_size) for i in theirs.infolist()]
        assert [(i.filename, i.compress_type, i.external_attr, i.file_size) for i in mine.infolist()] == members
        assert mine.read("model.weights.h5") == theirs.read("model.weights.h5")
        assert _normalised(mine.read("config.json")) == _normalised(theirs.read("config.json"))
        meta, their_meta = json.loads(mine.read("metadata.json")), json.loads(theirs.read("metadata.json"))
        assert meta.keys() == their_meta.keys() and meta["keras_version"] == their_meta["keras_version"]
    loaded = keras.models.load_model(tmp_path / "mine.keras", compile=False, safe_mode=True)
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    for ours, reference in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(reference))


def test_reader_agrees_with_keras_loader(tmp_path, keras):
    """On a file Keras wrote and on one written here: the variables Keras' loader yields, in its order."""
    from vrconvert.models_tf import weights

    variant = spec.get("r2plus1d_18").with_classes(5)
    state = _random_state(variant, seed=3)
    weights.build_model(variant, state).save(tmp_path / "keras.keras")
    keras_file.write(tmp_path / "mine.keras", variant, state)
    for name in ("keras.keras", "mine.keras"):
        _, model = weights.load_keras_model(tmp_path / name)
        expected = weights.variables_of(model)
        got_variant, got = keras_file.read(tmp_path / name)
        assert got_variant == variant
        assert list(got) == list(expected)
        for path, value in expected.items():
            assert got[path].dtype == value.dtype
            np.testing.assert_array_equal(got[path], value, err_msg=path)
        shapes_variant, shapes = keras_file.read(tmp_path / name, values=False)
        assert shapes_variant == variant and shapes == {k: v.shape for k, v in expected.items()}


def test_reader_leaves_other_models_to_keras(tmp_path, keras):
    """A folded model, one with the transform inside, a config Keras would read otherwise: None."""
    from vrconvert import models_tf
    from vrconvert.models_tf import fold

    variant = spec.get("r3d_18").with_classes(5)
    state = _random_state(variant)
    fold.build_folded(variant, state).save(tmp_path / "folded.keras")
    models_tf.build(variant, include_preprocessing=True).save(tmp_path / "frames.keras")
    keras_file.write(tmp_path / "mine.keras", variant, state)
    with zipfile.ZipFile(tmp_path / "mine.keras") as src, zipfile.ZipFile(tmp_path / "edited.keras", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(
                info,
                data.replace(b'"epsilon": 1e-05', b'"epsilon": 0.001', 1) if info.filename == "config.json" else data,
            )
    for name in ("folded.keras", "frames.keras", "edited.keras"):
        assert keras_file.read(tmp_path / name) is None, name
    assert keras_file.read(tmp_path / "mine.keras") is not None


def test_other_keras_releases_go_through_keras(monkeypatch):
    monkeypatch.setattr(keras_config, "keras_version", lambda: "3.99.0")
    assert not keras_config.supported(spec.get("r3d_18"))


def test_file_commands_import_no_framework_for_keras(tmp_path, torch):
    """`torch2keras --no-validate`, `keras2torch` and `inspect x.keras` of a vrconvert model: neither Keras
    nor TensorFlow is imported (torch only to write the `.pth`)."""
    _, state = make_checkpoint("mc3_18", num_classes=5, seed=2)
    save_state(state, tmp_path / "m.pth")
    result = run_python(f"""
        import json, sys
        from vrconvert.cli.main import main
        for argv in (["torch2keras", "--no-validate", {str(tmp_path / "m.pth")!r}, {str(tmp_path / "m.keras")!r}],
                     ["inspect", {str(tmp_path / "m.keras")!r}],
                     ["keras2torch", {str(tmp_path / "m.keras")!r}, {str(tmp_path / "back.pth")!r}]):
            sys.argv = ["vrconvert", *argv]
            try:
                main()
            except SystemExit as exc:
                assert not exc.code, exc.code
        print(json.dumps(sorted(m for m in ("keras", "tensorflow", "jax") if sys.modules.get(m) is not None)))
    """)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    for key, value in state.items():  # torch's step counters come back as 0 (Keras has none)
        expected = 0 if key.endswith(mapping.TORCH_ONLY_SUFFIX) else value
        np.testing.assert_array_equal(back[key].numpy(), expected, err_msg=key)


def test_record_attributes_it_does_not_know_go_through_keras(monkeypatch):
    """A layer-record field this spelling was never checked against, set to other than its default: Keras."""
    monkeypatch.setattr(keras_config, "FIELDS", keras_config.FIELDS - {"mid"})
    assert not keras_config.supported(spec.get("r2plus1d_18"))  # factorised convs: mid=True
    assert keras_config.supported(spec.get("r3d_18"))  # every record leaves `mid` at its default
