"""stderr carries vrconvert's own lines only: one line for an error, even from a command that has
imported TensorFlow, and no third-party warning or log record (real subprocesses, as a user runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def vrconvert(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "VRCONVERT_DEBUG")}
    return subprocess.run(
        [sys.executable, "-m", "vrconvert", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**base, **env},
        timeout=300,
    )


@pytest.fixture(scope="module")
def two_networks(tmp_path_factory) -> tuple[Path, Path]:
    """A torch checkpoint of mc2_18 and a Keras file of r2d_18 (small ones, 4 classes)."""
    folder = tmp_path_factory.mktemp("stderr")
    for arch, name in (("mc2_18", "a.pth"), ("r2d_18", "b.keras")):
        done = vrconvert("build", arch, name, "--num-classes", "4", cwd=folder)
        assert done.returncode == 0, done.stderr
    return folder / "a.pth", folder / "b.keras"


def test_error_after_tensorflow_import_is_one_line(two_networks):
    torch_file, keras_file = two_networks
    done = vrconvert(
        "validate", str(torch_file), str(keras_file), "--keras-backend", "tensorflow", cwd=torch_file.parent
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: the two files hold different networks: {torch_file} is mc2_18 with 4 classes, "
        f"{keras_file} is r2d_18 with 4 classes"
    ]
    # The same command where the user set TF's own level: TensorFlow's start-up lines are back, so
    # the command above did import TensorFlow and its silence is vrconvert's doing.
    loud = vrconvert(
        "validate",
        str(torch_file),
        str(keras_file),
        "--keras-backend",
        "tensorflow",
        cwd=torch_file.parent,
        TF_CPP_MIN_LOG_LEVEL="0",
    )
    assert loud.returncode == 2
    assert len(loud.stderr.splitlines()) > 1
    assert loud.stderr.splitlines()[-1] == done.stderr.splitlines()[0]


def test_third_party_warnings_and_logs_never_reach_stderr(tmp_path):
    """A command that triggers a third-party warning and log records: only vrconvert's lines show;
    with VRCONVERT_DEBUG=1 everything does."""
    script = textwrap.dedent(
        """
        import logging, warnings, click
        from vrconvert.cli import main as entry
        from vrconvert.converter.errors import InputError

        @click.command("noisy")
        def noisy():
            exec("import warnings; warnings.warn('from a library', DeprecationWarning)", {"__name__": "somelib"})
            exec("import warnings; warnings.warn('from a library', UserWarning)", {"__name__": "somelib"})
            logging.getLogger("absl").warning("absl speaks")
            logging.getLogger("somelib").error("somelib speaks")
            exec("import warnings; warnings.warn('ours')", {"__name__": "vrconvert.cli.noisy"})
            raise InputError("bad input")

        entry.cli.add_command(noisy)
        entry.main()
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "VRCONVERT_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-c", script, "noisy"], capture_output=True, text=True, check=False, env=env, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["warning: ours", "error: bad input"]
    debug = subprocess.run(
        [sys.executable, "-c", script, "noisy"],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "VRCONVERT_DEBUG": "1"},
        cwd=tmp_path,
    )
    assert "from a library" in debug.stderr and "somelib speaks" in debug.stderr


def test_missing_package_names_an_extra_that_exists():
    """Each extra the one-line 'not installed' error names is one pyproject.toml declares."""
    from vrconvert.cli.errors import EXTRA_OF_MODULE, _missing_package

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, extra in EXTRA_OF_MODULE.items():
        assert extra in extras, module
        line = _missing_package(ModuleNotFoundError(f"No module named '{module}'", name=module))
        assert f"pip install 'vrconvert[{extra}]'" in line and "\n" not in line
