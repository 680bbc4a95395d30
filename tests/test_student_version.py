"""Student versions keep every exercise and drop every solution (book/_tools/student_version.py)."""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]-*/index.ipynb"))
spec = importlib.util.spec_from_file_location(
    "student_version", ROOT / "book" / "_tools" / "student_version.py")
student_version = importlib.util.module_from_spec(spec)
spec.loader.exec_module(student_version)


def _text(nb):
    return "\n".join(c.source for c in nb.cells)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_student_version_drops_solutions_keeps_exercises(path):
    nb = nbformat.read(path, as_version=4)
    student = student_version.strip_solutions(nb)
    text = _text(student)
    assert "{solution-start}" not in text and "{solution-end}" not in text
    exercises = re.findall(r"\{exercise\}", _text(nb))
    assert exercises and len(re.findall(r"\{exercise\}", text)) == len(exercises)
    assert len(student.cells) < len(nb.cells)
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    nbformat.validate(student)


def _solution_only_lines(nb):
    """Code lines (stripped, longer than 12 characters) that appear between solution
    markers and in no code cell outside them."""
    inside, solution, rest = False, set(), set()
    for cell in nb.cells:
        src = cell.source if cell.cell_type == "markdown" else ""
        inside = inside or student_version.START in src
        if cell.cell_type == "code":
            lines = {ln.strip() for ln in cell.source.splitlines() if len(ln.strip()) > 12}
            (solution if inside else rest).update(lines)
        if student_version.END in src:
            inside = False
    return solution - rest


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_student_version_leaks_no_solution_code(path):
    nb = nbformat.read(path, as_version=4)
    secret = _solution_only_lines(nb)
    assert secret, "a chapter with executed solutions has solution-only code lines"
    student = {ln.strip() for ln in _text(student_version.strip_solutions(nb)).splitlines()}
    leaked = sorted(secret & student)
    assert not leaked, leaked[:5]


def test_unbalanced_markers_are_rejected():
    md = nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[md("```{solution-start} ex-1\n```")])
    with pytest.raises(ValueError, match="without"):
        student_version.strip_solutions(nb)
    nb = nbformat.v4.new_notebook(cells=[md("```{solution-end}\n```")])
    with pytest.raises(ValueError, match="without"):
        student_version.strip_solutions(nb)


def test_cli_writes_book_layout(tmp_path):
    student_version.main(["--out", str(tmp_path)] + [str(p) for p in CHAPTERS])
    for path in CHAPTERS:
        assert (tmp_path / path.parent.name / "index.ipynb").exists()
    assert (tmp_path / "regref.mplstyle").exists()
