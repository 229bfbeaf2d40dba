"""torchvision's MViT (mvit_v1_b, mvit_v2_s): the description against torchvision's keys, parameter counts
and recipe checksum; the torch twin against torchvision's logits and per-block means; Keras against the
twin (a small configuration of the same description, every tensor random) and against torchvision's
float64 logits at the native 16x224x224 (slow)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
import zoo_oracle

from vrconvert import models_tf, models_torch
from vrconvert.converter.arch import families, mapping, mvit
from vrconvert.converter.errors import InputError
from vrconvert.models_tf import weights as keras_weights

ARCHS = ("mvit_v1_b", "mvit_v2_s")


def _tiny(version: int) -> mvit.MViTArch:
    """The same description at 4x32x32 and a fraction of the width: every part of the family (query
    pooling, key/value strides from 4 to 1, widening, v1's position embedding, v2's relative terms and
    residual pooling) on a grid of 2x8x8 tokens."""
    stages = tuple(
        mvit.Stage(depth=d, dim=c, heads=h, kv_stride=s)
        for d, c, h, s in zip((1, 2, 2, 1), (8, 16, 32, 64), (1, 2, 4, 8), (4, 2, 1, 1), strict=True)
    )
    return mvit.MViTArch(
        name=f"mvit_v{version}_tiny", version=version, stages=stages, frames=4, size=32, num_classes=10
    )


def _mean(value: np.ndarray) -> np.ndarray:
    """The oracle's per-block mean: over every axis but the batch and the last (over the last when 2-D)."""
    return value.mean(axis=tuple(range(1, value.ndim - 1))) if value.ndim > 2 else value.mean(axis=1, keepdims=True)


def _twin(arch: mvit.MViTArch, state: dict[str, np.ndarray]) -> torch.nn.Module:
    model = models_torch.build(arch, arch.num_classes).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model


@pytest.mark.parametrize("name", ARCHS)
def test_keys_shapes_and_parameters_are_torchvisions(name):
    arch = families.get(name)
    expected = [(e["key"], tuple(e["shape"])) for e in zoo_oracle.keys(name)]
    assert list(mapping.torch_shapes(arch).items()) == expected
    twin = models_torch.build(arch)
    assert [(k, tuple(v.shape)) for k, v in twin.state_dict().items()] == expected
    assert mvit.count_params(arch) == arch.num_params == zoo_oracle.meta(name)["num_params"]
    assert sum(p.numel() for p in twin.parameters()) == arch.num_params


@pytest.mark.parametrize("name", ARCHS)
def test_recipe_reproduces_the_weight_checksum(name):
    state = zoo_oracle.recipe_state_dict(name)
    sums = np.array([v.astype(np.float64).sum() for v in state.values()])
    np.testing.assert_array_equal(sums, zoo_oracle.oracle(name)["weight_checksum"])


@pytest.mark.parametrize("name", ARCHS)
def test_patch_embedding_matches_torchvisions_means(name):
    """The twin's first records at the native size, float64, against torchvision's hooked means (the
    rest, in the slow set)."""
    arch, oracle = families.get(name), zoo_oracle.oracle(name)
    model = _twin(arch, zoo_oracle.recipe_state_dict(name)).double()
    x = torch.from_numpy(zoo_oracle.oracle_input(name, "clip16")).double()
    with torch.no_grad():
        values = model.run(x, keep=("conv_proj", "pos_encoding"), until="blocks.0.mlpadd")
    for block, record in (
        ("conv_proj", "conv_proj"),
        ("pos_encoding", "pos_encoding"),
        ("blocks.0", "blocks.0.mlpadd"),
    ):
        expected = oracle[f"clip16.{block}.mean"]
        np.testing.assert_allclose(
            _mean(values[record].numpy()), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max()
        )


@pytest.mark.parametrize("version", (1, 2))
def test_keras_matches_the_twin_on_a_small_configuration(version):
    """Every tensor random (norms and position tables included); Keras float32 against the twin in
    float64, bounded by max(1e-5, 2 x the twin's own float32 error)."""
    arch = _tiny(version)
    rng = np.random.default_rng(version)
    state = {k: rng.normal(0.0, 0.3, s).astype(np.float32) for k, s in mapping.torch_shapes(arch).items()}
    x = rng.standard_normal((2, 3, *arch.clip)).astype(np.float32)
    twin = _twin(arch, state)
    with torch.no_grad():
        expected = twin.double()(torch.from_numpy(x).double()).numpy()
        own = twin.float()(torch.from_numpy(x)).numpy()
    model = keras_weights.build_model(arch, state)
    got = keras.ops.convert_to_numpy(model(np.transpose(x, (0, 2, 3, 4, 1))))
    bound = max(1e-5, 2 * zoo_oracle.rel_err(own, expected))
    assert zoo_oracle.rel_err(got, expected) <= bound


