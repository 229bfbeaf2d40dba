"""The spec and its expansion, checked without building any framework model."""

import math
from dataclasses import replace

import pytest
from oracle import ARCHS, keys

from vrconvert.converter.arch import layers, spec

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # buffers, not parameters


@pytest.mark.parametrize("arch", ARCHS)
def test_spec_parameter_count_matches_torchvision(arch):
    """The spec's published count and its expansion's count both equal the count of torchvision's own
    parameters, summed from the oracle's state-dict shapes."""
    torchvision = sum(math.prod(k["shape"]) for k in keys(arch) if not k["key"].endswith(STATISTICS))
    variant = spec.get(arch)
    assert variant.num_params == torchvision
    assert layers.count_params(layers.expand(variant)) == torchvision


@pytest.mark.parametrize("arch", ARCHS)
def test_expansion_covers_torchvision_modules_in_order(arch):
    """Every state_dict key's module is a weight-bearing record, in torchvision's order."""
    modules = list(dict.fromkeys(e["key"].rsplit(".", 1)[0] for e in keys(arch)))
    assert [layer.name for layer in layers.expand(spec.get(arch)) if layer.has_weights] == modules


@pytest.mark.parametrize("arch", ARCHS)
def test_keras_names_are_reversible_and_dot_free(arch):
    for layer in layers.expand(spec.get(arch)):
        name = layers.keras_name(layer.name)
        assert "." not in name
        assert layers.torch_path(name) == layer.name


def test_unknown_arch_lists_known_ones():
    with pytest.raises(KeyError, match="r2plus1d_18"):
        spec.get("resnet50")


def test_pretrained_metadata():
    r21d = spec.get("r2plus1d_18")
    assert r21d.pretrained.filename == "r2plus1d_18-91a641e6.pth"
    assert r21d.pretrained.sha256_prefix == "91a641e6"
    assert r21d.preprocessing.resize == (128, 171) and r21d.preprocessing.crop == (112, 112)


def test_stage_outputs():
    ends = layers.stage_outputs(layers.expand(spec.get("r2plus1d_18")))
    assert ends == {
        "stem": "stem.5",
        "layer1": "layer1.1.relu",
        "layer2": "layer2.1.relu",
        "layer3": "layer3.1.relu",
        "layer4": "layer4.1.relu",
    }


def test_explicit_midplanes_override_the_formula():
    """One width per factorised conv, in network order (IG65M's R(2+1)D-34 differs in three convs)."""
    r21d = spec.get("r2plus1d_18")
    widths = tuple(range(100, 116))
    convs = {r.name: r for r in layers.expand(replace(r21d, midplanes=widths))}
    assert convs["layer1.0.conv1.0.0"].channels_out == 100 and convs["layer1.0.conv2.0.0"].channels_out == 101
    assert convs["layer4.1.conv2.0.3"].channels_in == 115
    assert [r.channels_out for r in layers.midplane_convs(replace(r21d, midplanes=widths))] == list(widths)
    with pytest.raises(ValueError, match="too few midplanes"):
        layers.expand(replace(r21d, midplanes=(1, 2)))
    with pytest.raises(ValueError, match="more midplanes"):
        layers.expand(replace(r21d, midplanes=(*widths, 1)))


def test_kinetics_category_names_ship_with_the_package():
    names = spec.category_names("r2plus1d_18")
    assert len(names) == 400 and names[0] == "abseiling" and len(set(names)) == 400
    assert spec.category_names(spec.get("mc3_18").with_classes(101)) is None  # a fine-tuned head is unnamed


@pytest.mark.parametrize("arch", list(spec.VARIANTS))
def test_every_variant_expands_to_reversible_unique_names(arch):
    """The seeds' unit kinds and pools included: unique records, every input defined before it is read."""
    records = layers.expand(spec.get(arch))
    names = [r.name for r in records]
    assert len(set(names)) == len(names)
    seen = {layers.INPUT}
    for record in records:
        assert set(record.inputs) <= seen, record.name
        assert layers.torch_path(layers.keras_name(record.name)) == record.name
        seen.add(record.name)
