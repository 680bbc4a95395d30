"""Write the API appendix (``book/appendices/api.md``) from the package and the chapters.

For each module: a summary table of its public functions (name, first docstring line, the
chapter section that derives it) followed by the full docstrings (``automodule``). The
section is found in the chapters: the heading above the ``literalinclude`` that shows the
function, else above the first code cell that calls it, else the module's chapter.

``python book/_tools/api_page.py`` rewrites the page; ``--check`` fails if it is stale
(run by the tests, so a new function cannot be missing from the table).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "book" / "appendices" / "api.md"
MODULES = {  # module: its home chapter, in book order
    "prox": "04-sparsity", "ridge": "02-ridge", "selection": "03-selection",
    "sparse": "04-sparsity", "lowrank": "05-low-rank", "covariance": "06-covariance",
    "representation": "10-representation",
    "ot": "15-optimal-transport", "tv": "16-inverse-problems",
}

HEADER = """\
# API reference

The reference for `regref` {sub-ref}`today`, generated from the docstrings of the code the
chapters run; each table links a function to the section of the book that derives it.

**Conventions shared by every function.** Inputs are `torch.Tensor`s (array-likes are
converted); results are tensors on the input's device and in its dtype. Bad input raises
`ValueError` (or `TypeError`) naming the argument. Iterative solvers take `tol` (relative:
each docstring says to what), `max_iter` (a positive int: the outermost iterations the
docstring names) and `return_info`; with `return_info=True` they also return a
`regref.Info` whose certificate is computed at the returned point, with
`converged == (certificate <= tol)`, and at `max_iter` they warn with
`regref.ConvergenceWarning`. Loss scalings and symbols are those of
{ref}`app-notation`.

**Parameter names mean one thing everywhere.**

| name | meaning |
|---|---|
| `lam`, `lams` | regularization strength(s) $\\lambda \\ge 0$ |
| `eps` | entropic strength $\\varepsilon > 0$ of optimal transport |
| `gamma` | concavity of the MCP penalty |
| `a` | shape of the SCAD penalty |
| `tol` | relative tolerance (each docstring says relative to what) |
| `max_iter` | iteration budget, a positive int |
| `check_every` | iterations between two certificate checks |
| `generator` | a CPU `torch.Generator`; draws are moved to the data's device |
| `return_info` | also return a `regref.Info` |

```{eval-rst}
.. autodata:: regref.__version__
   :no-value:

.. autoclass:: regref.Info
   :members:

.. autoclass:: regref.ConvergenceWarning
```
"""


def _slug(title: str) -> str:
    """The anchor myst gives a heading: its text and inline code, without math or markup,
    lower-cased, spaces to hyphens, other punctuation dropped."""
    text = re.sub(r"\$[^$]*\$", "", title).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower().replace(" ", "-"))


def _sections(path: Path):
    """(heading, cell source, cell type) for each cell, with the last heading above it."""
    nb = nbformat.read(path, as_version=4)
    heading = None
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == "markdown":
            for line in src.splitlines():
                m = re.match(r"^(#{2,3})\s+(.*)", line)
                if m:
                    heading = m.group(2)
        yield heading, src, cell.cell_type


def _where(module: str, name: str) -> tuple[str, str | None]:
    """(chapter folder, heading) of the section that derives ``module.name``."""
    chapters = sorted((ROOT / "book").glob("[0-9][0-9]-*/index.ipynb"))
    include = re.compile(rf"regref/{module}\.py\s*\n(?:.*\n)*?:pyobject:\s*{name}\s*$", re.M)
    call = re.compile(rf"\b{module}\.{name}\(|\b{name}\(")
    for pattern, kind in ((include, "markdown"), (call, "code")):
        for path in chapters:
            for heading, src, cell_type in _sections(path):
                if cell_type == kind and pattern.search(src):
                    return path.parent.name, heading
    return MODULES[module], None


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    first = re.sub(r":math:`", "{math}`", first)          # reST roles to MyST roles
    first = re.sub(r"``([^`]+)``", r"`\1`", first)
    return first.replace("|", "\\|")                      # a pipe inside a table cell


def render() -> str:
    out = [HEADER]
    for module in MODULES:
        mod = importlib.import_module(f"regref.{module}")
        out.append(f"\n## `regref.{module}`\n")
        out.append("| function | what it does | derived in |\n|---|---|---|")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not callable(obj):
                continue
            chapter, heading = _where(module, name)
            target = f"../{chapter}/index.ipynb"
            label = f"ch. {chapter[:2]}" + (f", {heading}" if heading else "")
            link = f"[{label}]({target}#{_slug(heading)})" if heading else f"[{label}]({target})"
            out.append(f"| {{py:func}}`~regref.{module}.{name}` | {_summary(obj)} | {link} |")
        out.append(f"\n```{{eval-rst}}\n.. automodule:: regref.{module}\n   :members:\n```")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python book/_tools/api_page.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
