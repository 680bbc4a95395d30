"""A small benchmark runner: regref and its peers on the same problem, in one process.

A :class:`Case` holds one problem instance: ``setup()`` builds the data (untimed), then the
``regref`` callable and every peer callable solve it with the same stopping rule (exact
solves for direct methods). Each callable gets one warm-up run, whose answer is used for the
correctness check, then ``repeats`` timed runs in a row; the reported time is the median
(a case may cap ``repeats``; with 0, slow cases time the warm-up run itself). Each
:class:`Row` records how many runs its medians are of (``runs``; 1: timed once) and the
distributions its peer calls (``peer_libs``), so that a table shows both.
Callables are timed one block at a time, after a short pause, and never interleaved: after
a call, OpenBLAS (numpy, scipy, scikit-learn) keeps its worker threads spinning for a while,
and torch's threads running meanwhile would be slowed by up to 3x on a 2-core machine. ``ratio`` is
``peer_time / regref_time``: above 1 means regref is faster.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Solver = Callable[[Any], Any]


class MismatchError(AssertionError):
    """regref and a peer disagree by more than the case's tolerance."""


@dataclass
class Variant:
    """An extra regref run timed alongside (e.g. on the GPU, or in float32).

    ``prepare`` converts the case data (untimed), ``fn`` solves; the answer is checked
    against the CPU regref answer to ``tol``.
    """

    name: str
    prepare: Callable[[Any], Any]
    fn: Solver
    tol: float
    device: str = "cpu"


@dataclass
class Case:
    """One problem instance: data, the regref solver, and the peers that solve the same problem."""

    name: str
    size: dict[str, int]
    setup: Callable[[], Any]
    regref: Solver
    peers: dict[str, Solver]
    tol: float = 1e-8
    variants: list[Variant] = field(default_factory=list)
    score: Callable[[Any, Any], Any] | None = None  # (data, answer) -> what is compared
    repeats: int | None = None  # cap on timed runs; 0 times the warm-up run (slow cases)
    # the distributions each peer calls (e.g. {"POT `sinkhorn`": ["POT"]}); by default
    # found from the peer's code (:func:`libraries_of`)
    peer_libs: dict[str, list[str]] | None = None


@dataclass
class PathData:
    """A regression problem over a grid of strengths, as numpy arrays (for the peers) and
    torch tensors (for regref)."""

    X: np.ndarray
    y: np.ndarray
    lams: np.ndarray
    Xt: torch.Tensor
    yt: torch.Tensor
    lamst: torch.Tensor

    @classmethod
    def from_numpy(cls, X: np.ndarray, y: np.ndarray, lams: np.ndarray) -> PathData:
        return cls(X, y, lams, torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(lams))

    def on_device(self, device: str, dtype: torch.dtype) -> PathData:
        """The torch tensors moved to ``device`` and ``dtype`` (numpy arrays untouched)."""
        return PathData(self.X, self.y, self.lams, self.Xt.to(device, dtype),
                        self.yt.to(device, dtype), self.lamst.to(device, dtype))


@dataclass
class Row:
    """One measured line: a case at one size against one peer (all times in seconds)."""

    case: str
    size: dict[str, int]
    peer: str
    regref_s: float
    peer_s: float
    ratio: float
    max_rel_diff: float
    tol: float
    variants_s: dict[str, float] = field(default_factory=dict)
    variants_rel_diff: dict[str, float] = field(default_factory=dict)
    # added with the machine record of #16 (absent from older JSON: None / empty)
    runs: int | None = None  # timed runs behind each median; 1: timed once
    variants_device: dict[str, str] = field(default_factory=dict)  # variant -> "cpu"/"cuda"
    peer_libs: list[str] = field(default_factory=list)  # distributions the peer calls
    warmup_timed: bool | None = None  # the single timed run was the warm-up (repeats=0)


PAUSE_S = 0.2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _parts(answer) -> list[np.ndarray]:
    if isinstance(answer, tuple | list):
        return [_to_numpy(a) for a in answer]
    return [_to_numpy(answer)]


