"""Run every benchmark suite and write its results.

``python -m benchmarks.run [--out benchmarks/results] [--quick] [--repeats N]
[--suite NAME ...] [--case TEXT] [--resume] [--render-only]`` writes, for each suite,
``<name>.json`` (the data and the machine record), and rendered from it ``<name>.md`` (a
paragraph naming the machine, then a table; included verbatim in the book's benchmarks
appendix, so no ``#`` headings) and ``<name>.svg`` (the figure, :mod:`benchmarks.figures`).
It shows a progress bar per suite with an estimate of the time left (tqdm; without tqdm, a
line per case on stderr). ``--suite`` runs only the named suites; ``--case`` runs only the
cases whose name contains the text and writes nothing (a partial table must not replace a
full one); ``--resume`` skips the suites already measured at the same regref revision, and
in a suite that was interrupted, the cases already measured (kept in ``.partial/``);
``--render-only`` measures nothing and re-renders the tables and figures from the JSON
(older JSON is first migrated, :func:`migrate`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import graphical_lasso, harness, lasso_path, ridge_path, sinkhorn, soft_impute, tv_denoise
from .figures import svg as figure_svg

_MODULES = (ridge_path, lasso_path, soft_impute, graphical_lasso, sinkhorn, tv_denoise)
SUITES = {m.NAME: m.cases for m in _MODULES}
SUITE_NOTES = {m.NAME: m.NOTE for m in _MODULES if getattr(m, "NOTE", "")}
FORMAT = 2  # 2: rows record runs, variant devices and peer libraries (1: older results)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

NOTE = ("ratio = peer time / regref time (above 1: regref is faster). max rel. diff: "
        "largest difference from the peer's answer, relative to the largest entry of the "
        "same row (same strength).")


def _key(case_name: str, size: dict) -> str:
    return case_name + " " + json.dumps(size, sort_keys=True)


def _partial_path(out: Path, name: str) -> Path:
    return Path(out) / ".partial" / f"{name}.json"


def _load_partial(out: Path, name: str, quick: bool, repeats: int) -> dict | None:
    """The rows of an interrupted run of suite ``name`` at this (clean) revision, if any."""
    path = _partial_path(out, name)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    revision = harness.regref_revision()
    if (revision is None or revision.endswith("+dirty") or data.get("quick") != quick
            or data.get("repeats") != repeats
            or data["machine"].get("regref_revision") != revision):
        return None
    return data


def _progress(name: str, cases: list, verbose: bool):
    """A tqdm bar over the cases (ETA per case), or None: then plain stderr lines."""
    if not verbose:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=len(cases), desc=name, unit="case", file=sys.stderr, dynamic_ncols=True,
                # the ETA assumes the cases left take as long as the ones done; they are
                # larger, so it is a lower bound
                bar_format="{desc}: {n}/{total} cases |{bar}| {elapsed} so far, "
                           "at least {remaining} left{postfix}")


def run_suite(name: str, out: Path, quick: bool = False, repeats: int = 3,
              verbose: bool = False, case_filter: str | None = None,
              resume: bool = False) -> dict:
    """Run one suite, write ``<name>.md``, ``<name>.svg`` and ``<name>.json`` under ``out``;
    return the data.

    With ``case_filter``, only the cases whose name contains it run, and nothing is written.
    Otherwise the rows are saved after every case in ``out/.partial/<name>.json``; with
    ``resume``, cases found there (same clean revision, same settings) are not run again.
    """
    cases = [c for c in SUITES[name](quick=quick) if not case_filter or case_filter in c.name]
    partial = None if case_filter or not resume else _load_partial(out, name, quick, repeats)
    info = partial["machine"] if partial else harness.machine_info()  # date at the start
    done_rows: dict[str, list[dict]] = partial["cases"] if partial else {}
    bar = _progress(name, cases, verbose)
    rows: list[dict] = []
    start = time.perf_counter()
    for k, case in enumerate(cases, start=1):
        key = _key(case.name, case.size)
        t0 = time.perf_counter()
        if bar is not None:
            bar.set_postfix_str(f"now {case.name} {harness.size_text(case.size)}")
        if key in done_rows:
            case_rows = done_rows[key]
            what = "resumed from the partial results"
        else:
            case_rows = [asdict(r) for r in harness.run_case(case, repeats=repeats)]
            done_rows[key] = case_rows
            what = f"{time.perf_counter() - t0:.1f} s"
            if not case_filter:
                path = _partial_path(out, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                (path.parent / ".gitignore").write_text("*\n")
                path.write_text(json.dumps({"machine": info, "quick": quick,
                                            "repeats": repeats, "cases": done_rows}) + "\n")
        rows += case_rows
        if bar is not None:
            bar.update(1)
        elif verbose:
            elapsed = time.perf_counter() - start
            eta = elapsed / k * (len(cases) - k)  # cases of a suite grow: a lower estimate
            print(f"[{name} {k}/{len(cases)}] {case.name} {case.size}: {what}; "
                  f"{elapsed:.0f} s so far, at least {eta:.0f} s left", file=sys.stderr)
    if bar is not None:
        bar.close()
    harness.record_versions(info, {lib for r in rows for lib in r["peer_libs"]})
    result = {"suite": name, "format": FORMAT, "machine": info, "repeats": repeats,
              "quick": quick, "rows": rows}
    if case_filter:
        return result
    write(result, out)
    _partial_path(out, name).unlink(missing_ok=True)
    return result


def write(result: dict, out: Path) -> None:
    """Write ``<suite>.json``, and the table and figure rendered from it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = result["suite"]
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (out / f"{name}.md").write_text(render(result))
    (out / f"{name}.svg").write_bytes(figure_svg(result))


