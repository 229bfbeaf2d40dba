"""Fine-tuning's ways in and out: `build(weights=...)` on both sides, and a backbone wrapped with a head
of any name converted back to torchvision's layout (strict load, eval logits compared)."""

import warnings

import numpy as np
import pytest
from helpers import invoke, make_checkpoint, save_state

ARCH = "r2plus1d_18"
CLIP = (2, 4, 32, 32, 3)  # N, T, H, W, C: small enough for the fast set


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, torch):
    """A random torchvision-layout checkpoint (BatchNorm statistics randomised) and its torch model."""
    model, state = make_checkpoint(ARCH, 400, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pth"
    save_state(state, path)
    return path, model


@pytest.fixture(scope="module")
def clip():
    return np.random.default_rng(5).standard_normal(CLIP).astype(np.float32)


def _torch_out(model, clip, keep):
    import torch

    with torch.no_grad():
        return model.run(torch.from_numpy(clip.transpose(0, 4, 1, 2, 3)), keep=[keep])[keep].numpy()


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def files(checkpoint, tmp_path_factory):
    """The checkpoint in every file kind vrconvert reads."""
    from vrconvert import torch_to_keras

    src, _ = checkpoint
    folder = tmp_path_factory.mktemp("kinds")
    out = {"pth": src}
    for suffix in (".keras", ".weights.h5"):
        out[suffix] = folder / f"model{suffix}"
        torch_to_keras(src, out[suffix], validate=False)
    return out


@pytest.mark.parametrize("kind", ["pth", ".keras", ".weights.h5"])
def test_headless_backbone_from_each_file_kind(files, checkpoint, clip, kind, keras):
    from vrconvert import models_tf

    backbone = models_tf.build(ARCH, weights=str(files[kind]), include_top=False, pooling="avg")
    assert "fc" not in {layer.name for layer in backbone.layers}
    expected = _torch_out(checkpoint[1], clip, "avgpool")
    assert _rel(keras.ops.convert_to_numpy(backbone(clip)), expected) < 1e-5


def test_full_model_keeps_the_file_head(checkpoint, clip, keras):
    from vrconvert import models_tf

    model = models_tf.build(ARCH, weights=str(checkpoint[0]))
    assert _rel(keras.ops.convert_to_numpy(model(clip)), _torch_out(checkpoint[1], clip, "fc")) < 1e-5


def test_another_width_gets_a_fresh_head_and_one_line(checkpoint, keras):
    from vrconvert import models_tf, models_torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = models_tf.build(ARCH, weights=str(checkpoint[0]), num_classes=3)
        torch_model = models_torch.build(ARCH, 3, weights=str(checkpoint[0]))
    lines = [str(w.message) for w in caught]
    assert lines == [f"{checkpoint[0]}: its head has 400 classes; a fresh 3-class head is initialised"] * 2
    assert model.output.shape[-1] == 3 and tuple(torch_model.fc.weight.shape) == (3, 512)
    backbone = {k: v for k, v in checkpoint[1].state_dict().items() if not k.startswith("fc.")}
    assert all((torch_model.state_dict()[k] == v).all() for k, v in backbone.items())


def test_every_backbone_weight_is_checked(checkpoint, tmp_path, torch):
    from vrconvert import models_tf, models_torch
    from vrconvert.converter.errors import InputError

    state = {k: v.numpy() for k, v in checkpoint[1].state_dict().items()}
    missing = {k: v for k, v in state.items() if k != "layer2.0.conv1.0.0.weight"}
    save_state(missing, tmp_path / "missing.pth")
    with pytest.raises(InputError, match=r"1 missing \(layer2.0.conv1.0.0.weight\)"):
        models_tf.build(ARCH, weights=str(tmp_path / "missing.pth"), include_top=False)
    extra = {**state, "layer9.weight": np.zeros(3, np.float32)}
    save_state(extra, tmp_path / "extra.pth")
    with pytest.raises(InputError, match=r"1 unexpected \(layer9.weight\)"):
        models_torch.build(ARCH, weights=str(tmp_path / "extra.pth"))
    with pytest.raises(InputError, match="does not fit r3d_18"):
        models_tf.build("r3d_18", weights=str(checkpoint[0]))


def test_pretrained_name_reads_the_verified_hub_cache(checkpoint, tmp_path, monkeypatch):
    """The name "kinetics400" is looked up in the hub cache (filled here: nothing is downloaded), and the file's
    SHA-256 is checked against its torchvision name: our random weights there are refused."""
    import shutil

    from vrconvert import models_tf
    from vrconvert.converter.arch import spec
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.formats import download

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = download.hub_dir() / spec.get(ARCH).pretrained.filename
    cached.parent.mkdir(parents=True)
    shutil.copy(checkpoint[0], cached)
    with pytest.raises(InputError, match=r"r2plus1d_18-91a641e6\.pth: SHA-256 .* does not match the 91a641e6"):
        models_tf.build(ARCH, weights="kinetics400", include_top=False)


def _wrapped(keras, backbone, kind: str):
    """The ways users put their own head on a backbone."""
    if kind == "nested":
        inputs = keras.Input(CLIP[1:])
        return keras.Model(inputs, keras.layers.Dense(7, name="my_head")(keras.layers.Dropout(0.3)(backbone(inputs))))
    if kind == "sequential":
        return keras.Sequential([backbone, keras.layers.Dropout(0.2), keras.layers.Dense(7, name="classifier")])
    head = keras.layers.Dense(7, name="logits")(keras.layers.Dropout(0.1)(backbone.output))  # layers reused
    return keras.Model(backbone.input, head)


@pytest.mark.parametrize("kind", ["nested", "sequential", "reused"])
def test_backbone_and_any_head_round_trip_to_torchvision(checkpoint, clip, kind, keras, torch):
    from vrconvert import keras_to_state_dict, models_tf, models_torch

    backbone = models_tf.build(ARCH, weights=str(checkpoint[0]), include_top=False, pooling="avg")
    model = _wrapped(keras, backbone, kind)
    got = keras.ops.convert_to_numpy(model(clip, training=False))
    state = keras_to_state_dict(model)
    torch_model = models_torch.build(ARCH, 7).eval()
    torch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
    assert _rel(got, _torch_out(torch_model, clip, "fc")) < 1e-5


def test_wrapped_file_through_keras2torch(checkpoint, clip, tmp_path, capsys, keras, torch):
    from vrconvert import models_tf, models_torch

    backbone = models_tf.build(ARCH, weights=str(checkpoint[0]), include_top=False, pooling="avg")
    model = _wrapped(keras, backbone, "nested")
    model.save(tmp_path / "mine.keras")
    code, _, err = invoke(["keras2torch", tmp_path / "mine.keras", tmp_path / "mine.pth"], capsys)
    assert (code, err) == (0, "")
    torch_model = models_torch.build(ARCH, 7).eval()
    torch_model.load_state_dict(torch.load(tmp_path / "mine.pth", weights_only=True), strict=True)
    expected = keras.ops.convert_to_numpy(model(clip, training=False))
    assert _rel(_torch_out(torch_model, clip, "fc"), expected) < 1e-5


def test_ambiguous_or_foreign_layers_are_named(checkpoint, tmp_path, capsys, keras):
    from vrconvert import keras_to_state_dict, models_tf
    from vrconvert.converter.errors import InputError

    backbone = models_tf.build(ARCH, include_top=False, pooling="avg")
    inputs = keras.Input(CLIP[1:])
    two = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Dense(8, name="hidden")(backbone(inputs))))
    with pytest.raises(InputError, match=r"more than one layer could be the head \(hidden, out\); pass --head"):
        keras_to_state_dict(two)
    with pytest.raises(InputError, match="layer hidden \\(Dense\\) has no counterpart"):
        keras_to_state_dict(two, head="out")
    two.save(tmp_path / "two.keras")
    code, _, err = invoke(["keras2torch", tmp_path / "two.keras", tmp_path / "two.pth", "--head", "out"], capsys)
    assert code == 2 and err.count("\n") == 1 and "layer hidden (Dense) has no counterpart" in err
    maxed = models_tf.build(ARCH, include_top=False, pooling="max")
    head = keras.layers.Dense(3, name="h")(maxed.output)
    with pytest.raises(InputError, match="a max-pooling head"):
        keras_to_state_dict(keras.Model(maxed.input, head))


def test_nesting_is_bounded_before_keras_reads_the_config():
    """A wrapped backbone's config is walked within a depth bound (no Keras: the pre-check's own parser)."""
    from vrconvert.converter.errors import InputError
    from vrconvert.converter.formats import keras_archive

    config = {"class_name": "Functional", "config": {"layers": []}}
    inner = config
    for _ in range(keras_archive.KERAS_NESTING + 1):
        nested = {"class_name": "Functional", "module": "keras.src.models.functional", "config": {"layers": []}}
        inner["config"]["layers"].append(nested)
        inner = nested
    with pytest.raises(InputError, match=f"models nested more than {keras_archive.KERAS_NESTING} deep"):
        keras_archive._declared_shapes(config, ARCH)
    foreign = {"class_name": "Functional", "module": "evil.models", "config": {"layers": []}}
    with pytest.raises(InputError, match=r"a nested model from module 'evil\.models'"):
        keras_archive._declared_shapes({"class_name": "Sequential", "config": {"layers": [foreign]}}, ARCH)
