"""Package discovery only (metadata lives in pyproject.toml): the import package `vrconvert` is put
together from top-level folders, and every subpackage with an __init__.py under them ships, so a
new subpackage cannot be left out of the wheel (tools/install_profiles.py checks the wheel).

The top-level module (`vrconvert/__init__.py`, `__main__.py`) lives in `package/`: no folder at the
repository's root is named `vrconvert`, so none can shadow an installed vrconvert for a process whose
working directory is the root (Ray puts the driver's directory on its workers' `sys.path`)."""

from pathlib import Path

from setuptools import setup

PACKAGE_DIRS = {
    "vrconvert": "package",
    "vrconvert.converter": "converter",
    "vrconvert.models_torch": "models_torch",
    "vrconvert.models_tf": "models_tf",
    "vrconvert.cli": "cli",
}


def packages() -> list[str]:
    found = []
    for name, folder in PACKAGE_DIRS.items():
        for init in sorted(Path(folder).rglob("__init__.py")):
            found.append(".".join([name, *init.parent.relative_to(folder).parts]))
    return found


setup(packages=packages(), package_dir=PACKAGE_DIRS)
