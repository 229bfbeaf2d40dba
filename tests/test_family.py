"""The paper's whole family and the seeds' variants: every spec entry built in both frameworks,
converted with parity, round-tripped bit-exactly, detected from its weights; list and build."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import invoke, make_checkpoint, run_python, save_state, torch_logits

import vrconvert
from vrconvert.converter.arch import accounting, families, layers, mapping, spec
from vrconvert.converter.errors import InputError
from vrconvert.models_tf import predictor

VARIANTS = [name for name, v in spec.VARIANTS.items() if v.padding == "torch"]  # the paper's family (seeds: test_seeds)
TWINS = {"r2plus1d_18_bot", "r2plus1d_18_bot_mish", "r2plus1d_18_bot_hardswish"}  # differ only in activation
SHAPE_TWINS = {"r3d_18_fast", "r3d_18_splitfast"}  # FAST and split-FAST: same tensors, other wiring


def _rel(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(expected - got).max() / np.abs(expected).max())


@pytest.mark.parametrize(
    "arch",
    [a if a in ("r3d_18", "mc3_18", "r2plus1d_18") else pytest.param(a, marks=pytest.mark.slow) for a in VARIANTS],
)
def test_variant_builds_converts_and_round_trips(arch, torch, keras):
    variant = spec.get(arch)
    torch_model, state = make_checkpoint(arch, num_classes=7, seed=5)
    keras_model = vrconvert.state_dict_to_keras(state, arch)
    expected = layers.count_params(layers.expand(variant.with_classes(7)))
    assert sum(p.numel() for p in torch_model.parameters()) == expected
    assert sum(int(np.prod(v.shape)) for v in keras_model.trainable_weights) == expected

    run = predictor(keras_model)
    for shape in [(2, 3, 4, 64, 64), (1, 3, 5, 33, 33)]:  # a small clip, and odd sizes
        clip = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        assert _rel(torch_logits(torch_model, clip), run(clip.transpose(0, 2, 3, 4, 1))) <= 1e-5, shape

    back = vrconvert.keras_to_state_dict(keras_model, arch)
    assert list(back) == list(state)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
    again = vrconvert.state_dict_to_keras(back, arch)
    for a, b in zip(keras_model.weights, again.weights, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("arch", VARIANTS)
def test_variant_is_detected_from_keys_and_shapes(arch):
    shapes = mapping.torch_shapes(spec.get(arch).with_classes(11))
    if arch in TWINS:
        with pytest.raises(InputError, match="differ only in their activation"):
            accounting.detect(shapes)
        assert accounting.detect(shapes, activation=spec.get(arch).activation).name == arch
    elif arch in SHAPE_TWINS:
        with pytest.raises(InputError, match="fits r3d_18_fast, r3d_18_splitfast; pass --arch"):
            accounting.detect(shapes)
        assert accounting.detect(shapes, arch=arch).name == arch
    else:
        found = accounting.detect(shapes)
        assert (found.name, found.num_classes) == (arch, 11)


def test_the_family_is_what_the_paper_says():
    def kinds(arch: str) -> list[str]:
        """Per group conv1..conv5: '3d' or '2d' from the first conv's temporal kernel."""
        records = layers.expand(spec.get(arch))
        firsts = [
            next(r for r in records if r.op == "conv" and r.name.startswith(group))
            for group in ("stem", "layer1", "layer2", "layer3", "layer4")
        ]
        return ["3d" if r.kernel[0] > 1 else "2d" for r in firsts]

    assert kinds("r2d_18") == ["2d"] * 5 and kinds("r3d_18") == ["3d"] * 5
    for x in range(2, 6):
        assert kinds(f"mc{x}_18") == ["3d"] * (x - 1) + ["2d"] * (6 - x)
        assert kinds(f"rmc{x}_18") == ["2d"] * (x - 1) + ["3d"] * (6 - x)
    r2d = [r for r in layers.expand(spec.get("r2d_18")) if r.op in ("conv", "pool")]
    assert all(r.kernel[0] == 1 and r.stride[0] == 1 for r in r2d)  # time untouched
    assert [st.blocks for st in spec.get("r2plus1d_34").stages] == [3, 4, 6, 3]
    r50 = {r.name: r for r in layers.expand(spec.get("r3d_50"))}
    assert r50["layer1.0.conv3.0"].channels_out == 256 and r50["fc"].channels_in == 2048
    assert r50["layer2.0.conv2.0"].stride == (2, 2, 2) and r50["layer2.0.conv1.0"].stride == (1, 1, 1)


