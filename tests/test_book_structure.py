"""The chapter contract (DESIGN §4) and notebook hygiene (DESIGN §5), checked mechanically.

nbval skips cells without stored outputs, so an unexecuted notebook would pass nbval while
checking nothing: this file is what makes that impossible. It also checks what a reader
relies on: proofs, exercises with solutions, citations that resolve, glued numbers that
exist, ``literalinclude`` targets that exist, and ``regref`` names that exist.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]-*/index.ipynb"))
MAX_IGNORED_OUTPUT_CELLS = 3
MAX_BYTES = 3_000_000


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _markdown(nb) -> str:
    return "\n".join(_source(c) for c in nb.cells if c.cell_type == "markdown")


def _code(nb) -> str:
    return "\n".join(_source(c) for c in nb.cells if c.cell_type == "code")


def _directives(text: str, name: str) -> list[str]:
    """Bodies of ```{name} ...``` fenced directives (backtick or colon fences)."""
    pattern = rf"(`{{3,}}|:{{3,}})\{{{re.escape(name)}\}}([^\n]*)\n(.*?)\n\1"
    return [m.group(2) + "\n" + m.group(3) for m in re.finditer(pattern, text, re.S)]


def _label(body: str) -> str | None:
    m = re.search(r"^:label:\s*(\S+)", body, re.M)
    return m.group(1) if m else None


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files.extend(s["file"] for s in chapter.get("sections", []))
    return files


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2, "expected at least chapters 01 and 02"


def test_toc_lists_exactly_the_pages_that_exist():
    listed = _toc_files()
    for f in listed:
        assert any((ROOT / (f + ext)).exists() for ext in (".md", ".ipynb")), f"{f} missing"
    for nb in NOTEBOOKS:
        rel = nb.relative_to(ROOT).with_suffix("").as_posix()
        assert rel in listed, f"{rel}.ipynb is not in _toc.yml"
        assert not nb.with_suffix(".md").exists(), f"{nb} has a .md twin (confuses myst-nb)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(BOOK).as_posix())
def test_notebook_executed_in_order_without_errors(path: Path):
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code" and _source(c).strip()]
    assert code, "a book notebook must have code cells"
    counts = [c.execution_count for c in code]
    assert None not in counts, (f"{counts.count(None)} code cell(s) never executed: "
                                "run `make notebooks`")
    assert counts == list(range(1, len(code) + 1)), (
        "execution counts must be 1, 2, ... in cell order (one top-to-bottom run): "
        f"got {counts[:10]}...")
    for c in code:
        tags = c.metadata.get("tags", [])
        errors = [o for o in c.outputs if o.output_type == "error"]
        assert not errors or "raises-exception" in tags, f"stored error in cell {c.execution_count}"
        streams = "".join(o.get("text", "") for o in c.outputs if o.get("name") == "stderr")
        assert "Traceback" not in streams, f"traceback on stderr in cell {c.execution_count}"
    ignored = [c for c in code if "nbval-ignore-output" in c.metadata.get("tags", [])]
    assert len(ignored) <= MAX_IGNORED_OUTPUT_CELLS, "too many nbval-ignore-output cells"
    assert path.stat().st_size < MAX_BYTES, "notebook too large: lower figure dpi"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
class TestChapterContract:
    def test_title_and_scale_it_up(self, path):
        nb = _read(path)
        assert nb.cells[0].cell_type == "markdown" and _source(nb.cells[0]).startswith("# ")
        assert re.search(r"^##+ Scale it up", _markdown(nb), re.M | re.I), \
            "missing a 'Scale it up' section"

    def test_theorems_with_labels_and_proofs(self, path):
        md = _markdown(_read(path))
        theorems = _directives(md, "prf:theorem")
        assert len(theorems) >= 2, "at least two theorems"
        assert all(_label(t) for t in theorems), "every theorem needs a :label:"
        proofs = _directives(md, "prf:proof")
        assert len(proofs) >= len(theorems), "every theorem needs a proof"
        assert all(len(p.split()) >= 30 for p in proofs), "a proof of under 30 words is a sketch"

    def test_exercises_with_executed_solutions(self, path):
        nb = _read(path)
        md = _markdown(nb)
        labels = [_label(e) for e in _directives(md, "exercise")]
        assert len(labels) >= 4 and all(labels), "at least four labelled exercises"
        solutions, inside, with_code = {}, None, set()
        for cell in nb.cells:
            src = _source(cell) if cell.cell_type == "markdown" else ""
            m = re.search(r"\{solution-start\}\s*(\S+)", src)
            if m:
                assert inside is None, "nested solution-start"
                inside = m.group(1)
                solutions[inside] = 0
            elif "{solution-end}" in src:
                assert inside is not None, "solution-end without solution-start"
                inside = None
            elif inside is not None:
                solutions[inside] += 1
                if cell.cell_type == "code" and cell.execution_count is not None:
                    with_code.add(inside)
        assert inside is None, "solution-start without solution-end"
        assert "{solution}" not in md, "use the gated form (solution-start/end)"
        for label in labels:
            assert solutions.get(label, 0) >= 1, f"exercise {label} has no worked solution"
        assert len(with_code) >= 2, "at least two solutions must be executed code"

    def test_citations_resolve(self, path):
        md = _markdown(_read(path))
        keys = set(re.findall(r"@\w+\{([^,]+),", (BOOK / "references.bib").read_text()))
        cited = {k.strip() for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", md)
                 for k in group.split(",")}
        assert cited, "a chapter cites its sources"
        assert cited <= keys, f"unknown bibliography keys: {sorted(cited - keys)}"

    def test_numbers_in_prose_are_glued(self, path):
        nb = _read(path)
        used = set(re.findall(r"\{glue(?::\w+)?\}`([^`]+)`", _markdown(nb)))
        used |= set(re.findall(r"\{glue:figure\}\s*(\S+)", _markdown(nb)))
        glued = {o.metadata["scrapbook"]["name"] for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if "scrapbook" in o.get("metadata", {})}
        assert len(used) >= 3, "quote computed numbers with {glue:text}"
        assert used <= glued, f"glue keys used but never glued: {sorted(used - glued)}"

    def test_has_figures(self, path):
        nb = _read(path)
        pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if "image/png" in o.get("data", {})]
        assert pngs, "a chapter has at least one figure"

    def test_literalinclude_targets_exist(self, path):
        md = _markdown(_read(path))
        includes = _directives(md, "literalinclude")
        assert includes, "show the real regref code with literalinclude"
        for inc in includes:
            target = inc.split("\n", 1)[0].strip()
            file = ROOT / target.lstrip("/") if target.startswith("/") else path.parent / target
            assert file.exists(), f"literalinclude target {target} does not exist"
            m = re.search(r"^:pyobject:\s*(\S+)", inc, re.M)
            assert m, f"literalinclude of {target} must use :pyobject:"
            names = {n.name for n in ast.walk(ast.parse(file.read_text()))
                     if isinstance(n, ast.FunctionDef | ast.ClassDef)}
            assert m.group(1).split(".")[-1] in names, f"{m.group(1)} not found in {target}"


def _regref_names(text: str) -> set[str]:
    """Dotted regref names a notebook refers to (attribute access and imports)."""
    text = re.sub(r"[\w./-]*\.(?:py|mplstyle|bib|ipynb)\b", "", text)  # file paths, not names
    names = {"regref" + n for n in re.findall(r"\bregref((?:\.[A-Za-z_]\w*)+)", text)}
    for mod, imported in re.findall(r"from[ \t]+regref(\.\w+)?[ \t]+import[ \t]+"
                                    r"(\([^)]*\)|[^\n#]+)", text):
        for name in (n.strip().split(" as ")[0] for n in imported.strip("() ").split(",")):
            if not name.strip():
                continue
            name = name.strip()
            names.add(f"regref{mod}.{name}")
            # `from regref import ridge` then `ridge.ridge_path(...)`
            if not mod and importlib.util.find_spec(f"regref.{name}") is not None:
                names |= {f"regref.{name}.{a}" for a in re.findall(rf"\b{name}\.(\w+)", text)}
    return names


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[: i + 1]))
        except ImportError:
            return False
    return True


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(BOOK).as_posix())
def test_regref_names_in_book_exist(path: Path):
    nb = _read(path)
    text = _code(nb) + "\n" + _markdown(nb)
    missing = sorted(n for n in _regref_names(text) if not _resolves(n))
    assert not missing, f"regref names that do not exist: {missing}"


def test_labels_and_glue_keys_unique_across_book():
    labels, keys = [], []
    for path in NOTEBOOKS:
        nb = _read(path)
        labels += re.findall(r"^:label:\s*(\S+)", _markdown(nb), re.M)
        keys += [o.metadata["scrapbook"]["name"] for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if "scrapbook" in o.get("metadata", {})]
    assert len(labels) == len(set(labels)), "duplicate :label: across the book"
    assert len(keys) == len(set(keys)), "duplicate glue key across the book"


def test_structure_checks_can_fail():
    """The helpers above really detect what they look for (guards against dead regexes)."""
    text = "```{prf:theorem} T\n:label: thm-x\nbody\n```\n"
    assert _directives(text, "prf:theorem") and _label(_directives(text, "prf:theorem")[0])
    assert not _resolves("regref.ridge.no_such_function")
    assert _resolves("regref.ridge.ridge_path")
    assert "regref.ridge.nope" in _regref_names("from regref import ridge\nridge.nope(1)")
    assert not _regref_names('plt.style.use("../regref.mplstyle")\n/regref/prox.py')
