r"""Choosing the regularization strength: cross-validation, LOO/GCV, SURE, evidence, hypergradients.

Five ways to pick :math:`\lambda` without a test set, from the crudest to the finest:

- **K-fold cross-validation** of any path solver (:func:`kfold_path_score`,
  :func:`one_standard_error`);
- **exact leave-one-out and GCV** for linear smoothers :math:`\hat y = Hy`, from the
  residuals and the diagonal or the trace of :math:`H` (:func:`loo`, :func:`gcv`,
  :func:`ridge_loo_per_target`);
- **Stein's unbiased risk estimate** when the noise level is known (:func:`sure`,
  :func:`sure_soft_threshold`, :func:`sure_ridge`);
- the **Bayesian evidence** of ridge regression and its maximizer
  (:func:`log_evidence_ridge`, :func:`evidence_ridge`);
- **hypergradients** of a validation loss, in closed form for ridge
  (:func:`ridge_hypergradient`) and by implicit differentiation for any twice
  differentiable training loss (:func:`implicit_hypergradient`), and the HOAG outer loop
  that follows them with inexact inner solves (:func:`hoag`, whose inner solver
  :func:`lbfgs` is exposed so that grid searches can be counted in the same units).

Ridge quantities reuse the spectral helpers of :mod:`regref.ridge` (one SVD for every
strength). Derivations: chapter 03.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from ._core import (
    ConvergenceWarning,
    Info,
    as_float_tensor,
    check_data,
    check_finite,
    check_matrix,
    check_positive,
    check_positive_int,
    check_strength,
    check_tol,
)
from .ridge import _filters, _fits, _left_spectrum, _svd

__all__ = [
    "kfold_path_score",
    "one_standard_error",
    "loo",
    "gcv",
    "ridge_loo_per_target",
    "sure",
    "sure_soft_threshold",
    "sure_ridge",
    "log_evidence_ridge",
    "evidence_ridge",
    "ridge_hypergradient",
    "implicit_hypergradient",
    "hoag",
    "lbfgs",
]


# ----------------------------------------------------------------------------- helpers

def _tensor(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    return check_finite(as_float_tensor(x, name, like=like), name)


def _default_tol(tol, like: torch.Tensor) -> float:
    return check_tol(tol, like.dtype, 1e-10, 1e-5)


def _residuals(residuals) -> torch.Tensor:
    """Residuals of shape (..., n) with n >= 1, the last dimension running over samples."""
    r = _tensor(residuals, "residuals")
    if r.ndim == 0 or r.shape[-1] == 0:
        raise ValueError(f"residuals must have a last dimension n >= 1, got {tuple(r.shape)}")
    return r


def _broadcast(a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str):
    try:
        return torch.broadcast_tensors(a, b)
    except RuntimeError as err:
        raise ValueError(f"{a_name} of shape {tuple(a.shape)} and {b_name} of shape "
                         f"{tuple(b.shape)} do not broadcast") from err


def _slack(one_minus: torch.Tensor, name: str, what: str) -> torch.Tensor:
    if bool((one_minus <= 1e3 * torch.finfo(one_minus.dtype).eps).any()):
        raise ValueError(f"{name} must be < 1 {what} ({name} = 1 leaves nothing to predict "
                         "with)")
    return one_minus


# ----------------------------------------------------------------------------- K-fold

def _fold_ids(n: int, k, folds, generator) -> torch.Tensor:
    """Fold label of every row: given, or a shuffled split into sizes like scikit-learn's KFold."""
    if folds is not None:
        ids = torch.as_tensor(folds)
        if ids.shape != (n,) or ids.is_floating_point() or ids.is_complex():
            raise ValueError(f"folds must be an integer array of shape ({n},), got "
                             f"{tuple(ids.shape)} of dtype {ids.dtype}")
        labels, ids = torch.unique(ids.long(), return_inverse=True)
        if len(labels) < 2:
            raise ValueError("folds must contain at least two distinct labels")
        return ids
    k = check_positive_int(k, "k")
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of rows {n}, got {k}")
    sizes = torch.full((k,), n // k)
    sizes[: n % k] += 1
    ids = torch.empty(n, dtype=torch.long)
    ids[torch.randperm(n, generator=generator)] = torch.repeat_interleave(torch.arange(k), sizes)
    return ids


def kfold_path_score(path: Callable, X, y, lams, *, k: int = 5, folds=None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    r"""K-fold cross-validation error of a regularization path, per fold and strength.

    .. math:: \mathrm{CV}_f(\lambda) = \frac1{|I_f|}\sum_{i \in I_f}
              \bigl\|y_i - x_i^\top \hat w_\lambda^{(-f)}\bigr\|^2 ,
              \qquad f = 1, \dots, K,

    where :math:`\hat w^{(-f)}_\lambda` is fitted on the rows outside fold :math:`I_f`.
    The mean over folds is what scikit-learn's ``cross_val_score`` averages (with the sign
    flipped); :func:`one_standard_error` turns the table into a choice of :math:`\lambda`.

    Algorithm: one call of the path solver per fold, each batched over every strength
    (so the cost is :math:`K` paths, e.g. :math:`K` SVDs for
    :func:`regref.ridge.ridge_path`), then one batched product per fold for the
    predictions. The loop is over the :math:`K` folds only, never over strengths.

    Derived in chapter 03 (section on K-fold cross-validation).

    Parameters
    ----------
    path : callable
        ``path(X_train, y_train, lams)`` returning the coefficients for every strength,
        shape (L, p) (or (L, p, t) for a (n, t) ``y``), rows in the order of ``lams``:
        :func:`regref.ridge.ridge_path`, :func:`regref.sparse.lasso_path`, ...
    X : tensor of shape (n, p)
    y : tensor of shape (n,) or (n, t)
    lams : tensor of shape (L,)
        Strengths ``>= 0``, passed to ``path`` as they are.
    k : int
        Number of folds when ``folds`` is not given: a random partition (drawn with
        ``generator``) into folds whose sizes differ by at most one.
    folds : integer array of shape (n,), optional
        The fold label of every row (any integers; each distinct value is one fold).
    generator : torch.Generator, optional
        A CPU generator for the random partition (drawn on the CPU whatever the device of
        ``X``, so that the folds do not depend on the device).

    Returns
    -------
    errors : tensor of shape (K, L)
        Mean squared validation error of every fold and strength (averaged over targets).
    """
    X, y = check_data(X, y)
    lams = check_strength(lams, "lams", X, ndims=(1,))
    ids = _fold_ids(X.shape[0], k, folds, generator).to(X.device)
    errors = []
    for f in range(int(ids.max()) + 1):
        val = ids == f
        W = as_float_tensor(path(X[~val], y[~val], lams), "path(...)", like=X)
        want = (len(lams), X.shape[1]) + tuple(y.shape[1:])
        if tuple(W.shape) != want:
            raise ValueError(f"path must return shape {want}, got {tuple(W.shape)}")
        pred = torch.matmul(X[val], W.reshape(len(lams), X.shape[1], -1))  # (L, n_f, t)
        resid = y[val].reshape(-1, 1 if y.ndim == 1 else y.shape[1]) - pred
        errors.append((resid**2).mean(dim=(1, 2)))
    return torch.stack(errors)


def one_standard_error(errors) -> tuple[int, int]:
    r"""The minimum of a cross-validation curve, and the one-standard-error choice.

    With :math:`\bar e_\ell` the mean over folds and :math:`s_\ell` its standard error
    (sample standard deviation over the :math:`K` folds divided by :math:`\sqrt K`), the
    rule picks the **simplest** model whose mean error is within one standard error of
    the best, :math:`\bar e_\ell \le \bar e_{\ell^*} + s_{\ell^*}`
    (Hastie, Tibshirani and Friedman, *The Elements of Statistical Learning*, §7.10).

    Derived in chapter 03 (section on K-fold cross-validation).

    Parameters
    ----------
    errors : tensor of shape (K, L)
        Per-fold errors from :func:`kfold_path_score`, with the strengths **sorted from
        the most to the least regularized** (column 0 is the simplest model).

    Returns
    -------
    (best, one_se) : two column indices
    """
    e = _tensor(errors, "errors")
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"errors must have shape (K, L) with K >= 2 folds, got {tuple(e.shape)}")
    mean, se = e.mean(0), e.std(0) / math.sqrt(e.shape[0])
    best = int(mean.argmin())
    one_se = int(torch.nonzero(mean <= mean[best] + se[best])[0])
    return best, one_se


# ----------------------------------------------------------------------------- LOO and GCV

def loo(residuals, hat_diag) -> torch.Tensor:
    r"""Exact leave-one-out mean squared error of a linear smoother.

    For a linear smoother :math:`\hat y = Hy` that is "self-stable" (refitting without
    point :math:`i` gives the prediction obtained by replacing :math:`y_i` with that
    prediction; true for every penalized least-squares fit: ridge, generalized ridge,
    kernel ridge, smoothing splines) the leave-one-out residual is the full-fit residual
    inflated by the leverage,

    .. math:: \mathrm{LOO} = \frac1n\sum_{i=1}^n
              \Bigl(\frac{y_i - \hat y_i}{1 - H_{ii}}\Bigr)^2 .

    Cost :math:`O(n)` given the residuals and the diagonal of :math:`H`.

    Derived in chapter 03 (theorem thm-ch03-loo-shortcut).

    Parameters
    ----------
    residuals : tensor of shape (..., n)
        :math:`y - Hy`; leading dimensions are batches (strengths, targets).
    hat_diag : tensor broadcastable to ``residuals``
        The diagonal :math:`H_{ii}` (the leverages), each ``< 1``.

    Returns
    -------
    tensor of shape (...)
    """
    r = _residuals(residuals)
    h = _tensor(hat_diag, "hat_diag", like=r)
    r, h = _broadcast(r, h, "residuals", "hat_diag")
    return ((r / _slack(1 - h, "hat_diag", "everywhere")) ** 2).mean(-1)


def gcv(residuals, trace) -> torch.Tensor:
    r"""Generalized cross-validation score of a linear smoother.

    .. math:: \mathrm{GCV} = \frac{\frac1n\|y - Hy\|^2}{\bigl(1 - \operatorname{tr}(H)/n\bigr)^2},

    :func:`loo` with every leverage replaced by their mean :math:`\operatorname{tr}(H)/n`
    (Golub, Heath and Wahba, 1979). Needs only the trace, which for large smoothers can be
    estimated by Hutchinson's method.

    Derived in chapter 03 (section on leave-one-out).

    Parameters
    ----------
    residuals : tensor of shape (..., n)
    trace : tensor broadcastable to shape (...)
        :math:`\operatorname{tr}(H)`, the effective degrees of freedom, ``< n``.

    Returns
    -------
    tensor of shape (...)
    """
    r = _residuals(residuals)
    t = _tensor(trace, "trace", like=r)
    mse, t = _broadcast((r**2).mean(-1), t, "residuals", "trace")
    return mse / _slack(1 - t / r.shape[-1], "trace / n", "") ** 2


def ridge_loo_per_target(X, Y, lams) -> torch.Tensor:
    r"""Exact leave-one-out error of ridge for every strength **and every target**.

    :func:`loo` applied to the ridge smoother
    :math:`H_\lambda = U\operatorname{diag}\bigl(s^2/(s^2+\lambda)\bigr)U^\top` and each
    column of ``Y`` separately, so that each target can get its own :math:`\lambda`
    (:func:`regref.ridge.ridge_loo` averages over targets instead).

    Cost: one SVD of :math:`X` shared by all targets and strengths, then
    :math:`O(Ln\min(n,p)k)` in batched products: thousands of targets cost about as much
    as a few matrix products of size :math:`n \times k`.

    Derived in chapter 03 ("Scale it up").

    Parameters
    ----------
    X : tensor of shape (n, p)
    Y : tensor of shape (n, k)
    lams : tensor of shape (L,)
        Strengths ``>= 0`` (``> 0`` when :math:`n \le p`).

    Returns
    -------
    tensor of shape (L, k)
    """
    X, Y = check_data(X, Y, y_name="Y")
    lams = check_strength(lams, "lams", X, ndims=(1,))
    resid, leverage, _ = _fits(X, Y, lams)  # (L, n, k), (L, n, 1)
    return loo(resid.mT, leverage.mT)


# ----------------------------------------------------------------------------- SURE

def sure(residuals, divergence, sigma) -> torch.Tensor:
    r"""Stein's unbiased risk estimate for an estimator of a Gaussian mean.

    For :math:`y \sim \mathcal N(\mu, \sigma^2 I_n)` and a weakly differentiable
    estimator :math:`\hat\mu(y)`,

    .. math:: \mathrm{SURE} = \|y - \hat\mu(y)\|^2 - n\sigma^2
              + 2\sigma^2 \operatorname{div}\hat\mu(y)

    satisfies :math:`\mathbb E[\mathrm{SURE}] = \mathbb E\|\hat\mu(y) - \mu\|^2`
    (Stein, 1981). For a linear smoother the divergence is :math:`\operatorname{tr} H`;
    for soft thresholding it is the number of surviving coordinates.

    Derived in chapter 03 (theorem thm-ch03-sure).

    Parameters
    ----------
    residuals : tensor of shape (..., n)
        :math:`y - \hat\mu(y)`.
    divergence : tensor broadcastable to shape (...)
        :math:`\sum_i \partial\hat\mu_i/\partial y_i`.
    sigma : float
        Noise standard deviation, ``> 0``.

    Returns
    -------
    tensor of shape (...)
    """
    r = _residuals(residuals)
    s2 = check_positive(sigma, "sigma") ** 2
    rss, df = _broadcast((r**2).sum(-1), _tensor(divergence, "divergence", like=r),
                         "residuals", "divergence")
    return rss - r.shape[-1] * s2 + 2 * s2 * df


def sure_soft_threshold(y, tau, sigma) -> torch.Tensor:
    r"""SURE of soft thresholding :math:`\hat\mu_i = \operatorname{sign}(y_i)(|y_i|-\tau)_+`.

    .. math:: \mathrm{SURE}(\tau) = -n\sigma^2 + \sum_{i=1}^n \min(y_i^2, \tau^2)
              + 2\sigma^2\,\#\{i : |y_i| > \tau\}

    (Donoho and Johnstone, 1995), :func:`sure` with residual :math:`\min(|y_i|, \tau)` and
    divergence the number of coordinates above the threshold. Cost :math:`O(nL)`.

    Derived in chapter 03 (theorem thm-ch03-sure).

    Parameters
    ----------
    y : tensor of shape (n,) or (B, n)
        Observations (B independent problems).
    tau : float or tensor of shape (L,)
        Thresholds ``>= 0``.
    sigma : float
        Noise standard deviation, ``> 0``.

    Returns
    -------
    tensor of shape ``tau.shape + y.shape[:-1]``: (), (L,), (B,) or (L, B)
    """
    y = _tensor(y, "y")
    if y.ndim not in (1, 2) or y.shape[-1] == 0:
        raise ValueError(f"y must be 1-D or 2-D and non-empty, got shape {tuple(y.shape)}")
    tau = check_strength(tau, "tau", y, ndims=(0, 1))
    t = tau.reshape(tau.shape + (1,) * y.ndim)
    a = y.abs()
    return sure(torch.minimum(a, t), (a > t).sum(-1).to(y.dtype), sigma)


def sure_ridge(X, y, lams, sigma) -> torch.Tensor:
    r"""SURE of the ridge fit :math:`\hat\mu = H_\lambda y`, for every strength.

    .. math:: \mathrm{SURE}(\lambda) = \|y - H_\lambda y\|^2 - n\sigma^2
              + 2\sigma^2\operatorname{tr}H_\lambda,

    an unbiased estimate of the in-sample risk :math:`\mathbb E\|X\hat w_\lambda - X w\|^2`
    (Mallows' :math:`C_p`). One SVD for all strengths. Multi-target ``y`` sums the risks.

    Derived in chapter 03 (theorem thm-ch03-sure).

    Returns
    -------
    tensor of shape (L,)
    """
    X, y = check_data(X, y)
    lams = check_strength(lams, "lams", X, ndims=(1,))
    resid, _, df = _fits(X, y, lams)  # (L, n, k)
    return sure(resid.mT, df[:, None], sigma).sum(-1)


# ----------------------------------------------------------------------------- evidence

def _spectral_data(X, y):
    """Squared singular values, the coordinates of y on U, and what lies outside span(U)."""
    U, s2, _ = _left_spectrum(X)
    z2 = (U.mT @ y) ** 2
    rest = ((y @ y) - z2.sum()).clamp(min=0)
    return s2, z2, rest


def log_evidence_ridge(X, y, alpha, beta) -> torch.Tensor:
    r"""Log marginal likelihood of Bayesian linear regression (the evidence of ridge).

    Prior :math:`w \sim \mathcal N(0, \alpha^{-1}I_p)`, likelihood
    :math:`y \mid w \sim \mathcal N(Xw, \beta^{-1}I_n)`; integrating :math:`w` out,
    :math:`y \sim \mathcal N(0, C)` with :math:`C = \beta^{-1}I + \alpha^{-1}XX^\top`, so

    .. math:: \log p(y \mid \alpha, \beta) = -\tfrac12\Bigl(n\log 2\pi + \log\det C
              + y^\top C^{-1} y\Bigr).

    With :math:`X = U\operatorname{diag}(s)V^\top` (thin, :math:`r` factors), :math:`C`
    has eigenvalues :math:`\beta^{-1} + s_j^2/\alpha` on the columns of :math:`U` and
    :math:`\beta^{-1}` on their orthogonal complement, so with :math:`z = U^\top y`

    .. math:: \log\det C = \sum_{j=1}^r \log\Bigl(\frac1\beta + \frac{s_j^2}\alpha\Bigr)
              - (n - r)\log\beta, \qquad
              y^\top C^{-1}y = \sum_{j=1}^r \frac{z_j^2}{1/\beta + s_j^2/\alpha}
              + \beta\bigl(\|y\|^2 - \|z\|^2\bigr).

    The posterior mean is ridge with strength :math:`\lambda = \alpha/\beta`. Cost: one
    SVD, then :math:`O(r)` per :math:`(\alpha, \beta)` pair, batched over a grid.

    Derived in chapter 03 (section on the evidence).

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,)
    alpha, beta : float or tensors (broadcastable against each other)
        Prior precision of the weights and precision of the noise, ``> 0``.

    Returns
    -------
    tensor of the broadcast shape of ``alpha`` and ``beta``
    """
    X, y = check_data(X, y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {tuple(y.shape)}")
    alpha = check_strength(alpha, "alpha", X, positive=True, ndims=tuple(range(8)))
    beta = check_strength(beta, "beta", X, positive=True, ndims=tuple(range(8)))
    alpha, beta = _broadcast(alpha, beta, "alpha", "beta")
    s2, z2, rest = _spectral_data(X, y)
    n, r = X.shape[0], len(s2)
    c = 1 / beta[..., None] + s2 / alpha[..., None]  # eigenvalues of C on span(U)
    logdet = torch.log(c).sum(-1) - (n - r) * torch.log(beta)
    quad = (z2 / c).sum(-1) + beta * rest
    return -0.5 * (n * math.log(2 * math.pi) + logdet + quad)


def evidence_ridge(X, y, *, tol: float | None = None, max_iter: int = 10_000,
                   return_info: bool = False):
    r"""Maximize the evidence of ridge regression over :math:`(\alpha, \beta)`.

    .. math:: (\hat\alpha, \hat\beta) = \arg\max_{\alpha, \beta > 0}
              \log p(y \mid \alpha, \beta)

    (see :func:`log_evidence_ridge`), by MacKay's (1992) fixed point: with the posterior
    mean :math:`m = (X^\top X + \frac\alpha\beta I)^{-1}X^\top y` and the effective number
    of parameters :math:`\gamma = \sum_j \beta s_j^2/(\beta s_j^2 + \alpha)`,

    .. math:: \alpha \leftarrow \frac{\gamma}{\|m\|^2}, \qquad
              \beta \leftarrow \frac{n - \gamma}{\|y - Xm\|^2},

    whose fixed points are exactly the stationary points of the evidence. This is
    scikit-learn's ``BayesianRidge`` (its ``lambda_`` is our :math:`\alpha`, its
    ``alpha_`` our :math:`\beta`) with ``fit_intercept=False`` and zero Gamma priors. Each
    iteration costs :math:`O(\min(n,p))` after one SVD; convergence is checked every 10.

    Derived in chapter 03 (theorem thm-ch03-evidence).

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,), not zero
    tol : float, optional
        Default ``1e-10`` in float64, ``1e-5`` in float32.
        Stop when both fixed-point equations hold to relative accuracy ``tol``:
        :math:`|\alpha\|m\|^2/\gamma - 1|` and :math:`|\beta\|y - Xm\|^2/(n-\gamma) - 1|`.
        That residual is the ``certificate``.
    max_iter : int
    return_info : bool

    Returns
    -------
    alpha, beta : 0-D tensors (and a :class:`regref.Info` with ``return_info=True``)
        The ridge strength they imply is ``alpha / beta``.
    """
    X, y = check_data(X, y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {tuple(y.shape)}")
    if not bool((y != 0).any()):
        raise ValueError("y must not be zero (the evidence is then maximal at alpha = inf)")
    tol = _default_tol(tol, X)
    max_iter = check_positive_int(max_iter, "max_iter")
    s2, z2, rest = _spectral_data(X, y)
    n = X.shape[0]

    def moments(alpha, beta):
        d = s2 + alpha / beta
        gamma = (s2 / d).sum()
        m2 = (s2 * z2 / d**2).sum()
        r2 = ((alpha / beta) ** 2 * z2 / d**2).sum() + rest
        return gamma, m2, r2

    alpha, beta = torch.ones_like(rest), 1 / (y @ y / n)  # scikit-learn's start
    converged, it, cert = False, 0, float("inf")
    while it < max_iter:
        for _ in range(min(10, max_iter - it)):
            gamma, m2, r2 = moments(alpha, beta)
            alpha, beta = gamma / m2, (n - gamma) / r2
            it += 1
        gamma, m2, r2 = moments(alpha, beta)
        cert = float(torch.maximum((alpha * m2 / gamma - 1).abs(),
                                   (beta * r2 / (n - gamma) - 1).abs()))
        if not math.isfinite(cert):
            raise ValueError("the evidence has no finite maximizer for this data (alpha or "
                             "beta diverged)")
        if cert <= tol:
            converged = True
            break
    if not converged:
        warnings.warn(f"evidence_ridge did not reach a fixed-point residual of {tol:g} in "
                      f"{max_iter} iterations (reached {cert:.3g}); increase max_iter",
                      ConvergenceWarning, stacklevel=2)
    if return_info:
        return alpha, beta, Info(n_iter=it, converged=converged, certificate=cert)
    return alpha, beta


# ----------------------------------------------------------------------------- hypergradients

def ridge_hypergradient(X, y, X_val, y_val, lams):
    r"""Validation error of ridge and its exact derivative in :math:`\lambda`.

    .. math:: V(\lambda) = \frac1m\|y_{\mathrm{val}} - X_{\mathrm{val}}w_\lambda\|^2,
              \qquad
              V'(\lambda) = \frac2m\,(y_{\mathrm{val}} - X_{\mathrm{val}}w_\lambda)^\top
              X_{\mathrm{val}}(X^\top X + \lambda I)^{-1}w_\lambda,

    because differentiating :math:`(X^\top X + \lambda I)w_\lambda = X^\top y` gives
    :math:`\mathrm d w_\lambda/\mathrm d\lambda = -(X^\top X + \lambda I)^{-1}w_\lambda`
    (the implicit function theorem for this one problem; the best response
    :math:`\lambda \mapsto w_\lambda` is explicit). Both come from one SVD of the
    training design: :math:`w_\lambda = V\operatorname{diag}(s/(s^2+\lambda))U^\top y`,
    :math:`(X^\top X + \lambda I)^{-1}w_\lambda = V\operatorname{diag}(s/(s^2+\lambda)^2)
    U^\top y`. Cost :math:`O(np\min(n,p) + L m \min(n,p))`.

    Derived in chapter 03 (theorem thm-ch03-implicit).

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,)
    X_val : tensor of shape (m, p)
    y_val : tensor of shape (m,)
    lams : tensor of shape (L,)
        Strengths ``> 0``.

    Returns
    -------
    (V, dV) : tensors of shape (L,)
        Validation mean squared error and its derivative in :math:`\lambda` (multiply by
        :math:`\lambda` for the derivative in :math:`\log\lambda`).
    """
    X, y = check_data(X, y)
    X_val, y_val = check_data(check_matrix(X_val, "X_val", like=X), y_val, X_name="X_val",
                              y_name="y_val")
    for name, t in (("y", y), ("y_val", y_val)):
        if t.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if X_val.shape[1] != X.shape[1]:
        raise ValueError(f"X_val must have {X.shape[1]} columns like X, got {X_val.shape[1]}")
    lams = check_strength(lams, "lams", X, positive=True, ndims=(1,))
    U, s, Vh, keep = _svd(X)
    z = U.mT @ y
    f = _filters(s, s**2, keep, lams)  # (L, r): s / (s^2 + lam)
    P = X_val @ Vh.mT  # (m, r)
    resid = y_val - (f * z) @ P.mT  # (L, m)
    dw = (f / (s**2 + lams[:, None]) * z) @ P.mT  # X_val (X^T X + lam)^{-1} w, (L, m)
    m = X_val.shape[0]
    return (resid**2).mean(-1), 2 / m * (resid * dw).sum(-1)


def _cg(hvp, b, x, tol: float, max_iter: int):
    """Conjugate gradient for H x = b (H symmetric positive definite, given by products).

    Stops when ||b - Hx|| <= tol ||b||; returns (x, iterations, relative residual).
    """
    bnorm = float(torch.linalg.norm(b))
    if bnorm == 0:
        return torch.zeros_like(b), 0, 0.0
    r = b - hvp(x) if bool(x.any()) else b.clone()
    p, rs = r.clone(), (r * r).sum()
    for it in range(max_iter + 1):
        res = math.sqrt(float(rs)) / bnorm  # one host sync per step: each step is an autograd call
        if res <= tol or it == max_iter:
            return x, it, res
        Hp = hvp(p)
        curv = (p * Hp).sum()
        if float(curv) <= 0:
            raise ValueError("the Hessian of train_loss in w is not positive definite at w "
                             "(is w a strict local minimizer?)")
        a = rs / curv
        x, r = x + a * p, r - a * Hp
        rs, rs_old = (r * r).sum(), rs
        p = r + (rs / rs_old) * p
    raise AssertionError("unreachable")


def _hypergradient(train_loss, val_loss, w, hyper, q0, tol, max_iter):
    w = w.detach().requires_grad_(True)
    hyper = hyper.detach().requires_grad_(True)
    g = torch.autograd.grad(train_loss(w, hyper), w, create_graph=True)[0]

    def hvp(v):
        return torch.autograd.grad(g, w, v, retain_graph=True)[0]

    dv = torch.autograd.grad(val_loss(w), w)[0]
    q, it, res = _cg(hvp, dv.detach(), q0, tol, max_iter)
    cross = torch.autograd.grad(g, hyper, q.detach(), allow_unused=True)[0]
    if cross is None:
        raise ValueError("train_loss does not depend on hyper")
    return -cross, q.detach(), it, res


def implicit_hypergradient(train_loss: Callable, val_loss: Callable, w, hyper, *,
                           tol: float | None = None, max_iter: int | None = None,
                           return_info: bool = False):
    r"""Hypergradient of a validation loss at an inner minimizer, by implicit differentiation.

    For :math:`w^*(h) = \arg\min_w L(w, h)` with :math:`\nabla_w^2 L` positive definite,
    the implicit function theorem gives
    :math:`\mathrm d w^*/\mathrm d h = -(\nabla_w^2 L)^{-1}\nabla_{wh}^2 L`, so

    .. math:: \frac{\mathrm d}{\mathrm d h} V\bigl(w^*(h)\bigr)
              = -\bigl(\nabla^2_{hw}L\bigr)\, q, \qquad
              \nabla_w^2 L(w^*, h)\, q = \nabla_w V(w^*).

    Algorithm: :math:`q` by conjugate gradient, with Hessian-vector products from double
    backward through ``train_loss`` (never forming the Hessian); then one more backward
    pass gives :math:`\nabla^2_{hw}L\,q`. Cost: ``n_iter + 2`` gradient evaluations of
    :math:`L` with ``create_graph``. An inexact :math:`w` gives a hypergradient with an
    error of the order of :math:`\|\nabla_w L(w, h)\|` (an exercise of chapter 03).

    Derived in chapter 03 (theorem thm-ch03-implicit).

    Parameters
    ----------
    train_loss : callable
        ``train_loss(w, hyper)``, a scalar, twice differentiable by torch.autograd.
    val_loss : callable
        ``val_loss(w)``, a scalar, differentiable.
    w : tensor
        The (approximate) minimizer of ``train_loss(., hyper)``, any shape.
    hyper : float or tensor
        The hyperparameter(s), any shape (a scalar :math:`\log\lambda`, a vector of
        per-feature strengths, ...).
    tol : float, optional
        Relative residual of the CG solve, :math:`\|\nabla_w V - \nabla_w^2 L\,q\|
        \le \mathrm{tol}\,\|\nabla_w V\|`: the ``certificate``. Default ``1e-10`` in
        float64, ``1e-5`` in float32.
    max_iter : int, optional
        CG iterations; defaults to ``10 * w.numel()``. Reaching it warns
        (:class:`regref.ConvergenceWarning`).
    return_info : bool

    Returns
    -------
    tensor of the shape of ``hyper`` (and a :class:`regref.Info` with ``return_info``)
    """
    w = _tensor(w, "w")
    hyper = _tensor(hyper, "hyper", like=w)
    tol = _default_tol(tol, w)
    max_iter = check_positive_int(10 * w.numel() if max_iter is None else max_iter, "max_iter")
    with torch.enable_grad():
        hg, _, it, res = _hypergradient(train_loss, val_loss, w, hyper, torch.zeros_like(w),
                                        tol, max_iter)
    converged = res <= tol
    if not converged:
        warnings.warn(f"implicit_hypergradient: conjugate gradient reached a relative residual "
                      f"of {res:.3g} > tol = {tol:g} in {max_iter} iterations",
                      ConvergenceWarning, stacklevel=2)
    hg = hg.detach()
    return (hg, Info(n_iter=it, converged=converged, certificate=res)) if return_info else hg


def lbfgs(fun: Callable, w0, *, tol: float = 1e-8, max_iter: int = 1000):
    r"""Minimize a smooth function with L-BFGS until :math:`\|\nabla f(w)\|_\infty \le` ``tol``.

    The inner solver of :func:`hoag`, exposed so that grid and random search can be run
    with the same solver and counted in the same units: it wraps ``torch.optim.LBFGS``
    (history 20, strong Wolfe line search) and reports the iterations it used. It also
    stops, short of ``tol``, when the line search can no longer decrease :math:`f` in
    floating point (gradients much below :math:`\sqrt{\epsilon}\,|f|` are rarely
    reachable); ``grad_max`` tells the caller where it stopped.

    Derived in chapter 03 (section on HOAG).

    Parameters
    ----------
    fun : callable
        ``fun(w)``, a scalar differentiable by torch.autograd.
    w0 : tensor
        Starting point (any shape); it is not modified.
    tol : float
        Stop when the largest gradient entry is at most ``tol`` in absolute value.
    max_iter : int
        Iterations allowed.

    Returns
    -------
    w : tensor
    n_iter : int
        L-BFGS iterations performed.
    grad_max : float
        :math:`\|\nabla f(w)\|_\infty` at the returned point (the certificate).
    """
    tol = check_positive(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    w = _tensor(w0, "w0").detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=0.0, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = fun(w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        grad = torch.autograd.grad(fun(w), w)[0]
    return w.detach(), int(opt.state[w].get("n_iter", 0)), float(grad.abs().max())


def hoag(train_loss: Callable, val_loss: Callable, w0, hyper0, *, step: float = 1.0,
         max_iter: int = 50, eps0: float = 1e-2, decrease: float = 0.7, eps_min: float = 1e-8,
         growth: float = 1.2, tol: float = 1e-6, inner_max_iter: int = 1000,
         history: list | None = None,
         return_info: bool = False):
    r"""HOAG: gradient descent on hyperparameters with approximate hypergradients.

    .. math:: \min_h V\bigl(w^*(h)\bigr), \qquad w^*(h) = \arg\min_w L(w, h),

    following Pedregosa (2016). Outer iteration :math:`k`:

    1. solve the inner problem from the previous :math:`w` (warm start) with L-BFGS only
       to :math:`\|\nabla_w L(w_k, h_k)\|_\infty \le \varepsilon_k`;
    2. solve :math:`\nabla^2_w L\, q_k = \nabla_w V(w_k)` by conjugate gradient to
       relative residual :math:`\varepsilon_k`, warm-started at :math:`q_{k-1}`;
    3. step :math:`h_{k+1} = h_k + \eta\,\nabla^2_{hw}L\,q_k` (minus the approximate
       hypergradient, as in :func:`implicit_hypergradient`).

    The tolerances decrease geometrically, :math:`\varepsilon_k = \max(\varepsilon_0
    \rho^k, \varepsilon_{\min})`, a summable sequence (until the floor), which is
    Pedregosa's condition for convergence to a stationary point. As in his implementation
    the step adapts: :math:`\eta` is halved whenever the validation loss increases by more
    than the inexactness allows (:math:`V_k > V_{k-1} + \varepsilon_{k-1}`) and
    multiplied by ``growth`` otherwise. Each outer iteration costs one warm-started
    inner solve, a few Hessian-vector products and one gradient of :math:`V`. Early
    iterations are cheap because their inner solves are loose: that is the point of the
    method.

    Derived in chapter 03 (section on HOAG).

    Parameters
    ----------
    train_loss : callable
        ``train_loss(w, hyper)``, scalar, twice differentiable, strongly convex in ``w``.
    val_loss : callable
        ``val_loss(w)``, scalar, differentiable.
    w0 : tensor
        Starting inner variable (any shape).
    hyper0 : float or tensor
        Starting hyperparameter(s), e.g. :math:`\log\lambda`.
    step : float
        Initial outer step size :math:`\eta`.
    growth : float
        Factor ``>= 1`` applied to the step after an iteration that did not increase
        the validation loss.
    max_iter : int
        Outer iterations.
    eps0, decrease, eps_min : float
        The tolerance schedule :math:`\varepsilon_k` (``0 < decrease < 1``).
    tol : float
        Stop when :math:`\eta\,\|g_k\| \le \mathrm{tol}\,(1 + \|h_k\|)` with
        :math:`\varepsilon_k` at its floor; that step length is the ``certificate``.
    inner_max_iter : int
        L-BFGS iterations allowed per inner solve.
    history : list, optional
        If given, one dict per outer iteration is appended, with keys ``iteration``,
        ``hyper``, ``val_loss``, ``hypergrad``, ``inner_iter`` (L-BFGS iterations so far,
        cumulated), ``cg_iter`` (cumulated) and ``eps``.
    return_info : bool

    Returns
    -------
    hyper, w : tensors (and a :class:`regref.Info` with ``return_info=True``)
    """
    w = _tensor(w0, "w0")
    h = _tensor(hyper0, "hyper0", like=w).clone()
    step = check_positive(step, "step")
    max_iter = check_positive_int(max_iter, "max_iter")
    inner_max_iter = check_positive_int(inner_max_iter, "inner_max_iter")
    eps_min = check_positive(eps_min, "eps_min")
    eps = max(check_positive(eps0, "eps0"), eps_min)
    tol = check_positive(tol, "tol")
    growth = float(growth)
    if not 1 <= growth < math.inf:
        raise ValueError(f"growth must be a finite number >= 1, got {growth}")
    decrease = float(decrease)
    if not 0 < decrease < 1:
        raise ValueError(f"decrease must be in (0, 1), got {decrease}")
    q = torch.zeros_like(w)
    n_inner = n_cg = 0
    v_prev, eps_prev, converged, cert, k = math.inf, math.inf, False, math.inf, 0
    for k in range(1, max_iter + 1):
        w, it, _ = lbfgs(lambda v, h=h: train_loss(v, h), w, tol=eps, max_iter=inner_max_iter)
        n_inner += it
        with torch.enable_grad():
            g, q, it_cg, _ = _hypergradient(train_loss, val_loss, w, h, q, eps,
                                            10 * w.numel())
        n_cg += it_cg
        g = g.detach()
        with torch.no_grad():
            v = float(val_loss(w))
        step = step / 2 if v > v_prev + eps_prev else step * growth
        if history is not None:
            history.append({"iteration": k, "hyper": h.clone(), "val_loss": v,
                            "hypergrad": g.clone(), "inner_iter": n_inner, "cg_iter": n_cg,
                            "eps": eps})
        cert = step * float(torch.linalg.norm(g))
        if eps <= eps_min and cert <= tol * (1 + float(torch.linalg.norm(h))):
            converged = True
            break
        h = h - step * g
        v_prev, eps_prev = v, eps
        eps = max(eps * decrease, eps_min)
    if not converged:
        warnings.warn(f"hoag stopped after {max_iter} outer iterations with a step of "
                      f"{cert:.3g} (tol {tol:g}); increase max_iter", ConvergenceWarning,
                      stacklevel=2)
    if return_info:
        return h, w, Info(n_iter=k, converged=converged, certificate=cert)
    return h, w
