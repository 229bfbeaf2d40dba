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
