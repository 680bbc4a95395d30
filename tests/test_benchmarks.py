"""The benchmark harness runs end to end in --quick mode and writes a sane table."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from benchmarks import harness, run  # noqa: E402
from benchmarks.figures import svg as figure_svg  # noqa: E402


def test_quick_run_writes_tables(tmp_path):
    results = run.run_all(tmp_path, quick=True)
    for name in run.SUITES:
        md = (tmp_path / f"{name}.md").read_text()
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data == json.loads(json.dumps(results[name]))
        lines = md.splitlines()
        assert lines[0].startswith("Measured ") and "torch" in lines[0]
        assert not any(line.startswith("#") for line in lines)  # included under a heading
        table = [line for line in lines if line.startswith("|")]
        assert len(table) == 2 + len(data["rows"]) and data["rows"]
        for row in data["rows"]:
            for key in ("regref_s", "peer_s", "ratio"):
                assert math.isfinite(row[key]) and row[key] > 0
            assert 0 <= row["max_rel_diff"] <= row["tol"] <= 1e-5  # the answers matched
            assert all(math.isfinite(t) and t > 0 for t in row["variants_s"].values())
            assert row["runs"] == 1 and row["peer_libs"]  # quick: 1 repeat
        assert (tmp_path / f"{name}.svg").read_bytes() == figure_svg(data)
        missing = harness.missing_record(data["machine"], [harness.Row(**r) for r in data["rows"]])
        assert missing == ([] if harness.regref_revision() else ["regref revision"])


def test_max_rel_diff_is_per_row():
    b = np.array([[1.0, 2.0], [1e-6, 0.0]])
    a = b + np.array([[0.0, 2e-8], [1e-12, 0.0]])
    assert harness.max_rel_diff(a, b) == pytest.approx(1e-6)
    assert harness.max_rel_diff((torch.tensor([3.0]), a), (np.array([3.0]), a)) == 0.0


def test_mismatch_raises():
    case = harness.Case("toy", {"n": 2}, lambda: np.ones(2), lambda d: d,
                        {"off": lambda d: d * (1 + 1e-6)})
    with pytest.raises(harness.MismatchError, match="off"):
        harness.run_case(case, repeats=1)


def test_variant_is_checked_against_regref():
    from functools import partial

    from benchmarks import ridge_path as rp

    fp32 = harness.Variant("cpu fp32", partial(rp.on_device, device="cpu", dtype=torch.float32),
                           rp.regref_loo, tol=1e-3)
    case = harness.Case("ridge_loo", {"n": 40, "p": 10}, partial(rp.make_data, 40, 10),
                        rp.regref_loo, {"`RidgeCV`": rp.sklearn_loo}, variants=[fp32])
    (row,) = harness.run_case(case, repeats=1)
    assert 0 < row.variants_rel_diff["cpu fp32"] <= 1e-3
    assert row.variants_s["cpu fp32"] > 0


def test_table_with_a_variant_on_some_rows_only():
    rows = [harness.Row("toy", {"n": n}, "peer", 1.0, 2.0, 2.0, 0.0, 1e-8,
                        variants_s={"gpu": 0.5} if n == 1 else {}) for n in (1, 2)]
    lines = harness.markdown_table(rows).splitlines()
    assert "regref gpu" in lines[0] and lines[2].endswith("| 500\u00a0ms |")
    assert lines[3].endswith("| — |")


def test_a_row_timed_once_says_so_in_the_row():
    """Timed runs per row are in the row (the runs column), and an older row whose count
    was never recorded shows '?' rather than the suite's default."""
    rows = [harness.Row("toy", {"n": 1}, "peer", 1.0, 2.0, 2.0, 0.0, 1e-8, runs=runs,
                        warmup_timed=warm) for runs, warm in ((3, False), (1, True), (None, None))]
    lines = harness.markdown_table(rows).splitlines()
    runs_col = [c.strip() for c in lines[0].split("|")].index("runs")
    assert [[c.strip() for c in line.split("|")][runs_col] for line in lines[2:]] == [
        "3", "1†", "?"]
    slow = harness.Case("toy", {"n": 2}, lambda: np.ones(2), lambda d: d, {"same": lambda d: d},
                        repeats=0)
    (row,) = harness.run_case(slow, repeats=5)
    assert row.runs == 1 and row.warmup_timed
    capped = harness.Case("toy", {"n": 2}, lambda: np.ones(2), lambda d: d,
                          {"same": lambda d: d}, repeats=2)
    (row,) = harness.run_case(capped, repeats=5)
    assert row.runs == 2 and not row.warmup_timed


