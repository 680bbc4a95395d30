"""Nuclear-norm matrix completion: regref's soft-impute vs two classic implementations.

Problem: ``Y = A B^T / sqrt(rank) + 0.1 * noise`` (m x n, planted rank ``RANK``), a fraction
``FRAC`` of the entries observed uniformly at random, ``lam`` = ``LAM_FRAC`` times the
largest singular value of ``P_Omega(Y)`` (the smallest strength for which 0 is optimal);
the solution then has about the planted rank.

Stopping, "at the same objective value": ``setup`` (untimed) solves the problem once with
regref at a tight tolerance to get the optimal value ``F*``. Every timed solver then stops
as soon as its objective is within ``TOL`` (relative) of ``F*``: the peers evaluate their
objective after every iteration (they are given ``F*``), regref stops on its own duality
gap, with ``tol`` set so that gap <= ``TOL * F*`` (a gap bounds the distance to ``F*``).
The compared answer is the objective value, which must agree to ``TOL`` (the solutions
themselves are only as close as the square root of that). ``TOL`` is 1e-5 on the quick
problem and 1e-3 at full size: plain soft-impute converges linearly at a rate set by the
observed fraction, and with 1% observed it needs about 100 iterations to come within 1e-3
of ``F*`` and thousands for 1e-5 (with the randomized SVD it stalls near 3e-5).

Peers: the soft-impute iteration of Mazumder, Hastie & Tibshirani with a dense full SVD per
step (``numpy.linalg.svd``), and the same iteration with scikit-learn's ``randomized_svd``
of rank (current rank + 10), both on a dense filled matrix. regref runs the accelerated
iteration on the sparse observations and factors (nothing m x n is formed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from sklearn.utils.extmath import randomized_svd

from regref.lowrank import soft_impute

from .harness import Case

NAME = "soft_impute"
TOL, QUICK_TOL = 1e-3, 1e-5
RANK, FRAC, LAM_FRAC = 10, 0.01, 0.7
SIZES = [(2000, FRAC, RANK), (10_000, FRAC, RANK)]  # (m = n, fraction observed, planted rank)
QUICK_SIZES = [(60, 0.3, 3)]
DENSE_MAX = 2000  # a full SVD of a 10^4 x 10^4 matrix per iteration takes far too long
NOTE = (f"Planted rank {RANK}, {FRAC:.0%} of the entries observed, lam = {LAM_FRAC} x "
        "||P_Omega(Y)||_2. Every solver stops once its objective is within "
        f"{TOL:g} (relative) of the optimum, found beforehand (regref: duality gap). "
        f"The dense-SVD peer is skipped above m = {DENSE_MAX} (hours on 2 cores at 10 000^2). "
        "Full-size cases are timed once (their warm-up run).")


@dataclass
class Problem:
    rows: np.ndarray
    cols: np.ndarray
    y: np.ndarray
    shape: tuple[int, int]
    lam: float
    f_star: float
    target_tol: float  # stop once F <= (1 + target_tol) f_star
    tol: float  # regref's tol: gap <= tol * P(0) means gap <= target_tol * f_star
    sparse: tuple  # (rows, cols, values, shape) as torch tensors for regref


def objective(d: Problem, z_obs: np.ndarray, s: np.ndarray) -> float:
    """F(Z) from Z's observed entries and singular values."""
    return 0.5 * float(((d.y - z_obs) ** 2).sum()) + d.lam * float(s.sum())


def make_problem(m: int, frac: float = FRAC, rank: int = RANK, target_tol: float = TOL,
                 seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    n = m
    nnz = int(frac * m * n)
    flat = rng.choice(m * n, size=nnz, replace=False)
    rows, cols = flat // n, flat % n
    A, B = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
    y = (A[rows] * B[cols]).sum(1) / np.sqrt(rank) + 0.1 * rng.standard_normal(nnz)
    sp = (torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(y), (m, n))
    # ||P_Omega Y||_2: the strength above which Z = 0 (power iteration on the sparse matrix)
    S = scipy.sparse.csr_matrix((y, (rows, cols)), shape=(m, n))
    lam = LAM_FRAC * float(scipy.sparse.linalg.svds(S, k=1, return_singular_vectors=False)[0])
    p0 = 0.5 * float(y @ y)
    F = soft_impute(sp, None, lam, tol=1e-11, generator=torch.Generator().manual_seed(seed))
    f_star = objective(Problem(rows, cols, y, (m, n), lam, 0, 0, 0, ()),
                       F.at(sp[0], sp[1]).numpy(), F.s.numpy())
    return Problem(rows, cols, y, (m, n), lam, f_star, target_tol, target_tol * f_star / p0, sp)


def regref_solve(d: Problem) -> float:
    F = soft_impute(d.sparse, None, d.lam, tol=d.tol, generator=torch.Generator().manual_seed(1))
    return objective(d, F.at(d.sparse[0], d.sparse[1]).numpy(), F.s.numpy())


def peer_solve(d: Problem, svd: str = "dense", max_iter: int = 3000) -> float:
    """Soft-impute Z <- svt(P_Omega(Y) + P_Omega^perp(Z), lam) on dense arrays, until
    F(Z) <= (1 + target_tol) F*."""
    Z = np.zeros(d.shape)
    rank = 1
    for _ in range(max_iter):
        Z[d.rows, d.cols] = d.y  # the filled matrix (Z holds the old iterate elsewhere)
        if svd == "dense":
            U, s, Vt = np.linalg.svd(Z, full_matrices=False)
        else:
            U, s, Vt = randomized_svd(Z, rank + 10, n_iter=2, random_state=0)
        s = np.maximum(s - d.lam, 0)
        rank = max(int((s > 0).sum()), 1)
        U, s, Vt = U[:, :rank], s[:rank], Vt[:rank]
        Z = (U * s) @ Vt
        if objective(d, Z[d.rows, d.cols], s) <= (1 + d.target_tol) * d.f_star:
            return objective(d, Z[d.rows, d.cols], s)
    raise RuntimeError("peer soft-impute did not reach the target objective")


def cases(quick: bool = False) -> list[Case]:
    out = []
    tol = QUICK_TOL if quick else TOL
    for m, frac, rank in QUICK_SIZES if quick else SIZES:
        peers = {"randomized_svd (scikit-learn)": partial(peer_solve, svd="randomized")}
        if m <= DENSE_MAX:
            peers = {"dense SVD (numpy)": peer_solve, **peers}
        out.append(Case("soft_impute", {"m = n": m, "observed": int(frac * m * m), "rank": rank},
                        partial(make_problem, m, frac, rank, tol), regref_solve, peers, tol=tol,
                        repeats=1 if quick else 0))
    return out
