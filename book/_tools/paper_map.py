"""Parse the seed abstracts into (id, title, abstract) records and deduplicate them.

Used by ``tests/test_paper_map.py`` and to build ``book/appendices/papers.csv``.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

BOILERPLATE = re.compile(
    r"^(new|subscribe|daily papers|byak and the research community|·"
    r"|get trending papers in your email inbox( once a day)?!"
    r"|[a-z]{3} \d{1,2}(, \d{4})?( \d+)?"
    r"|•\s*\d+ authors?)$",
    re.IGNORECASE,
)
PREFIX = re.compile(r"^(preprint|paper|short paper|extended abstract)\s*:\s*", re.IGNORECASE)


def norm_title(title: str) -> str:
    """Case-, punctuation- and whitespace-insensitive key, without 'Preprint:'-style prefixes."""
    t = unicodedata.normalize("NFKD", title).strip()
    t = PREFIX.sub("", t)
    t = re.sub(r"[^0-9a-z]+", " ", t.lower())
    return " ".join(t.split())


def words(text: str) -> list[str]:
    return re.sub(r"[^0-9a-z]+", " ", unicodedata.normalize("NFKD", text).lower()).split()


def read_seed(path: Path) -> list[tuple[str, str]]:
    """Return the (title, abstract) pairs of one seed file, in file order."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("Subscribe") and len(line) > len("Subscribe"):
            line = line[len("Subscribe"):].strip()
        if not line or BOILERPLATE.match(line):
            continue
        lines.append(line)
    if len(lines) % 2:
        raise ValueError(f"{path.name}: odd number of content lines ({len(lines)})")
    return [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]


def seed_records(seed_dir: Path) -> list[dict]:
    """All entries of all seed files: id 'FFF#N' (file prefix, 1-based index), title, abstract."""
    out = []
    for path in sorted(seed_dir.glob("*.txt")):
        prefix = path.name.split("_")[0]
        for i, (title, abstract) in enumerate(read_seed(path), start=1):
            out.append({"id": f"{prefix}#{i}", "title": PREFIX.sub("", title).strip(),
                        "abstract": abstract, "key": norm_title(title)})
    return out


def unique_papers(seed_dir: Path) -> tuple[list[dict], int]:
    """First occurrence of every normalised title, plus the number of merged duplicates."""
    seen: dict[str, dict] = {}
    dup = 0
    for rec in seed_records(seed_dir):
        if rec["key"] in seen:
            dup += 1
            seen[rec["key"]].setdefault("also", []).append(rec["id"])
            seen[rec["key"]]["abstracts"].append(rec["abstract"])
        else:
            rec["abstracts"] = [rec["abstract"]]
            seen[rec["key"]] = rec
    return list(seen.values()), dup


if __name__ == "__main__":
    import sys
    default = Path(__file__).resolve().parents[3] / "shared" / "seeds"
    d = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    papers, dup = unique_papers(d)
    print(len(seed_records(d)), "entries,", len(papers), "unique,", dup, "duplicates merged")


# --- the map -----------------------------------------------------------------

FAMILIES = {
    "F1": ("Ridge, Tikhonov and regularized linear models", "02"),
    "F2": ("Weight decay and norm control in deep networks", "02"),
    "F3": ("Sparse estimation: lasso, group, nonconvex, proximal", "04"),
    "F4": ("Pruning and sparse training", "14"),
    "F5": ("Sparse representations and activations", "10"),
    "F6": ("Low rank and spectral penalties", "05"),
    "F7": ("Orthogonality, isometry and diversity", "05"),
    "F8": ("Noise injection: dropout, masking, augmentation, quantization", "07"),
    "F9": ("Implicit regularization of optimization", "08"),
    "F10": ("Sharpness, gradient-norm and robustness regularizers", "09"),
    "F11": ("Representation geometry: anti-collapse, uniformity, spectra", "10"),
    "F12": ("Targets: label smoothing, distillation, noisy labels, calibration", "11"),
    "F13": ("Toward a reference: fine-tuning, continual learning, alignment, unlearning", "12"),
    "F14": ("Latent-variable, generative and information regularizers", "10"),
    "F15": ("Optimal-transport regularization", "15"),
    "F16": ("Inverse problems and smoothness priors", "16"),
    "F17": ("Invariance, equivariance and distribution shift", "13"),
    "F18": ("Choosing the regularization strength", "03"),
}
NO_FAMILY = "no family"
CHAPTERS = {
    "01": "01-introduction", "02": "02-ridge", "03": "03-selection", "04": "04-sparsity",
    "05": "05-low-rank", "06": "06-covariance", "07": "07-noise", "08": "08-implicit",
    "09": "09-smoothness", "10": "10-representation", "11": "11-targets", "12": "12-reference",
    "13": "13-invariance", "14": "14-pruning", "15": "15-optimal-transport",
    "16": "16-inverse-problems",
}
CHAPTER_TITLES = {
    "01": "Introduction", "02": "Ridge, Tikhonov and weight decay", "03": "Choosing the strength",
    "04": "Sparsity", "05": "Low rank, spectra and orthogonality",
    "06": "Sparse inverse covariance",
    "07": "Noise: dropout, masking, augmentation", "08": "Implicit regularization",
    "09": "Smoothness, sharpness and robustness", "10": "Representation regularizers",
    "11": "Targets: label smoothing, distillation, noisy labels",
    "12": "Regularizing toward a reference",
    "13": "Invariance across environments", "14": "Sparse networks: pruning",
    "15": "Optimal transport", "16": "Inverse problems and variational priors",
}
COLUMNS = ["id", "title", "family", "chapter", "contribution", "in book"]
BEGIN, END = "<!-- counts:begin (generated by book/_tools/paper_map.py) -->", "<!-- counts:end -->"


