"""The zoo's networks on real clips at their native 16x224x224 (slow): three real scenes (25, 30 and 10 fps)
decoded and preprocessed with the network's own torchvision transform, plus one random clip. Keras (on
TensorFlow) against the torch twin run in float64, recipe weights: at most max(1e-5, 2 x the twin's own
float32 error) on each clip. The twins are proven against torchvision's oracle (test_s3d, test_mvit,
test_swin3d); one network in memory at a time."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import swin3d_oracle
import torch
import zoo_oracle

from vrconvert.converter.arch import families

CLIPS = Path(__file__).parent / "fixtures" / "clips"
SCENES = ("megamind_25fps", "megamind_bugy_30fps", "vtest_10fps")


def _oracle(name: str):
    """The oracle's reader for `name`'s family (Swin3D's has its own)."""
    return swin3d_oracle if name.startswith("swin3d") else zoo_oracle


def _inputs(variant) -> dict[str, np.ndarray]:
    """(1, 3, 16, 224, 224) float32 clips by name: each scene's centred 16 frames through the network's own
    transform, and a seeded random clip."""
    pytest.importorskip("av")
    from vrconvert.converter import parity
    from vrconvert.converter.video import load_clips

    out = {}
    for scene in SCENES:
        (clip,) = load_clips(CLIPS / f"{scene}.mp4", frames=16, layout="NCTHW", preprocessing=variant.preprocessing)
        out[scene] = clip.array
    out["random"] = parity.random_clip(0, 16, (224, 224))
    for name, x in out.items():
        assert x.shape == (1, 3, 16, 224, 224) and x.dtype == np.float32, (name, x.shape, x.dtype)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["s3d", "mvit_v1_b", "mvit_v2_s", "swin3d_t"])
def test_keras_on_real_clips_against_the_twin_in_float64(name):
    import keras

    from vrconvert import models_torch
    from vrconvert.models_tf import weights as keras_weights

    variant = families.get(name)
    state = _oracle(name).recipe_state_dict(name)
    inputs = _inputs(variant)
    twin = models_torch.build(variant, variant.num_classes).eval()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    with torch.no_grad():
        own = {k: twin(torch.from_numpy(x)).numpy() for k, x in inputs.items()}
        twin.double()
        exact = {k: twin(torch.from_numpy(x).double()).numpy() for k, x in inputs.items()}
    del twin
    gc.collect()
    model = keras_weights.build_model(variant, state)
    del state
    errors = {}
    for k, x in inputs.items():
        got = keras.ops.convert_to_numpy(model(np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1))))
        bar = max(1e-5, 2 * zoo_oracle.rel_err(own[k], exact[k]))
        errors[k] = (zoo_oracle.rel_err(got, exact[k]), bar)
    print(name, {k: f"{e:.2e} (bar {b:.2e})" for k, (e, b) in errors.items()})
    assert all(e <= b for e, b in errors.values()), errors
