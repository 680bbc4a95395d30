"""The chapter contract and notebook hygiene (CONTRIBUTING.md), checked mechanically.

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
NOTEBOOKS = sorted(p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
                   and "assignments" not in p.relative_to(BOOK).parts)  # otter masters
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


def _output_unchecked(cell) -> bool:
    """nbval does not compare this cell's output: by tag or by a comment in its source."""
    tags = set(cell.metadata.get("tags", []))
    if tags & {"nbval-ignore-output", "nbval-skip"}:
        return True
    return bool(re.search(r"^\s*#\s*NBVAL_(SKIP|IGNORE_OUTPUT)\b", _source(cell), re.M))


THEOREM_LIKE = ("prf:theorem", "prf:lemma", "prf:proposition", "prf:corollary")


def _theorems_without_proof(md: str) -> list[str]:
    """Labels of theorem-like blocks not followed by a proof before the next one.

    A result quoted from the literature (its statement carries a ``{cite...}``) needs no
    proof; every other theorem, lemma, proposition or corollary does.
    """
    pattern = r"(`{3,}|:{3,})\{(prf:\w+)\}([^\n]*)\n(.*?)\n\1"
    blocks = [(m.group(2), m.group(3) + "\n" + m.group(4)) for m in re.finditer(pattern, md, re.S)]
    missing, pending = [], None
    for kind, body in blocks:
        if kind in THEOREM_LIKE:
            if pending:
                missing.append(pending)
            pending = None if "{cite" in body else (_label(body) or body[:40])
        elif kind == "prf:proof":
            pending = None
    return missing + ([pending] if pending else [])


# A number with three or more significant digits typed in prose is a number that can drift
# from the code: it must come from glue. Definitions and constants are allowed here.
ALLOWED_NUMBERS = {
    "1.96", "3.14159", "2.718",  # mathematical constants
    "442",                       # samples in scikit-learn's load_diabetes
    "745",                       # exp(-745) is the smallest positive double
    "1024",                      # image sizes (2^10)
    "3.674234", "49.165253",     # Thomson-problem minimal energies, N = 4 and 12 (literature)
}
_NUMBER = re.compile(r"(?<![\w.\-/#])(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w.]*\d)")


def _significant_digits(number: str) -> int:
    mantissa = re.split(r"[eE]", number)[0]
    if "." in mantissa:
        return len(mantissa.replace(".", "").lstrip("0"))
    return len(mantissa.lstrip("0").rstrip("0"))


def _unglued_numbers(md: str) -> list[str]:
    """Numbers with >= 3 significant digits in markdown prose (outside code, roles,
    directive options, links and years)."""
    text = re.sub(r"(`{3,}|:{3,})\{(literalinclude|code-cell|code)\}.*?\n\1", "", md, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)             # inline code and role targets
    text = re.sub(r"^:\w[\w-]*:.*$", "", text, flags=re.M)  # directive options
    text = re.sub(r"\]\([^)]*\)|https?://\S+", "", text)   # link targets, URLs
    text = re.sub(r"^\(.*\)=\s*$", "", text, flags=re.M)    # targets
    found = []
    for m in _NUMBER.finditer(text):
        num = m.group(1)
        if re.fullmatch(r"(19|20)\d\d", num) or num in ALLOWED_NUMBERS:
            continue
        if num.isdigit() and int(num) & (int(num) - 1) == 0:  # 128, 256, ...: problem sizes
            continue
        if _significant_digits(num) >= 3:
            found.append(num)
    return found


SHIPPED = ["book", "regref", "benchmarks", "tests", "README.md", "pyproject.toml", "Makefile",
           "_config.yml", "_toc.yml"]
INTERNAL_DOC = "DES" + "IGN"  # the contributors' design file, which readers do not have