def max_rel_diff(a, b) -> float:
    """Largest relative difference of ``a`` from the reference ``b``.

    Answers are arrays/tensors or tuples of them. Each part is split along its first axis
    (one row per strength for a path; a 1-D part is one row) and each row is compared as
    ``max|a - b| / max|b|``, so small coefficients at strong regularization are judged
    against their own scale, not the path's largest entry. Returns the maximum over rows.
    """
    pa, pb = _parts(a), _parts(b)
    if len(pa) != len(pb):
        raise ValueError(f"answers have {len(pa)} and {len(pb)} parts")
    worst = 0.0
    for x, y in zip(pa, pb, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"answer shapes differ: {x.shape} vs {y.shape}")
        x2 = x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)
        y2 = y.reshape(x2.shape)
        scale = np.maximum(np.abs(y2).max(axis=1), np.finfo(np.float64).tiny)
        worst = max(worst, float((np.abs(x2 - y2).max(axis=1) / scale).max()))
    return worst


def run_case(case: Case, repeats: int = 5) -> list[Row]:
    """Time ``case`` and check every answer; one :class:`Row` per peer.

    Raises :class:`MismatchError` if a peer or a variant disagrees with regref beyond its
    tolerance.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    data = case.setup()
    if case.repeats is not None:
        repeats = min(repeats, case.repeats)
    runs: list[tuple[str, Solver, Any, str]] = [("regref", case.regref, data, "cpu")]
    runs += [(name, fn, data, "cpu") for name, fn in case.peers.items()]
    runs += [(v.name, v.fn, v.prepare(data), v.device) for v in case.variants]

    answers: dict[str, Any] = {}
    times: dict[str, list[float]] = {name: [] for name, *_ in runs}
    for name, fn, arg, device in runs:
        time.sleep(PAUSE_S)  # let the previous library's spinning worker threads go idle
        t0 = time.perf_counter()
        answers[name] = fn(arg)  # warm-up; its answer is the one checked
        _sync(device)
        if repeats == 0:  # slow cases: the warm-up run is the measurement
            times[name].append(time.perf_counter() - t0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(arg)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}

    if case.score is not None:  # compare e.g. objective values rather than raw solutions
        answers = {name: case.score(data, a) for name, a in answers.items()}
    ref = answers["regref"]
    v_diff = {}
    for v in case.variants:
        v_diff[v.name] = max_rel_diff(answers[v.name], ref)
        if not v_diff[v.name] <= v.tol:
            raise MismatchError(f"{case.name} {case.size}: variant {v.name} differs from CPU "
                                f"regref by {v_diff[v.name]:.2e} > {v.tol:.0e}")
    runs = len(times["regref"])
    rows = []
    for peer in case.peers:
        diff = max_rel_diff(ref, answers[peer])
        if not diff <= case.tol:
            raise MismatchError(f"{case.name} {case.size}: regref differs from {peer} by "
                                f"{diff:.2e} > {case.tol:.0e}")
        rows.append(Row(case=case.name, size=dict(case.size), peer=peer,
                        regref_s=med["regref"], peer_s=med[peer],
                        ratio=med[peer] / med["regref"], max_rel_diff=diff, tol=case.tol,
                        variants_s={v.name: med[v.name] for v in case.variants},
                        variants_rel_diff=v_diff, runs=runs, warmup_timed=repeats == 0,
                        variants_device={v.name: v.device for v in case.variants},
                        peer_libs=(case.peer_libs or {}).get(peer)
                        or libraries_of(case.peers[peer])))
    return rows


# Top-level modules that are never "the peer": the language, the harness and the measured.
_NOT_PEERS = {"builtins", "functools", "math", "dataclasses", "typing", "benchmarks",
              "regref", "torch", "__main__"}


def libraries_of(fn: Callable) -> list[str]:
    """The installed distributions a peer callable uses (e.g. ``["POT", "numpy"]``).

    Follows the callable through ``functools.partial``, closures, nested code and the
    helper functions of its own module it calls, and maps every module, class or function
    of another package it names to that package's distribution. torch is left out (it is
    recorded anyway) unless nothing else is found. Conservative: a helper shared by two
    peers lends its libraries to both.
    """
    import functools
    import sys
    import types
    from importlib import metadata

    dists = metadata.packages_distributions()
    found: set[str] = set()
    seen: set[int] = set()
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    home = getattr(inner, "__module__", None)

    def top(obj) -> str | None:
        mod = (obj.__name__ if isinstance(obj, types.ModuleType)
               else getattr(obj, "__module__", None))
        return mod.split(".")[0] if isinstance(mod, str) else None

    def visit(obj) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            for x in (obj.func, *obj.args, *obj.keywords.values()):
                visit(x)
            return
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, types.FunctionType) and getattr(obj, "__module__", None) in (home, None):
            codes = [obj.__code__]
            while codes:
                code = codes.pop()
                for name in code.co_names:
                    if name in obj.__globals__:
                        visit(obj.__globals__[name])
                codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
            for default in obj.__defaults__ or ():
                visit(default)
            return
        if isinstance(obj, types.ModuleType | type | types.FunctionType
                      | types.BuiltinFunctionType) or callable(obj):
            name = top(obj)
            if name and name not in sys.stdlib_module_names:
                found.add(name)

    visit(fn)
    libs = sorted({d for m in found if m not in _NOT_PEERS for d in dists.get(m, [])})
    if not libs and "torch" in found:
        libs = ["torch"]
    return libs


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _threadpools() -> list[dict[str, Any]] | None:
    """threadpoolctl's view of the native thread pools (BLAS and OpenMP libraries)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads",
            "threading_layer", "architecture")
    return [{k: i[k] for k in keys if k in i} for i in threadpool_info()]


