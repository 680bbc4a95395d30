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
