"""The benchmark harness runs end to end in --quick mode and writes a sane table."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from benchmarks import harness, run  # noqa: E402


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
    assert "regref gpu (ms)" in lines[0] and lines[2].endswith("| 500 |")
    assert lines[3].endswith("| — |")


@pytest.mark.parametrize("name", sorted(run.SUITES))
def test_stored_results_are_rendered_from_their_json(name):
    """The tables the appendix shows are exactly what their JSON renders to, and every
    ratio is peer time over regref time (nobody edited a number by hand)."""
    md = (run.DEFAULT_OUT / f"{name}.md").read_text()
    data = json.loads((run.DEFAULT_OUT / f"{name}.json").read_text())
    assert md == run.render(data), f"benchmarks/results/{name}.md is not rendered from its JSON"
    assert data["rows"]
    for row in data["rows"]:
        assert row["ratio"] == pytest.approx(row["peer_s"] / row["regref_s"], rel=1e-12)


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
