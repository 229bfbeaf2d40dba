"""The public Keras video ResNets (3D-ResNet-Builder-for-Keras @238f436, ResNet18-2Plus1DD @5cdec23)
against the originals' own numbers (tests/fixtures/seeds, from ../shared/oracle/seeds: keys files slimmed,
oracle outputs without the inputs, which are regenerated from their seeds and checked by checksum).

The weight files are written here with h5py exactly as the keys files list them (order, names,
attributes), from the oracle's numpy recipe, then read back by vrconvert's importer."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, make_checkpoint

from vrconvert.converter.arch import layers, mapping, spec
from vrconvert.converter.errors import InputError
from vrconvert.converter.formats import project_weights

FIXTURES = Path(__file__).parent / "fixtures" / "seeds"
CONFIGS = {
    "B": "resnet18_2plus1dd",
    "A18_3D": "builder_r18_3d",
    "A18_2plus1D": "builder_r18_2plus1d",
    "A18_P3D-B": "builder_r18_p3db",
    "A18_FAST": "builder_r18_fast",
    "A18_split-FAST": "builder_r18_splitfast",
    "A18_SE_3D": "builder_r18_se_3d",
    "A34_3D": "builder_r34_3d",
    "A50_3D": "builder_r50_3d",
    "A50_P3D-B": "builder_r50_p3db",
}
TWINS = {"A18_FAST", "A18_split-FAST"}  # identical files: --arch chooses
INPUTS = {"small": (101, (2, 8, 64, 64, 3)), "odd": (102, (1, 9, 45, 37, 3)), "full": (103, (1, 16, 112, 112, 3))}
INPUTS["long"] = (104, (1, 24, 64, 64, 3))
FAST_INPUTS = ("small", "odd")
STAGE_KEYS = ("stem", "stage1", "stage2", "stage3", "stage4")
TOLERANCE = 1e-4  # the oracle's own float64 re-check measured 1.8e-6; BN epsilon 1e-5 gives 5e-3


def keys(cfg: str) -> dict:
    return json.loads((FIXTURES / f"{cfg}.keys.json").read_text())


@cache
def oracle() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "oracle.npz") as z:
        return {k: z[k] for k in z.files}


def runnable(cfg: str, names=tuple(INPUTS)) -> list[str]:
    """The inputs the original code runs (the others it records as skipped)."""
    return [n for n in names if f"{cfg}/{n}.skipped" not in oracle()]


def fast_inputs(cfg: str) -> list[str]:
    return runnable(cfg, FAST_INPUTS) or runnable(cfg, ("long",))  # 'FAST' runs only the 24-frame clip


def recipe(cfg: str) -> list[np.ndarray]:
    """The oracle README's recipe, independent of vrconvert: one default_rng(seed), keys order."""
    k = keys(cfg)
    rng = np.random.default_rng(k["recipe_seed"])
    out = []
    for w in k["weights"]:
        shape, role = tuple(w["shape"]), w["role"]
        if role in ("gamma", "moving_variance"):
            a = rng.uniform(0.5, 1.5, size=shape)
        elif role in ("beta", "moving_mean", "bias"):
            a = rng.normal(0.0, 0.1, size=shape)
        elif len(shape) == 5:
            a = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[:-1])), size=shape)
        else:
            a = rng.normal(0.0, math.sqrt(1.0 / shape[0]), size=shape)
        out.append(a.astype(np.float32))
    return out


