"""Packaging a user can trust (issue 22): the wheel pip builds carries the license, py.typed and the
authors; a user's type checker sees the public API typed (mypy over tests/typing/public_api.py,
through the installed package); version and license agree across pyproject, the package and
CITATION.cff; the changelog exists."""

from __future__ import annotations

import email
import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import elukit

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip wheel .` builds from this checkout (the C kernels compile if a compiler is here)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment (needed for --no-build-isolation)")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                           "--quiet", "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("elukit-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_license_py_typed_and_authors(wheel):
    names = wheel.namelist()
    assert "elukit/py.typed" in names
    info = next(n.rsplit("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    assert wheel.read(f"{info}/licenses/LICENSE").decode() == (ROOT / "LICENSE").read_text(encoding="utf-8")
    metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Author"] or metadata["Author-email"]
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    for url in metadata.get_all("Project-URL") or []:  # where given, absolute
        assert re.match(r"^[\w ]+, https://", url), url


def test_the_license_is_mit():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    assert pyproject()["project"]["license"] == "MIT"


def test_version_and_license_agree_in_pyproject_the_package_and_citation():
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    project = pyproject()["project"]
    assert project["version"] == elukit.__version__ == str(citation["version"])
    assert citation["license"] == project["license"] == "MIT"
    assert citation["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "type"} <= set(citation)
    assert [a["name"] for a in citation["authors"]] == [a["name"] for a in project["authors"]]


def test_the_changelog_has_an_unreleased_section_and_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in text and f"## [{elukit.__version__}]" in text


def test_mypy_sees_the_public_api_typed(tmp_path):
    """mypy (strict) over tests/typing/public_api.py, resolving `elukit` through the installed
    package as a user's checker does: without py.typed every name would be Any and each
    `assert_type` would fail."""
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "cache"), str(ROOT / "tests" / "typing" / "public_api.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout
