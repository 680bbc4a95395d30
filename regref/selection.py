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

Ridge quantities reuse the spectral helpers shared with :mod:`regref.ridge` (one SVD for
every strength). Mixed dtypes and devices are converted, not rejected: every array
argument is converted to the dtype and device of the first data argument (``X``,
``residuals``, ``y`` or ``w``). Iterative routines follow one rule: they return their
solution, with ``return_info=True`` also a :class:`regref.Info` whose ``certificate`` is
computed at the returned point on the scale of ``tol`` (``converged`` is
``certificate <= tol``), and they emit :class:`regref.ConvergenceWarning` when they stop
short of ``tol``. Derivations: chapter 03.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ._core import (
    Info,
    as_float_tensor,
    check_data,
    check_finite,
    check_generator,
    check_matrix,
    check_positive,
    check_positive_int,
    check_strength,
    check_tol,
    warn_not_converged,
)
from ._spectral import _filters, _fits, _left_spectrum, _svd
from .sparse import _fold_paths, _tol, lasso_path

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


def _variable(x, name: str) -> torch.Tensor:
    """An optimization variable: a finite, non-empty floating tensor."""
    t = _tensor(x, name)
    if t.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    return t


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
    order = torch.randperm(n, generator=check_generator(generator))  # drawn on the CPU
    ids[order] = torch.repeat_interleave(torch.arange(k), sizes)
    return ids