def test_peer_libraries_are_found_from_the_peer_code():
    from functools import partial

    from benchmarks import sinkhorn
    from benchmarks import tv_denoise as tv

    assert "POT" in harness.libraries_of(partial(sinkhorn.pot, method="sinkhorn_knopp"))
    assert "scikit-image" in harness.libraries_of(tv.cases(quick=True)[0].peers[
        next(iter(tv.cases(quick=True)[0].peers))])
    assert harness.libraries_of(lambda d: d) == []


def test_machine_line_names_what_an_old_record_lacks():
    info = {"cpu": "X", "usable_cores": 2, "torch_threads": 2, "gpu": None, "torch": "2",
            "numpy": "1", "scikit_learn": "1.9", "date": "2026-01-01T00:00:00"}
    row = harness.Row("toy", {"n": 1}, "peer", 1.0, 2.0, 2.0, 0.0, 1e-8, runs=3,
                      peer_libs=["POT"])
    line = harness.machine_line(info, 3, [row])
    assert "not recorded: regref revision, peer versions" in line
    full = {**info, "regref_revision": "abc", "peers": {"POT": "0.9"}}
    assert harness.missing_record(full, [row]) == []
    line = harness.machine_line(full, 3, [row])
    assert "POT 0.9" in line and "revision abc" in line and "not recorded" not in line
    assert harness.missing_record({**full, "peers": {}}, [row]) == ["POT version"]
    other = {**full, "peers": {}}
    harness.record_versions(other, ["pytest", "torch"])  # a peer outside harness.PEERS
    assert other["peers"] == {"pytest": pytest.__version__}


@pytest.mark.parametrize("name", sorted(run.SUITES))
def test_stored_results_are_rendered_from_their_json(name):
    """The tables and figures the appendix shows are exactly what their JSON renders to,
    and every ratio is peer time over regref time (nobody edited a number by hand)."""
    md = (run.DEFAULT_OUT / f"{name}.md").read_text()
    data = json.loads((run.DEFAULT_OUT / f"{name}.json").read_text())
    assert md == run.render(data), f"benchmarks/results/{name}.md is not rendered from its JSON"
    svg = (run.DEFAULT_OUT / f"{name}.svg").read_bytes()
    assert svg == figure_svg(data), f"benchmarks/results/{name}.svg is not rendered from its JSON"
    assert data["rows"]
    for row in data["rows"]:
        assert row["ratio"] == pytest.approx(row["peer_s"] / row["regref_s"], rel=1e-12)
        assert row["runs"] in range(1, data["repeats"] + 1)  # the row says how it was timed


@pytest.mark.parametrize("name", sorted(run.SUITES))
def test_stored_results_record_the_machine(name):
    """The JSON records what the appendix's protocol promises: CPU model, cores, threads,
    versions of torch, numpy and every peer the rows call, regref's revision. Results
    measured before the record was complete (format 1, migrated) must say in their table
    what they lack; a result measured since must lack nothing."""
    data = json.loads((run.DEFAULT_OUT / f"{name}.json").read_text())
    info, rows = data["machine"], [harness.Row(**r) for r in data["rows"]]
    for key in ("cpu", "cores", "usable_cores", "torch_threads", "torch", "numpy", "date"):
        assert info[key], key
    missing = harness.missing_record(info, rows)
    if "migrated" in data:
        line = (run.DEFAULT_OUT / f"{name}.md").read_text().splitlines()[0]
        assert not missing or f"not recorded: {', '.join(missing)}" in line
    else:
        assert missing == [], f"{name}.json lacks {missing}: re-measure it"
        assert all(row.peer_libs for row in rows)


# The appendix's text is 688 px wide in a 1280 px window (sphinx-book-theme with the page's
# table style); measured in Chromium, a table's narrowest layout takes at most 11 px per
# character of the longest unbreakable word of each column (cells break at spaces only:
# sizes, times and differences use no-break characters inside).
PAGE_CHARS = 688 // 11


@pytest.mark.parametrize("name", sorted(run.SUITES))
def test_stored_tables_fit_the_page_width(name):
    """No results table scrolls sideways on the appendix page at the default width."""
    lines = [line for line in (run.DEFAULT_OUT / f"{name}.md").read_text().splitlines()
             if line.startswith("|") and not line.startswith("|--")]
    cells = [[c.strip().replace("`", "") for c in line.strip("|").split("|")] for line in lines]
    widest = [max(len(word) for cell in col for word in cell.split(" "))
              for col in zip(*cells, strict=True)]
    assert sum(widest) <= PAGE_CHARS, (
        f"{name}.md: the longest words of its columns ({widest}) need {sum(widest)} "
        f"characters > {PAGE_CHARS}: shorten peer labels or size keys")


