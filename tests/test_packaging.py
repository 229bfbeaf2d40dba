"""The folders map to `vrconvert.*` in a real (non-editable) install, with package data, and the
console script answers without importing a framework."""

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_non_editable_install_maps_folders_and_ships_data(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert not (target / "cli").exists() and not (target / "converter").exists()  # no top-level cli/converter
    code = (
        "import vrconvert, vrconvert.converter.arch.spec as s, vrconvert.cli.main, importlib.resources as r;"
        f"assert vrconvert.__file__.startswith({str(target)!r}), vrconvert.__file__;"
        "print(len(r.files('vrconvert.converter').joinpath('data/kinetics400_classes.txt')"
        ".read_text().splitlines()));"
        "from vrconvert.converter.video import SAMPLE_CLIP;"
        f"print(SAMPLE_CLIP.is_file(), str(SAMPLE_CLIP).startswith({str(target)!r}))"
    )
    out = _python_over(target, code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["400", "True", "True"]  # the class names and the real clip ship
    # From the repository's root (the working directory first on sys.path, as for Ray's workers), the
    # installed package is still the one imported: no folder there is named vrconvert.
    code = (
        f"import vrconvert.converter.arch.spec as s, vrconvert; assert vrconvert.__file__.startswith({str(target)!r})"
    )
    out = _python_over(target, code, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def _python_over(target, code: str, cwd):
    """`code` in a fresh interpreter whose only vrconvert is the one installed in `target`, run from `cwd`."""
    env = {"PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=cwd, env=env)


def test_version_and_help_import_no_framework():
    code = (
        "import sys; from vrconvert.cli.main import cli; from click.testing import CliRunner;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output;"
        "heavy = {'torch', 'tensorflow', 'keras'} & {m.split('.')[0] for m in sys.modules}; print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_version_option():
    from vrconvert import __version__
    from vrconvert.cli.main import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
