r"""Ridge regression, Tikhonov regularization and their kernel and random-feature forms.

Objective (the scikit-learn ``Ridge(alpha=lam, fit_intercept=False)`` convention):

.. math:: w_\lambda = \arg\min_w \|y - Xw\|_2^2 + \lambda\|w\|_2^2
          = (X^\top X + \lambda I)^{-1} X^\top y.

With the thin SVD :math:`X = U\operatorname{diag}(s)V^\top` every quantity below is a
*filter* of the singular values, so one SVD serves every :math:`\lambda`:
:math:`w_\lambda = V\operatorname{diag}\bigl(s/(s^2+\lambda)\bigr)U^\top y`.
Derivations: chapter 02.
"""

from __future__ import annotations

import math
import operator

import torch

from ._core import (
    Info,
    as_float_tensor,
    check_data,
    check_finite,
    check_matrix,
    check_ndim,
    check_strength,
    check_symmetric,
)
from ._spectral import _batched_matmul, _filters, _fits, _left_spectrum, _svd

__all__ = [
    "ridge",
    "ridge_path",
    "ridge_df",
    "ridge_loo",
    "ridge_gcv",
    "kernel_ridge",
    "rbf_kernel",
    "rff_weights",
    "random_features",
]


def _lams(lams, X) -> torch.Tensor:
    return check_strength(lams, "lams", X, ndims=(1,))


def ridge_path(X, y, lams, *, return_info: bool = False):
    r"""Ridge solutions for many strengths from one SVD.

    .. math:: w_\lambda = \arg\min_w \|y - Xw\|_2^2 + \lambda\|w\|_2^2
              = V \operatorname{diag}\Bigl(\frac{s_j}{s_j^2 + \lambda}\Bigr) U^\top y

    for every :math:`\lambda` in ``lams`` (no intercept). Works for :math:`n \ge p`
    and :math:`n < p` alike (the thin SVD has :math:`\min(n, p)` factors); at
    :math:`\lambda = 0` it returns the minimum-norm least-squares solution.

    Cost: one thin SVD, :math:`O(np\min(n,p))`, then :math:`O(Lp\min(n,p))` for all
    :math:`L` strengths in one matrix product (batched on the GPU).

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,) or (n, k)
    lams : tensor of shape (L,)
        Strengths ``>= 0``, in any order; row ``l`` of the result is for ``lams[l]``.
    return_info : bool
        Also return a :class:`regref.Info` whose ``certificate`` is the largest
        relative gradient norm :math:`\|X^\top(Xw-y) + \lambda w\|/\|X^\top y\|`
        over the path (zero in exact arithmetic).

    Returns
    -------
    W : tensor of shape (L, p) or (L, p, k)
    """
    X, y = check_data(X, y)
    lams = _lams(lams, X)
    U, s, Vh, keep = _svd(X)
    Y = y.reshape(y.shape[0], -1)
    UtY = U.mT @ Y  # (r, k)
    W = _batched_matmul(Vh.mT, _filters(s, s**2, keep, lams)[:, :, None] * UtY)  # (L, p, k)
    W = W.reshape((len(lams),) + (X.shape[1],) + y.shape[1:])
    if not return_info:
        return W
    return W, Info(n_iter=1, converged=True, certificate=_ridge_residual(X, y, lams, W))


def _ridge_residual(X, y, lams, W) -> float:
    """Largest relative norm of the ridge gradient ``X^T(Xw - y) + lam w`` over a path."""
    Wk = W.reshape(len(lams), X.shape[1], -1)
    Y = y.reshape(y.shape[0], -1)
    grad = X.mT @ (X @ Wk - Y) + lams[:, None, None] * Wk
    scale = torch.linalg.norm(X.mT @ Y).clamp(min=torch.finfo(X.dtype).tiny)
    return float(torch.linalg.norm(grad, dim=(1, 2)).amax() / scale)


def ridge(X, y, lam, *, return_info: bool = False):
    r"""Ridge regression for one strength.

    .. math:: \arg\min_w \|y - Xw\|_2^2 + \lambda\|w\|_2^2 = (X^\top X + \lambda I)^{-1}X^\top y
              = X^\top (XX^\top + \lambda I)^{-1} y.

    For :math:`\lambda > 0` it solves the smaller of the two systems by Cholesky:
    the primal :math:`p \times p` one when :math:`n \ge p`, the dual
    :math:`n \times n` one when :math:`n < p` (cost :math:`O(np\min(n,p))`). At
    :math:`\lambda = 0` it falls back to :func:`ridge_path` (minimum-norm least squares).
    Matches scikit-learn ``Ridge(alpha=lam, fit_intercept=False)``. The normal equations
    square the condition number: for :math:`\lambda \ll s_{\max}^2 \epsilon^{1/2}` on an
    ill-conditioned ``X`` prefer :func:`ridge_path`, which works on the SVD.

    Parameters
    ----------
    X : tensor of shape (n, p)
    y : tensor of shape (n,) or (n, k)
    lam : float
        Strength ``>= 0``.
    return_info : bool
        Also return a :class:`regref.Info`; its ``certificate`` is the relative
        gradient norm :math:`\|X^\top(Xw-y) + \lambda w\|/\|X^\top y\|`.

    Returns
    -------
    w : tensor of shape (p,) or (p, k)
    """
    X, y = check_data(X, y)
    lam_t = check_strength(lam, "lam", X)
    if float(lam_t) == 0:
        return _first(ridge_path(X, y, lam_t.reshape(1), return_info=return_info))
    n, p = X.shape
    eye = torch.eye(min(n, p), dtype=X.dtype, device=X.device)
    if n >= p:
        L = torch.linalg.cholesky(X.mT @ X + lam_t * eye)
        w = torch.cholesky_solve((X.mT @ y).reshape(p, -1), L)
    else:
        L = torch.linalg.cholesky(X @ X.mT + lam_t * eye)
        w = X.mT @ torch.cholesky_solve(y.reshape(n, -1), L)
    w = w.reshape((p,) + y.shape[1:])
    if not return_info:
        return w
    cert = _ridge_residual(X, y, lam_t.reshape(1), w.unsqueeze(0))
    return w, Info(n_iter=1, converged=True, certificate=cert)


