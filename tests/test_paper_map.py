"""Appendix A (book/appendices/papers.*): every seed paper exactly once, one-liners in our
own words, only allowed family/chapter values, and page counts that match the data."""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPENDIX = ROOT / "book" / "appendices"
CSV = APPENDIX / "papers.csv"
PAGE = APPENDIX / "papers.md"

spec = importlib.util.spec_from_file_location(
    "paper_map", ROOT / "book" / "_tools" / "paper_map.py")
paper_map = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_map)

# The seeds live beside the repository (../shared/seeds); REGREF_SEEDS overrides that.
SEEDS = Path(os.environ.get("REGREF_SEEDS",
                           Path(__file__).resolve().parents[2] / "shared" / "seeds"))


@pytest.fixture(scope="module")
def rows():
    return paper_map.read_rows(CSV)


@pytest.fixture(scope="module")
def seeds():
    if not SEEDS.is_dir() or not any(SEEDS.glob("*.txt")):
        pytest.skip(f"seed abstracts not found at {SEEDS} (set REGREF_SEEDS to the folder)")
    return paper_map.seed_records(SEEDS)


def test_columns(rows):
    assert list(rows[0]) == paper_map.COLUMNS
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert all(re.fullmatch(r"\d{3}#\d+", i) for i in ids)


def test_every_seed_title_exactly_once(rows, seeds):
    in_map = Counter(paper_map.norm_title(r["title"]) for r in rows)
    twice = sorted(t for t, n in in_map.items() if n > 1)
    assert not twice, f"titles listed more than once: {twice[:5]}"
    seed_keys = {s["key"] for s in seeds}
    missing = sorted({s["id"] for s in seeds if s["key"] not in in_map})
    assert not missing, f"seed papers missing from the map: {missing[:10]}"
    extra = sorted(t for t in in_map if t not in seed_keys)
    assert not extra, f"rows that are not seed papers: {extra[:5]}"


def test_ids_are_first_occurrences(rows, seeds):
    first = {}
    for s in seeds:
        first.setdefault(s["key"], s["id"])
    for r in rows:
        assert r["id"] == first[paper_map.norm_title(r["title"])], r["id"]


def test_title_normalisation():
    n = paper_map.norm_title
    assert n("Preprint: Norm Loss: An efficient method") == n("norm loss -- an  Efficient method")
    assert n("A New Angle on L2 Regularization") != n("A New Angle on L1 Regularization")


def test_no_eight_word_run_of_an_abstract_in_a_one_liner(rows, seeds):
    grams = set()
    for s in seeds:
        w = paper_map.words(s["abstract"])
        grams.update(tuple(w[i:i + 8]) for i in range(len(w) - 7))
    copied = []
    for r in rows:
        w = paper_map.words(r["contribution"])
        copied += [(r["id"], " ".join(w[i:i + 8])) for i in range(len(w) - 7)
                   if tuple(w[i:i + 8]) in grams]
    assert not copied, f"one-liners repeat abstract wording: {copied[:5]}"


def test_one_liners_present_and_short(rows):
    for r in rows:
        n = len(r["contribution"].split())
        assert 4 <= n <= 30, (r["id"], n)


def test_family_and_chapter_values(rows):
    labels = {f"{c} {name}": c for c, (name, _) in paper_map.FAMILIES.items()}
    for r in rows:
        fam, chap = r["family"], r["chapter"]
        if fam == paper_map.NO_FAMILY:
            assert chap == "—", r["id"]
            continue
        assert fam in labels, (r["id"], fam)
        code = labels[fam]
        allowed = {paper_map.FAMILIES[code][1]} | paper_map.EXTRA_CHAPTERS.get(code, set())
        assert chap in allowed, (r["id"], fam, chap)


def test_links_point_to_written_chapters(rows):
    written = paper_map.written_chapters(ROOT / "book")
    for r in rows:
        for nn in re.findall(r":doc:`ch\. (\d\d) </book/[^>]+/index>`", r["in book"]):
            assert nn in written, (r["id"], nn)
        rest = re.sub(r":doc:`ch\. \d\d </book/[^>]+/index>`", "", r["in book"])
        assert rest.replace(",", "").strip() == "", (r["id"], r["in book"])


def test_page_counts_match_data(rows):
    text = PAGE.read_text(encoding="utf-8")
    assert paper_map.BEGIN in text and paper_map.END in text
    block = text.split(paper_map.BEGIN)[1].split(paper_map.END)[0]
    assert f"**{len(rows)} papers**" in block
    fam, chap = paper_map.counts(rows)
    row = r"^\| ((?:F\d+ [^|]+?)|no family) \| [^|]+ \| (\d+) \|$"
    page_fam = dict(re.findall(row, block, re.M))
    assert {k: int(v) for k, v in page_fam.items()} == {
        f"{c} {n}": fam.get(f"{c} {n}", 0) for c, (n, _) in paper_map.FAMILIES.items()
    } | {paper_map.NO_FAMILY: fam.get(paper_map.NO_FAMILY, 0)}
    page_chap = dict(re.findall(r"^\|\s*\[?(\d\d|—) [^|]*\| (\d+) \|$", block, re.M))
    assert {k: int(v) for k, v in page_chap.items()} == {
        nn: chap.get(nn, 0) for nn in paper_map.CHAPTER_TITLES} | {"—": chap.get("—", 0)}
    # the block is exactly what the generator writes for the current data
    written = paper_map.written_chapters(ROOT / "book")
    assert paper_map.counts_markdown(rows, written) == paper_map.BEGIN + block + paper_map.END


def test_page_renders_table_and_offline_filter():
    text = PAGE.read_text(encoding="utf-8")
    assert ":file: papers.csv" in text and ":class: paper-map" in text
    assert "<script>" in text and 'id="paper-map-q"' in text and 'id="paper-map-family"' in text
    assert not re.search(r"<script[^>]+src=|https?://", text), "no external scripts or links"
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    appendices = toc.split("caption: Appendices")[1]
    assert re.search(r"chapters:\s*\n\s*- file: book/appendices/papers\s*\n", appendices)
