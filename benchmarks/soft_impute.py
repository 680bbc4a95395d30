"""Nuclear-norm matrix completion: regref's soft-impute vs fancyimpute and two numpy loops.

Problem: ``Y = A B^T / sqrt(rank) + 0.1 * noise`` (m x n, planted rank ``rank``), a fraction
``frac`` of the entries observed uniformly at random, ``lam`` = ``LAM_FRAC`` times the
largest singular value of ``P_Omega(Y)`` (the smallest strength for which 0 is optimal).
Regimes: a sparse and a denser observation fraction, and a higher planted rank (more
singular values to compute per iteration), at m = n = 1000; and, with the loop on
scikit-learn's randomized SVD only, the sparse 2000 x 2000 problem of earlier versions.

Stopping, "at the same objective value": ``setup`` (untimed) solves the problem once with
regref at a tight tolerance (duality gap <= 1e-3 ``TOL`` x the objective at zero, which is
checked to be at most 10 ``F*``, so ``F*`` is off by at most 1% of the band below) to get the
optimal value ``F*``. Every timed solver then stops as soon as its objective is within ``TOL``
(relative) of ``F*``. The compared answer is the objective value, which must agree to
``TOL`` (the solutions themselves are only as close as the square root of that).

* regref stops on its own duality gap, with ``tol`` set so that gap <= ``TOL * F*`` (a gap
  bounds the distance to ``F*``); it runs the accelerated iteration on the sparse
  observations and factors (nothing m x n is formed except its certificate's residual).
* fancyimpute's ``SoftImpute`` (the packaged soft-impute a user would call), at its defaults
  (a full ``numpy.linalg.svd`` per iteration, zero initial fill) except for what must match
  the problem: ``shrinkage_value = lam`` (its iteration ``Z <- svt(P_Omega(Y) +
  P_Omega^perp(Z), shrinkage_value)`` is proximal gradient with step 1 on our objective, so
  the conventions agree), ``verbose=False``, and its stopping rule. It stops when the
  imputed (unobserved) entries change by less than ``convergence_threshold`` relative to
  their norm, which is not a bound on the distance to the optimum; so ``setup`` replays its
  iteration (untimed, the same arithmetic) and sets the threshold just below the smallest
  relative change seen before the first iterate within ``TOL`` of ``F*``: the largest
  threshold with which it reaches the target, i.e. it stops at the first iterate that
  meets it (its default 1e-3 stops earlier, further from the optimum). ``max_iters`` is
  raised above that iteration where its default 100 is too few. Its answer is the filled
  matrix; the objective is evaluated at its last low-rank iterate ``Z``, which a one-method
  subclass keeps. fancyimpute 0.7.0 calls ``check_array(force_all_finite=...)``, a keyword
  scikit-learn renamed ``ensure_all_finite`` (removed in 1.8): a shim passes it on.
* Our own loops, the same iteration on dense arrays with the oracle stop (objective within
  ``TOL`` of ``F*``, evaluated after every iteration): with a full ``numpy.linalg.svd``
  (what fancyimpute runs), and with scikit-learn's ``randomized_svd`` of rank (current rank
  + 10).

The dense-SVD peers (fancyimpute and the numpy loop) run only up to m = ``DENSE_MAX``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from sklearn.utils.extmath import randomized_svd

from regref.lowrank import Factors, soft_impute

from .harness import Case

NAME = "soft_impute"
TOL, QUICK_TOL = 1e-3, 1e-5
F_STAR_REL = 1e-3  # the reference solve's duality gap, relative to the target's band
LAM_FRAC = 0.7
# (m = n, fraction observed, planted rank): sparse, denser, higher rank; then a larger
# sparse problem with the randomized-SVD loop only
SIZES = [(1000, 0.05, 10), (1000, 0.3, 10), (1000, 0.3, 50), (2000, 0.01, 10)]
QUICK_SIZES = [(60, 0.3, 3)]
DENSE_MAX = 1000  # above, a full SVD per iteration takes minutes per solve on 2 cores
FANCY = "fancyimpute `SoftImpute`"


NOTE = ("lam = 0.7 x ||P_Omega(Y)||_2, noise 0.1. Every solver stops once its objective is "
        f"within {TOL:g} (relative) of the optimum, found beforehand (regref: duality gap; "
        "fancyimpute: its convergence threshold set, per problem, to the largest value that "
        "reaches that objective, found by replaying its iteration; the numpy loops: the "
        f"objective itself). Dense-SVD peers only up to m = {DENSE_MAX}. "
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
    with_nan: np.ndarray | None = None  # Y with NaN where unobserved (fancyimpute's input)
    fancy_threshold: float = 0.0  # fancyimpute's convergence_threshold that meets the target
    fancy_iters: int = 0  # the iteration at which it does


def objective(d: Problem, z_obs: np.ndarray, s: np.ndarray) -> float:
    """F(Z) from Z's observed entries and singular values."""
    return 0.5 * float(((d.y - z_obs) ** 2).sum()) + d.lam * float(s.sum())


def score(d: Problem, answer) -> float:
    """The objective of an answer: a float already, regref's factors, or a dense Z."""
    if isinstance(answer, Factors):
        return objective(d, answer.at(d.sparse[0], d.sparse[1]).numpy(), answer.s.numpy())
    if isinstance(answer, np.ndarray):
        return objective(d, answer[d.rows, d.cols], np.linalg.svd(answer, compute_uv=False))
    return float(answer)