def test_bag_of_tricks_structure():
    records = {r.name: r for r in layers.expand(spec.get("r2plus1d_18_bot_mish"))}
    stem = [r for name, r in records.items() if name.startswith("stem.") and r.op == "conv"]
    assert len(stem) == 3 and stem[0].stride == (1, 2, 2)
    assert records["layer2.0.conv1.0.0"].stride == (1, 1, 1) and records["layer2.0.conv2.0.0"].stride == (1, 2, 2)
    pool = records["layer2.0.downsample.0"]
    assert pool.op == "pool" and pool.stride == (2, 2, 2) and records["layer2.0.downsample.1"].stride == (1, 1, 1)
    assert pool.stride[1] == pool.stride[2]  # H and W downsampled equally
    assert {r.activation for r in records.values() if r.op == "act"} == {"mish", "relu"}  # relu: (2+1)D's inner
    assert records["layer1.0.act"].activation == "mish"
    se = {r.name: r for r in layers.expand(spec.get("r3d_18_se"))}
    assert se["layer3.1.se.fc1"].channels_out == 256 // 16 and se["layer3.1.se.scale"].op == "mul"
    assert se["layer3.1.add"].inputs[0] == "layer3.1.se.scale"  # after the residual branch, before the add


def test_bag_of_tricks_shapes_match_on_tiny_and_odd_inputs(torch):
    torch_model, state = make_checkpoint("r2plus1d_18_bot_hardswish")
    run = predictor(vrconvert.state_dict_to_keras(state, "r2plus1d_18_bot_hardswish"))
    for shape in [(1, 3, 1, 32, 32), (1, 3, 7, 45, 37)]:  # a single frame; odd everything
        clip = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        assert _rel(torch_logits(torch_model, clip), run(clip.transpose(0, 2, 3, 4, 1))) <= 1e-5, shape


@pytest.mark.parametrize("arch", [pytest.param("r2plus1d_18_bot_mish", marks=pytest.mark.slow), "r3d_18_se"])
def test_new_layers_save_and_reload_in_plain_keras(arch, tmp_path, torch, capsys):
    """Only built-in Keras layers: the .keras file loads with safe mode on, vrconvert not imported, and a
    Keras file names its activation, so it is detected without --arch."""
    _, state = make_checkpoint(arch, seed=2)
    save_state(state, tmp_path / "m.pth")
    # no parity check here: the reloaded file's outputs are compared with torch's below
    code, _, err = invoke(
        ["torch2keras", tmp_path / "m.pth", tmp_path / "m.keras", "--arch", arch, "--no-validate"], capsys
    )
    assert code == 0, err
    clip = np.random.default_rng(3).standard_normal((1, 4, 48, 48, 3)).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    outputs = {}
    for backend in ("tensorflow", "torch"):
        run_python(
            f"""
            import keras, numpy as np
            m = keras.models.load_model({str(tmp_path / "m.keras")!r}, safe_mode=True)
            np.save({str(tmp_path / backend)!r} + ".npy",
                    keras.ops.convert_to_numpy(m(np.load({str(tmp_path / "clip.npy")!r}), training=False)))
        """,
            backend=backend,
        )
        outputs[backend] = np.load(tmp_path / f"{backend}.npy")
    torch_model, _ = make_checkpoint(arch, seed=2)
    expected = torch_logits(torch_model, np.ascontiguousarray(clip.transpose(0, 4, 1, 2, 3)))
    assert _rel(expected, outputs["tensorflow"]) <= 1e-5 and _rel(expected, outputs["torch"]) <= 1e-5
    code, out, err = invoke(["inspect", tmp_path / "m.keras", "--json"], capsys)
    assert code == 0 and json.loads(out)["arch"] == arch, err


def _ig65m_style(num_classes: int = 359) -> spec.Arch:
    """R(2+1)D-34 with IG65M's widths: the first block of layers 2-4 uses planes-to-planes widths in
    conv2 (288, 576, 1152) where torchvision's formula gives (230, 460, 921)."""
    base = spec.get("r2plus1d_34").with_classes(num_classes)
    names = [conv.name for conv in layers.midplane_convs(base)]
    widths = [conv.channels_out for conv in layers.midplane_convs(base)]
    for stage, planes in ((2, 128), (3, 256), (4, 512)):
        widths[names.index(f"layer{stage}.0.conv2.0.0")] = spec.midplanes_formula(planes, planes)
    return replace(base, midplanes=tuple(widths))


