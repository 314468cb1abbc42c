"""Every step has a docs page that documents every parameter of its spec."""

import importlib
from pathlib import Path

import pytest

from jwst_klipprep.integration import get_steps

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _params(cls):
    names = []
    for line in cls.spec.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.append(line.split("=", 1)[0].strip())
    return names


@pytest.mark.parametrize("class_path,alias", [(c, a) for c, a, _ in get_steps()])
def test_step_page_documents_every_parameter(class_path, alias):
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    page = DOCS / "steps" / f"{alias}.rst"
    assert page.exists(), f"missing docs page {page}"
    text = page.read_text()
    assert name in text
    for param in _params(cls):
        assert f"``--{param}``" in text, f"{alias}: parameter {param} not documented"
    assert "Example" in text
    assert f"steps/{alias}" in (DOCS / "index.rst").read_text()


def test_every_page_is_in_the_toctree():
    # sphinx-build -W fails on an orphan page; the main environment has no sphinx, so check here
    index = (DOCS / "index.rst").read_text()
    entries = {line.strip() for line in index.split(".. toctree::", 1)[1].splitlines()
               if line.strip() and not line.strip().startswith(":")}
    pages = {p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.rglob("*.rst")}
    assert pages - {"index"} == entries