def _blas_threads() -> str | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    blas = [f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()
            if i["user_api"] == "blas"]
    return ", ".join(sorted(set(blas))) or None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, threads, GPU, library versions, date."""
    import sklearn

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "blas_threads": _blas_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "regref_revision": regref_revision(),
        "peers": peer_versions(),
        "threadpools": _threadpools(),
    }


def regref_revision() -> str | None:
    """The git revision of the regref being measured (``+dirty`` with local changes)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "regref"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


# Every library a suite compares with (recorded when installed); suites that add a peer
# add it here.
PEERS = ("scikit-learn", "POT", "scikit-image", "scipy", "skglm", "geomloss", "gglasso",
         "fancyimpute", "numba", "pykeops")


def peer_versions() -> dict[str, str]:
    """Versions of the peer libraries that are installed."""
    from importlib import metadata

    found = {}
    for dist in PEERS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def recorded_peers(info: dict[str, Any], rows: list[Row]) -> dict[str, str | None]:
    """The version of every peer library the rows call (``None``: not recorded).

    Rows that do not say which libraries they call (older results) stand for every peer
    the machine record lists.
    """
    versions = dict(info.get("peers") or {})
    versions.setdefault("scikit-learn", info.get("scikit_learn"))
    named = list(dict.fromkeys(lib for r in rows for lib in r.peer_libs))
    if not named or any(not r.peer_libs for r in rows):
        named += [k for k in versions if k not in named]
    core = {"torch": info.get("torch"), "numpy": info.get("numpy")}
    return {lib: versions.get(lib) for lib in named if lib not in core}


def missing_record(info: dict[str, Any], rows: list[Row]) -> list[str]:
    """What the protocol promises about the machine that ``info`` does not hold."""
    promised = {"CPU model": info.get("cpu"), "core count": info.get("usable_cores"),
                "torch threads": info.get("torch_threads"), "torch version": info.get("torch"),
                "numpy version": info.get("numpy"),
                "regref revision": info.get("regref_revision")}
    missing = [what for what, value in promised.items() if value in (None, "")]
    if "peers" not in info:
        missing.append("peer versions")
    else:
        missing += [f"{lib} version" for lib, v in recorded_peers(info, rows).items() if not v]
    return missing