def render(result: dict) -> str:
    """The markdown table of a suite's result (as stored in ``<name>.json``)."""
    rows = [harness.Row(**r) for r in result["rows"]]
    note = " ".join(filter(None, [NOTE, SUITE_NOTES.get(result["suite"], ""),
                                  result.get("migrated", "")]))
    return (harness.machine_line(result["machine"], result["repeats"], rows) + "\n\n"
            + harness.markdown_table(rows) + "\n" + note + "\n")


def migrate(result: dict) -> dict:
    """An older result (format 1) with the fields format 2 adds, taken from what it holds:
    each row's count of timed runs from its case's repeat cap (cases matched by name and
    size in the current suite), the device of each variant from its name. Peer versions
    and the revision, never recorded, stay missing (the table says so)."""
    if result.get("format", 1) >= FORMAT:
        return result
    caps = {_key(c.name, c.size): c.repeats for c in SUITES[result["suite"]](result["quick"])}
    rows = []
    for r in result["rows"]:
        key = _key(r["case"], r["size"])
        if key not in caps:
            raise ValueError(f"{result['suite']}: no case {key} to migrate from")
        cap = caps[key]
        runs = 1 if cap == 0 else min(result["repeats"], cap) if cap else result["repeats"]
        rows.append({**r, "runs": runs, "warmup_timed": cap == 0,
                     "variants_device": {v: "cuda" if v.startswith("cuda") else "cpu"
                                         for v in r["variants_s"]}})
    return {**result, "format": FORMAT, "rows": rows,
            "migrated": ("Measured before runs per row were recorded: the runs column "
                         "comes from the suite's repeat caps.")}


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
                                  verbose=verbose, case_filter=case_filter, resume=resume)
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
                        help="skip suites (and cases of an interrupted suite) already "
                             "measured at this regref revision")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: re-render tables and figures from the JSON")
    args = parser.parse_args(argv)
    if args.render_only:
        for name in args.suite or SUITES:
            path = args.out / f"{name}.json"
            if path.exists():
                write(migrate(json.loads(path.read_text())), args.out)
                print(f"rendered {name}.md and {name}.svg from {path}", file=sys.stderr)
        return 0
    results = run_all(args.out, quick=args.quick, repeats=args.repeats, verbose=True,
                      suites=args.suite, case_filter=args.case, resume=args.resume)
    for result in results.values():
        print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
