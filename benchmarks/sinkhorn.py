"""Entropic OT: regref's log-domain Sinkhorn vs POT, on the same problems.

Problems: ``n = m`` points uniform in the unit square, uniform weights, squared Euclidean
cost, ``eps`` a fraction (0.1 or 0.01) of the median cost; and a batch of 64 problems of
``n = 256`` (regref solves the batch in one call; POT loops).

Stopping: every solver stops when its marginal error is below ``TOL`` = 1e-9, checked every
10 iterations. regref measures the l1 error of the row marginal relative to the mass; POT
the l2 norm of the error of its checked marginal (never larger than the l1 error), so
POT's rule is the looser of the two. The compared answer is the plan; the check is the
largest difference relative to the largest entry of each plan's row block.

Peers: POT ``ot.sinkhorn(method="sinkhorn_log")`` on numpy (its stable method, the one to
compare with), POT's default ``sinkhorn_knopp`` on numpy (faster but it underflows for
small eps), and POT ``sinkhorn_log`` on its torch backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import ot
import torch

from regref.ot import sinkhorn

from .harness import Case, Variant

NAME = "sinkhorn"
TOL = 1e-9
SIZES = [(500, 0.1), (500, 0.01), (2000, 0.1), (2000, 0.01), (8000, 0.1)]
GPU_SIZES = [(8000, 0.01)]  # ~10^3 iterations over 6.4e7 entries: minutes per solver on a CPU
QUICK_SIZES = [(40, 0.1)]
BATCH, BATCH_N = 64, 256
SLOW = 1000  # n above which a case is timed once, on its warm-up run
NOTE = (f"Cases with n above {SLOW} are timed once (their warm-up run). eps is given as a "
        "fraction of the median cost. n = 8000 at eps = 0.01 runs only where a GPU is present.")


@dataclass
class Problem:
    a: np.ndarray
    b: np.ndarray
    C: np.ndarray
    eps: float
    at: torch.Tensor
    bt: torch.Tensor
    Ct: torch.Tensor


def make_problem(n: int, frac: float, batch: int | None = None, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    shape = (batch, n, 2) if batch else (n, 2)
    x, y = rng.random(shape), rng.random(shape)
    C = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    a = np.full(C.shape[:-1], 1.0 / n)
    b = np.full(C.shape[:-2] + C.shape[-1:], 1.0 / n)
    eps = frac * float(np.median(C))
    return Problem(a, b, C, eps, torch.as_tensor(a), torch.as_tensor(b), torch.as_tensor(C))


def on_device(d: Problem, device: str, dtype: torch.dtype) -> Problem:
    return Problem(d.a, d.b, d.C, d.eps, d.at.to(device, dtype), d.bt.to(device, dtype),
                   d.Ct.to(device, dtype))


def regref_sinkhorn(d: Problem) -> torch.Tensor:
    return sinkhorn(d.at, d.bt, d.Ct, d.eps, tol=TOL, max_iter=100_000)


def pot(d: Problem, method: str = "sinkhorn_log", backend: str = "numpy"):
    args = (d.a, d.b, d.C) if backend == "numpy" else (d.at, d.bt, d.Ct)
    solve = partial(ot.sinkhorn, reg=d.eps, method=method, stopThr=TOL, numItermax=100_000)
    if d.C.ndim == 2:
        return solve(*args)
    return np.stack([np.asarray(solve(*(t[i] for t in args))) for i in range(len(d.C))])


def cases(quick: bool = False) -> list[Case]:
    peers = {"POT `sinkhorn_log`": pot,
             "POT `sinkhorn_knopp`": partial(pot, method="sinkhorn"),
             "POT `sinkhorn_log`, torch backend": partial(pot, backend="torch")}
    out = []
    sizes = QUICK_SIZES if quick else SIZES + (GPU_SIZES if torch.cuda.is_available() else [])
    for n, frac in sizes:
        variants = []
        if torch.cuda.is_available():
            variants = [Variant("cuda fp64", partial(on_device, device="cuda",
                                                     dtype=torch.float64), regref_sinkhorn,
                                tol=1e-6, device="cuda")]
        out.append(Case("sinkhorn", {"n": n, "eps/median": frac, "B": 1},
                        partial(make_problem, n, frac), regref_sinkhorn, peers, tol=1e-6,
                        variants=variants, repeats=0 if n > SLOW else None))
    n_b = 16 if quick else BATCH_N
    out.append(Case("sinkhorn", {"n": n_b, "eps/median": 0.1, "B": BATCH},
                    partial(make_problem, n_b, 0.1, BATCH), regref_sinkhorn,
                    {"POT `sinkhorn_log`, looped": pot}, tol=1e-6))
    return out
