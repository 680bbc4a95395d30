"""Ridge over a grid of strengths: regref (one SVD for every lambda) vs scikit-learn.

Two problems per size, both without intercept, float64:

* ``ridge_path``: the coefficients for all ``L`` strengths. regref factors ``X`` once
  (:func:`regref.ridge.ridge_path`); scikit-learn refits ``Ridge(alpha=lam,
  fit_intercept=False)`` per strength (default solver, which is Cholesky here; also
  ``solver="svd"`` where that stays cheap).
* ``ridge_loo``: pick the strength with the smallest exact leave-one-out error and return
  the coefficients there, what a user calls "RidgeCV". regref:
  ``ridge_loo(X, y, lams, return_coef=True)``, which takes the coefficients from the same
  factorization as the errors (an SVD when n >= p, an eigendecomposition of X X^T when
  n < p); scikit-learn: ``RidgeCV(alphas=lams, fit_intercept=False)``, the same efficient
  LOO (its "svd" mode when n > p, "eigen" on X X^T when n < p). The answer compared is
  ``(chosen strength, coefficients)``, so a different choice fails.

Sizes: both shapes, n > p (1000 x 400, 5000 x 200) and n < p (400 x 2000, 200 x 5000), and
a larger n < p problem for ``ridge_loo`` only (1000 x 5000, where forming the n x n Gram
matrix dominates; scikit-learn's 50 refits of the path would take most of the suite's time
there).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from sklearn.linear_model import Ridge, RidgeCV

from regref.ridge import ridge_loo, ridge_path

from .harness import Case, PathData, Variant

NAME = "ridge_path"
N_LAMS = 50
# (n, p, also time sklearn's per-lambda SVD solver): n > p, n >> p, n < p, n << p. Sized so
# the whole default run (scikit-learn refits 50 times per size) stays near two minutes on 2
# cores; the SVD peer (50 SVDs) only runs where one SVD is cheapest, the tall-thin case.
SIZES = [(1000, 400, False), (5000, 200, True), (400, 2000, False), (200, 5000, False)]
LOO_ONLY_SIZES = [(1000, 5000)]  # n < p where the Gram matrix dominates
QUICK_SIZES = [(60, 20, True), (20, 60, True)]


Data = PathData


def make_data(n: int, p: int, n_lams: int = N_LAMS, seed: int = 0) -> Data:
    """Gaussian design, dense signal of unit norm, unit noise; strengths around the optimum.

    With ``w ~ N(0, I/p)`` and unit noise the best strength is near ``p``, so the grid
    ``p * logspace(-3, 3, n_lams)`` brackets it and leave-one-out has an interior minimum.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = X @ (rng.standard_normal(p) / np.sqrt(p)) + rng.standard_normal(n)
    lams = p * np.logspace(-3, 3, n_lams)
    return Data.from_numpy(X, y, lams)


def on_device(d: Data, device: str, dtype: torch.dtype) -> Data:
    return d.on_device(device, dtype)


def regref_path(d: Data) -> torch.Tensor:
    return ridge_path(d.Xt, d.yt, d.lamst)


def sklearn_path(d: Data, solver: str = "auto") -> np.ndarray:
    return np.stack([Ridge(alpha=lam, fit_intercept=False, solver=solver).fit(d.X, d.y).coef_
                     for lam in d.lams])


def regref_loo(d: Data):
    loo, w = ridge_loo(d.Xt, d.yt, d.lamst, return_coef=True)
    return d.lamst[loo.argmin()].reshape(1), w


def sklearn_loo(d: Data):
    model = RidgeCV(alphas=d.lams, fit_intercept=False).fit(d.X, d.y)
    return np.array([model.alpha_]), model.coef_


def _gpu_variants(fn) -> list[Variant]:
    if not torch.cuda.is_available():
        return []
    return [Variant("cuda fp64", partial(on_device, device="cuda", dtype=torch.float64), fn,
                    tol=1e-8, device="cuda"),
            Variant("cuda fp32", partial(on_device, device="cuda", dtype=torch.float32), fn,
                    tol=1e-3, device="cuda")]


def cases(quick: bool = False) -> list[Case]:
    """Both problems at every size (tiny sizes when ``quick``)."""
    out = []
    for n, p, with_svd in QUICK_SIZES if quick else SIZES:
        size = {"n": n, "p": p, "L": N_LAMS}
        setup = partial(make_data, n, p)
        peers = {"`Ridge` refit per λ": sklearn_path}
        if with_svd:
            peers['`Ridge(solver="svd")` refit per λ'] = partial(sklearn_path, solver="svd")
        out.append(Case("ridge_path", size, setup, regref_path, peers,
                        variants=_gpu_variants(regref_path)))
        out.append(Case("ridge_loo", size, setup, regref_loo, {"`RidgeCV`": sklearn_loo},
                        variants=_gpu_variants(regref_loo)))
    for n, p in [] if quick else LOO_ONLY_SIZES:
        out.append(Case("ridge_loo", {"n": n, "p": p, "L": N_LAMS}, partial(make_data, n, p),
                        regref_loo, {"`RidgeCV`": sklearn_loo},
                        variants=_gpu_variants(regref_loo)))
    return out