def _first(result):
    if isinstance(result, tuple):
        return result[0][0], result[1]
    return result[0]


def ridge_df(X, lams) -> torch.Tensor:
    r"""Effective degrees of freedom of ridge, one per strength.

    .. math:: \operatorname{df}(\lambda) = \operatorname{tr} H_\lambda
              = \sum_j \frac{s_j^2}{s_j^2 + \lambda}.

    :math:`H_\lambda = X(X^\top X + \lambda I)^{-1}X^\top` is the hat matrix; the
    trace falls from :math:`\operatorname{rank} X` at :math:`\lambda = 0` to 0 as
    :math:`\lambda \to \infty`. Returns shape (L,).
    """
    X = check_matrix(X, "X")
    lams = _lams(lams, X)
    _, s2, keep = _left_spectrum(X)
    return _filters(s2, s2, keep, lams).sum(-1)


def ridge_loo(X, y, lams) -> torch.Tensor:
    r"""Exact leave-one-out mean squared error of ridge, for every strength, from one SVD.

    Refitting without point :math:`i` changes its residual to
    :math:`e_i/(1 - h_{ii})` (Sherman–Morrison), where :math:`e = (I - H_\lambda)y`
    and :math:`h_{ii}` is the leverage, so

    .. math:: \mathrm{LOO}(\lambda) = \frac1n \sum_{i=1}^n
              \Bigl(\frac{y_i - \hat y_i(\lambda)}{1 - h_{ii}(\lambda)}\Bigr)^2.

    Cost: one SVD plus :math:`O(Ln\min(n,p))`. Raises ``ValueError`` where a point
    has leverage 1 (e.g. :math:`\lambda = 0` with :math:`n \le p`): its
    leave-one-out prediction is undefined. Multi-target ``y`` averages over targets.

    Returns
    -------
    tensor of shape (L,)
    """
    X, y = check_data(X, y)
    lams = _lams(lams, X)
    resid, leverage, _ = _fits(X, y, lams)
    slack = 1 - leverage
    if bool((slack <= 1e3 * torch.finfo(X.dtype).eps).any()):
        raise ValueError("leave-one-out is undefined: some point has leverage 1 at one of "
                         "lams (use lams > 0 when n <= p)")
    return ((resid / slack) ** 2).mean(dim=(1, 2))


def ridge_gcv(X, y, lams) -> torch.Tensor:
    r"""Generalized cross-validation score of ridge for every strength.

    .. math:: \mathrm{GCV}(\lambda) = \frac{\frac1n\|(I - H_\lambda)y\|^2}
              {\bigl(1 - \operatorname{tr}(H_\lambda)/n\bigr)^2},

    the leave-one-out formula with every leverage replaced by the average
    :math:`\operatorname{tr}(H_\lambda)/n` (Golub, Heath and Wahba, 1979). Invariant
    to rotations of the data, unlike LOO. Returns shape (L,).
    """
    X, y = check_data(X, y)
    lams = _lams(lams, X)
    resid, _, df = _fits(X, y, lams)
    n = X.shape[0]
    slack = 1 - df / n
    if bool((slack <= 1e3 * torch.finfo(X.dtype).eps).any()):
        raise ValueError("GCV is undefined where tr(H) = n (lams = 0 with n <= p)")
    return (resid**2).mean(dim=(1, 2)) / slack**2