def test_figure_is_deterministic_and_shows_gpu_variants():
    data = json.loads((run.DEFAULT_OUT / "tv_denoise.json").read_text())
    assert figure_svg(data) == figure_svg(data)
    gpu = {**data, "rows": [{**r, "variants_s": {"cuda fp32": r["regref_s"] / 10},
                             "variants_device": {"cuda fp32": "cuda"}} for r in data["rows"]]}
    assert figure_svg(gpu) != figure_svg(data)
    from benchmarks.figures import figure

    (ax,) = figure(gpu).axes
    xs = [float(x) for line in ax.lines for x in line.get_xdata()]
    for r in data["rows"]:  # CPU ratio and GPU ratio (same peer, regref on the GPU)
        assert r["ratio"] in xs and pytest.approx(r["peer_s"] / (r["regref_s"] / 10)) in xs
    assert ax.get_xscale() == "log" and 1.0 in xs  # the 1x line
    assert any("GPU" in t.get_text() for t in figure(gpu).legends[0].get_texts())


def test_one_suite_one_case_and_resume(tmp_path, capsys):
    one = run.run_all(tmp_path, quick=True, suites=["ridge_path"])
    assert list(one) == ["ridge_path"] and (tmp_path / "ridge_path.json").exists()
    assert not (tmp_path / "lasso_path.json").exists()
    revision = harness.regref_revision()
    again = run.run_all(tmp_path, quick=True, suites=["ridge_path"], resume=True)
    if revision is not None and not revision.endswith("+dirty"):
        assert again == {}  # measured at this revision: skipped
    else:
        assert list(again) == ["ridge_path"]  # local changes: nothing counts as finished
    (tmp_path / "ridge_path.json").unlink()
    name = run.SUITES["ridge_path"](quick=True)[0].name
    partial = run.run_all(tmp_path, quick=True, suites=["ridge_path"], case_filter=name)
    assert partial["ridge_path"]["rows"] and not (tmp_path / "ridge_path.json").exists()
    with pytest.raises(ValueError, match="unknown suite"):
        run.run_all(tmp_path, quick=True, suites=["nope"])


def test_an_interrupted_suite_resumes_from_its_finished_cases(tmp_path, monkeypatch):
    """Rows are kept after every case; a resumed run measures only the cases left."""
    cases = [harness.Case(f"toy{k}", {"n": k}, lambda: np.ones(2), lambda d: d,
                          {"same": lambda d: d}) for k in range(3)]
    monkeypatch.setitem(run.SUITES, "toy", lambda quick=False: cases)
    monkeypatch.setattr(harness, "regref_revision", lambda: "abc123")
    calls, interrupt = [], [True]
    real = harness.run_case

    def flaky(case, repeats=5):
        calls.append(case.name)
        if case.name == "toy2" and interrupt:
            interrupt.pop()
            raise RuntimeError("interrupted")
        return real(case, repeats)

    monkeypatch.setattr(harness, "run_case", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        run.run_all(tmp_path, quick=True, suites=["toy"])
    assert not (tmp_path / "toy.json").exists() and calls == ["toy0", "toy1", "toy2"]
    result = run.run_all(tmp_path, quick=True, suites=["toy"], resume=True)["toy"]
    assert calls == ["toy0", "toy1", "toy2", "toy2"]  # only the unfinished case again
    assert [r["case"] for r in result["rows"]] == ["toy0", "toy1", "toy2"]
    assert json.loads((tmp_path / "toy.json").read_text())["rows"] == result["rows"]
    assert not (tmp_path / ".partial" / "toy.json").exists()
    calls.clear()
    assert run.run_all(tmp_path, quick=True, suites=["toy"], resume=True) == {}
    assert calls == []  # a finished suite is skipped as a whole
    run.run_all(tmp_path, quick=True, suites=["toy"])
    assert calls == ["toy0", "toy1", "toy2"]  # without --resume everything runs again


def test_migration_takes_runs_from_the_cases():
    data = json.loads((run.DEFAULT_OUT / "tv_denoise.json").read_text())
    old = {k: v for k, v in data.items() if k not in ("format", "migrated")}
    old["rows"] = [{k: v for k, v in r.items() if k in (
        "case", "size", "peer", "regref_s", "peer_s", "ratio", "max_rel_diff", "tol",
        "variants_s", "variants_rel_diff")} for r in data["rows"]]
    new = run.migrate(old)
    caps = {(c.name, json.dumps(c.size)): c.repeats for c in run.SUITES["tv_denoise"]()}
    for r in new["rows"]:
        cap = caps[(r["case"], json.dumps(r["size"]))]
        assert r["runs"] == (1 if cap == 0 else old["repeats"]) and r["warmup_timed"] == (cap == 0)
    assert "|" in run.render(old)  # an unmigrated result still renders ('?' runs)