def write_original(cfg: str, path: Path, tensors: list[np.ndarray] | None = None) -> Path:
    """The original's weight file, as its keys file describes it (see the oracle README, section 4)."""
    import h5py

    k = keys(cfg)
    tensors = recipe(cfg) if tensors is None else tensors
    layout = k["layout"]
    with h5py.File(path, "w") as f:
        if cfg == "B":  # Keras 3 saving_lib: one group per attribute path, no root attributes
            for group in layout["groups"]:
                f.require_group(group)
            for w, t in zip(k["weights"], tensors, strict=True):
                f.create_dataset(w["path"], data=t)
        else:  # Keras 2 hdf5_format.save_weights_to_hdf5_group
            root = layout["root_attrs"]
            f.attrs["backend"] = root["backend"].encode()
            f.attrs["keras_version"] = root["keras_version"].encode()
            f.attrs["layer_names"] = np.array([n.encode() for n in root["layer_names"]])
            [layer] = root["layer_names"]
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([w["path"].split("/", 1)[1].encode() for w in k["weights"]])
            for w, t in zip(k["weights"], tensors, strict=True):
                f.create_dataset(w["path"], data=t)
            f.create_group("top_level_model_weights").attrs["weight_names"] = np.array([], dtype="S1")
    return path


@pytest.fixture(scope="module")
def original_file(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(cfg: str) -> Path:
        if cfg not in made:
            suffix = ".weights.h5" if cfg == "B" else ".h5"
            made[cfg] = write_original(cfg, tmp_path_factory.mktemp(cfg.replace("-", "")) / f"{cfg}{suffix}")
        return made[cfg]

    return get


def make_input(cfg: str, name: str) -> np.ndarray:
    seed, shape = INPUTS[name]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    assert math.isclose(
        float(x.astype(np.float64).sum()), float(oracle()[f"{cfg}/{name}.input_checksum"]), rel_tol=1e-9
    )
    return x


def rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


def expected(cfg: str, name: str) -> dict[str, np.ndarray]:
    o = oracle()
    head = f"{cfg}/{name}.logits" if f"{cfg}/{name}.logits" in o else f"{cfg}/{name}.output"  # B: its embedding
    return {"logits": o[head], **{s: o[f"{cfg}/{name}.{s}_mean"] for s in STAGE_KEYS}}


def import_file(cfg: str, path: Path):
    return project_weights.read_project_weights(path, arch=CONFIGS[cfg] if cfg in TWINS else None)


def torch_outputs(arch: spec.Arch, variables: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    from vrconvert import models_torch

    model = models_torch.build(arch, arch.num_classes).eval()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in mapping.to_torch(arch, variables).items()})
    ends = layers.stage_outputs(layers.expand(arch))
    with torch.no_grad():
        values = model.run(
            torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))), keep=[*ends.values(), "fc"]
        )
    out = {"logits": values["fc"].numpy()}
    for key, end in zip(STAGE_KEYS, ends.values(), strict=True):
        out[key] = values[end].double().mean(dim=(2, 3, 4)).numpy()
    return out


def keras_outputs(arch: spec.Arch, model, x: np.ndarray) -> dict[str, np.ndarray]:
    import keras

    ends = [*layers.stage_outputs(layers.expand(arch)).values(), "fc"]
    probe = keras.Model(model.inputs, [model.get_layer(layers.keras_name(n)).output for n in ends])
    values = [keras.ops.convert_to_numpy(v) for v in probe(x, training=False)]
    out = {"logits": values[-1]}
    for key, value in zip(STAGE_KEYS, values[:-1], strict=True):
        out[key] = value.astype(np.float64).mean(axis=(1, 2, 3))
    return out


def check(cfg: str, outputs: dict[str, np.ndarray], name: str, side: str) -> None:
    ref = expected(cfg, name)
    errors = {key: rel(outputs[key], ref[key]) for key in ref}
    assert max(errors.values()) <= TOLERANCE, (cfg, name, side, errors)


# -- parameter counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS)
def test_parameter_counts_equal_the_originals(cfg):
    params = keys(cfg)["params"]
    records = layers.expand(spec.get(CONFIGS[cfg]))
    assert layers.count_params(records) == params["trainable"]
    assert layers.count_stats(records) == params["non_trainable"]
    assert layers.count_params(records) + layers.count_stats(records) == params["total"]


