"""The lasso path: regref's batched working-set solver vs scikit-learn (and skglm).

Problem: :math:`\\min_w \\tfrac1{2n}\\|y - Xw\\|^2 + \\lambda\\|w\\|_1` for 50 strengths from
:math:`\\lambda_{\\max}` down to :math:`\\lambda_{\\max}/100` (geometric), no intercept,
float64. Design: Gaussian rows with Toeplitz correlation :math:`\\rho^{|i-j|}`,
:math:`\\rho = 0.5`; a sparse truth (2% of the features) and noise at signal-to-noise 3.

Regimes: wide (500x5000, 2000x20000) and tall (5000x500, 1000x100, 20000x200) designs,
all with the same path (no size picked for one solver: the tall ones are where
scikit-learn's precomputed Gram matrix is strongest).

Same stopping rule for everyone: a duality gap of at most :math:`10^{-6}` times the
objective at zero, :math:`\\|y\\|^2/2n`, at every strength. regref: ``tol=1e-6``.
scikit-learn ``lasso_path`` checks ``gap <= tol * ||y||^2 / n``, so ``tol=5e-7``
(its default Gram precomputation when :math:`n > p`, its gap-safe screening). skglm
stops on a KKT violation (its ``tol``), not on the gap, so its peer runs warm-started
along the path and, at each strength, computes the duality gap of what skglm returned
and refits with a 10x tighter ``tol`` until the gap meets the same bound (starting from
``tol = 1e-6 * P(0)``; those gap checks are two products with X, in the timing).

The compared answer is the objective at every strength, divided by the objective at
zero: two solutions whose gaps are both below :math:`10^{-6}` agree to :math:`10^{-6}`.

K-fold case: :func:`regref.selection.kfold_path_score` with ``lasso_path`` at the same
gap (batched over the 5 folds), plus the refit at the chosen strength, against
scikit-learn ``LassoCV`` at its defaults except ``alphas`` (the same 50), ``cv`` (the
same 5 folds), ``fit_intercept=False`` and ``tol=5e-7`` (the same gap on each training
fold; its refit on all rows stops at the same gap too). Compared: the mean validation
error at every strength, relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from sklearn.linear_model import lasso_path as sklearn_lasso_path

from regref.selection import kfold_path_score
from regref.sparse import lambda_max, lasso, lasso_path

from .harness import Case, PathData, Variant

NAME = "lasso_path"
N_LAMS = 50
RHO = 0.5
GAP = 1e-6
SIZES = [(500, 5000), (2000, 20000), (5000, 500), (1000, 100), (20000, 200)]
QUICK_SIZES = [(40, 120), (120, 40)]
KFOLD_SIZES = [(1000, 100), (5000, 500)]
QUICK_KFOLD_SIZES = [(150, 20)]
K = 5
SLOW = 5e6  # n * p above which a case is timed once, on its warm-up run
NOTE = (f"Cases with n·p above {SLOW:.0e} are timed once (their warm-up run); skglm's numba "
        "kernels are compiled before any timing.")
Data = PathData


def correlated_design(n: int, p: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Rows i.i.d. Gaussian with covariance ``rho ** |i - j|`` (an AR(1) across columns)."""
    Z = rng.standard_normal((n, p))
    X = np.empty_like(Z)
    X[:, 0] = Z[:, 0]
    c = np.sqrt(1 - rho**2)
    for j in range(1, p):
        X[:, j] = rho * X[:, j - 1] + c * Z[:, j]
    return X


