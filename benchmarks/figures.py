"""One figure per suite, drawn from its results JSON: the ratio of every row on a log axis.

``svg(result)`` returns the SVG bytes of the figure of one suite (the dict stored in
``<suite>.json``): one line per problem size, one marker per peer, the ratio
``peer time / regref time`` on a log axis with the 1x line (right of it, regref is faster).
Filled markers are regref on the CPU; hollow (then half-filled) ones, regref's variants
measured on a GPU (``device`` cuda) against the same CPU peer, just below their CPU row.
The output is byte-for-byte deterministic (fixed SVG hash salt, no date), so a test
re-renders it and compares.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from . import harness

STYLE = Path(__file__).resolve().parent.parent / "book" / "regref.mplstyle"
MARKERS = "oDs^vP<>Xh"
FILLS = ("none", "left", "bottom", "right", "top")  # one per GPU variant
DETERMINISTIC = {"svg.hashsalt": "regref-benchmarks", "svg.fonttype": "path",
                 "path.simplify": False}


def _plain(label: str) -> str:
    return label.replace("`", "")


def _gpu_variants(rows: list[harness.Row]) -> list[str]:
    names = dict.fromkeys(v for r in rows for v in r.variants_s)
    return [v for v in names if any(
        r.variants_device.get(v, "cuda" if v.startswith("cuda") else "cpu").startswith("cuda")
        for r in rows if v in r.variants_s)]


def figure(result: dict) -> Figure:
    """The matplotlib figure of one suite's result."""
    rows = [harness.Row(**r) for r in result["rows"]]
    groups = list(dict.fromkeys((r.case, harness.size_text(r.size)) for r in rows))
    peers = list(dict.fromkeys(r.peer for r in rows))
    gpus = _gpu_variants(rows)
    with matplotlib.style.context(STYLE), matplotlib.rc_context(DETERMINISTIC):
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        height = 1.5 + 0.32 * len(groups) + 0.2 * (len(peers) + len(gpus))
        fig = Figure(figsize=(6.4, height), layout="constrained")
        ax = fig.add_subplot()
        ratios = []
        for r in rows:
            y = groups.index((r.case, harness.size_text(r.size)))
            k = peers.index(r.peer)
            style = dict(marker=MARKERS[k % len(MARKERS)], color=colors[k % len(colors)],
                         markersize=7, linestyle="none")
            ax.plot([r.ratio], [y], **style)
            ratios.append(r.ratio)
            for j, v in enumerate(gpus):
                if v in r.variants_s:
                    ratio = r.peer_s / r.variants_s[v]
                    ratios.append(ratio)
                    ax.plot([ratio], [y + 0.4 * (j + 1) / len(gpus)],
                            fillstyle=FILLS[j % len(FILLS)], **style)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        lo, hi = min(ratios + [1.0]), max(ratios + [1.0])
        ax.set_xlim(lo / 2, hi * 2)
        ax.set_yticks(range(len(groups)),
                      [f"{case}  {size}" if len({c for c, _ in groups}) > 1 else size
                       for case, size in groups])
        ax.set_ylim(len(groups) - 0.5 + (0.2 if gpus else 0), -0.5)
        ax.grid(axis="y", visible=False)
        decades = math.log10(hi / lo) + math.log10(4)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("peer time / regref time (log scale)")
        for x, text, ha in ((0.98, "regref faster →", "right"), (0.02, "← peer faster", "left")):
            ax.text(x, 1.0, text, transform=ax.transAxes, ha=ha, va="bottom", fontsize=9,
                    color="0.35")
        handles = [Line2D([], [], marker=MARKERS[k % len(MARKERS)], color=colors[k % len(colors)],
                          linestyle="none", label=_plain(p)) for k, p in enumerate(peers)]
        if gpus:
            handles.append(Line2D([], [], marker="o", color="gray", linestyle="none",
                                  label="filled: regref on the CPU"))
        handles += [Line2D([], [], marker="o", color="gray", fillstyle=FILLS[j % len(FILLS)],
                           linestyle="none", label=f"regref {v} (GPU), below its CPU row")
                    for j, v in enumerate(gpus)]
        fig.legend(handles=handles, loc="outside lower center", ncols=2)
    return fig


def svg(result: dict) -> bytes:
    """The SVG of one suite's figure, identical bytes for identical input."""
    fig = figure(result)
    buf = io.BytesIO()
    with matplotlib.rc_context(DETERMINISTIC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
