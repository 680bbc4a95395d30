"""Graphical lasso: regref (with and without screening) vs scikit-learn, on the same problems.

Problems: a sparse precision from ``sklearn.datasets.make_sparse_spd_matrix`` (p variables,
``alpha = 1 - 2.5/p``, about 4 edges per variable, coefficients in [0.3, 0.8]), ``n = 2p``
Gaussian samples, standardized; strength ``LAM = 0.4``, at which the screening graph splits
into many components.

Stopping: scikit-learn ``graphical_lasso(mode="cd")`` stops when its gap estimate
tr(S Theta) - p + lam ||Theta||_1,off drops below ``GAP``, with its inner lasso tolerance
``enet_tol = ENET_TOL`` (with ``enet_tol = GAP`` the inner solves are too loose for the gap
ever to fall below ``GAP``: it runs to ``max_iter`` and is 100x slower); regref
stops when its certified duality gap (the dual point clipped into the box, a proof rather
than an estimate) is below the same ``GAP`` (``tol = GAP / p``). The compared answer is
the objective value, which both gaps bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from sklearn.covariance import graphical_lasso as sk_graphical_lasso
from sklearn.datasets import make_sparse_spd_matrix

from regref.covariance import graphical_lasso, objective

from .harness import Case, Variant

NAME = "graphical_lasso"
LAM = 0.4
GAP = 1e-4
ENET_TOL = 1e-8
SIZES = [100, 500, 2000]
QUICK_SIZES = [30]
SLOW = 1000  # p above which a case is timed once (its warm-up run)
NO_SCREEN_MAX = 500  # the unscreened variant runs up to this p
NOTE = (f"Strength lam = {LAM} on standardized data, n = 2p samples; both solvers stop at "
        f"a duality gap of {GAP:g}; the compared value is the objective. Cases with p above "
        f"{SLOW} are timed once. 'no screening' solves the whole p x p problem (p <= "
        f"{NO_SCREEN_MAX}).")


@dataclass
class Problem:
    S: np.ndarray
    St: torch.Tensor


def make_problem(p: int, seed: int = 0) -> Problem:
    P = make_sparse_spd_matrix(n_dim=p, alpha=1 - 2.5 / p, smallest_coef=0.3,
                               largest_coef=0.8, random_state=seed)
    rng = np.random.default_rng(seed)
    X = np.linalg.solve(np.linalg.cholesky(P).T, rng.standard_normal((p, 2 * p))).T
    X /= X.std(0)
    S = X.T @ X / len(X)
    return Problem(S, torch.as_tensor(S))


def regref_glasso(d: Problem, screen: bool = True) -> torch.Tensor:
    return graphical_lasso(d.St, LAM, tol=GAP / d.S.shape[0], screen=screen)


def sklearn_glasso(d: Problem) -> np.ndarray:
    _, T = sk_graphical_lasso(d.S, LAM, mode="cd", tol=GAP, enet_tol=ENET_TOL,
                               max_iter=1000)
    return (T + T.T) / 2


def score(d: Problem, T) -> np.ndarray:
    return np.array([float(objective(d.St, torch.as_tensor(np.asarray(T)), LAM))])


def cases(quick: bool = False) -> list[Case]:
    out = []
    for p in QUICK_SIZES if quick else SIZES:
        variants = []
        if p <= NO_SCREEN_MAX:
            variants.append(Variant("no screening", lambda d: d,
                                    partial(regref_glasso, screen=False), tol=1e-5))
        out.append(Case("graphical_lasso", {"p": p, "n": 2 * p}, partial(make_problem, p),
                        regref_glasso, {"scikit-learn `graphical_lasso` (cd)": sklearn_glasso},
                        tol=1e-5, variants=variants, score=score,
                        repeats=0 if p > SLOW else None))
    return out
