"""Run every benchmark suite and write its results.

``python -m benchmarks.run [--out benchmarks/results] [--quick] [--repeats N]`` writes, for
each suite, ``<name>.md`` (one line naming the machine, then a table; included verbatim in
the book's benchmarks appendix, so no ``#`` headings) and ``<name>.json`` (the same data).
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
              verbose: bool = False) -> dict:
    """Run one suite, write ``<name>.md`` and ``<name>.json`` under ``out``; return the data."""
    info = harness.machine_info()  # date and load average at the start
    rows = []
    for case in SUITES[name](quick=quick):
        t0 = time.perf_counter()
        rows += harness.run_case(case, repeats=repeats)
        if verbose:
            print(f"{case.name} {case.size}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    result = {"suite": name, "machine": info, "repeats": repeats, "quick": quick,
              "rows": [asdict(r) for r in rows]}
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


def run_all(out: Path = DEFAULT_OUT, quick: bool = False, repeats: int | None = None,
            verbose: bool = False) -> dict:
    """Run every suite; ``quick`` means tiny sizes and, unless given, 1 repeat (default 3)."""
    if repeats is None:
        repeats = 1 if quick else 3
    return {name: run_suite(name, Path(out), quick=quick, repeats=repeats, verbose=verbose)
            for name in SUITES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per callable")
    args = parser.parse_args(argv)
    results = run_all(args.out, quick=args.quick, repeats=args.repeats, verbose=True)
    for name in results:
        print((args.out / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