def record_versions(info: dict[str, Any], libs) -> None:
    """Add to ``info["peers"]`` the version of every distribution in ``libs`` it lacks
    (a peer library outside :data:`PEERS`); torch and numpy are recorded on their own."""
    from importlib import metadata

    peers = info.setdefault("peers", {})
    for lib in sorted(set(libs) - set(peers) - {"torch", "numpy"}):
        try:
            peers[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass


def machine_line(info: dict[str, Any], repeats: int, rows: list[Row] | None = None) -> str:
    """One paragraph describing the machine, the versions and the date, for the top of a
    results table; it says what an older record lacks rather than leaving it out."""
    rows = rows or []
    gpu = info.get("gpu") or "no GPU"
    threads = f"torch {info['torch_threads']} threads"
    if info.get("blas_threads"):
        threads += f", BLAS {info['blas_threads']}"
    versions = [f"torch {info['torch']}", f"numpy {info['numpy']}"]
    versions += [f"{lib} {v}" for lib, v in recorded_peers(info, rows).items() if v]
    revision = info.get("regref_revision")
    missing = missing_record(info, rows)
    once = any(r.runs == 1 for r in rows)
    return (f"Measured {info['date'][:10]} on {info['cpu']} ({info['usable_cores']} cores, "
            f"{threads}), {gpu}; " + ", ".join(versions)
            + (f"; regref at revision {revision}" if revision else "")
            + (f" (not recorded: {', '.join(missing)})" if missing else "")
            + f". Times are medians of {repeats} runs after a warm-up"
            + ("; the runs column gives each row's count (1: timed once"
               + ("; †: the warm-up run itself, first-call costs included" if any(
                   r.warmup_timed for r in rows) else "") + ")" if once
               else "; the runs column gives each row's count")
            + ".")


def _num(v) -> str:
    if isinstance(v, str):  # a size given as text, e.g. "8 (path)"
        return v
    if isinstance(v, float) and not v.is_integer():
        return f"{v:g}"
    return f"{int(v):,}" if abs(v) >= 10_000 else str(int(v))


def size_text(size: dict[str, Any]) -> str:
    """``{"n": 500, "p": 5000}`` as ``n=500, p=5,000`` (one compact table cell)."""
    return ", ".join(f"{k} = {_num(v)}" if " " in k else f"{k}={_num(v)}"
                     for k, v in size.items())


def time_text(seconds: float) -> str:
    """A time with its unit and 3 significant digits: ``14.7 ms``, ``9.05 s``, ``1234 s``."""
    nbsp = "\u00a0"  # the unit stays with its number in a narrow column
    if seconds < 1:
        return f"{seconds * 1e3:.3g}{nbsp}ms"
    return f"{seconds:.3g}{nbsp}s" if seconds < 1000 else f"{seconds:.0f}{nbsp}s"


def ratio_text(ratio: float) -> str:
    return (f"{ratio:.2g}" if ratio < 1 else f"{ratio:.3g}" if ratio < 100
            else f"{ratio:.0f}") + "×"


def diff_text(diff: float) -> str:
    """``2.6e-8`` rather than ``2.6e-08``, with a non-breaking hyphen (U+2011) so that a
    narrow column does not break it after the ``e-``."""
    if diff == 0:
        return "0"
    mantissa, exponent = f"{diff:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}".replace("-", "\u2011")


def runs_text(row: Row) -> str:
    if row.runs is None:
        return "?"
    return f"{row.runs}†" if row.warmup_timed else str(row.runs)


def markdown_table(rows: list[Row]) -> str:
    """A MyST/GFM table, one line per row (no headings, so it can be ``{include}``-d).

    Narrow enough for the book's page: the sizes share one column (led by the problem's
    name when a suite has several problems; the section heading names a single one),
    times carry their unit, the ratio and the difference are short.
    """
    variants = list(dict.fromkeys(v for r in rows for v in r.variants_s))  # union, in order
    problems = len({r.case for r in rows}) > 1
    head = (["problem, size" if problems else "size", "peer", "regref time", "peer time",
             "ratio", "runs", "max rel. diff"] + [f"regref {v}" for v in variants])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["--:"] * (5 + len(variants))) + "|"]
    for r in rows:
        size = (f"`{r.case}` " if problems else "") + size_text(r.size)
        cells = ([size, r.peer, time_text(r.regref_s), time_text(r.peer_s), ratio_text(r.ratio),
                  runs_text(r), diff_text(r.max_rel_diff)]
                 + [time_text(r.variants_s[v]) if v in r.variants_s else "—" for v in variants])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