def test_nothing_that_ships_cites_the_internal_design_document():
    hits = []
    for entry in SHIPPED:
        root = ROOT / entry
        files = [root] if root.is_file() else [
            f for f in root.rglob("*") if f.is_file() and f.suffix in
            {".py", ".md", ".ipynb", ".bib", ".cfg", ".yml", ".toml", ".txt", ".json"}
            and ".ipynb_checkpoints" not in f.parts and "__pycache__" not in f.parts]
        for f in files:
            text = f.read_text(errors="ignore")
            if re.search(rf"\b{INTERNAL_DOC}\b", text):
                hits.append(str(f.relative_to(ROOT)))
    assert not hits, f"state the convention for the reader instead of citing it: {hits}"


PARTS = ["Foundations", "Sparsity and structure", "Regularizing deep networks",
         "Regularization in optimization and inverse problems", "Appendices"]


def test_toc_parts_and_appendices():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    captions = [part["caption"] for part in toc["parts"]]
    assert captions == [c for c in PARTS if c in captions], f"parts out of order: {captions}"
    required = set(PARTS) - {"Regularizing deep networks"}
    if any(BOOK.glob("1[0-4]-*")) or any(BOOK.glob("0[7-9]-*")):
        required.add("Regularizing deep networks")
    assert required <= set(captions), f"missing parts: {sorted(required - set(captions))}"
    appendices = [c["file"] for c in toc["parts"][captions.index("Appendices")]["chapters"]]
    for name in ("benchmarks", "api", "notation", "bibliography"):
        assert f"book/appendices/{name}" in appendices, f"appendix {name} missing"
    if any((BOOK / "appendices").glob("papers.*")):
        assert "book/appendices/papers" in appendices, "appendix A (paper map) missing"


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
    ignored = [c for c in code if _output_unchecked(c)]
    assert len(ignored) <= MAX_IGNORED_OUTPUT_CELLS, (
        "too many cells whose output nbval does not compare (nbval-ignore-output / "
        "nbval-skip tags or # NBVAL_SKIP / # NBVAL_IGNORE_OUTPUT comments)")
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
        assert len(proofs) >= 2, "at least two complete proofs"
        missing = _theorems_without_proof(md)
        assert not missing, f"theorems not followed by their proof (or a citation): {missing}"
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

    def test_no_unglued_numbers_in_prose(self, path):
        found = _unglued_numbers(_markdown(_read(path)))
        assert not found, (f"numbers with 3+ significant digits typed in prose (glue them, or "
                           f"add a defining constant to ALLOWED_NUMBERS): {found}")

    def test_has_figures(self, path):
        nb = _read(path)
        pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if {"image/png", "application/papermill.record/image/png"}
                & set(o.get("data", {}))]  # shown, or glued for a captioned figure
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

    def test_literalincludes_public_functions(self, path):
        md = _markdown(_read(path))
        shown = re.findall(r"^:pyobject:\s*(\S+)", md, re.M)
        public = [name for name in shown if not name.split(".")[-1].startswith("_")]
        assert public, f"show the public functions the chapter introduces, not only {shown}"


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
    assert _unglued_numbers("the gap fell to 0.637 after 4040 steps") == ["0.637", "4040"]
    assert _unglued_numbers("in 2016, with n = 100 and tol 1e-8, `x = 0.123`") == []
    assert _theorems_without_proof("```{prf:theorem} T\n:label: thm-a\nbody\n```\n") == ["thm-a"]
    assert not _theorems_without_proof(
        "```{prf:theorem} T\n:label: thm-a\nb\n```\n```{prf:proof}\np\n```\n")
    assert not _theorems_without_proof("```{prf:theorem} T {cite:p}`x`\n:label: a\nb\n```\n")


def test_api_page_is_up_to_date():
    """The API appendix lists every public function with the section that derives it."""
    spec = importlib.util.spec_from_file_location("api_page", BOOK / "_tools" / "api_page.py")
    api_page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api_page)
    assert api_page.PAGE.read_text() == api_page.render(), (
        "book/appendices/api.md is stale: run python book/_tools/api_page.py")
