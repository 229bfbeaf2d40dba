"""Swin3D through vrconvert's commands: torch2keras detects it from keys and shapes, keras2torch gives the
checkpoint back bit for bit, validate names the first diverging block, list and the pretrained names."""

from __future__ import annotations

import numpy as np
import pytest
import swin3d_oracle as so
from helpers import invoke, save_state


@pytest.fixture(scope="module")
def recipe_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("swin") / "swin3d_t.pth"
    state = so.recipe_state_dict("swin3d_t")
    save_state(state, path)
    return path, state


def test_list_and_pretrained_names(capsys):
    code, out, _ = invoke(["list", "--json"], capsys)
    import json

    rows = {r["arch"]: r for r in json.loads(out)["variants"]}
    for arch in so.ARCHS:
        assert rows[arch]["num_params"] == so.meta()[arch]["num_params"]
        assert rows[arch]["acc1"] == so.meta()[arch]["weights"]["KINETICS400_V1"]["acc@1"]
    from vrconvert.converter.arch import families

    files = {name: w.filename for name, (_, w) in families.published().items()}
    assert files["swin3d_b"] == "swin3d_b_1k-24f7c7c6.pth" and files["swin3d_b_22k"] == "swin3d_b_22k-7c6ae6fa.pth"
    assert code == 0


@pytest.mark.slow
def test_torch2keras_detects_and_keras2torch_is_bit_exact(recipe_checkpoint, tmp_path, capsys, torch):
    """torch -> .keras (detected, parity-checked) -> torch: every tensor back bit for bit, buffers included."""
    src, state = recipe_checkpoint
    dst = tmp_path / "t.keras"
    code, out, err = invoke(["torch2keras", src, dst, "--frames", "4", "--size", "64x64", "--json"], capsys)
    assert code == 0, err
    assert '"arch": "swin3d_t"' in out
    back = tmp_path / "back.pth"
    code, _, err = invoke(["keras2torch", dst, back], capsys)
    assert code == 0, err
    loaded = torch.load(back, weights_only=True)
    assert list(loaded) == list(state)
    for key, array in state.items():
        assert np.array_equal(loaded[key].numpy(), array), key


def test_validate_names_the_first_diverging_block(recipe_checkpoint, tmp_path, torch):
    """A Keras model whose one block's norm is off: validate's localisation names that record."""
    from vrconvert.converter.arch import swin3d
    from vrconvert.converter.conversion.torch_model import torch_model_from_state
    from vrconvert.converter.parity import runtime, validate
    from vrconvert.models_tf import weights

    _, state = recipe_checkpoint
    variant = swin3d.get("swin3d_t")
    bad = dict(state)
    bad["features.2.1.norm2.weight"] = state["features.2.1.norm2.weight"] * 1.5
    keras_model = weights.build_model(variant, bad)
    clip = so.oracle_input("swin3d_t", "small")[:1]
    report = validate.check_models(
        variant, torch_model_from_state(variant, state), keras_model, {"small": clip}, runtime.prepare("cpu"), 1e-5
    )
    assert not report.passed
    assert report.first_divergence.torch_module == "features.2.1.norm2"


@pytest.mark.slow
def test_weights_h5_is_detected_and_converted_back(recipe_checkpoint, tmp_path, capsys, torch):
    """A `.weights.h5` names arrays by layer class and order: the variant and its head are found from the
    multiset of shapes, and keras2torch gives the checkpoint back bit for bit."""
    from vrconvert.converter.arch import swin3d
    from vrconvert.models_tf import weights

    _, state = recipe_checkpoint
    src = tmp_path / "t.weights.h5"
    weights.build_model(swin3d.get("swin3d_t"), state).save_weights(src)
    back = tmp_path / "back.pth"
    code, _, err = invoke(["keras2torch", src, back], capsys)
    assert code == 0, err
    loaded = torch.load(back, weights_only=True)
    assert list(loaded) == list(state)
    assert all(np.array_equal(loaded[k].numpy(), v) for k, v in state.items())
