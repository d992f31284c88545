"""What users install is what is tested: the wheel carries every module of the source tree and the service
templates, the product venv holds nothing but tokend and its dependencies, and the tests import the installed copy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import tokend

from support.product import PRODUCT_PYTHON, REPO

LIST_FILES = "import importlib.metadata as m, json; print(json.dumps([str(f) for f in m.files('tokend')]))"


def installed_files() -> set[str]:
    out = subprocess.run([PRODUCT_PYTHON, "-c", LIST_FILES], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_every_module_of_the_source_tree_is_in_the_wheel() -> None:
    files = installed_files()
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "tokend").rglob("*.py")}
    assert sources, "no sources found"
    missing = sorted(sources - files)
    assert not missing, f"left out of the wheel: {missing}"
    templates = {p.name for p in (REPO / "service").iterdir() if p.suffix in (".service", ".plist", ".xml")}
    shipped = {Path(f).name for f in files if f.startswith("tokend/service_templates/")}
    assert templates and templates <= shipped, templates - shipped


def test_the_product_venv_holds_only_tokend_and_its_dependencies() -> None:
    probe = (
        "import importlib.util as u; print([m for m in ('pytest', 'hypothesis', 'psycopg', 'asyncpg') "
        "if u.find_spec(m)])"
    )
    out = subprocess.run([PRODUCT_PYTHON, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    where = subprocess.run(
        [PRODUCT_PYTHON, "-c", "import tokend; print(tokend.__file__)"], capture_output=True, text=True, check=True
    ).stdout
    assert "site-packages" in where and not where.startswith(str(REPO / "tokend"))


def test_the_tests_import_the_installed_copy_not_the_checkout() -> None:
    assert "site-packages" in tokend.__file__, tokend.__file__
    assert not Path(tokend.__file__).is_relative_to(REPO / "tokend")
