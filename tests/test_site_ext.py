"""The site's Sphinx extension (book/_ext/regref_site.py), without building the book."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]-*/index.ipynb"))


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location(
        "regref_site", ROOT / "book" / "_ext" / "regref_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_names_from_imports_aliases_and_attribute_chains(ext):
    cells = [
        "%matplotlib inline\nimport torch\nimport regref\nfrom regref import ridge, prox as px",
        "w = ridge.ridge_path(X, y, lams)\nz = px.soft_threshold(w, 1.0)\n"
        "v = regref.sparse.lasso(X, y, 0.1)\nfn = ridge.ridge_loo  # passed, not called",
        "from regref.ot import sinkhorn as sk\nP = sk(a, b, C, eps=0.1)\ninfo.certificate",
        "not python (",
    ]
    names = ext.regref_names(cells)
    assert names[:2] == ["regref.ridge.ridge_path", "regref.prox.soft_threshold"]
    for expected in ["regref.sparse.lasso", "regref.ridge.ridge_loo", "regref.ot.sinkhorn"]:
        assert expected in names
    assert not any("certificate" in n or "torch" in n for n in names)


def test_only_documented_public_functions_and_classes_are_listed(ext):
    assert ext._resolve("regref.ridge.ridge_path") == ("func", "regref.ridge.ridge_path")
    assert ext._resolve("regref.Info") == ("class", "regref.Info")
    assert ext._resolve("regref.ridge") is None  # a module
    assert ext._resolve("regref.__version__") is None
    assert ext._resolve("regref.ridge.no_such_function") is None
    assert ext._resolve("regref.Info.certificate") is None  # an attribute of a class
    assert ext._documented("regref.ridge.ridge.__doc__") == ("func", "regref.ridge.ridge")
    assert ext._documented("regref.Info") == ("class", "regref.Info")
    assert ext._documented("regref.ridge") is None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_every_chapter_lists_regref_functions(ext, path):
    cells = ext._code_cells(path)
    found = [n for n in ext.regref_names(cells) if ext._documented(n)]
    assert found, f"{path.parent.name}: no regref function found in its code cells"


def test_markdown_download_is_a_myst_notebook(ext):
    nb = {
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "text $x$"]},
            {"cell_type": "markdown", "metadata": {}, "source": "more"},
            {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "outputs": [],
             "source": "s = '''\n```\n'''\nprint(s)"},
            {"cell_type": "markdown", "metadata": {}, "source": "after"},
        ],
    }
    md = ext.notebook_to_myst(nb)
    assert md.startswith("---\njupytext:\n")
    assert "format_name: myst" in md and "name: python3" in md
    assert "# Title\ntext $x$\n\n+++\n\nmore\n" in md
    # the code contains a ``` fence, so the cell is fenced with four backticks
    assert '````{code-cell} ipython3\n:tags: ["hide-input"]\n\ns = \'\'\'\n```\n' in md
    assert md.rstrip().endswith("after")


@pytest.mark.parametrize("path", CHAPTERS[:1], ids=lambda p: p.parent.name)
def test_markdown_download_keeps_every_cell(ext, path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    md = ext.notebook_to_myst(nb)
    n_code = sum(c["cell_type"] == "code" for c in nb["cells"])
    assert md.count("{code-cell} ipython3") == n_code