def written_chapters(book: Path) -> set[str]:
    return {nn for nn, slug in CHAPTERS.items() if (book / slug / "index.ipynb").exists()
            or (book / slug / "index.md").exists()}


def doc_link(nn: str) -> str:
    """reST cross-reference to a written chapter (checked by the -W build)."""
    return f":doc:`ch. {nn} </book/{CHAPTERS[nn]}/index>`"


def read_rows(csv_path: Path) -> list[dict]:
    import csv
    with csv_path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def counts(rows: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    from collections import Counter
    fam = Counter(r["family"] for r in rows)
    chap = Counter(r["chapter"] for r in rows)
    return dict(fam), dict(chap)


def counts_markdown(rows: list[dict], written: set[str]) -> str:
    fam, chap = counts(rows)
    out = [BEGIN, "", f"**{len(rows)} papers** in all.", "",
           "| family | chapter | papers |", "|---|---|---:|"]
    for code, (name, nn) in FAMILIES.items():
        label = f"{code} {name}"
        out.append(f"| {label} | {nn} | {fam.get(label, 0)} |")
    out.append(f"| {NO_FAMILY} | — | {fam.get(NO_FAMILY, 0)} |")
    out += ["", "| chapter | papers |", "|---|---:|"]
    for nn, title in CHAPTER_TITLES.items():
        if nn in written:
            name = f"[{nn} {title}](../{CHAPTERS[nn]}/index)"
        else:
            name = f"{nn} {title} (planned)"
        out.append(f"| {name} | {chap.get(nn, 0)} |")
    out.append(f"| — ({NO_FAMILY}) | {chap.get('—', 0)} |")
    out += ["", END]
    return "\n".join(out)


def update_page(page: Path, rows: list[dict], written: set[str]) -> None:
    text = page.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    page.write_text(head + counts_markdown(rows, written) + tail, encoding="utf-8")


# Families whose papers may sit in another chapter than the family's default one.
EXTRA_CHAPTERS = {"F3": {"06"}, "F1": {"06"}}


def family_label(code: str) -> str:
    code = code.split("@")[0]
    return NO_FAMILY if code == "NF" else f"{code} {FAMILIES[code][0]}"


def chapter_of(code: str) -> str:
    """Codes are 'F3', or 'F3@06' for a family member treated in another allowed chapter."""
    fam, _, nn = code.partition("@")
    if fam == "NF":
        return "—"
    if nn:
        assert nn in EXTRA_CHAPTERS.get(fam, set()), code
        return nn
    return FAMILIES[fam][1]


def chapter_texts(book: Path) -> dict[str, str]:
    """Lower-cased, whitespace-normalised text of every written chapter, keyed by NN."""
    out = {}
    for nn, slug in CHAPTERS.items():
        parts = [p.read_text(encoding="utf-8", errors="ignore")
                 for p in sorted((book / slug).glob("*")) if p.suffix in {".ipynb", ".md"}]
        if parts:
            out[nn] = " ".join(norm_title(t) for t in parts)
    return out


def build(seed_dir: Path, line_files: list[Path], book: Path, out_csv: Path) -> None:
    import csv
    lines = {}
    for f in line_files:
        for row in f.read_text(encoding="utf-8").splitlines():
            if row.strip():
                pid, code, text = row.split("\t")
                lines[pid] = (code, text.strip())
    texts = chapter_texts(book)
    cites = chapters_citing(book)
    papers, _ = unique_papers(seed_dir)
    with out_csv.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for p in papers:
            code, text = lines.get(p["id"], ("NF", ""))
            key = " " + norm_title(p["title"]) + " "
            cited = sorted({nn for nn, t in texts.items() if key in " " + t + " "}
                           | cites.get(norm_title(p["title"]), set()))
            w.writerow([p["id"], p["title"], family_label(code), chapter_of(code), text,
                        ", ".join(doc_link(nn) for nn in cited)])


def bib_titles(bib: Path) -> dict[str, str]:
    """Map bib key -> normalised title."""
    out = {}
    text = bib.read_text(encoding="utf-8")
    for m in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,(.*?)\n\}", text, re.S):
        t = re.search(r"\btitle\s*=\s*[{\"](.*?)[}\"]\s*,?\s*\n", m.group(2), re.S)
        if t:
            out[m.group(1)] = norm_title(re.sub(r"[{}]", "", t.group(1)))
    return out


def chapters_citing(book: Path) -> dict[str, set[str]]:
    """Normalised title -> chapters (NN) that cite its bib key or mention the title."""
    keys = bib_titles(book / "references.bib")
    out: dict[str, set[str]] = {}
    for nn, slug in CHAPTERS.items():
        for p in sorted((book / slug).glob("*")):
            if p.suffix not in {".ipynb", ".md"}:
                continue
            raw = p.read_text(encoding="utf-8", errors="ignore")
            for cites in re.findall(r"\{cite[a-z:]*\}`([^`]*)`", raw):
                for k in re.split(r"[,;\s]+", cites):
                    if k in keys:
                        out.setdefault(keys[k], set()).add(nn)
    return out

