"""Every package folder is listed in pyproject.toml: an editable install finds unlisted folders
through the source tree, but a wheel (``pip install .``, a cluster image) silently leaves them out."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_in_the_wheel():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = set()
    for dotted, folder in setup["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((dotted, *relative)))
    data_only = set(setup.get("package-data", {}))  # folders of data files (no module), listed to ship them
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found - data_only == set(), "listed but not a package folder"