def _lasso_path_tol(path):
    """``tol`` of ``path`` when it is :func:`regref.sparse.lasso_path` (None: its default),
    or ``functools.partial(lasso_path, tol=...)``; False for any other path."""
    if path is lasso_path:
        return None
    if isinstance(path, functools.partial) and path.func is lasso_path and not path.args \
            and set(path.keywords) <= {"tol"}:
        return path.keywords.get("tol")
    return False


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

    When ``path`` is :func:`regref.sparse.lasso_path` itself (or
    ``functools.partial(lasso_path, tol=...)``; not another wrapper), ``y`` is one target
    and every training set has at least :math:`p` rows, the folds are solved together
    instead: one Gram matrix per fold gives every training Gram matrix
    (:math:`H_{-f} = \sum_{g \ne f} X_g^\top X_g / n_{-f}`), and the :math:`K` lasso
    paths run as one batch of Newton steps on (K, p, p) matrices (chapter 04), each
    certified by its duality gap at ``lasso_path``'s tolerance; a fold that batch does not
    certify is solved again by ``lasso_path``. Same answers as the loop, to that
    tolerance.

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

    Examples
    --------
    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> lams = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    >>> E = selection.kfold_path_score(ridge.ridge_path, X, y, lams, k=4,
    ...                                generator=torch.Generator().manual_seed(0))
    >>> E.shape, torch.round(E.mean(0), decimals=3)
    (torch.Size([4, 3]), tensor([0.7320, 0.7420, 1.5360], dtype=torch.float64))
    """
    X, y = check_data(X, y)
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError("y must have at least one target column, got shape "
                         f"{tuple(y.shape)}")
    lams = check_strength(lams, "lams", X, ndims=(1,))
    ids = _fold_ids(X.shape[0], k, folds, generator).to(X.device)
    K = int(ids.max()) + 1
    batched, tol = None, _lasso_path_tol(path)
    if tol is not False and y.ndim == 1 \
            and X.shape[1] <= X.shape[0] - int(torch.bincount(ids).max()):
        lams_pos = check_strength(lams, "lams", X, positive=True, ndims=(1,))
        tol = _tol(tol, X)
        batched, rel = _fold_paths(X, y, lams_pos, ids, tol)
        redo = (rel > tol).any(1)  # Newton steps did not certify these folds
    errors = []
    for f in range(K):
        val = ids == f
        if batched is not None and not bool(redo[f]):
            W = batched[f]
        else:
            W = as_float_tensor(path(X[~val], y[~val], lams), "path(...)", like=X)
        want = (len(lams), X.shape[1]) + tuple(y.shape[1:])
        if tuple(W.shape) != want:
            raise ValueError(f"path must return shape {want}, got {tuple(W.shape)}")
        # one GEMM for every strength (a batched matmul would broadcast X[val] L times)
        Wl = W.reshape(len(lams), X.shape[1], -1)
        pred = (X[val] @ Wl.movedim(0, 1).reshape(X.shape[1], -1)).reshape(
            -1, len(lams), Wl.shape[2]).movedim(1, 0)  # (L, n_f, t)
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

    Examples
    --------
    >>> import torch
    >>> from regref import selection
    >>> errors = torch.tensor([[3.0, 2.0, 1.0, 1.1], [3.2, 2.1, 1.2, 0.9]])
    >>> selection.one_standard_error(errors)
    (3, 2)
    """
    e = _tensor(errors, "errors")
    if e.ndim != 2 or e.shape[0] < 2 or e.shape[1] < 1:
        raise ValueError(f"errors must have shape (K, L) with K >= 2 folds and L >= 1 "
                         f"strengths, got {tuple(e.shape)}")
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
        The diagonal :math:`H_{ii}` (the leverages), each ``< 1``; converted to the dtype
        and device of ``residuals``.

    Returns
    -------
    tensor of shape (...)

    Examples
    --------
    Ridge at :math:`\lambda = 1` as a smoother, against :func:`regref.ridge.ridge_loo`:

    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> H = X @ torch.linalg.solve(X.T @ X + torch.eye(3, dtype=torch.float64), X.T)
    >>> loo = selection.loo(y - H @ y, torch.diagonal(H))
    >>> round(float(loo), 4), round(float(ridge.ridge_loo(X, y, [1.0])[0]), 4)
    (0.8219, 0.8219)
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

    Examples
    --------
    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> H = X @ torch.linalg.solve(X.T @ X + torch.eye(3, dtype=torch.float64), X.T)
    >>> gcv = selection.gcv(y - H @ y, torch.trace(H))
    >>> round(float(gcv), 4), round(float(ridge.ridge_gcv(X, y, [1.0])[0]), 4)
    (0.9327, 0.9327)
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

    Examples
    --------
    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> lams = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    >>> torch.round(selection.ridge_loo_per_target(X, torch.stack([y, -2 * y], 1), lams),
    ...             decimals=3)
    tensor([[0.8280, 3.3110],
            [0.8220, 3.2870],
            [1.4230, 5.6910]], dtype=torch.float64)
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

    Examples
    --------
    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> H = X @ torch.linalg.solve(X.T @ X + torch.eye(3, dtype=torch.float64), X.T)
    >>> round(float(selection.sure(y - H @ y, torch.trace(H), 1.0)), 4)
    -0.5764
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

    Examples
    --------
    >>> import torch
    >>> from regref import selection
    >>> y = torch.tensor([3.0, -0.5, 0.2, 2.0], dtype=torch.float64)
    >>> torch.round(selection.sure_soft_threshold(y, torch.tensor([0.0, 1.0],
    ...                                                            dtype=torch.float64), 1.0),
    ...             decimals=4)
    tensor([4.0000, 2.2900], dtype=torch.float64)
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

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,) or (n, k)
        Converted to the dtype and device of ``X``.
    lams : tensor of shape (L,)
        Strengths ``>= 0``.
    sigma : float
        Noise standard deviation, ``> 0``.

    Returns
    -------
    tensor of shape (L,)

    Examples
    --------
    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> torch.round(selection.sure_ridge(X, y, [0.1, 1.0, 10.0], 1.0), decimals=3)
    tensor([-0.5020, -0.5760,  6.3220], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    lams = check_strength(lams, "lams", X, ndims=(1,))
    resid, _, df = _fits(X, y, lams)  # (L, n, k)
    return sure(resid.mT, df[:, None], sigma).sum(-1)


# ----------------------------------------------------------------------------- evidence

def _spectral_data(X, y):
    """Squared singular values, the squared coordinates of y on U, and ||y||^2 outside span(U)."""
    U, s2, _ = _left_spectrum(X)
    z2 = (U.mT @ y) ** 2
    rest = ((y @ y) - z2.sum()).clamp(min=0)
    return s2, z2, rest


def log_evidence_ridge(X, y, prior_var, noise_var) -> torch.Tensor:
    r"""Log marginal likelihood of Bayesian linear regression (the evidence of ridge).

    Prior :math:`w \sim \mathcal N(0, \tau^2 I_p)`, likelihood
    :math:`y \mid w \sim \mathcal N(Xw, \sigma^2 I_n)`; integrating :math:`w` out,
    :math:`y \sim \mathcal N(0, C)` with :math:`C = \sigma^2 I + \tau^2 XX^\top`, so

    .. math:: \log p(y \mid \tau^2, \sigma^2) = -\tfrac12\Bigl(n\log 2\pi + \log\det C
              + y^\top C^{-1} y\Bigr).

    With :math:`X = U\operatorname{diag}(s)V^\top` (thin, :math:`r` factors), :math:`C`
    has eigenvalues :math:`c_j = \sigma^2 + \tau^2 s_j^2` on the columns of :math:`U` and
    :math:`\sigma^2` on their orthogonal complement, so with :math:`z = U^\top y`

    .. math:: \log\det C = \sum_{j=1}^r \log c_j + (n - r)\log\sigma^2, \qquad
              y^\top C^{-1}y = \sum_{j=1}^r \frac{z_j^2}{c_j}
              + \frac{\|y\|^2 - \|z\|^2}{\sigma^2}.

    The posterior mean is ridge with strength :math:`\lambda = \sigma^2/\tau^2`. Cost: one
    SVD, then :math:`O(r)` per :math:`(\tau^2, \sigma^2)` pair, batched over a grid.

    Derived in chapter 03 (section on the evidence).

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,)
        Converted to the dtype and device of ``X``.
    prior_var, noise_var : float or tensors (broadcastable against each other)
        Prior variance :math:`\tau^2` of the weights and noise variance :math:`\sigma^2`,
        ``> 0``.

    Returns
    -------
    tensor of the broadcast shape of ``prior_var`` and ``noise_var``

    Examples
    --------
    >>> import torch
    >>> from regref import selection
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    >>> round(float(selection.log_evidence_ridge(X, y, 1.0, 0.5)), 4)
    -4.1683
    """
    X, y = check_data(X, y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {tuple(y.shape)}")
    tau2 = check_strength(prior_var, "prior_var", X, positive=True, ndims=tuple(range(8)))
    sig2 = check_strength(noise_var, "noise_var", X, positive=True, ndims=tuple(range(8)))
    tau2, sig2 = _broadcast(tau2, sig2, "prior_var", "noise_var")
    s2, z2, rest = _spectral_data(X, y)
    n, r = X.shape[0], len(s2)
    c = sig2[..., None] + tau2[..., None] * s2  # eigenvalues of C on span(U)
    logdet = torch.log(c).sum(-1) + (n - r) * torch.log(sig2)
    quad = (z2 / c).sum(-1) + rest / sig2
    return -0.5 * (n * math.log(2 * math.pi) + logdet + quad)


def _evidence_fixed_point(s2, z2, rest, n: int, tol: float, max_iter: int,
                          check_every: int):
    r"""MacKay's fixed point for the evidence of ridge, on the spectrum. The part to copy.

    Maximizes :math:`\log p(y \mid \tau^2, \sigma^2)` (see :func:`log_evidence_ridge`)
    given the squared singular values ``s2`` of :math:`X`, the squared coordinates ``z2``
    of :math:`y` on :math:`U`, the squared norm ``rest`` of :math:`y` outside span(U) and
    the number of rows ``n``. Each step computes the ridge fit at
    :math:`\lambda = \sigma^2/\tau^2` (its norm, its residual, its degrees of freedom) and
    sets :math:`\tau^2 = \|m\|^2/\mathrm{df}`, :math:`\sigma^2 = \|y - Xm\|^2/(n -
    \mathrm{df})`. Returns ``(prior_var, noise_var, n_iter, residual)``; the residual (the
    relative violation of both equations) is computed at the returned pair.
    """
    def fit(prior_var, noise_var):
        lam = noise_var / prior_var
        d = s2 + lam
        df = (s2 / d).sum()                          # tr H = sum s^2 / (s^2 + lam)
        m2 = (s2 * z2 / d**2).sum()                  # ||m||^2
        r2 = (lam**2 * z2 / d**2).sum() + rest       # ||y - X m||^2
        return df, m2, r2

    prior_var, noise_var = torch.ones_like(rest), (z2.sum() + rest) / n
    n_iter, residual = 0, math.inf
    while n_iter < max_iter:
        for _ in range(min(check_every, max_iter - n_iter)):
            df, m2, r2 = fit(prior_var, noise_var)
            prior_var, noise_var = m2 / df, r2 / (n - df)
            n_iter += 1
        df, m2, r2 = fit(prior_var, noise_var)
        residual = float(torch.maximum((m2 / (df * prior_var) - 1).abs(),
                                       (r2 / ((n - df) * noise_var) - 1).abs()))
        if residual <= tol or not math.isfinite(residual):
            break
    return prior_var, noise_var, n_iter, residual


def evidence_ridge(X, y, *, tol: float | None = None, max_iter: int = 10_000,
                   check_every: int = 10, return_info: bool = False):
    r"""Maximize the evidence of ridge regression over the prior and noise variances.

    .. math:: (\hat\tau^2, \hat\sigma^2) = \arg\max_{\tau^2, \sigma^2 > 0}
              \log p(y \mid \tau^2, \sigma^2)

    (see :func:`log_evidence_ridge`), by MacKay's (1992) fixed point: with
    :math:`\lambda = \sigma^2/\tau^2`, the posterior mean
    :math:`m = (X^\top X + \lambda I)^{-1}X^\top y` and the degrees of freedom
    :math:`\mathrm{df} = \sum_j s_j^2/(s_j^2 + \lambda)`,

    .. math:: \tau^2 \leftarrow \frac{\|m\|^2}{\mathrm{df}}, \qquad
              \sigma^2 \leftarrow \frac{\|y - Xm\|^2}{n - \mathrm{df}},

    whose fixed points are exactly the stationary points of the evidence. This is
    scikit-learn's ``BayesianRidge`` (its ``lambda_`` is :math:`1/\tau^2`, its ``alpha_``
    is :math:`1/\sigma^2`) with ``fit_intercept=False`` and zero Gamma priors. Each
    iteration costs :math:`O(\min(n,p))` after one SVD.

    Derived in chapter 03 (theorem thm-ch03-evidence).

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,), not zero
        Converted to the dtype and device of ``X``.
    tol : float, optional
        Default ``1e-10`` in float64, ``1e-5`` in float32. Stop when both fixed-point
        equations hold to relative accuracy ``tol``:
        :math:`|\|m\|^2/(\mathrm{df}\,\tau^2) - 1|` and
        :math:`|\|y - Xm\|^2/((n-\mathrm{df})\,\sigma^2) - 1|`, evaluated at the returned
        pair. The larger of the two is the ``certificate``.
    max_iter : int
        Fixed-point iterations allowed (a positive integer); reaching it without meeting
        ``tol`` warns (:class:`regref.ConvergenceWarning`).
    check_every : int
        Iterations between two evaluations of the certificate.
    return_info : bool

    Returns
    -------
    prior_var, noise_var : 0-D tensors
        :math:`\hat\tau^2` and :math:`\hat\sigma^2`; the ridge strength they imply is
        ``noise_var / prior_var``.
    info : :class:`regref.Info`
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref import selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(50, 5, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(5, dtype=torch.float64) + torch.randn(50, generator=g,
    ...                                                           dtype=torch.float64)
    >>> tau2, sigma2, info = selection.evidence_ridge(X, y, return_info=True)
    >>> info.converged, round(float(sigma2 / tau2), 3)
    (True, 1.039)
    """
    X, y = check_data(X, y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {tuple(y.shape)}")
    if not bool((y != 0).any()):
        raise ValueError("y must not be zero (the evidence is then maximal at prior_var = 0)")
    tol = check_tol(tol, X.dtype, 1e-10, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    s2, z2, rest = _spectral_data(X, y)
    tau2, sig2, it, cert = _evidence_fixed_point(s2, z2, rest, X.shape[0], tol, max_iter,
                                                 check_every)
    if not math.isfinite(cert):
        raise ValueError("the evidence has no finite maximizer for this data (prior_var or "
                         "noise_var went to zero or infinity)")
    converged = cert <= tol
    if not converged:
        warn_not_converged(f"evidence_ridge did not reach a fixed-point residual of {tol:g} "
                           f"in {max_iter} iterations (reached {cert:.3g}); increase max_iter")
    if return_info:
        return tau2, sig2, Info(n_iter=it, converged=converged, certificate=cert)
    return tau2, sig2


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

    Examples
    --------
    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> V, dV = selection.ridge_hypergradient(X[:15], y[:15], X[15:], y[15:],
    ...                                       [0.1, 1.0, 10.0])
    >>> torch.round(V, decimals=4)
    tensor([1.4148, 1.5489, 2.9166], dtype=torch.float64)
    >>> torch.round(dV, decimals=4)
    tensor([0.1404, 0.1558, 0.1290], dtype=torch.float64)
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

    Stops when the true relative residual ||b - Hx|| / ||b|| is at most tol (the recursive
    residual is trusted only to decide when to recompute it) or after max_iter steps;
    returns (x, steps, true relative residual of the returned x).
    """
    bnorm = float(torch.linalg.norm(b))
    if bnorm == 0:
        return torch.zeros_like(b), 0, 0.0
    r = b - hvp(x)
    p, rs, it = r.clone(), (r * r).sum(), 0
    while True:
        res = math.sqrt(float(rs)) / bnorm  # one host sync per step: each step is an autograd call
        if res <= tol or it == max_iter:
            r = b - hvp(x)  # the certificate, at the returned x
            rs = (r * r).sum()
            res = math.sqrt(float(rs)) / bnorm
            if res <= tol or it == max_iter:
                return x, it, res
            p = r.clone()  # rounding drift: restart from the true residual
        Hp = hvp(p)
        curv = (p * Hp).sum()
        if float(curv) <= 0:
            raise ValueError("the Hessian of train_loss in w is not positive definite at w "
                             "(is w a strict local minimizer?)")
        a = rs / curv
        x, r = x + a * p, r - a * Hp
        rs, rs_old = (r * r).sum(), rs
        p = r + (rs / rs_old) * p
        it += 1


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

    For :math:`w^*(h) = \arg\min_w F(w, h)` with :math:`\nabla_w^2 F` positive definite,
    the implicit function theorem gives
    :math:`\mathrm d w^*/\mathrm d h = -(\nabla_w^2 F)^{-1}\nabla_{wh}^2 F`, so

    .. math:: \frac{\mathrm d}{\mathrm d h} V\bigl(w^*(h)\bigr)
              = -\bigl(\nabla^2_{wh}F\bigr)^\top q, \qquad
              \nabla_w^2 F(w^*, h)\, q = \nabla_w V(w^*).

    Algorithm: :math:`q` by conjugate gradient, with Hessian-vector products from double
    backward through ``train_loss`` (never forming the Hessian); then one more backward
    pass gives :math:`(\nabla^2_{wh}F)^\top q`. Cost: ``n_iter + 2`` Hessian-vector
    products and one gradient of :math:`F` with ``create_graph``. An inexact :math:`w`
    gives a hypergradient with an error of the order of :math:`\|\nabla_w F(w, h)\|` (an
    exercise of chapter 03).

    Derived in chapter 03 (theorem thm-ch03-implicit).

    Parameters
    ----------
    train_loss : callable
        ``train_loss(w, hyper)``, the training objective :math:`F`, a scalar, twice
        differentiable by torch.autograd.
    val_loss : callable
        ``val_loss(w)``, a scalar, differentiable.
    w : tensor
        The (approximate) minimizer of ``train_loss(., hyper)``, any shape.
    hyper : float or tensor
        The hyperparameter(s), any shape (a scalar :math:`\log\lambda`, a vector of
        per-feature strengths, ...); converted to the dtype and device of ``w``.
    tol : float, optional
        Relative residual of the CG solve, :math:`\|\nabla_w V - \nabla_w^2 F\,q\|
        \le \mathrm{tol}\,\|\nabla_w V\|`, recomputed at the returned :math:`q`: the
        ``certificate``. Default ``1e-10`` in float64, ``1e-5`` in float32.
    max_iter : int, optional
        CG steps allowed (a positive integer); defaults to ``10 * w.numel()``. Reaching
        it without meeting ``tol`` warns (:class:`regref.ConvergenceWarning`).
    return_info : bool

    Returns
    -------
    hypergradient : tensor of the shape of ``hyper``
    info : :class:`regref.Info`
        Only with ``return_info=True``.

    Examples
    --------
    Ridge with :math:`h = \log\lambda`, where the answer is :math:`\lambda V'(\lambda)`:

    >>> import torch
    >>> from regref import ridge, selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, dtype=torch.float64) + torch.randn(20, generator=g,
    ...                                                           dtype=torch.float64)
    >>> def train(w, h):
    ...     return ((y - X @ w) ** 2).sum() + torch.exp(h) * (w @ w)
    >>> def val(w):
    ...     return ((y[:5] - X[:5] @ w) ** 2).mean()
    >>> w = ridge.ridge(X, y, 2.0)
    >>> hg = selection.implicit_hypergradient(train, val, w, torch.tensor(2.0).log())
    >>> _, dV = selection.ridge_hypergradient(X, y, X[:5], y[:5], [2.0])
    >>> round(float(hg), 6) == round(2.0 * float(dV[0]), 6)
    True
    """
    w = _variable(w, "w")
    hyper = _tensor(hyper, "hyper", like=w)
    tol = check_tol(tol, w.dtype, 1e-10, 1e-5)
    max_iter = check_positive_int(10 * w.numel() if max_iter is None else max_iter, "max_iter")
    with torch.enable_grad():
        hg, _, it, res = _hypergradient(train_loss, val_loss, w, hyper, torch.zeros_like(w),
                                        tol, max_iter)
    converged = res <= tol
    if not converged:
        warn_not_converged(f"implicit_hypergradient: conjugate gradient reached a relative "
                           f"residual of {res:.3g} > tol = {tol:g} in {max_iter} steps")
    hg = hg.detach()
    return (hg, Info(n_iter=it, converged=converged, certificate=res)) if return_info else hg


def _lbfgs(fun, w0, tol: float, max_iter: int):
    """torch's L-BFGS until ||grad f||_inf <= tol * max(1, ||grad f(w0)||_inf).

    Returns (w, iterations, certificate) with the certificate ||grad f(w)||_inf divided by
    that scale, recomputed at the returned w. No validation, no warning.
    """
    w = w0.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scale = max(1.0, float(torch.autograd.grad(fun(w), w)[0].abs().max()))
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, max_eval=25 * max_iter,
                            tolerance_grad=tol * scale, tolerance_change=0.0,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = fun(w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        grad = torch.autograd.grad(fun(w), w)[0]
    return w.detach(), int(opt.state[w].get("n_iter", 0)), float(grad.abs().max()) / scale


def lbfgs(fun: Callable, w0, *, tol: float | None = None, max_iter: int = 1000,
          return_info: bool = False):
    r"""Minimize a smooth function with L-BFGS, to a small relative gradient.

    .. math:: \min_w f(w), \quad\text{stopping when}\quad
              \|\nabla f(w)\|_\infty \le \mathrm{tol}\cdot
              \max\bigl(1, \|\nabla f(w_0)\|_\infty\bigr).

    The inner solver of :func:`hoag`, exposed so that grid and random search can be run
    with the same solver and counted in the same units. It wraps ``torch.optim.LBFGS``
    (history 20, strong Wolfe line search). The tolerance is relative to the gradient at
    the start, or absolute when that gradient is below one (a warm start close to the
    solution does not make the request stricter). The solver can also stop short of
    ``tol`` when the line search can no longer decrease :math:`f` in floating point
    (gradients much below :math:`\sqrt{\epsilon}\,|f|` are rarely reachable); it then
    warns like at ``max_iter``. Cost per iteration: one to a few evaluations of :math:`f`
    and its gradient, and :math:`O(20\,d)` for the two-loop recursion in dimension
    :math:`d`.

    Derived in chapter 03 (section on HOAG).

    Parameters
    ----------
    fun : callable
        ``fun(w)``, a scalar differentiable by torch.autograd.
    w0 : tensor
        Starting point (any shape); it is not modified.
    tol : float, optional
        Default ``1e-8`` in float64, ``1e-3`` in float32 (about :math:`\sqrt\epsilon`
        of each, below which line searches stall). The ``certificate`` is
        :math:`\|\nabla f(w)\|_\infty / \max(1, \|\nabla f(w_0)\|_\infty)` at the
        returned :math:`w`.
    max_iter : int
        L-BFGS iterations allowed (a positive integer; each may evaluate :math:`f` several
        times in its line search). Stopping without meeting ``tol`` warns
        (:class:`regref.ConvergenceWarning`).
    return_info : bool

    Returns
    -------
    w : tensor of the shape of ``w0``
    info : :class:`regref.Info`
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref import selection
    >>> A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, -1.0], dtype=torch.float64)
    >>> w, info = selection.lbfgs(lambda w: 0.5 * w @ A @ w - b @ w,
    ...                           torch.zeros(2, dtype=torch.float64), return_info=True)
    >>> torch.round(w, decimals=4), info.converged
    (tensor([ 0.6000, -0.8000], dtype=torch.float64), True)
    """
    w0 = _variable(w0, "w0")
    tol = check_tol(tol, w0.dtype, 1e-8, 1e-3)
    max_iter = check_positive_int(max_iter, "max_iter")
    w, it, cert = _lbfgs(fun, w0, tol, max_iter)
    converged = cert <= tol
    if not converged:
        warn_not_converged(f"lbfgs stopped after {it} iterations (max_iter = {max_iter}) at a "
                           f"relative gradient of {cert:.3g} > tol = {tol:g}")
    return (w, Info(n_iter=it, converged=converged, certificate=cert)) if return_info else w


def hoag(train_loss: Callable, val_loss: Callable, w0, hyper0, *, step: float = 1.0,
         max_iter: int = 50, eps0: float = 1e-2, decrease: float = 0.7,
         eps_min: float | None = None, growth: float = 1.2, tol: float | None = None,
         inner_max_iter: int = 1000, history: list | None = None,
         return_info: bool = False):
    r"""HOAG: gradient descent on hyperparameters with approximate hypergradients.

    .. math:: \min_h V\bigl(w^*(h)\bigr), \qquad w^*(h) = \arg\min_w F(w, h),

    following Pedregosa (2016). Outer iteration :math:`k`:

    1. solve the inner problem from the previous :math:`w` (warm start) with L-BFGS
       (:func:`lbfgs`) only to tolerance :math:`\varepsilon_k`;
    2. solve :math:`\nabla^2_w F\, q_k = \nabla_w V(w_k)` by conjugate gradient to
       relative residual :math:`\varepsilon_k`, warm-started at :math:`q_{k-1}`;
    3. step :math:`h_{k+1} = h_k - \eta\,g_k` with the approximate hypergradient
       :math:`g_k = -(\nabla^2_{wh}F)^\top q_k` (as in :func:`implicit_hypergradient`).

    The tolerances decrease geometrically, :math:`\varepsilon_k = \max(\varepsilon_0
    \rho^k, \varepsilon_{\min})`, a summable sequence until the floor; Pedregosa's
    convergence theorem (smooth :math:`F` and :math:`V`, nonsingular inner Hessian,
    bounded iterates, a small enough fixed step) needs summable errors. As in his
    implementation the step adapts, a heuristic outside that theorem: :math:`\eta` is
    halved whenever the validation loss increases by more than the inexactness allows
    (:math:`V_k > V_{k-1} + \varepsilon_{k-1}`) and multiplied by ``growth`` otherwise.
    Each outer iteration costs one warm-started inner solve, a few Hessian-vector
    products and one gradient of :math:`V`.

    Derived in chapter 03 (section on HOAG).

    Parameters
    ----------
    train_loss : callable
        ``train_loss(w, hyper)``, the training objective :math:`F`, scalar, twice
        differentiable, strongly convex in ``w``.
    val_loss : callable
        ``val_loss(w)``, scalar, differentiable.
    w0 : tensor
        Starting inner variable (any shape).
    hyper0 : float or tensor
        Starting hyperparameter(s), e.g. :math:`\log\lambda`; converted to the dtype and
        device of ``w0``.
    step : float
        Initial outer step size :math:`\eta`.
    max_iter : int
        Outer iterations allowed (a positive integer). Stopping without meeting ``tol``
        warns (:class:`regref.ConvergenceWarning`).
    eps0, decrease : float
        The tolerance schedule :math:`\varepsilon_k` (``0 < decrease < 1``).
    eps_min : float, optional
        Its floor; default ``1e-8`` in float64, ``1e-5`` in float32.
    growth : float
        Factor ``>= 1`` applied to the step after an iteration that did not increase
        the validation loss.
    tol : float, optional
        Default ``1e-5`` in float64, ``1e-3`` in float32. The ``certificate`` is the
        hypergradient norm relative to the first one, :math:`\|g_k\|/\|g_1\|`, at the
        returned :math:`h_k` (computed from inner solves to :math:`\varepsilon_k`); the
        loop stops early once it is at most ``tol`` with :math:`\varepsilon_k` at its
        floor.
    inner_max_iter : int
        L-BFGS iterations allowed per inner solve.
    history : list, optional
        If given, one dict per outer iteration is appended, with keys ``iteration``,
        ``hyper``, ``val_loss`` (:math:`V` at the inexact inner iterate), ``hypergrad``,
        ``inner_iter`` (L-BFGS iterations so far, cumulated), ``cg_iter`` (cumulated) and
        ``eps``.
    return_info : bool

    Returns
    -------
    hyper, w : tensors
        The last :math:`h_k` and its inner solution :math:`w_k` (to tolerance
        :math:`\varepsilon_k`).
    info : :class:`regref.Info`
        Only with ``return_info=True``.

    Examples
    --------
    Ridge with :math:`h = \log\lambda`, tuned on a validation split:

    >>> import torch
    >>> from regref import selection
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(60, 5, generator=g, dtype=torch.float64)
    >>> y = 0.5 * X.sum(1) + 2 * torch.randn(60, generator=g, dtype=torch.float64)
    >>> def train(w, h):
    ...     return ((y[:30] - X[:30] @ w) ** 2).mean() + torch.exp(h) * (w @ w)
    >>> def val(w):
    ...     return ((y[30:] - X[30:] @ w) ** 2).mean()
    >>> h, w, info = selection.hoag(train, val, torch.zeros(5, dtype=torch.float64), 0.0,
    ...                             max_iter=200, return_info=True)
    >>> info.converged, round(float(h.exp()), 2)
    (True, 0.36)
    """
    w = _variable(w0, "w0")
    h = _tensor(hyper0, "hyper0", like=w).clone()
    step = check_positive(step, "step")
    max_iter = check_positive_int(max_iter, "max_iter")
    inner_max_iter = check_positive_int(inner_max_iter, "inner_max_iter")
    tol = check_tol(tol, w.dtype, 1e-5, 1e-3)
    if eps_min is None:
        eps_min = 1e-8 if w.dtype == torch.float64 else 1e-5
    eps_min = check_positive(eps_min, "eps_min")
    eps = max(check_positive(eps0, "eps0"), eps_min)
    growth = float(growth)
    if not 1 <= growth < math.inf:
        raise ValueError(f"growth must be a finite number >= 1, got {growth}")
    decrease = float(decrease)
    if not 0 < decrease < 1:
        raise ValueError(f"decrease must be in (0, 1), got {decrease}")
    q = torch.zeros_like(w)
    n_inner = n_cg = 0
    v_prev, eps_prev, g_first, cert = math.inf, math.inf, None, math.inf
    for k in range(1, max_iter + 1):
        w, it, _ = _lbfgs(lambda v, h=h: train_loss(v, h), w, eps, inner_max_iter)
        n_inner += it
        with torch.enable_grad():
            g, q, it_cg, _ = _hypergradient(train_loss, val_loss, w, h, q, eps,
                                            10 * w.numel())
        n_cg += it_cg
        g = g.detach()
        with torch.no_grad():
            v = float(val_loss(w))
        if history is not None:
            history.append({"iteration": k, "hyper": h.clone(), "val_loss": v,
                            "hypergrad": g.clone(), "inner_iter": n_inner, "cg_iter": n_cg,
                            "eps": eps})
        g_norm = float(torch.linalg.norm(g))
        g_first = g_norm if g_first is None else g_first
        cert = g_norm / g_first if g_first > 0 else 0.0
        if (cert <= tol and eps <= eps_min) or k == max_iter:
            break
        step = step / 2 if v > v_prev + eps_prev else step * growth
        h = h - step * g
        v_prev, eps_prev = v, eps
        eps = max(eps * decrease, eps_min)
    converged = cert <= tol
    if not converged:
        warn_not_converged(f"hoag stopped after {max_iter} outer iterations at a relative "
                           f"hypergradient of {cert:.3g} > tol = {tol:g}; increase max_iter")
    if return_info:
        return h, w, Info(n_iter=k, converged=converged, certificate=cert)
    return h, w