@pytest.mark.slow
def test_r2plus1d_34_with_checkpoint_widths_converts(tmp_path, torch, capsys):
    from vrconvert import models_torch
    from vrconvert.models_tf import weights as keras_weights

    arch = _ig65m_style()
    model = models_torch.build(arch, num_classes=359).eval()
    save_state({k: v.numpy() for k, v in model.state_dict().items()}, tmp_path / "ig65m.pth")

    code, out, err = invoke(["inspect", tmp_path / "ig65m.pth", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["arch"] == "r2plus1d_34" and info["num_classes"] == 359, err
    assert info["midplanes"] == [
        "layer2.0.conv2.0.0: 288 (formula 230)",
        "layer3.0.conv2.0.0: 576 (formula 460)",
        "layer4.0.conv2.0.0: 1152 (formula 921)",
    ]
    assert info["num_params"] == sum(p.numel() for p in model.parameters())

    code, out, err = invoke(
        ["torch2keras", tmp_path / "ig65m.pth", tmp_path / "ig65m.keras", "--frames", "4", "--size", "64", "--json"],
        capsys,
    )
    assert code == 0 and json.loads(out)["passed"] is True, err
    variant, _ = keras_weights.read_keras_file(tmp_path / "ig65m.keras")
    assert variant.midplanes == arch.midplanes
    code, _, err = invoke(
        ["torch2keras", tmp_path / "ig65m.pth", tmp_path / "ig65m.weights.h5", "--no-validate"], capsys
    )
    assert code == 0, err
    for keras_file in ("ig65m.keras", "ig65m.weights.h5"):  # the latter has no layer names: widths by order
        code, _, err = invoke(["keras2torch", tmp_path / keras_file, tmp_path / "back.pth", "--force"], capsys)
        assert code == 0, err
        back = torch.load(tmp_path / "back.pth", weights_only=True)
        for key, value in model.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(back[key], value), (keras_file, key)


def test_unlisted_checkpoint_says_what_did_not_match(tmp_path, capsys):
    shapes = mapping.torch_shapes(spec.get("r3d_34"))
    shapes = {k: v for k, v in shapes.items() if not k.startswith("layer3.5.")}  # a block short
    with pytest.raises(InputError, match=r"closest is r3d_34: \d+ missing \(layer3.5"):
        accounting.detect(shapes)
    widened = dict(mapping.torch_shapes(spec.get("r3d_18")), **{"layer1.0.conv1.0.weight": (64, 64, 3, 5, 5)})
    with pytest.raises(InputError, match=r"closest is r3d_18: 1 mismatched \(layer1.0.conv1.0.weight"):
        accounting.detect(widened)


def test_list_and_build(tmp_path, torch, capsys):
    code, out, _ = invoke(["list", "--json"], capsys)
    rows = {r["arch"]: r for r in json.loads(out)["variants"]}
    assert code == 0 and list(rows) == list(families.VARIANTS)  # every family's variants, the ResNets first
    assert {a for a, r in rows.items() if r["pretrained"] and a in spec.VARIANTS} == {"r3d_18", "mc3_18", "r2plus1d_18"}
    assert rows["r3d_50"]["num_params"] == layers.count_params(layers.expand(spec.get("r3d_50")))
    code, out, _ = invoke(["list"], capsys)
    assert "rmc4_18" in out and "Kinetics-400, 67.5% top-1" in out

    code, out, err = invoke(["build", "mc4_18", tmp_path / "mc4.pth", "--num-classes", "9"], capsys)
    assert code == 0, err
    state = torch.load(tmp_path / "mc4.pth", weights_only=True)
    found = accounting.detect(accounting.shapes_of({k: v.numpy() for k, v in state.items()}))
    assert (found.name, found.num_classes) == ("mc4_18", 9)
    code, out, err = invoke(["build", "r3d_18_se", tmp_path / "se.keras"], capsys)
    assert code == 0 and "untrained r3d_18_se" in out, err
    code, out, _ = invoke(["inspect", tmp_path / "se.keras", "--json"], capsys)
    assert json.loads(out)["arch"] == "r3d_18_se"
    for args, message in [
        (["build", "resnet50", tmp_path / "x.keras"], "unknown architecture"),
        (["build", "mc4_18", tmp_path / "mc4.pth"], "exists"),
        (["build", "mc4_18", tmp_path / "x.onnx"], ""),
    ]:
        code, out, err = invoke(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
