"""A saved `.keras` model reloads with plain Keras (safe mode, no vrconvert) on TensorFlow and torch."""

import numpy as np
import pytest
from helpers import copy_to_keras, run_python
from oracle import oracle, oracle_input, recipe_state_dict, rel_err

LOAD_AND_PREDICT = """
    import sys
    import numpy as np, keras
    x = np.load({x!r})
    for src, dst in {pairs!r}:
        model = keras.models.load_model(src, safe_mode=True, compile=False)
        np.save(dst, keras.ops.convert_to_numpy(model(x, training=False)))
    assert not any(m.split(".")[0] == "vrconvert" for m in sys.modules), "vrconvert was imported"
    print(keras.backend.backend())
"""

BUILD_AND_SAVE = """
    import numpy as np, keras, sys
    sys.path.insert(0, {tests!r})
    from helpers import copy_to_keras
    from oracle import recipe_state_dict
    from vrconvert import models_tf
    model = models_tf.build({arch!r})
    copy_to_keras(model, recipe_state_dict({arch!r}))
    model.save({dst!r})
    np.save({out!r}, keras.ops.convert_to_numpy(model(np.load({x!r}), training=False)))
    print(keras.backend.backend())
"""


@pytest.mark.slow  # about 50 s; the fast set saves on one backend and loads on the other in test_preprocessing_model
@pytest.mark.parametrize("arch", ["r2plus1d_18", "mc3_18"])
def test_keras_file_reloads_in_fresh_process_on_both_backends(arch, tmp_path, keras):
    from pathlib import Path

    from vrconvert import models_tf

    x = oracle_input("small").transpose(0, 2, 3, 4, 1)
    np.save(tmp_path / "x.npy", x)
    model = models_tf.build(arch)
    copy_to_keras(model, recipe_state_dict(arch))
    tf_file = str(tmp_path / "tf.keras")
    model.save(tf_file)
    before = keras.ops.convert_to_numpy(model(x, training=False))

    # Built and saved on Keras' torch backend, to compare like with like there.
    torch_file, torch_before = str(tmp_path / "torch.keras"), str(tmp_path / "torch_before.npy")
    tests = str(Path(__file__).parent)
    out = run_python(
        BUILD_AND_SAVE.format(tests=tests, arch=arch, dst=torch_file, out=torch_before, x=str(tmp_path / "x.npy")),
        backend="torch",
    )
    assert out.stdout.strip() == "torch"

    tf_pairs = [(tf_file, str(tmp_path / "tf_reloaded.npy"))]
    assert (
        run_python(
            LOAD_AND_PREDICT.format(x=str(tmp_path / "x.npy"), pairs=tf_pairs), backend="tensorflow"
        ).stdout.strip()
        == "tensorflow"
    )
    torch_pairs = [(torch_file, str(tmp_path / "torch_reloaded.npy")), (tf_file, str(tmp_path / "tf_on_torch.npy"))]
    assert (
        run_python(
            LOAD_AND_PREDICT.format(x=str(tmp_path / "x.npy"), pairs=torch_pairs), backend="torch"
        ).stdout.strip()
        == "torch"
    )

    np.testing.assert_array_equal(np.load(tmp_path / "tf_reloaded.npy"), before)
    np.testing.assert_array_equal(np.load(tmp_path / "torch_reloaded.npy"), np.load(torch_before))
    expected = oracle(arch)["small.logits"]
    for name in ("tf_reloaded", "torch_reloaded", "tf_on_torch"):
        assert rel_err(np.load(tmp_path / f"{name}.npy"), expected) <= 1e-5, name