def make_data(n: int, p: int, seed: int = 0) -> Data:
    """Correlated design, 2% of the features active, signal-to-noise 3; 50 strengths."""
    rng = np.random.default_rng(seed)
    X = correlated_design(n, p, RHO, rng)
    w = np.zeros(p)
    support = rng.choice(p, max(5, p // 50), replace=False)
    w[support] = rng.standard_normal(len(support))
    signal = X @ w
    y = signal + np.linalg.norm(signal) / (3 * np.sqrt(n)) * rng.standard_normal(n)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    lams = float(lambda_max(Xt, yt)) * np.geomspace(1, 1e-2, N_LAMS)
    return Data(X, y, lams, Xt, yt, torch.as_tensor(lams))


def relative_objectives(d: Data, W) -> np.ndarray:
    """Objective at every strength over the objective at zero; ``W`` is (L, p)."""
    W = W.detach().cpu().double().numpy() if isinstance(W, torch.Tensor) else np.asarray(W)
    R = d.y[:, None] - d.X @ W.T
    n = len(d.y)
    obj = (R * R).sum(0) / (2 * n) + d.lams * np.abs(W).sum(1)
    return obj / (d.y @ d.y / (2 * n))


def regref_path(d: Data) -> torch.Tensor:
    return lasso_path(d.Xt, d.yt, d.lamst, tol=GAP)


def sklearn_path(d: Data) -> np.ndarray:
    _, coefs, _ = sklearn_lasso_path(d.X, d.y, alphas=d.lams, tol=GAP / 2, max_iter=100_000)
    return coefs.T


def gap_np(X: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float) -> float:
    """Duality gap of the lasso at ``w``, dual point the rescaled residual (chapter 04)."""
    n = len(y)
    r = y - X @ w
    a = min(1.0, n * lam / max(np.abs(X.T @ r).max(), np.finfo(np.float64).tiny))
    primal = r @ r / (2 * n) + lam * np.abs(w).sum()
    dual = (y @ y - (y - a * r) @ (y - a * r)) / (2 * n)
    return primal - dual


def skglm_path(d: Data) -> np.ndarray:
    from skglm import Lasso

    bound = GAP * (d.y @ d.y) / (2 * len(d.y))
    model = Lasso(alpha=d.lams[0], fit_intercept=False, warm_start=True, tol=bound,
                  max_iter=1000)
    out = []
    for lam in d.lams:
        model.alpha, model.tol = lam, bound
        w = model.fit(d.X, d.y).coef_
        while gap_np(d.X, d.y, w, lam) > bound and model.tol > 1e-16:
            model.tol /= 10  # skglm stops on a KKT violation: tighten until the gap holds
            w = model.fit(d.X, d.y).coef_
        out.append(w.copy())
    return np.stack(out)


@dataclass
class FoldData:
    """A path problem and its folds (a label per row)."""

    d: Data
    folds: np.ndarray


def make_fold_data(n: int, p: int) -> FoldData:
    d = make_data(n, p)
    return FoldData(d, np.random.default_rng(1).permutation(n) % K)


def regref_kfold(fd: FoldData):
    d = fd.d
    E = kfold_path_score(partial(lasso_path, tol=GAP), d.Xt, d.yt, d.lamst,
                         folds=torch.as_tensor(fd.folds))
    cv = E.mean(0)
    w = lasso(d.Xt, d.yt, d.lamst[int(cv.argmin())], tol=GAP)  # the refit, as LassoCV
    return cv, w


def sklearn_kfold(fd: FoldData):
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import PredefinedSplit

    d = fd.d
    model = LassoCV(alphas=d.lams, cv=PredefinedSplit(fd.folds), fit_intercept=False,
                    tol=GAP / 2).fit(d.X, d.y)
    return model.mse_path_.mean(1), model.coef_


def kfold_score(fd: FoldData, answer) -> np.ndarray:
    """The mean validation error at every strength (the curve both choose from)."""
    cv = answer[0]
    return cv.detach().cpu().double().numpy() if isinstance(cv, torch.Tensor) else cv


def on_device(d: Data, device: str, dtype: torch.dtype) -> Data:
    return d.on_device(device, dtype)


def _peers(quick: bool) -> dict:
    peers = {"scikit-learn `lasso_path`": sklearn_path}
    if quick:  # skglm compiles with numba for ~10 s on first use
        return peers
    try:
        import skglm  # noqa: F401
    except ImportError:
        return peers
    tiny = make_data(20, 30)
    skglm_path(tiny)  # compile skglm's numba kernels outside the timings
    peers["skglm `Lasso`, warm-started"] = skglm_path
    return peers


def cases(quick: bool = False) -> list[Case]:
    out = []
    for n, p in QUICK_SIZES if quick else SIZES:
        variants = []
        if torch.cuda.is_available():
            variants = [Variant("cuda fp64", partial(on_device, device="cuda",
                                                     dtype=torch.float64), regref_path,
                                tol=2 * GAP, device="cuda")]
        out.append(Case("lasso_path", {"n": n, "p": p, "L": N_LAMS}, partial(make_data, n, p),
                        regref_path, _peers(quick), tol=2 * GAP, variants=variants,
                        score=relative_objectives, repeats=0 if n * p > SLOW else None))
    for n, p in QUICK_KFOLD_SIZES if quick else KFOLD_SIZES:
        out.append(Case(f"kfold_lasso (K={K})", {"n": n, "p": p, "L": N_LAMS},
                        partial(make_fold_data, n, p), regref_kfold,
                        {"scikit-learn `LassoCV`": sklearn_kfold}, tol=1e-5,
                        score=kfold_score,
                        peer_libs={"scikit-learn `LassoCV`": ["scikit-learn"]}))
    return out
