"""Build and grade the course assignments (book/assignments/, otter-grader 7).

Each assignment is a master notebook in otter-assign's format,
``book/assignments/<name>/<name>.ipynb``, with a ``mistakes.json`` beside it: one plausible
mistake per question, as a find/replace on that question's solution code.

    python book/_tools/assignments.py assign [--out DIR]   # otter assign, every assignment
    python book/_tools/assignments.py grade  [--out DIR]   # assign, then grade twice each

``grade`` runs ``otter run`` (locally, no Docker) on the reference solution, which must get
every point, and on a wrong solution with every mistake of ``mistakes.json`` applied,
which must get zero on every question (each question is all or nothing and independent of
the others, so each loses exactly its own points). It also checks that nothing of the
solutions or of the hidden tests is left in the student notebooks. Exit status 1 on any
failure.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "book" / "assignments"
OTTER = [sys.executable, "-m", "otter"]


def masters() -> list[Path]:
    """The master notebooks, one per assignment folder."""
    return sorted(p / f"{p.name}.ipynb" for p in SOURCE.iterdir()
                  if p.is_dir() and (p / f"{p.name}.ipynb").exists())


def assign(master: Path, out: Path) -> Path:
    """``otter assign`` one master into ``out/<name>`` (student/ and autograder/)."""
    dest = out / master.parent.name
    shutil.rmtree(dest, ignore_errors=True)
    done = subprocess.run([*OTTER, "assign", str(master), str(dest)], cwd=master.parent,
                          capture_output=True, text=True)
    if done.returncode:  # otter's own test run of the solutions failed: show why
        raise SystemExit(f"otter assign {master.name} failed:\n{done.stdout[-4000:]}"
                         f"\n{done.stderr[-2000:]}")
    return dest


def run_otter(dest: Path, notebook: Path) -> dict[str, tuple[float, float]]:
    """Grade ``notebook`` with the assignment's autograder; ``{question: (score, max)}``."""
    (zipfile,) = (dest / "autograder").glob("*-autograder_*.zip")
    results = notebook.parent / f"{notebook.stem}-results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    done = subprocess.run([*OTTER, "run", "-a", str(zipfile), "-o", str(results),
                           str(notebook)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"otter run {notebook} failed:\n{done.stderr[-4000:]}")
    tests = json.loads((results / "results.json").read_text())["tests"]
    return {t["name"]: (t["score"], t["max_score"]) for t in tests if "max_score" in t}


def wrong_solution(dest: Path, master: Path) -> Path:
    """The reference solution with every mistake of mistakes.json applied."""
    name = master.parent.name
    nb = nbformat.read(dest / "autograder" / f"{name}.ipynb", as_version=4)
    checks = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and re.fullmatch(r'grader\.check\("\w+"\)', c.source.strip())]
    for m in json.loads((master.parent / "mistakes.json").read_text()):
        # the question's own cells: after the previous question's check cell, up to its own
        end = next(i for i in checks if f'"{m["question"]}"' in nb.cells[i].source)
        begin = max([i for i in checks if i < end], default=-1) + 1
        hits = [c for c in nb.cells[begin:end] if c.cell_type == "code" and m["find"] in c.source]
        if len(hits) != 1:
            raise SystemExit(f"{name} {m['question']}: the mistake's text is found in "
                             f"{len(hits)} cells, expected 1")
        hits[0].source = hits[0].source.replace(m["find"], m["replace"])
    path = dest / "wrong" / f"{name}.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def _hidden_and_solution_text(master: Path) -> list[str]:
    """Lines that must not appear in a student notebook: the code between the solution
    markers and every line of a hidden test."""
    nb = nbformat.read(master, as_version=4)
    secret, in_solution = [], False
    for cell in nb.cells:
        if cell.cell_type == "raw":
            head = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            in_solution = {"# BEGIN SOLUTION": True, "# END SOLUTION": False}.get(
                head, in_solution)
            continue
        if cell.cell_type != "code":
            continue
        lines = [ln.strip() for ln in cell.source.splitlines()]
        if lines and re.match(r"#\s*hidden\b", lines[0], re.IGNORECASE):
            secret += lines[1:]
        elif in_solution:
            inside = False
            for ln in lines:
                if ln.startswith("# BEGIN SOLUTION"):
                    inside = True
                elif ln.startswith("# END SOLUTION"):
                    inside = False
                elif inside:
                    secret.append(ln)
    return [s for s in secret if len(s) > 12 and not s.startswith("#")]


def leaks(dest: Path, master: Path) -> list[str]:
    """Solution code, hidden-test lines or solution markers found in the student files."""
    found = []
    secret = _hidden_and_solution_text(master)
    for f in (dest / "student").rglob("*"):
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if "BEGIN SOLUTION" in text or re.search(r"#\s*HIDDEN", text):
            found.append(f"{f.name}: solution or hidden marker")
        found += [f"{f.name}: {s!r}" for s in secret if s in text]
    return found


def grade(master: Path, out: Path) -> list[str]:
    """Assign, grade the reference and the wrong solution, scan for leaks; the failures."""
    dest = assign(master, out)
    mistakes = json.loads((master.parent / "mistakes.json").read_text())
    failures = [f"{master.parent.name}: leak {x}" for x in leaks(dest, master)]
    reference = run_otter(dest, dest / "autograder" / f"{master.parent.name}.ipynb")
    wrong = run_otter(dest, wrong_solution(dest, master))
    report = {"reference": reference, "wrong": wrong,
              "questions": {m["question"]: m["points"] for m in mistakes}}
    (dest / "grades.json").write_text(json.dumps(report, indent=1) + "\n")
    for m in mistakes:
        q, points = m["question"], float(m["points"])
        if reference.get(q) != (points, points):
            failures.append(f"{master.parent.name} {q}: reference got {reference.get(q)}, "
                            f"expected full marks {points}")
        if wrong.get(q) != (0.0, points):
            failures.append(f"{master.parent.name} {q}: the wrong solution got {wrong.get(q)}, "
                            f"expected 0 of {points} (mistake: {m['replace']!r})")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["assign", "grade"])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "assignments")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "assign":
        for m in masters():
            print("assigned", assign(m, args.out.resolve()).relative_to(ROOT))
        return 0
    with ThreadPoolExecutor(2) as pool:  # the otter runs are mostly kernel start-up
        results = list(pool.map(lambda m: (m, grade(m, args.out.resolve())), masters()))
    failures = [f for _, fs in results for f in fs]
    for m, _ in results:
        report = json.loads((args.out / m.parent.name / "grades.json").read_text())
        total = sum(report["questions"].values())
        ref = sum(s for s, _ in report["reference"].values())
        wrong = sum(s for s, _ in report["wrong"].values())
        print(f"{m.parent.name}: reference {ref:g}/{total}, wrong solution {wrong:g}/{total}")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