def kernel_ridge(K, y, lam) -> torch.Tensor:
    r"""Dual coefficients of kernel ridge regression.

    .. math:: \alpha_\lambda = (K + \lambda I)^{-1} y, \qquad
              \hat f(x) = \sum_i \alpha_i k(x_i, x),

    the minimizer of :math:`\|y - K\alpha\|^2 + \lambda\,\alpha^\top K\alpha` (the
    representer theorem, chapter 02). Matches scikit-learn
    ``KernelRidge(alpha=lam, kernel="precomputed").dual_coef_``.

    Parameters
    ----------
    K : tensor of shape (n, n)
        Symmetric positive semidefinite kernel matrix. Symmetry is checked, and that
        :math:`K + \lambda I` is positive definite (``ValueError`` otherwise).
    y : tensor of shape (n,) or (n, k)
    lam : float or tensor of shape (L,)
        Strength(s) ``> 0``. A scalar uses one Cholesky factorization; a 1-D tensor
        uses one eigendecomposition of ``K`` for all strengths and returns a leading
        dimension L.

    Returns
    -------
    alpha : tensor of shape ([L,] n[, k])
    """
    K, y = check_data(K, y, X_name="K")
    check_symmetric(K, "K")
    lam_t = check_strength(lam, "lam", K, positive=True, ndims=(0, 1))
    Y = y.reshape(y.shape[0], -1)
    not_psd = ValueError("K must be positive semidefinite (K + lam I is not positive definite)")
    if lam_t.ndim == 0:
        eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        L, status = torch.linalg.cholesky_ex(K + lam_t * eye)
        if int(status) != 0:
            raise not_psd
        return torch.cholesky_solve(Y, L).reshape(y.shape)
    e, Q = torch.linalg.eigh(K)
    shifted = e + lam_t[:, None]  # (L, n) eigenvalues of K + lam I
    if bool((shifted <= 0).any()):
        raise not_psd
    alpha = Q @ ((Q.mT @ Y) / shifted[:, :, None])
    return alpha.reshape((len(lam_t),) + tuple(y.shape))


def rbf_kernel(X, Z=None, gamma=None) -> torch.Tensor:
    r"""Gaussian (RBF) kernel matrix :math:`k(x, z) = \exp(-\gamma\|x - z\|^2)`.

    ``Z`` defaults to ``X`` and ``gamma`` to :math:`1/p`, as in scikit-learn's
    ``rbf_kernel``. Returns shape (n, m).
    """
    X = check_matrix(X, "X")
    Z = X if Z is None else check_matrix(Z, "Z", like=X)
    if Z.shape[1] != X.shape[1]:
        raise ValueError(f"Z must have {X.shape[1]} columns like X, got {Z.shape[1]}")
    g = 1.0 / X.shape[1] if gamma is None else gamma
    g = check_strength(g, "gamma", X, positive=True)
    sq = (X * X).sum(1)[:, None] + (Z * Z).sum(1)[None, :] - 2 * X @ Z.mT
    return torch.exp(-g * sq.clamp(min=0))


def rff_weights(n_inputs: int, n_features: int, gamma: float, *,
                generator: torch.Generator | None = None, dtype=torch.float64, device=None):
    r"""Draw random Fourier feature weights for the RBF kernel (Rahimi and Recht, 2007).

    :math:`W_{ij} \sim \mathcal N(0, 2\gamma)` and :math:`b_j \sim \mathcal U[0, 2\pi)`,
    so that :math:`\mathbb E[\,2\cos(w^\top x + b)\cos(w^\top z + b)\,]
    = \exp(-\gamma\|x - z\|^2)`. Returns ``(W, b)`` of shapes (n_inputs, n_features)
    and (n_features,), for :func:`random_features`.
    """
    counts = []
    for name, v in (("n_inputs", n_inputs), ("n_features", n_features)):
        try:
            count = operator.index(v)  # Python and numpy integers, not floats or bools
        except TypeError:
            count = 0
        if isinstance(v, bool) or count < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
        counts.append(count)
    n_inputs, n_features = counts
    gamma = float(check_strength(gamma, "gamma", torch.empty((), dtype=torch.float64),
                                 positive=True))
    W = torch.randn(n_inputs, n_features, generator=generator, dtype=dtype, device=device)
    b = torch.rand(n_features, generator=generator, dtype=dtype, device=device)
    return math.sqrt(2 * gamma) * W, 2 * math.pi * b


def random_features(X, W, b) -> torch.Tensor:
    r"""Random Fourier features :math:`\phi(x) = \sqrt{2/D}\,\cos(W^\top x + b)`.

    With ``(W, b)`` from :func:`rff_weights`, :math:`\phi(x)^\top\phi(z)` is an
    unbiased estimate of the RBF kernel with error :math:`O(D^{-1/2})`; ridge on
    :math:`\phi(X)` approximates kernel ridge at cost :math:`O(nD^2)` instead of
    :math:`O(n^3)`. Matches scikit-learn ``RBFSampler`` given the same weights.

    Returns
    -------
    tensor of shape (n, D)
    """
    X = check_matrix(X, "X")
    W = check_matrix(W, "W", like=X)
    b = check_finite(check_ndim(as_float_tensor(b, "b", like=X), "b", (1,)), "b")
    if W.shape[0] != X.shape[1] or b.shape[0] != W.shape[1]:
        raise ValueError(f"W must have shape ({X.shape[1]}, D) and b shape (D,), got "
                         f"{tuple(W.shape)} and {tuple(b.shape)}")
    return math.sqrt(2.0 / W.shape[1]) * torch.cos(X @ W + b)