def test_the_originals_quirks_are_in_the_spec():
    b = {r.name: r for r in layers.expand(spec.get("resnet18_2plus1dd"))}
    assert b["layer3.0.conv2.spatial"].stride == (1, 2, 1)  # the (1,2,1) stride
    assert sum(1 for n in b if n.endswith(".add")) == 7  # seven blocks
    assert b["stem.0.spatial"].channels_out == 22 and b["layer2.0.shortcut.spatial"].channels_out == 43  # ceil
    assert b["layer2.0.shortcut.pool"].padding_mode == "same" and b["layer2.0.shortcut.pool"].stride == (1, 2, 2)
    assert {r.epsilon for r in b.values() if r.op == "bn"} == {1e-3}
    a = {r.name: r for r in layers.expand(spec.get("builder_r18_fast"))}
    assert [a[f"stem.0.{p}.conv"].stride for p in ("xy", "xt", "yt")] == [(2, 2, 2)] * 3  # compounded: 8x
    assert a["stem.pool"].op == "maxpool" and a["stem.pool"].padding_mode == "valid"
    assert a["layer2.0.shortcut.yt.relu"].activation == "relu"  # the ReLU'd projection shortcut
    p3d = {r.name for r in layers.expand(spec.get("builder_r18_p3db"))}
    assert "layer1.0.conv2.left.relu" in p3d and "layer1.0.conv2.right.relu" not in p3d


# -- outputs against the oracle -----------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS)
def test_imported_weights_match_the_original_in_torch_and_keras(cfg, original_file, torch, keras):
    from vrconvert.converter.conversion import keras_projects

    path = original_file(cfg)
    variant, variables = import_file(cfg, path)
    assert variant.name == CONFIGS[cfg]
    assert math.isclose(
        sum(float(v.astype(np.float64).sum()) for v in variables.values()),
        float(oracle()[f"{cfg}/weight_checksum"]),
        rel_tol=1e-9,
    )
    _, _, keras_model = keras_projects.project_to_keras_model(path, arch=CONFIGS[cfg] if cfg in TWINS else None)
    for i, name in enumerate(fast_inputs(cfg)):
        x = make_input(cfg, name)
        check(cfg, keras_outputs(variant, keras_model, x), name, "keras")
        if i == 0:  # torch's CPU conv3d is ~10x slower here: the other inputs run in the slow test
            check(cfg, torch_outputs(variant, variables, x), name, "torch")


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS)
def test_every_input_the_original_runs_matches(cfg, original_file, torch, keras):
    from vrconvert.converter.conversion import keras_projects

    variant, variables, keras_model = keras_projects.project_to_keras_model(
        original_file(cfg), arch=CONFIGS[cfg] if cfg in TWINS else None
    )
    for name in runnable(cfg):
        x = make_input(cfg, name)
        check(cfg, torch_outputs(variant, variables, x), name, "torch")
        check(cfg, keras_outputs(variant, keras_model, x), name, "keras")


def test_faithful_variants_refuse_what_the_original_cannot_run(torch):
    """'(2+1)D' compounds the stem's stride: 8 frames become 2, too few for the 'valid' 3-frame max-pool."""
    from vrconvert import models_torch

    assert "A18_2plus1D/small.skipped" in oracle()
    model = models_torch.build("builder_r18_2plus1d", 10).eval()
    too_short = r"receives 2x16x16; the original network cannot run it either"
    with pytest.raises(InputError, match=too_short), torch.no_grad():
        model(torch.zeros(1, 3, 8, 64, 64))


# -- importing: detection, accounting, the commands ---------------------------------------------------


def test_fast_and_split_fast_files_need_arch(original_file):
    with pytest.raises(InputError, match=r"fits builder_r18_fast, builder_r18_splitfast alike.*--arch"):
        project_weights.read_project_weights(original_file("A18_FAST"))


