"""`build(weights=...)` for the zoo, on both sides, as for the ResNets, from a torch checkpoint or a `.keras`
file: the file's head kept at its width, a fresh head of another width (one warning line), every backbone tensor loaded and accounted for strictly.
S3D's weights in the fast set; its logits, Swin3D and MViT (MViT at its only size) in the slow set."""

import warnings

import numpy as np
import pytest
from helpers import make_checkpoint, save_state

# arch, a clip (N, T, H, W, C) it takes (None: weights only, no forward pass), its classifier's weight key
CASES = [
    ("s3d", None, "classifier.1.weight"),
    pytest.param("s3d", (1, 16, 224, 224, 3), "classifier.1.weight", marks=pytest.mark.slow),  # 224: its pooled head
    pytest.param("swin3d_t", (1, 4, 64, 64, 3), "head.weight", marks=pytest.mark.slow),
    pytest.param("mvit_v2_s", (1, 16, 224, 224, 3), "head.1.weight", marks=pytest.mark.slow),
]


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.mark.parametrize(("arch", "clip_shape", "head_key"), CASES)
def test_zoo_weights_in_on_both_sides(arch, clip_shape, head_key, tmp_path, keras, torch):
    from vrconvert import models_tf, models_torch, torch_to_keras
    from vrconvert.converter.errors import InputError

    model, state = make_checkpoint(arch, 400, seed=4)
    path = tmp_path / f"{arch}.pth"
    save_state(state, path)
    full = models_tf.build(arch, weights=str(path))  # the file's head, at the file's width
    if clip_shape is not None:
        clip = np.random.default_rng(6).standard_normal(clip_shape).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(clip.transpose(0, 4, 1, 2, 3))).numpy()
        assert _rel(keras.ops.convert_to_numpy(full(clip)), expected) < 1e-5
    torch_to_keras(path, tmp_path / f"{arch}.keras", validate=False)
    from_keras = models_tf.build(arch, weights=str(tmp_path / f"{arch}.keras"))  # the same weights, from Keras
    for a, b in zip(from_keras.weights, full.weights, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = models_tf.build(arch, weights=str(path), num_classes=3)
    lines = [str(w.message) for w in caught if "fresh 3-class head" in str(w.message)]
    assert len(lines) == 1 and "400 classes" in lines[0]
    assert fresh.output.shape[-1] == 3
    loaded = {v.path: keras.ops.convert_to_numpy(v) for v in full.weights}
    for v in fresh.weights:  # every backbone variable is the file's; only the head differs
        if v.shape == loaded[v.path].shape:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), loaded[v.path])
        else:
            assert v.shape[-1] == 3

    twin = models_torch.build(arch, weights=str(path), num_classes=3)
    got = {k: t.numpy() for k, t in twin.state_dict().items()}
    assert got[head_key].shape[0] == 3
    for key, value in state.items():
        if not key.startswith(head_key.rsplit(".", 1)[0] + "."):
            np.testing.assert_array_equal(got[key], value, err_msg=key)

    broken = dict(state)
    backbone_key = next(k for k in state if k.endswith(".weight") and not k.startswith(head_key[:-6]))
    del broken[backbone_key]
    save_state(broken, tmp_path / "broken.pth")
    for build in (models_tf.build, models_torch.build):
        with pytest.raises(InputError, match="missing"):
            build(arch, weights=str(tmp_path / "broken.pth"))


def test_a_users_head_around_a_zoo_backbone_is_refused_in_one_line():
    """A Dense head after pooling does not compute S3D's classifier (a 1x1x1 conv between its (2, 7, 7)
    average pool and a mean), nor the transformers' heads in torchvision's layout: said, not guessed."""
    from vrconvert.converter.arch import heads
    from vrconvert.converter.errors import InputError

    backbone = [heads.Weighted(name="features_0_0_0", kind="Conv3D", shapes={"kernel": (1, 7, 7, 3, 64)})]
    user_head = heads.Weighted(name="mine", kind="Dense", shapes={"kernel": (1024, 3), "bias": (3,)})
    with pytest.raises(InputError, match="layer mine: a head of a user's own is read back on the video ResNets only"):
        heads.renamed([*backbone, user_head], "mine")
    resnet = [heads.Weighted(name="stem_0", kind="Conv3D", shapes={"kernel": (3, 7, 7, 3, 45)}), user_head]
    assert heads.renamed(resnet, "mine")["fc/kernel"] == (1024, 3)
