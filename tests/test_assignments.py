"""The course assignments (book/assignments/): their structure, their mistakes files and
the leak scanner. Grading itself (otter assign + otter run, about a minute) is
``make grade``, part of ``make test``."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "assignments", ROOT / "book" / "_tools" / "assignments.py")
assignments = importlib.util.module_from_spec(spec)
spec.loader.exec_module(assignments)
MASTERS = assignments.masters()


def _questions(master: Path) -> list[dict]:
    """Each question's config, solution code and test cells, from the master."""
    questions, current, block = [], None, None
    for cell in nbformat.read(master, as_version=4).cells:
        head = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        if cell.cell_type == "raw":
            if head == "# BEGIN QUESTION":
                current = dict(config=dict(re.findall(r"^(\w+): (.+)$", cell.source, re.M)),
                               solution=[], tests=[])
                questions.append(current)
            block = {"# BEGIN SOLUTION": "solution", "# BEGIN TESTS": "tests"}.get(
                head, None if head.startswith("# END") else block)
        elif cell.cell_type == "code" and current is not None and block:
            current[block].append(cell.source)
    return questions


def test_four_assignments_one_per_part():
    assert [m.parent.name for m in MASTERS] == [
        "a1-foundations", "a2-sparsity", "a3-deep-networks", "a4-inverse-problems"]


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.parent.name)
def test_questions_have_points_solutions_public_and_hidden_tests(master):
    questions = _questions(master)
    assert 4 <= len(questions) <= 6
    for q in questions:
        cfg = q["config"]
        assert int(cfg["points"]) >= 1 and cfg["all_or_nothing"] == "true", cfg
        assert q["solution"] and "# BEGIN SOLUTION" in q["solution"][0], cfg["name"]
        hidden = [t for t in q["tests"] if re.match(r"#\s*HIDDEN", t)]
        assert hidden and len(hidden) < len(q["tests"]), f"{cfg['name']}: public and hidden"


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.parent.name)
def test_one_mistake_per_question_in_its_own_solution(master):
    questions = {q["config"]["name"]: q for q in _questions(master)}
    mistakes = json.loads((master.parent / "mistakes.json").read_text())
    assert [m["question"] for m in mistakes] == list(questions)
    for m in mistakes:
        q = questions[m["question"]]
        assert m["points"] == int(q["config"]["points"])
        assert "\n".join(q["solution"]).count(m["find"]) == 1, m["question"]
        assert m["replace"] != m["find"] and m["why"], m["question"]


def test_leak_scanner_finds_a_planted_solution_and_hidden_test(tmp_path):
    master = MASTERS[0]
    secret = assignments._hidden_and_solution_text(master)
    assert len(secret) >= 10
    student = tmp_path / master.parent.name / "student"
    student.mkdir(parents=True)
    (student / "clean.ipynb").write_text("def f(x):\n    ...\n")
    assert assignments.leaks(tmp_path / master.parent.name, master) == []
    (student / "leaky.ipynb").write_text(f"print(1)\n{secret[0]}\n")
    assert assignments.leaks(tmp_path / master.parent.name, master)
    (student / "leaky.ipynb").write_text("# HIDDEN\nassert True\n")
    assert assignments.leaks(tmp_path / master.parent.name, master)


def test_instructor_page_lists_every_assignment_with_its_points():
    page = (ROOT / "book" / "appendices" / "instructors.md").read_text()
    for master in MASTERS:
        total = sum(int(q["config"]["points"]) for q in _questions(master))
        row = re.search(rf"^\|\s*`{master.parent.name}`.*$", page, re.M)
        assert row, f"{master.parent.name} missing from the instructor page"
        assert re.search(rf"\|\s*{total}\s*\|", row.group(0)), (master.parent.name, total)


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.parent.name)
def test_master_is_executed_top_to_bottom(master):
    """The master runs as committed (solutions, then public and hidden tests): every code
    cell executed, in order, with no error output."""
    cells = [c for c in nbformat.read(master, as_version=4).cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