def test_accounting_names_what_does_not_fit(tmp_path):
    import h5py

    tensors = recipe("A18_3D")
    path = write_original("A18_3D", tmp_path / "a.h5", tensors)
    with h5py.File(path, "a") as f:  # the head widened: every variant mismatches at the head
        layer = f.attrs["layer_names"][0].decode()
        names = [n.decode() for n in f[layer].attrs["weight_names"]]
        head = next(n for n in names if n.startswith("dense") and n.endswith("kernel:0"))
        del f[f"{layer}/{head}"]
        f.create_dataset(f"{layer}/{head}", data=np.zeros((511, 10), np.float32))
    with pytest.raises(InputError, match=r"closest is builder_r18_3d: 1 mismatched \(sequential_\d+/dense/kernel:0"):
        project_weights.read_project_weights(path)
    with pytest.raises(InputError, match=r"does not fit builder_r34_3d: .*missing"):
        project_weights.read_project_weights(path, arch="builder_r34_3d")

    b = write_original("B", tmp_path / "b.weights.h5")
    with h5py.File(b, "a") as f:
        del f["block3/shortcut/normalize/vars/3"]
        f.create_dataset("block9/feature_extract/normalize/vars/0", data=np.zeros(3, np.float32))
    with pytest.raises(InputError, match=r"1 missing \(layer3_0_shortcut_bn/moving_variance\); 1 unexpected \(block9"):
        project_weights.read_project_weights(b)


