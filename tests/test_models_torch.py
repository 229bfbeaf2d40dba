"""The PyTorch builder against torchvision's own numbers (tests/fixtures, from shared/oracle)."""

import numpy as np
import pytest
from oracle import ARCHS, INPUTS, STAGES, keys, oracle, oracle_input, recipe_state_dict, rel_err

from vrconvert.converter.arch.layers import stage_outputs


@pytest.fixture(scope="module", params=ARCHS)
def recipe_model(request, torch):
    from vrconvert import models_torch

    arch = request.param
    model = models_torch.build(arch).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in recipe_state_dict(arch).items()}, strict=True)
    return arch, model


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_matches_torchvision(arch, torch):
    from vrconvert import models_torch

    state = models_torch.build(arch).state_dict()
    ours = [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in state.items()]
    assert ours == keys(arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_recipe_checksum(arch):
    """Checked first, so that a recipe slip is never mistaken for a model bug."""
    sums = np.array([v.astype(np.float64).sum() for v in recipe_state_dict(arch).values()])
    np.testing.assert_array_equal(sums, oracle(arch)["weight_checksum"])


@pytest.mark.parametrize("arch", ARCHS)
def test_trainable_parameter_count(arch, torch):
    from vrconvert import models_torch
    from vrconvert.converter.arch import spec

    model = models_torch.build(arch)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == spec.get(arch).num_params


@pytest.mark.parametrize("name", INPUTS)
def test_logits_and_stage_means_match_torchvision(recipe_model, name, torch):
    arch, model = recipe_model
    expected = oracle(arch)
    ends = stage_outputs(model.layers)
    with torch.no_grad():
        values = model.run(torch.from_numpy(oracle_input(name)), keep=ends.values())
    assert rel_err(values["fc"].numpy(), expected[f"{name}.logits"]) <= 1e-6
    for stage in STAGES:
        mean = values[ends[stage]].mean(dim=(2, 3, 4)).numpy()
        assert rel_err(mean, expected[f"{name}.{stage}_mean"]) <= 1e-6, stage


def test_custom_head(torch):
    from vrconvert import models_torch

    model = models_torch.build("mc3_18", num_classes=101).eval()
    assert model.fc.weight.shape == (101, 512)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 4, 32, 32)).shape == (1, 101)


def test_same_padding_is_tensorflows(torch):
    """TensorFlow's rule, per input size: the extra cell goes after (k=3, s=2 on an even n pads (0, 1);
    k=7, s=2 on 112 pads (2, 3)); 'same' pools ignore padded cells (max) or do not count them (average)."""
    import torch.nn.functional as F

    from vrconvert.models_torch.build import SamePool3d, same_padding

    x = torch.zeros(1, 1, 112, 8, 9)  # T, H, W
    assert same_padding(x, (7, 3, 3), (2, 2, 2)) == (1, 1, 0, 1, 2, 3)  # W odd, H even, T = 112
    assert same_padding(x, (1, 1, 1), (2, 2, 2)) == (0,) * 6
    ramp = torch.arange(1.0, 5.0).reshape(1, 1, 4, 1, 1)  # T = 4, window 2, stride 1: the last frame alone
    assert SamePool3d("avg", (2, 1, 1), (1, 1, 1))(ramp).flatten().tolist() == [1.5, 2.5, 3.5, 4.0]
    assert SamePool3d("max", (2, 1, 1), (2, 1, 1))(-ramp[:, :, :3]).flatten().tolist() == [-1.0, -3.0]
    assert F.max_pool3d(-ramp[:, :, :3], (2, 1, 1), (2, 1, 1)).flatten().tolist() == [-1.0]  # 'valid' drops it
