"""The lasso path: regref's batched working-set solver vs scikit-learn (and skglm).

Problem: :math:`\\min_w \\tfrac1{2n}\\|y - Xw\\|^2 + \\lambda\\|w\\|_1` for 50 strengths from
:math:`\\lambda_{\\max}` down to :math:`\\lambda_{\\max}/100` (geometric), no intercept,
float64. Design: Gaussian rows with Toeplitz correlation :math:`\\rho^{|i-j|}`,
:math:`\\rho = 0.5`; a sparse truth (2% of the features) and noise at signal-to-noise 3.

Same stopping rule for everyone: a duality gap of at most :math:`10^{-6}` times the
objective at zero, :math:`\\|y\\|^2/2n`, at every strength. regref: ``tol=1e-6``.
scikit-learn ``lasso_path`` checks ``gap <= tol * ||y||^2 / n``, so ``tol=5e-7``
(its default Gram precomputation when :math:`n > p`, its gap-safe screening). skglm
stops on the KKT violation instead, so it runs warm-started along the path with a
violation tolerance tight enough that its gap is below the same bound (checked below).

The compared answer is the objective at every strength, divided by the objective at
zero: two solutions whose gaps are both below :math:`10^{-6}` agree to :math:`10^{-6}`.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from sklearn.linear_model import lasso_path as sklearn_lasso_path

from regref.sparse import lambda_max, lasso_path

from .harness import Case, PathData, Variant

NAME = "lasso_path"
N_LAMS = 50
RHO = 0.5
GAP = 1e-6
SIZES = [(500, 5000), (5000, 500), (2000, 20000)]
QUICK_SIZES = [(40, 120), (120, 40)]
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


def skglm_path(d: Data) -> np.ndarray:
    from skglm import Lasso

    model = Lasso(alpha=d.lams[0], fit_intercept=False, warm_start=True, tol=1e-9,
                  max_iter=1000)
    out = []
    for lam in d.lams:
        model.alpha = lam
        out.append(model.fit(d.X, d.y).coef_.copy())
    return np.stack(out)


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
    return out
