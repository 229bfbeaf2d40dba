"""Hostile HDF5 structure and paths that are not files: one named regression test per class of the
second security review. Every file is made here; every run goes through `hostile.run_cases` (the real
CLI in a forked child under an address-space limit and a deadline) and must be refused in one line,
within seconds and under 1.5 GB, with nothing left behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import hostile_h5
import numpy as np
import pytest
from hostile import assert_refused, run_cases

RSS_MB = 1500  # the review's bound for every refused case (the worker's own imports are ~450 MB of it)


def _case(tmp_path: Path, name: str, argv: list, **more) -> dict:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return {"id": name, "folder": folder, "argv": [str(a) for a in argv], "deadline": 30, **more}


@pytest.fixture(scope="module")
def r2d_state():
    from helpers import make_checkpoint

    return make_checkpoint("r2d_18", num_classes=2, seed=5)[1]


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory, r2d_state):
    """A real r2d_18 (2 classes) as .keras, .h5 and .weights.h5, made in a subprocess."""
    from helpers import run_python

    folder = tmp_path_factory.mktemp("keras")
    np.savez(folder / "state.npz", **r2d_state)
    run_python(
        f"""
        import numpy as np
        from vrconvert.converter.arch import spec
        from vrconvert.models_tf import weights
        model = weights.build_model(spec.get("r2d_18").with_classes(2), dict(np.load({str(folder / "state.npz")!r})))
        for name in ("m.keras", "m.h5", "m.weights.h5"):
            path = {str(folder)!r} + "/" + name
            model.save_weights(path) if name.endswith(".weights.h5") else model.save(path)
        """,
        backend="numpy",
    )
    return folder


@pytest.fixture(scope="module")
def builder_file(tmp_path_factory):
    """A 3D-ResNet-Builder weights file (A18_3D) as the original writes it, zeros for weights."""
    from test_keras_projects import keys, write_original

    shapes = [tuple(w["shape"]) for w in keys("A18_3D")["weights"]]
    path = tmp_path_factory.mktemp("builder") / "A18_3D.h5"
    return write_original("A18_3D", path, [np.zeros(s, np.float32) for s in shapes])


def _copy(src: Path, folder: Path, name: str) -> Path:
    dst = Path(folder) / name
    shutil.copyfile(src, dst)
    return dst


# --- the path gate ------------------------------------------------------------------------------------


def test_fifos_and_devices_are_refused_before_any_sniff(tmp_path):
    """A FIFO named like every input kind: the gate refuses it before h5py, zipfile or PyAV opens it
    (opening it would block until the deadline)."""
    cases = []
    for argv in (
        ["keras2torch", "x.h5", "out.pth"],
        ["keras2keras", "x.h5", "out.keras"],
        ["keras2torch", "x.weights.h5", "out.pth"],
        ["inspect", "x.h5"],
        ["torch2keras", "x.pth", "out.keras", "--no-validate"],
        ["validate", "x.pth", "x.h5"],
    ):
        case = _case(tmp_path, "fifo-" + "-".join(a.replace(".", "_") for a in argv[:2]), argv)
        for name in {a for a in argv[1:] if "." in a and not a.startswith("out")}:
            os.mkfifo(Path(case["folder"]) / name)
        cases.append(case)
    case = _case(tmp_path, "device", ["keras2torch", "/dev/zero", "out.pth"])
    cases.append(case)
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result, max_rss_mb=RSS_MB)
        assert result["seconds"] < 10, result
    assert "FIFO" in results["fifo-keras2torch-x_h5"]["stderr"]


# --- links ----------------------------------------------------------------------------------------------


def test_links_are_refused_by_name_never_followed(tmp_path, keras_files, builder_file):
    """Soft and external links anywhere in every layout are refused naming the link; an external
    link into a FIFO (which blocked keras2torch and keras2keras for ever) included."""
    import h5py

    cases = []

    def add(name, src, filename, argv, edit):
        case = _case(tmp_path, name, [a.replace("IN", filename) for a in argv])
        path = _copy(src, case["folder"], filename)
        with h5py.File(path, "r+") as f:
            edit(f, Path(case["folder"]))
        cases.append(case)

    layer = next(iter(h5py.File(builder_file, "r").attrs["layer_names"])).decode()
    for command in ("keras2torch", "keras2keras"):
        out = "out.pth" if command == "keras2torch" else "out.keras"
        add(f"builder_fifo_{command}", builder_file, "x.h5", [command, "IN", out],
            lambda f, folder: hostile_h5.fifo_link(f, layer, folder))  # fmt: skip
    add("builder_soft", builder_file, "x.h5", ["keras2torch", "IN", "out.pth"],
        lambda f, folder: hostile_h5.link(f, f"{layer}/{next(iter(f[layer]))}", "soft", "/top_level_model_weights"))  # fmt: skip
    add("weights_external", keras_files / "m.weights.h5", "m.weights.h5", ["keras2torch", "IN", "out.pth"],
        lambda f, folder: hostile_h5.fifo_link(f, "layers/dense", folder))  # fmt: skip
    add("weights_soft", keras_files / "m.weights.h5", "m.weights.h5", ["inspect", "IN"],
        lambda f, folder: hostile_h5.link(f, "layers/dense/vars/1", "soft", "/layers/dense/vars/0"))  # fmt: skip
    add("legacy_external", keras_files / "m.h5", "m.h5", ["keras2torch", "IN", "out.pth"],
        lambda f, folder: hostile_h5.fifo_link(f, "model_weights/fc", folder))  # fmt: skip
    add("external_storage", keras_files / "m.weights.h5", "m.weights.h5", ["keras2torch", "IN", "out.pth"],
        lambda f, folder: hostile_h5.external_storage(f, "layers/dense/vars/1"))  # fmt: skip
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result, max_rss_mb=RSS_MB)
        assert result["seconds"] < 10, result
    for name in ("builder_fifo_keras2torch", "builder_fifo_keras2keras", "weights_external", "legacy_external"):
        assert "external link" in results[name]["stderr"], results[name]["stderr"]
    assert "soft link" in results["builder_soft"]["stderr"] and "soft link" in results["weights_soft"]["stderr"]
    assert "outside the file" in results["external_storage"]["stderr"]


# --- counts before lists --------------------------------------------------------------------------------


def test_name_and_object_counts_come_before_any_list(tmp_path):
    """The review's 111 KB file (one group listed 60,000 times, 3,000 weight names each: 7.2 GB and
    53 s) and a seed layout with 30,000 empty groups, refused from their counts."""
    import h5py

    name_bomb = _case(tmp_path, "name_bomb", ["keras2torch", "x.h5", "out.pth"])
    hostile_h5.builder_name_bomb(Path(name_bomb["folder"]) / "x.h5")
    groups = _case(tmp_path, "group_bomb", ["keras2torch", "x.weights.h5", "out.pth"])
    with h5py.File(Path(groups["folder"]) / "x.weights.h5", "w") as f:
        for top in ("embedding", "layers", "block"):
            f.create_group(top)
        hostile_h5.many_groups(f, 30_000, "block")
    attrs = _case(tmp_path, "attribute_bomb", ["inspect", "x.weights.h5"])
    with h5py.File(Path(attrs["folder"]) / "x.weights.h5", "w", libver="latest") as f:
        hostile_h5.many_attributes(f, 5_000)
    deep = _case(tmp_path, "deep", ["inspect", "x.weights.h5"])
    with h5py.File(Path(deep["folder"]) / "x.weights.h5", "w") as f:
        hostile_h5.deep_groups(f, 200)
    loop = _case(tmp_path, "loop", ["inspect", "x.weights.h5"])
    with h5py.File(Path(loop["folder"]) / "x.weights.h5", "w") as f:
        f.create_group("layers")
        hostile_h5.hard_cycle(f, "layers")
    results = run_cases([name_bomb, groups, attrs, deep, loop], tmp_path)
    for result in results.values():
        assert_refused(result, max_rss_mb=RSS_MB)
        assert result["seconds"] < 10, result
    assert "names" in results["name_bomb"]["stderr"] and "limit" in results["group_bomb"]["stderr"]


@pytest.mark.slow
def test_three_hundred_thousand_groups_in_a_seed_layout(tmp_path):
    import h5py

    case = _case(tmp_path, "groups_300k", ["keras2torch", "x.weights.h5", "out.pth"])
    with h5py.File(Path(case["folder"]) / "x.weights.h5", "w") as f:
        for top in ("embedding", "layers"):
            f.create_group(top)
        hostile_h5.many_groups(f, 300_000, "block")
    result = run_cases([case], tmp_path)["groups_300k"]
    assert_refused(result, contains="limit", max_rss_mb=RSS_MB)
    assert result["seconds"] < 10, result


# --- chunk layout and filters ---------------------------------------------------------------------------


def test_chunk_bombs_are_refused_before_any_read(tmp_path, keras_files, builder_file):
    """A correctly shaped dataset stored as one 2 GiB gzip chunk (about 2 MB on disk, maxshape
    unlimited) read at 2.1-2.5 GB and exited 0 in the Keras and seed layouts alike; 30 of them ran past
    120 s. Now the chunk is refused from its declared layout, and so is a filter outside the list."""
    import h5py

    cases = []

    def add(name, src, filename, argv, edit):
        case = _case(tmp_path, name, argv)
        path = _copy(src, case["folder"], filename)
        with h5py.File(path, "r+") as f:
            edit(f)
        cases.append(case)

    add("weights_bomb", keras_files / "m.weights.h5", "m.weights.h5", ["keras2torch", "m.weights.h5", "out.pth"],
        lambda f: hostile_h5.chunk_bomb(f, "layers/dense/vars/1"))  # fmt: skip
    add("legacy_bomb", keras_files / "m.h5", "m.h5", ["keras2torch", "m.h5", "out.pth"],
        lambda f: hostile_h5.chunk_bomb(f, next(n for n in _datasets(f) if n.endswith("bias"))))  # fmt: skip
    add("seed_bomb", builder_file, "x.h5", ["keras2torch", "x.h5", "out.pth"],
        lambda f: hostile_h5.chunk_bomb(f, _datasets(f)[-1]))  # fmt: skip
    add("seed_30_bombs", builder_file, "x.h5", ["keras2keras", "x.h5", "out.keras"],
        lambda f: [hostile_h5.chunk_bomb(f, n) for n in [d for d in _datasets(f) if f[d].ndim == 1][:30]])  # fmt: skip
    add("scaleoffset", keras_files / "m.weights.h5", "m.weights.h5", ["keras2torch", "m.weights.h5", "out.pth"],
        lambda f: hostile_h5.plugin_filter(f, "layers/dense/vars/0"))  # fmt: skip
    results = run_cases(cases, tmp_path)
    for result in results.values():
        assert_refused(result, max_rss_mb=RSS_MB)
        assert result["seconds"] < 10, result
    for name in ("weights_bomb", "legacy_bomb", "seed_bomb", "seed_30_bombs"):
        assert "larger than itself" in results[name]["stderr"], results[name]["stderr"]
    assert "filter" in results["scaleoffset"]["stderr"]


def _datasets(f) -> list[str]:
    import h5py

    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_float64_seed_weights_are_noted(tmp_path, builder_file):
    """A seed layout in float64 converts, and says it cast (torch checkpoints always did)."""
    import h5py

    case = _case(tmp_path, "f64", ["keras2torch", "x.h5", "out.pth", "--json"])
    path = _copy(builder_file, case["folder"], "x.h5")
    with h5py.File(path, "r+") as f:
        for name in _datasets(f)[:3]:
            data = f[name][()]
            del f[name]
            f[name] = data.astype(np.float64)
    result = run_cases([case], tmp_path)["f64"]
    assert result["code"] == 0, result["stderr"]
    assert "3 float64" in result["stdout"], result["stdout"]
