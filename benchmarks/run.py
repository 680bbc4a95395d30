"""Run every benchmark suite and write its results.

``python -m benchmarks.run [--out benchmarks/results] [--quick] [--repeats N]
[--suite NAME ...] [--case TEXT] [--resume]`` writes, for each suite, ``<name>.md`` (one
line naming the machine, then a table; included verbatim in the book's benchmarks
appendix, so no ``#`` headings) and ``<name>.json`` (the same data). It prints each case
as it finishes, with the time so far and an estimate of the time left in the suite.
``--suite`` runs only the named suites; ``--case`` runs only the cases whose name contains
the text and writes nothing (a partial table must not replace a full one); ``--resume``
skips the suites whose results were already measured at the same regref revision.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import graphical_lasso, harness, lasso_path, ridge_path, sinkhorn, soft_impute, tv_denoise

_MODULES = (ridge_path, lasso_path, soft_impute, graphical_lasso, sinkhorn, tv_denoise)
SUITES = {m.NAME: m.cases for m in _MODULES}
SUITE_NOTES = {m.NAME: m.NOTE for m in _MODULES if getattr(m, "NOTE", "")}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

NOTE = ("ratio = peer time / regref time (above 1: regref is faster). max rel. diff: "
        "largest difference from the peer's answer, relative to the largest entry of the "
        "same row (same strength).")


def run_suite(name: str, out: Path, quick: bool = False, repeats: int = 3,
              verbose: bool = False, case_filter: str | None = None) -> dict:
    """Run one suite, write ``<name>.md`` and ``<name>.json`` under ``out``; return the data.

    With ``case_filter``, only the cases whose name contains it run, and nothing is written.
    """
    info = harness.machine_info()  # date and load average at the start
    cases = [c for c in SUITES[name](quick=quick) if not case_filter or case_filter in c.name]
    rows, start = [], time.perf_counter()
    for k, case in enumerate(cases, start=1):
        t0 = time.perf_counter()
        rows += harness.run_case(case, repeats=repeats)
        if verbose:
            done = time.perf_counter() - start
            eta = done / k * (len(cases) - k)  # cases of a suite grow: a lower estimate
            print(f"[{name} {k}/{len(cases)}] {case.name} {case.size}: "
                  f"{time.perf_counter() - t0:.1f} s; {done:.0f} s so far, "
                  f"at least {eta:.0f} s left", file=sys.stderr)
    result = {"suite": name, "machine": info, "repeats": repeats, "quick": quick,
              "rows": [asdict(r) for r in rows]}
    if case_filter:
        return result
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(render(result))
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def render(result: dict) -> str:
    """The markdown table of a suite's result (as stored in ``<name>.json``)."""
    rows = [harness.Row(**r) for r in result["rows"]]
    note = " ".join(filter(None, [NOTE, SUITE_NOTES.get(result["suite"], "")]))
    return (harness.machine_line(result["machine"], result["repeats"]) + "\n\n"
            + harness.markdown_table(rows) + "\n" + note + "\n")


def finished(name: str, out: Path, quick: bool = False) -> bool:
    """Whether ``out`` holds results of suite ``name`` measured at the current revision."""
    path = Path(out) / f"{name}.json"
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    revision = harness.regref_revision()
    return (data.get("quick") == quick and revision is not None
            and not revision.endswith("+dirty")
            and data["machine"].get("regref_revision") == revision)


def run_all(out: Path = DEFAULT_OUT, quick: bool = False, repeats: int | None = None,
            verbose: bool = False, suites=None, case_filter: str | None = None,
            resume: bool = False) -> dict:
    """Run the suites (all by default); ``quick`` means tiny sizes and, unless given,
    1 repeat (default 3); ``resume`` skips suites already measured at this revision."""
    if repeats is None:
        repeats = 1 if quick else 3
    results = {}
    for name in suites or SUITES:
        if name not in SUITES:
            raise ValueError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
        if resume and finished(name, out, quick):
            if verbose:
                print(f"[{name}] already measured at this revision: skipped", file=sys.stderr)
            continue
        results[name] = run_suite(name, Path(out), quick=quick, repeats=repeats,
                                  verbose=verbose, case_filter=case_filter)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per callable")
    parser.add_argument("--suite", action="append", choices=sorted(SUITES),
                        help="run only this suite (repeatable)")
    parser.add_argument("--case", default=None,
                        help="run only cases whose name contains this text (writes nothing)")
    parser.add_argument("--resume", action="store_true",
                        help="skip suites already measured at this regref revision")
    args = parser.parse_args(argv)
    results = run_all(args.out, quick=args.quick, repeats=args.repeats, verbose=True,
                      suites=args.suite, case_filter=args.case, resume=args.resume)
    for result in results.values():
        print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