def make_problem(m: int, frac: float, rank: int, target_tol: float = TOL, seed: int = 0,
                 fancy: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    n = m
    nnz = int(frac * m * n)
    flat = rng.choice(m * n, size=nnz, replace=False)
    rows, cols = flat // n, flat % n
    A, B = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
    y = (A[rows] * B[cols]).sum(1) / np.sqrt(rank) + 0.1 * rng.standard_normal(nnz)
    sp = (torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(y), (m, n))
    # ||P_Omega Y||_2: the strength above which Z = 0
    S = scipy.sparse.csr_matrix((y, (rows, cols)), shape=(m, n))
    lam = LAM_FRAC * float(scipy.sparse.linalg.svds(S, k=1, return_singular_vectors=False)[0])
    p0 = 0.5 * float(y @ y)
    # F* to a duality gap of F_STAR_REL * target_tol * P(0): with P(0) <= 10 F* (checked),
    # its error is at most 1% of the band the solvers must reach
    F = soft_impute(sp, None, lam, tol=F_STAR_REL * target_tol,
                    generator=torch.Generator().manual_seed(seed))
    d = Problem(rows, cols, y, (m, n), lam, 0.0, target_tol, 0.0, sp)
    d.f_star = score(d, F)
    if p0 > 10 * d.f_star:
        raise RuntimeError(f"P(0) = {p0:.3g} > 10 F* = {10 * d.f_star:.3g}: tighten F_STAR_REL")
    d.tol = target_tol * d.f_star / p0
    if fancy:
        d.with_nan = np.full((m, n), np.nan)
        d.with_nan[rows, cols] = y
        d.fancy_threshold, d.fancy_iters = _calibrate_fancyimpute(d)
    return d


def regref_solve(d: Problem) -> Factors:
    return soft_impute(d.sparse, None, d.lam, tol=d.tol, generator=torch.Generator().manual_seed(1))


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


# --- fancyimpute -------------------------------------------------------------------------


def _calibrate_fancyimpute(d: Problem, max_iter: int = 3000) -> tuple[float, int]:
    """Replay fancyimpute's iteration (zero fill, full SVD, shrink by lam) and its stopping
    test; return the convergence threshold with which it first stops at an iterate within
    ``target_tol`` of ``F*``, and that iteration's number.

    fancyimpute stops after iteration i when ``||dZ_miss|| / ||Z_miss_old|| < threshold``
    (the unobserved entries; at i = 1 the old ones are 0 and it never stops). With the
    threshold just below the smallest such ratio before the first iterate on target, no
    earlier iteration stops it, and the ratios decrease, so it stops there."""
    X = np.where(np.isnan(d.with_nan), 0.0, d.with_nan)
    missing = np.isnan(d.with_nan)
    smallest = np.inf
    for i in range(1, max_iter + 1):
        U, s, Vt = np.linalg.svd(X, full_matrices=False)
        s = np.maximum(s - d.lam, 0)
        r = int((s > 0).sum())
        Z = (U[:, :r] * s[:r]) @ Vt[:r]
        old, new = X[missing], Z[missing]
        old_norm = np.sqrt((old**2).sum())
        if objective(d, Z[d.rows, d.cols], s) <= (1 + d.target_tol) * d.f_star:
            return smallest * (1 - 1e-6), i
        if old_norm > 0:
            smallest = min(smallest, float(np.sqrt(((old - new) ** 2).sum()) / old_norm))
        X[missing] = new
    raise RuntimeError("soft-impute did not reach the target objective")


def _fancyimpute_soft_impute():
    """fancyimpute's ``SoftImpute`` subclassed to keep its last low-rank iterate, with the
    ``check_array`` keyword shim for scikit-learn >= 1.6; None if fancyimpute is missing."""
    try:
        import fancyimpute.soft_impute
        import fancyimpute.solver
    except ImportError:
        return None
    from sklearn.utils import check_array

    if "force_all_finite" not in inspect.signature(check_array).parameters:
        def check_array_shim(X, *args, force_all_finite=True, **kwargs):
            return check_array(X, *args, ensure_all_finite=force_all_finite, **kwargs)

        fancyimpute.solver.check_array = check_array_shim
        fancyimpute.soft_impute.check_array = check_array_shim

    class KeepLast(fancyimpute.soft_impute.SoftImpute):
        """Keeps Z, the SVT output of the last iteration (the library returns the filled
        matrix, P_Omega(Y) + P_Omega^perp(Z))."""

        def _svd_step(self, X, shrinkage_value, max_rank=None):
            self.Z_, rank = super()._svd_step(X, shrinkage_value, max_rank)
            return self.Z_, rank

    return KeepLast


def fancyimpute_solve(d: Problem, cls) -> np.ndarray:
    solver = cls(shrinkage_value=d.lam, convergence_threshold=d.fancy_threshold,
                 max_iters=max(100, d.fancy_iters + 10), verbose=False)
    solver.fit_transform(d.with_nan)
    return solver.Z_


def cases(quick: bool = False) -> list[Case]:
    out = []
    tol = QUICK_TOL if quick else TOL
    fancy = _fancyimpute_soft_impute()
    for m, frac, rank in QUICK_SIZES if quick else SIZES:
        dense = m <= (QUICK_SIZES[0][0] if quick else DENSE_MAX)
        peers = {}
        if dense and fancy is not None:
            peers[FANCY] = partial(fancyimpute_solve, cls=fancy)
        if dense:
            peers["dense SVD (numpy)"] = peer_solve
        peers["randomized_svd (scikit-learn)"] = partial(peer_solve, svd="randomized")
        setup = partial(make_problem, m, frac, rank, tol, fancy=dense and fancy is not None)
        out.append(Case("soft_impute", {"m = n": m, "observed": int(frac * m * m), "rank": rank},
                        setup, regref_solve, peers, tol=tol, score=score,
                        repeats=1 if quick else 0,
                        peer_libs={FANCY: ["fancyimpute", "scikit-learn"]}))
    return out