def test_unknown_layouts_get_one_line(tmp_path, capsys):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("model/kernel", data=np.zeros(3, np.float32))
        f.attrs["note"] = "x"
    with pytest.raises(InputError, match=r"unknown layout \(root attributes \[note\], top-level entries \[model\]"):
        project_weights.read_project_weights(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    for name in ("other.h5", "text.h5", "missing.h5"):
        code, _, err = invoke(["keras2keras", tmp_path / name, tmp_path / "out.keras"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out.keras").exists()


@pytest.mark.parametrize("cfg", ["B", pytest.param("A18_P3D-B", marks=pytest.mark.slow)])
def test_keras2keras_and_keras2torch_commands(cfg, original_file, tmp_path, torch, keras, capsys):
    path = original_file(cfg)
    code, out, err = invoke(
        ["keras2keras", path, tmp_path / "clean.keras", "--frames", "8", "--size", "64x64", "--json"], capsys
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["arch"] == CONFIGS[cfg] and result["passed"] is True
    model = keras.models.load_model(tmp_path / "clean.keras", safe_mode=True, compile=False)  # weights included
    variant = spec.get(CONFIGS[cfg])
    name = fast_inputs(cfg)[0]
    check(cfg, keras_outputs(variant, model, make_input(cfg, name)), name, "reloaded .keras")

    code, out, err = invoke(["keras2torch", path, tmp_path / "model.pth", "--json"], capsys)
    assert code == 0, err
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    _, variables = project_weights.read_project_weights(path)
    for key, value in mapping.to_torch(variant, variables).items():
        assert np.array_equal(state[key].numpy(), value), key


# -- round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize(  # every record kind: c2p1 and pools, parallel and chained parts, Dense SE, bottleneck
    "arch",
    [
        "resnet18_2plus1dd",
        "builder_r18_splitfast",
        "builder_r18_se_3d",
        pytest.param("builder_r18_2plus1d", marks=pytest.mark.slow),
        pytest.param("builder_r50_p3db", marks=pytest.mark.slow),
    ],
)
def test_faithful_variants_round_trip_bit_exactly(arch, torch, keras):
    import vrconvert

    _, state = make_checkpoint(arch, num_classes=7, seed=3)
    keras_model = vrconvert.state_dict_to_keras(state, arch)
    back = vrconvert.keras_to_state_dict(keras_model, arch)
    assert list(back) == list(state)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
    again = vrconvert.state_dict_to_keras(back, arch)
    for a, b in zip(keras_model.weights, again.weights, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


# -- clean variants -----------------------------------------------------------------------------------

CLEAN = [name for name in spec.VARIANTS if name.endswith("_clean")]
CLEAN_FAST = ("builder_r18_splitfast_clean", "builder_r50_2plus1d_clean")  # the others (and 101) marked slow


@pytest.mark.parametrize(
    "arch",
    [a if a in CLEAN_FAST else pytest.param(a, marks=pytest.mark.slow) for a in [*CLEAN, "builder_r101_3d"]],
)
def test_clean_variants_agree_in_torch_and_keras(arch, torch, keras):
    """Random weights and BatchNorm statistics; 8 frames, which the faithful compounding kernels collapse,
    and odd sizes, where TensorFlow's 'same' padding is asymmetric."""
    import vrconvert
    from vrconvert.models_tf import predictor

    torch_model, state = make_checkpoint(arch, num_classes=7, seed=4)
    run = predictor(vrconvert.state_dict_to_keras(state, arch))
    for shape in [(1, 3, 8, 64, 64), (1, 3, 9, 45, 37)]:
        clip = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            expected_logits = torch_model(torch.from_numpy(clip)).numpy()
        assert rel(run(clip.transpose(0, 2, 3, 4, 1)), expected_logits) <= 1e-5, shape


def test_clean_kernels_take_the_stride_once():
    space, time = (1, 2, 2), (2, 1, 1)  # not (2, 2, 2) in every part, which compounds to 4x or 8x per axis
    for arch, want in [
        ("builder_r18_2plus1d_clean", [space, time]),
        ("builder_r18_fast_clean", [space, time, (1, 1, 1)]),
        ("builder_r18_splitfast_clean", [space, time, time]),  # xt and yt run in parallel on xy's output
    ]:
        records = layers.expand(spec.get(arch))
        assert [r.stride for r in records if r.name.startswith("layer2.0.conv1.") and r.op == "conv"] == want, arch
    split = {r.name: r for r in layers.expand(spec.get("r3d_18_splitfast"))}
    assert split["layer1.0.conv2.add"].op == "add" and "layer1.0.conv2.xt.relu" not in split  # summed, no ReLU
    assert split["layer2.0.downsample.0"].kernel == (1, 1, 1)  # torchvision's shortcut


def test_clean_2plus1d_has_tran_widths_and_the_3d_nets_parameters():
    """Tran et al. choose the (2+1)D mid width so the pair has as many parameters as the (t, h, w) conv it
    replaces; the builder runs it at the unit's width instead (a quirk, 15.9 M against 33.4 M for 18
    layers). The clean variants follow the paper: every pair's width is the formula's, and the whole net
    lands within 0.1% of the same body with full 3D convs."""
    for depth in (18, 50):
        records = layers.expand(spec.get(f"builder_r{depth}_2plus1d_clean"))
        by_name = {r.name: r for r in records}
        pairs = [r for r in records if r.name.endswith(".two.conv")]
        assert pairs
        for spatial in pairs:
            temporal = by_name[spatial.name.replace(".two.", ".one.")]
            full = (temporal.kernel[0], *spatial.kernel[1:])
            assert spatial.channels_out == temporal.channels_in
            assert spatial.channels_out == spec.tran_width(full, spatial.channels_in, temporal.channels_out)
            exact = math.prod(full) * spatial.channels_in * temporal.channels_out
            pair = spatial.num_params + temporal.num_params
            step = math.prod(spatial.kernel) * spatial.channels_in + full[0] * temporal.channels_out
            assert exact - step < pair <= exact, spatial.name  # rounding down loses less than one channel
        clean = layers.count_params(records)
        full_3d = layers.count_params(layers.expand(spec.get(f"builder_r{depth}_3d")))
        assert abs(clean - full_3d) / full_3d < 1e-3, (depth, clean, full_3d)


def test_links_out_of_the_file_are_refused(tmp_path):
    """An HDF5 external link would read another file: the weight it stands for is reported, not followed."""
    import h5py

    path = write_original("A18_3D", tmp_path / "a.h5")
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_dataset("kernel", data=np.zeros((7, 7, 7, 3, 64), np.float32))
    with h5py.File(path, "a") as f:
        layer = f.attrs["layer_names"][0].decode()
        first = f[layer].attrs["weight_names"][0].decode()
        del f[f"{layer}/{first}"]
        f[f"{layer}/{first}"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "kernel")
    with pytest.raises(InputError, match=r"is listed but not stored in the file"):
        project_weights.read_project_weights(path)