def test_other_sizes_are_refused_in_one_line():
    arch = families.get("mvit_v2_s")
    with pytest.raises(InputError, match=r"^mvit_v2_s takes clips of exactly 16x224x224 .*not 8x112x112$"):
        models_torch.build(arch)(torch.zeros(1, 3, 8, 112, 112))
    with pytest.raises(ValueError, match=r"mvit_v2_s takes input_shape \(16, 224, 224, 3\) only"):
        models_tf.build("mvit_v2_s", input_shape=(8, 112, 112, 3))


def test_preprocessing_inside_is_refused_in_one_line_on_both_sides():
    from vrconvert.models_torch.build import with_preprocessing

    with pytest.raises(InputError, match=r"^mvit_v2_s: include_preprocessing is not supported yet$"):
        with_preprocessing(models_torch.build("mvit_v2_s"))
    with pytest.raises(InputError, match=r"^mvit_v2_s: include_preprocessing is not supported yet$"):
        models_torch.build("mvit_v2_s", include_preprocessing=True)
    with pytest.raises(InputError, match=r"^mvit_v2_s: include_preprocessing"):
        models_tf.build("mvit_v2_s", include_preprocessing=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_twin_matches_torchvision_at_native_size(name):
    """float64 logits to rounding; every hooked block's mean to float32 rounding."""
    arch, oracle = families.get(name), zoo_oracle.oracle(name)
    model = _twin(arch, zoo_oracle.recipe_state_dict(name)).double()
    x = torch.from_numpy(zoo_oracle.oracle_input(name, "clip16")).double()
    records = {b: f"{b}.mlpadd" if b.startswith("blocks.") else b for b in arch.blocks}
    with torch.no_grad():
        values = model.run(x, keep=records.values())
    assert zoo_oracle.rel_err(values["head.1"].numpy(), oracle["clip16.logits64"]) < 1e-12
    for block, record in records.items():  # torchvision hooked float32 activations: each mean is good to
        value = values[record].numpy()  # float32's rounding of the values averaged (a head's mean is near 0)
        expected = oracle[f"clip16.{block}.mean"]
        np.testing.assert_allclose(_mean(value), expected, rtol=1e-5, atol=1e-6 * np.abs(value).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_keras_matches_torchvision_at_native_size(name):
    arch = families.get(name)
    model = keras_weights.build_model(arch, zoo_oracle.recipe_state_dict(name))
    x = np.transpose(zoo_oracle.oracle_input(name, "clip16"), (0, 2, 3, 4, 1))
    got = keras.ops.convert_to_numpy(model(x))
    assert zoo_oracle.rel_err(got, zoo_oracle.oracle(name)["clip16.logits64"]) <= zoo_oracle.bound(name, "clip16")
    assert model.count_params() == arch.num_params


@pytest.mark.parametrize("case", ("noise", "ramp"))
def test_preprocessing_matches_torchvisions_transform(case):
    """Short side to 256, centre crop 224, mean/std from meta.json: numpy and torch, against the oracle."""
    with np.load(zoo_oracle.ZOO / "preprocess.oracle.npz") as z:
        frames, expected = z["noise_frames_thwc"], z[f"mvit.{case}_out_cthw"]
    if case == "ramp":  # the oracle's ramp spans 4 frames; the fixture keeps the first 2 of each case
        frames = np.linspace(0, 255, 4 * 240 * 320 * 3).reshape(4, 240, 320, 3).astype(np.uint8)[:2]
    transform = zoo_oracle.meta("mvit_v2_s")["weights"]["KINETICS400_V1"]["transform"]
    p = mvit.MVIT_PREPROCESSING
    assert (p.resize, p.crop) == (tuple(transform["resize_size"]), tuple(transform["crop_size"]))
    assert (p.mean, p.std) == (tuple(transform["mean"]), tuple(transform["std"]))
    assert all(families.get(name).preprocessing == p for name in ARCHS)
    assert p.resized(240, 320) == (256, 341) and p.resized(320, 240) == (341, 256)
    from vrconvert.converter.video.preprocess import kinetics_eval
    from vrconvert.models_torch.preprocessing import KineticsPreprocessing

    np.testing.assert_allclose(kinetics_eval(frames, p, "NCTHW")[0], expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        got = KineticsPreprocessing(p)(torch.from_numpy(frames)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
