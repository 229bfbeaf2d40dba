"""BatchNorm folding: the folded Keras model computes torch's logits within the usual 1e-5 for every
variant, is built from built-in layers only, and its files are accepted by validate and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import invoke, make_checkpoint, save_state

from vrconvert.converter import parity
from vrconvert.converter.arch import folding, spec
from vrconvert.converter.arch.layers import expand, keras_name
from vrconvert.converter.errors import InputError

VARIANTS = ("r3d_18", "mc3_18", "r2plus1d_18")


def _folded(arch: str, classes: int = 5, seed: int = 0):
    from vrconvert.models_tf import fold

    model, state = make_checkpoint(arch, num_classes=classes, seed=seed)
    variant = spec.get(arch).with_classes(classes)
    return model, state, variant, fold.build_folded(variant, state)


@pytest.mark.parametrize("arch", VARIANTS)
def test_folded_model_matches_torch(arch):
    from vrconvert.converter.parity import runtime
    from vrconvert.converter.parity.validate import check_models

    torch_model, _, variant, folded = _folded(arch)
    clips = {
        "random(8x32x32)": parity.random_clip(0, 8, (32, 32)),
        "random(5x33x35)": parity.random_clip(1, 5, (33, 35)),
    }
    report = check_models(variant, torch_model, folded, clips, runtime.prepare("cpu"))
    assert report.passed, report.as_dict()
    assert all(c.top5_agree for c in report.cases)
    _assert_every_batchnorm_folded(variant, folded)


def _assert_every_batchnorm_folded(variant, folded):
    import keras

    records = expand(variant)
    bns = [r for r in records if r.op == "bn"]
    convs = {keras_name(r.name): r for r in records if r.op == "conv"}
    assert not [x for x in folded.layers if isinstance(x, keras.layers.BatchNormalization)]
    keras_convs = {x.name: x for x in folded.layers if isinstance(x, keras.layers.Conv3D)}
    assert set(keras_convs) == set(convs)
    assert sum(x.use_bias for x in keras_convs.values()) == len(bns) + sum(r.bias for r in convs.values())
    builtin = {type(x).__module__.split(".")[0] for x in folded.layers}
    assert builtin == {"keras"}


@pytest.mark.parametrize("arch", VARIANTS)
def test_a_folded_layout_is_detected_as_its_architecture(arch):

    variant = spec.get(arch).with_classes(9)
    assert folding.detect(folding.folded_shapes(variant)) == variant
    unfolded = {f"{keras_name(r.name)}/kernel": (1,) for r in expand(variant) if r.op == "conv"}
    with pytest.raises(InputError):
        folding.detect(unfolded)


def test_folded_file_loads_in_safe_mode_and_validate_accepts_it(tmp_path, capsys, keras):
    from vrconvert.models_tf import fold
    from vrconvert.models_tf import weights as keras_weights

    _, state, _, folded = _folded("mc3_18", classes=6, seed=2)
    save_state(state, tmp_path / "r.pth")
    folded.save(tmp_path / "folded.keras")
    reloaded = keras.models.load_model(tmp_path / "folded.keras", safe_mode=True, compile=False)
    assert fold.is_folded(reloaded)
    variant, _ = keras_weights.load_keras_model(tmp_path / "folded.keras")
    assert (variant.name, variant.num_classes) == ("mc3_18", 6)
    args = [
        "validate",
        tmp_path / "r.pth",
        tmp_path / "folded.keras",
        "--frames",
        "4",
        "--size",
        "32x32",
        "--no-sample",
    ]
    code, out, err = invoke(args, capsys)
    assert code == 0, err
    assert "parity PASS" in out


def test_a_wrong_folded_bias_is_localised_to_its_batchnorm(keras):
    """The first divergence names the torch BatchNorm whose output the folded conv now produces."""
    from vrconvert.converter.parity import runtime
    from vrconvert.converter.parity.validate import check_models

    torch_model, _, variant, folded = _folded("mc3_18", seed=4)
    bias = folded.get_layer("layer2_0_conv1_0").bias
    bias.assign(bias.numpy() + 0.5)
    report = check_models(
        variant, torch_model, folded, {"r": parity.random_clip(0, 4, (32, 32))}, runtime.prepare("cpu")
    )
    assert not report.passed
    d = report.first_divergence
    assert (d.torch_module, d.keras_layer, d.op) == ("layer2.0.conv1.1", "layer2_0_conv1_0", "conv")


def test_keras2torch_refuses_a_folded_file(tmp_path, capsys):
    *_, folded = _folded("mc3_18", classes=3)
    folded.save(tmp_path / "folded.keras")
    code, _, err = invoke(["keras2torch", tmp_path / "folded.keras", tmp_path / "out.pth"], capsys)
    assert code == 2 and "folded" in err
    assert not (tmp_path / "out.pth").exists()


def test_predict_accepts_a_folded_file(tmp_path, capsys):
    """The folded Keras file and the torch checkpoint give the same top classes and probabilities."""
    from vrconvert.converter import video

    _, state, _, folded = _folded("mc3_18", classes=400, seed=5)
    folded.save(tmp_path / "folded.keras")
    save_state(state, tmp_path / "m.pth")
    tops = []
    for model in ("folded.keras", "m.pth"):
        code, out, err = invoke(["predict", "--top", "3", "--json", video.SAMPLE_CLIP, tmp_path / model], capsys)
        assert code == 0, err
        tops.append(json.loads(out)["top"])
    assert [t["index"] for t in tops[0]] == [t["index"] for t in tops[1]]
    # absolute: a saturated softmax turns 1e-6 relative logit rounding into 1e-4 relative on small probabilities
    assert np.allclose([t["probability"] for t in tops[0]], [t["probability"] for t in tops[1]], rtol=0, atol=1e-5)


def test_export_with_fold_bn(tmp_path, capsys):
    _, state = make_checkpoint("r3d_18", num_classes=4, seed=6)
    save_state(state, tmp_path / "r.pth")
    args = ["export", tmp_path / "r.pth", tmp_path / "m", "--fold-bn", "--frames", "4", "--size", "32x32", "--json"]
    code, out, err = invoke(args, capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["passed"] is True and doc["folded"] is True
    assert doc["parity"]["cases"][0]["max_rel_diff"] <= parity.DEFAULT_TOLERANCE


def test_torch2keras_fold_bn_writes_a_folded_file_checked_against_torch(tmp_path, capsys, keras):
    from vrconvert.models_tf import fold

    _, state = make_checkpoint("mc3_18", num_classes=4, seed=7)
    save_state(state, tmp_path / "m.pth")
    args = ["torch2keras", tmp_path / "m.pth", tmp_path / "f.keras", "--fold-bn", "--frames", "4", "--size", "32x32"]
    code, out, err = invoke(args, capsys)
    assert code == 0, err
    assert "parity PASS" in out
    assert fold.is_folded(keras.models.load_model(tmp_path / "f.keras", safe_mode=True, compile=False))
    code, _, err = invoke([*args[:2], tmp_path / "f.weights.h5", *args[3:]], capsys)
    assert code == 2 and ".weights.h5" in err and not (tmp_path / "f.weights.h5").exists()
