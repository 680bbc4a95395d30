r"""Ridge regression, Tikhonov regularization and their kernel and random-feature forms.

Objective (the scikit-learn ``Ridge(alpha=lam, fit_intercept=False)`` convention):

.. math:: \hat w_\lambda = \arg\min_w \|y - Xw\|_2^2 + \lambda\|w\|_2^2
          = (X^\top X + \lambda I)^{-1} X^\top y.

With the thin SVD :math:`X = U\operatorname{diag}(s)V^\top` every quantity below is a
*filter* of the singular values, so one SVD serves every :math:`\lambda`:
:math:`\hat w_\lambda = V\operatorname{diag}\bigl(s/(s^2+\lambda)\bigr)U^\top y`.
Derivations: chapter 02.

Mixed inputs: ``y`` (and ``Z``, ``W``, ``b``, strengths) are converted to the dtype and
device of ``X`` (or ``K``); every result has that dtype and device.
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
    check_generator,
    check_matrix,
    check_ndim,
    check_positive,
    check_strength,
    check_symmetric,
    check_tol,
    gram,
    warn_not_converged,
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
    "ridge_risk_limit",
]

# Default tolerance of the relative KKT residual (the certificate of ridge and ridge_path):
# a direct solve reaches about eps * cond(X)^2, so these leave room for cond(X) ~ 1e3-1e4
# in float64 and ~ 30 in float32.
TOL_FLOAT64, TOL_FLOAT32 = 1e-8, 1e-4


def _lams(lams, X) -> torch.Tensor:
    return check_strength(lams, "lams", X, ndims=(1,))


def ridge_path(X, y, lams, *, tol: float | None = None, return_info: bool = False):
    r"""Ridge solutions for many strengths from one SVD.

    .. math:: \hat w_\lambda = \arg\min_w \|y - Xw\|_2^2 + \lambda\|w\|_2^2
              = V \operatorname{diag}\Bigl(\frac{s_j}{s_j^2 + \lambda}\Bigr) U^\top y

    for every :math:`\lambda` in ``lams`` (no intercept). Works for :math:`n \ge p`
    and :math:`n < p` alike (the thin SVD has :math:`\min(n, p)` factors); at
    :math:`\lambda = 0` it returns the minimum-norm least-squares solution. Derived in
    chapter 02. ``y`` is converted to ``X``'s dtype and device.

    Cost: one thin SVD, :math:`O(np\min(n,p))`, then :math:`O(Lp\min(n,p))` for all
    :math:`L` strengths in one matrix product (batched on the GPU).

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    y : tensor of shape (n,) or (n, k)
        Response(s).
    lams : tensor of shape (L,)
        Strengths ``>= 0``, in any order; row ``l`` of the result is for ``lams[l]``.
    tol : float, optional
        Tolerance of the certificate: ``1e-8`` in float64 and ``1e-4`` in float32 by
        default. Used only with ``return_info=True``.
    return_info : bool
        Also return a :class:`regref.Info` (one for the whole path). Its
        ``certificate`` is the worst relative KKT residual over the path,
        :math:`\max_\lambda \|X^\top(X\hat w_\lambda - y) + \lambda \hat w_\lambda\|
        / \|X^\top y\|` (the norm is Frobenius for several targets), computed at the
        returned solutions: zero in exact arithmetic, about
        :math:`\epsilon\,\kappa(X)^2` in floating point. ``converged`` is
        ``certificate <= tol``; ``n_iter`` is 1 (one factorization). When it is False
        a :class:`regref.ConvergenceWarning` is emitted: ``X`` is too ill-conditioned
        for the solution to be accurate to ``tol``.

    Returns
    -------
    W : tensor of shape (L, p) or (L, p, k)
        The solutions, one row per strength.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import ridge_path
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    >>> W, info = ridge_path(X, y, [0.0, 1.0], return_info=True)
    >>> torch.round(W, decimals=4)
    tensor([[1.0000, 1.0000],
            [0.7059, 0.8824]], dtype=torch.float64)
    >>> info.converged, info.certificate < 1e-12
    (True, True)
    """
    X, y = check_data(X, y)
    lams = _lams(lams, X)
    tol = check_tol(tol, X.dtype, TOL_FLOAT64, TOL_FLOAT32)
    U, s, Vh, keep = _svd(X)
    Y = y.reshape(y.shape[0], -1)
    UtY = U.mT @ Y  # (r, k)
    W = _batched_matmul(Vh.mT, _filters(s, s**2, keep, lams)[:, :, None] * UtY)  # (L, p, k)
    W = W.reshape((len(lams),) + (X.shape[1],) + y.shape[1:])
    if not return_info:
        return W
    return W, _info(X, y, lams, W, tol)


def _kkt_residual(X, y, lams, W) -> float:
    """Largest relative norm of the ridge gradient ``X^T(Xw - y) + lam w`` over a path."""
    Wk = W.reshape(len(lams), X.shape[1], -1)
    Y = y.reshape(y.shape[0], -1)
    grad = X.mT @ (X @ Wk - Y) + lams[:, None, None] * Wk
    scale = torch.linalg.norm(X.mT @ Y).clamp(min=torch.finfo(X.dtype).tiny)
    return float(torch.linalg.norm(grad, dim=(1, 2)).amax() / scale)


def _info(X, y, lams, W, tol) -> Info:
    """The Info of a direct ridge solve: certificate at ``W``, warning if above ``tol``."""
    certificate = _kkt_residual(X, y, lams, W)
    converged = certificate <= tol
    if not converged:
        warn_not_converged(f"ridge: relative KKT residual {certificate:.3g} > tol = {tol:g} "
                           "(X is ill-conditioned; try float64 or a larger lam)")
    return Info(n_iter=1, converged=converged, certificate=certificate)


def ridge(X, y, lam, *, tol: float | None = None, return_info: bool = False):
    r"""Ridge regression for one strength.

    .. math:: \hat w_\lambda = \arg\min_w \|y - Xw\|_2^2 + \lambda\|w\|_2^2
              = (X^\top X + \lambda I)^{-1}X^\top y = X^\top (XX^\top + \lambda I)^{-1} y.

    For :math:`\lambda > 0` it solves the smaller of the two systems by Cholesky:
    the primal :math:`p \times p` one when :math:`n \ge p`, the dual
    :math:`n \times n` one when :math:`n < p` (cost :math:`O(np\min(n,p))`). At
    :math:`\lambda = 0` it falls back to :func:`ridge_path` (minimum-norm least squares).
    Matches scikit-learn ``Ridge(alpha=lam, fit_intercept=False)``. The normal equations
    square the condition number: for :math:`\lambda \ll s_{\max}^2 \epsilon^{1/2}` on an
    ill-conditioned ``X`` prefer :func:`ridge_path`, which works on the SVD. Derived in
    chapter 02. ``y`` is converted to ``X``'s dtype and device.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    y : tensor of shape (n,) or (n, k)
        Response(s).
    lam : float
        Strength ``>= 0``.
    tol : float, optional
        Tolerance of the certificate: ``1e-8`` in float64 and ``1e-4`` in float32 by
        default. Used only with ``return_info=True``.
    return_info : bool
        Also return a :class:`regref.Info` whose ``certificate`` is the relative KKT
        residual :math:`\|X^\top(X\hat w - y) + \lambda \hat w\|/\|X^\top y\|` at the
        returned :math:`\hat w`, and ``converged = certificate <= tol`` (a
        :class:`regref.ConvergenceWarning` when False).

    Returns
    -------
    w : tensor of shape (p,) or (p, k)
        The ridge solution.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import ridge
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    >>> torch.round(ridge(X, y, 1.0), decimals=4)
    tensor([0.7059, 0.8824], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    lam_t = check_strength(lam, "lam", X)
    tol = check_tol(tol, X.dtype, TOL_FLOAT64, TOL_FLOAT32)
    if float(lam_t) == 0:
        return _first(ridge_path(X, y, lam_t.reshape(1), tol=tol, return_info=return_info))
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
    return w, _info(X, y, lam_t.reshape(1), w.unsqueeze(0), tol)


def _first(result):
    if isinstance(result, tuple):
        return result[0][0], result[1]
    return result[0]


def ridge_df(X, lams) -> torch.Tensor:
    r"""Effective degrees of freedom of ridge, one per strength.

    .. math:: \operatorname{df}(\lambda) = \operatorname{tr} H_\lambda
              = \sum_j \frac{s_j^2}{s_j^2 + \lambda}.

    :math:`H_\lambda = X(X^\top X + \lambda I)^{-1}X^\top` is the hat matrix; the
    trace falls from :math:`\operatorname{rank} X` at :math:`\lambda = 0` (where
    :math:`H_0 = XX^+`) to 0 as :math:`\lambda \to \infty`. Cost: one SVD (or
    eigendecomposition of :math:`XX^\top` when :math:`n < p`). Derived in chapter 02.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    lams : tensor of shape (L,)
        Strengths ``>= 0``.

    Returns
    -------
    tensor of shape (L,)
        :math:`\operatorname{df}(\lambda)` for each strength, in the order of ``lams``.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import ridge_df
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> torch.round(ridge_df(X, [0.0, 1.0, 100.0]), decimals=4)
    tensor([2.0000, 1.4706, 0.0670], dtype=torch.float64)
    """
    X = check_matrix(X, "X")
    lams = _lams(lams, X)
    _, s2, keep = _left_spectrum(X)
    return _filters(s2, s2, keep, lams).sum(-1)


def _check_targets(X, y):
    """A mean over targets needs at least one: ``ValueError`` for ``y`` of shape (n, 0)."""
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError("y must have at least one target column, got shape "
                         f"{tuple(y.shape)}")
    return X, y


def _loo_kernel(X, Y, lams, coef: bool):
    r"""The part to copy: exact leave-one-out errors of ridge for every strength, and (with
    ``coef``) the solution at the strength with the smallest error, from one factorization.

    With :math:`X = U\operatorname{diag}(s)V^\top` (when :math:`n < p`, :math:`U` and
    :math:`s^2` come from the eigendecomposition of the :math:`n\times n` Gram matrix
    :math:`XX^\top` instead, which is cheaper) the hat matrix is
    :math:`H_\lambda = U\operatorname{diag}\bigl(s^2/(s^2+\lambda)\bigr)U^\top`, so the
    residuals :math:`e = (I - H_\lambda)Y` and leverages :math:`h_{ii}` cost
    :math:`O(n\min(n,p))` per strength, and
    :math:`\mathrm{LOO}(\lambda) = \operatorname{mean}_{i,k}\,(e_{ik}/(1-h_{ii}))^2`.
    At the best strength :math:`\lambda^\star` the solution is
    :math:`V\operatorname{diag}\bigl(s/(s^2+\lambda^\star)\bigr)U^\top Y` (:math:`n\ge p`)
    or :math:`X^\top U\operatorname{diag}\bigl(1/(s^2+\lambda^\star)\bigr)U^\top Y
    = X^\top(XX^\top + \lambda^\star I)^{-1}Y` (:math:`n < p`, where only :math:`U` is
    known): :math:`O(p\min(n,p))` more, no second factorization. ``Y`` is (n, k).
    Returns the (L,) errors, the smallest :math:`1 - h_{ii}` (which must be positive) and
    the (p, k) solution (None without ``coef``).
    """
    n, p = X.shape
    if n >= p:
        U, s, Vh, keep = _svd(X)
        s2 = s**2
    else:  # eigh of X X^T
        s2, U = torch.linalg.eigh(gram(X.mT))
        s2, U = s2.flip(0).clamp(min=0), U.flip(1)  # descending, like the SVD
        keep = s2 > p * torch.finfo(X.dtype).eps * s2[0]  # as in _svd
    UtY = U.mT @ Y  # (r, k)
    g = _filters(s2, s2, keep, lams)  # (L, r): the hat-matrix filter s^2/(s^2 + lam)
    resid = Y - _batched_matmul(U, g[:, :, None] * UtY)  # (L, n, k)
    slack = 1 - ((U**2) @ g.mT).mT.unsqueeze(-1)  # 1 - h_ii, (L, n, 1)
    loo = ((resid / slack) ** 2).mean(dim=(1, 2))
    if not coef:
        return loo, slack.min(), None
    best = lams[torch.argmin(loo)].reshape(1)
    if n >= p:
        w = Vh.mT @ (_filters(s, s2, keep, best)[0][:, None] * UtY)
    else:
        w = X.mT @ (U @ (_filters(torch.ones_like(s2), s2, keep, best)[0][:, None] * UtY))
    return loo, slack.min(), w


def ridge_loo(X, y, lams, *, return_coef: bool = False):
    r"""Exact leave-one-out mean squared error of ridge, for every strength, from one SVD.

    Refitting without point :math:`i` changes its residual to
    :math:`e_i/(1 - h_{ii})` (Sherman–Morrison), where :math:`e = (I - H_\lambda)y`
    and :math:`h_{ii}` is the leverage, so

    .. math:: \mathrm{LOO}(\lambda) = \frac1n \sum_{i=1}^n
              \Bigl(\frac{y_i - \hat y_i(\lambda)}{1 - h_{ii}(\lambda)}\Bigr)^2.

    With ``return_coef=True`` it also returns the ridge solution at the strength with the
    smallest error, :math:`\hat w_{\lambda^\star}` with
    :math:`\lambda^\star = \arg\min_\lambda \mathrm{LOO}(\lambda)` (the first one in
    the order of ``lams`` on a tie), from the same factorization: with
    :math:`X = U\operatorname{diag}(s)V^\top`,
    :math:`\hat w_{\lambda^\star} = V\operatorname{diag}\bigl(s/(s^2+\lambda^\star)\bigr)
    U^\top y = X^\top U\operatorname{diag}\bigl(1/(s^2+\lambda^\star)\bigr)U^\top y`.
    This is scikit-learn's ``RidgeCV(alphas=lams, fit_intercept=False)``: its ``alpha_``
    is ``lams[loo.argmin()]`` and its ``coef_`` is ``w`` (transposed for several targets).

    Cost: one thin SVD when :math:`n \ge p`, one eigendecomposition of the
    :math:`n\times n` Gram matrix :math:`XX^\top` when :math:`n < p`
    (:math:`O(np\min(n,p))` either way), plus :math:`O(Ln\min(n,p))` for the errors and
    :math:`O(p\min(n,p))` for the solution. Derived in chapter 02. Multi-target ``y``
    averages over targets (one strength for all of them). ``y`` is converted to ``X``'s
    dtype and device.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    y : tensor of shape (n,) or (n, k)
        Response(s).
    lams : tensor of shape (L,)
        Strengths ``>= 0``.
    return_coef : bool, default False
        Also return the solution at the strength with the smallest error.

    Returns
    -------
    loo : tensor of shape (L,)
        The leave-one-out mean squared error for each strength.
    w : tensor of shape (p,) or (p, k)
        Only with ``return_coef=True``: the ridge solution at ``lams[loo.argmin()]``.

    Raises
    ------
    ValueError
        Where a point has leverage 1 (e.g. :math:`\lambda = 0` with :math:`n \le p`):
        its leave-one-out prediction is undefined.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import ridge, ridge_loo
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 1.0]],
    ...                  dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 2.0, 2.5], dtype=torch.float64)
    >>> lams = torch.tensor([0.1, 1.0], dtype=torch.float64)
    >>> torch.round(ridge_loo(X, y, lams), decimals=4)
    tensor([0.0764, 0.2198], dtype=torch.float64)
    >>> loo, w = ridge_loo(X, y, lams, return_coef=True)  # select, and fit there
    >>> torch.round(w, decimals=4)
    tensor([0.8259, 0.9872], dtype=torch.float64)
    >>> torch.allclose(w, ridge(X, y, lams[loo.argmin()]))
    True
    """
    X, y = _check_targets(*check_data(X, y))
    lams = _lams(lams, X)
    loo, min_slack, w = _loo_kernel(X, y.reshape(y.shape[0], -1), lams, return_coef)
    if float(min_slack) <= 1e3 * torch.finfo(X.dtype).eps:
        raise ValueError("leave-one-out is undefined: some point has leverage 1 at one of "
                         "lams (use lams > 0 when n <= p)")
    if not return_coef:
        return loo
    return loo, w.reshape((X.shape[1],) + y.shape[1:])


def ridge_gcv(X, y, lams) -> torch.Tensor:
    r"""Generalized cross-validation score of ridge for every strength.

    .. math:: \mathrm{GCV}(\lambda) = \frac{\frac1n\|(I - H_\lambda)y\|^2}
              {\bigl(1 - \operatorname{tr}(H_\lambda)/n\bigr)^2},

    the leave-one-out formula with every leverage replaced by the average
    :math:`\operatorname{tr}(H_\lambda)/n` (Golub, Heath and Wahba, 1979). Invariant
    to rotations of the data, unlike LOO. Cost: one SVD plus :math:`O(Ln\min(n,p))`.
    Derived in chapter 02. ``y`` is converted to ``X``'s dtype and device.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    y : tensor of shape (n,) or (n, k)
        Response(s); several targets are averaged.
    lams : tensor of shape (L,)
        Strengths ``>= 0``; ``ValueError`` where :math:`\operatorname{tr} H_\lambda = n`.

    Returns
    -------
    tensor of shape (L,)
        The GCV score for each strength.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import ridge_gcv
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 1.0]],
    ...                  dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 2.0, 2.5], dtype=torch.float64)
    >>> torch.round(ridge_gcv(X, y, [0.1, 1.0]), decimals=4)
    tensor([0.0816, 0.1718], dtype=torch.float64)
    """
    X, y = _check_targets(*check_data(X, y))
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
    ``KernelRidge(alpha=lam, kernel="precomputed").dual_coef_``. Cost: one Cholesky
    factorization, :math:`O(n^3)` (one eigendecomposition for a vector of strengths).
    ``y`` is converted to ``K``'s dtype and device.

    Parameters
    ----------
    K : tensor of shape (n, n)
        Symmetric positive semidefinite kernel matrix. Symmetry is checked, and that
        :math:`K + \lambda I` is positive definite (``ValueError`` otherwise).
    y : tensor of shape (n,) or (n, k)
        Response(s).
    lam : float or tensor of shape (L,)
        Strength(s) ``> 0``. A scalar uses one Cholesky factorization; a 1-D tensor
        uses one eigendecomposition of ``K`` for all strengths and returns a leading
        dimension L.

    Returns
    -------
    alpha : tensor of shape ([L,] n[, k])
        The dual coefficients.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import kernel_ridge
    >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> torch.round(kernel_ridge(K, torch.tensor([1.0, 0.0]), 1.0), decimals=4)
    tensor([ 0.3750, -0.1250], dtype=torch.float64)
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


def rbf_kernel(X, Z=None, length_scale=None) -> torch.Tensor:
    r"""Gaussian (RBF) kernel matrix with length scale :math:`\ell`.

    .. math:: k(x, z) = \exp\Bigl(-\frac{\|x - z\|^2}{2\ell^2}\Bigr).

    scikit-learn's ``rbf_kernel(X, Z, gamma)`` is the same kernel with
    ``gamma`` :math:`= 1/(2\ell^2)`, i.e. :math:`\ell = (2\,\mathrm{gamma})^{-1/2}`.
    Cost: :math:`O(nmp)`. Used in chapter 02.

    Parameters
    ----------
    X : tensor of shape (n, p)
        First set of points.
    Z : tensor of shape (m, p), optional
        Second set of points; defaults to ``X``. Converted to ``X``'s dtype and device.
    length_scale : float, optional
        :math:`\ell > 0`. Defaults to :math:`\sqrt{p/2}`, which is scikit-learn's default
        ``gamma = 1/p``.

    Returns
    -------
    tensor of shape (n, m)
        :math:`K_{ij} = k(x_i, z_j)`.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import rbf_kernel
    >>> X = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    >>> torch.round(rbf_kernel(X, length_scale=1.0), decimals=4)
    tensor([[1.0000, 0.6065, 0.0111],
            [0.6065, 1.0000, 0.1353],
            [0.0111, 0.1353, 1.0000]], dtype=torch.float64)
    """
    X = check_matrix(X, "X")
    Z = X if Z is None else check_matrix(Z, "Z", like=X)
    if Z.shape[1] != X.shape[1]:
        raise ValueError(f"Z must have {X.shape[1]} columns like X, got {Z.shape[1]}")
    scale = math.sqrt(X.shape[1] / 2) if length_scale is None else length_scale
    scale = check_strength(scale, "length_scale", X, positive=True)
    sq = (X * X).sum(1)[:, None] + (Z * Z).sum(1)[None, :] - 2 * X @ Z.mT
    return torch.exp(-sq.clamp(min=0) / (2 * scale**2))


def _count(value, name: str) -> int:
    """A positive count given as a Python or numpy integer (not a float or a bool)."""
    try:
        count = operator.index(value)
    except TypeError:
        count = 0
    if isinstance(value, bool) or count < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return count


def rff_weights(n_inputs: int, n_features: int, length_scale: float, *,
                generator: torch.Generator | None = None, dtype=torch.float64, device=None):
    r"""Draw random Fourier feature weights for the RBF kernel (Rahimi and Recht, 2007).

    :math:`W_{ij} \sim \mathcal N(0, \ell^{-2})` and :math:`b_j \sim \mathcal U[0, 2\pi)`,
    so that :math:`\mathbb E[\,2\cos(w^\top x + b)\cos(w^\top z + b)\,]
    = \exp(-\|x - z\|^2/(2\ell^2))`, the kernel of :func:`rbf_kernel` (scikit-learn's
    ``RBFSampler(gamma=g)`` draws :math:`\mathcal N(0, 2g)`, so :math:`g = 1/(2\ell^2)`).
    The draws are made on the CPU in float64 and then moved to ``dtype`` and ``device``,
    so one seed gives the same weights on every device. Cost: :math:`O(pD)`.

    Parameters
    ----------
    n_inputs : int
        Number of input features :math:`p`.
    n_features : int
        Number of random features :math:`D`.
    length_scale : float
        :math:`\ell > 0`, as in :func:`rbf_kernel`.
    generator : torch.Generator, optional
        A CPU generator (``ValueError`` for one on another device).
    dtype : torch.dtype
        A floating dtype for the result.
    device : torch.device, optional
        Device of the result.

    Returns
    -------
    W : tensor of shape (n_inputs, n_features)
        Frequencies.
    b : tensor of shape (n_features,)
        Phases, for :func:`random_features`.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import rff_weights
    >>> W, b = rff_weights(2, 3, 0.5, generator=torch.Generator().manual_seed(0))
    >>> tuple(W.shape), tuple(b.shape), W.dtype
    ((2, 3), (3,), torch.float64)
    """
    n_inputs, n_features = _count(n_inputs, "n_inputs"), _count(n_features, "n_features")
    scale = check_positive(_scalar(length_scale, "length_scale"), "length_scale")
    generator = check_generator(generator)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    W = torch.randn(n_inputs, n_features, generator=generator, dtype=torch.float64)
    b = torch.rand(n_features, generator=generator, dtype=torch.float64)
    W, b = W / scale, 2 * math.pi * b
    return W.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device)


def _scalar(value, name: str) -> float:
    """A real number given as a Python/numpy number or a one-element tensor."""
    t = as_float_tensor(value, name)
    if t.numel() != 1:
        raise ValueError(f"{name} must be a number, got shape {tuple(t.shape)}")
    return float(t)


def random_features(X, W, b) -> torch.Tensor:
    r"""Random Fourier features :math:`\phi(x) = \sqrt{2/D}\,\cos(W^\top x + b)`.

    With ``(W, b)`` from :func:`rff_weights`, :math:`\phi(x)^\top\phi(z)` is an
    unbiased estimate of the RBF kernel with error :math:`O(D^{-1/2})`; ridge on
    :math:`\phi(X)` approximates kernel ridge at cost :math:`O(nD^2)` instead of
    :math:`O(n^3)`. Matches scikit-learn ``RBFSampler`` given the same weights.
    Cost: :math:`O(npD)`. Used in chapter 02.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Inputs.
    W : tensor of shape (p, D)
        Frequencies; converted to ``X``'s dtype and device.
    b : tensor of shape (D,)
        Phases; converted to ``X``'s dtype and device.

    Returns
    -------
    tensor of shape (n, D)
        The features :math:`\phi(x_i)`, one row per input.

    Examples
    --------
    >>> import torch
    >>> from regref.ridge import random_features, rbf_kernel, rff_weights
    >>> X = torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    >>> W, b = rff_weights(2, 20000, 1.0, generator=torch.Generator().manual_seed(0))
    >>> Phi = random_features(X, W, b)
    >>> err = (Phi @ Phi.T - rbf_kernel(X, length_scale=1.0)).abs().max()
    >>> bool(err < 0.05)
    True
    """
    X = check_matrix(X, "X")
    W = check_matrix(W, "W", like=X)
    b = check_finite(check_ndim(as_float_tensor(b, "b", like=X), "b", (1,)), "b")
    if W.shape[0] != X.shape[1] or b.shape[0] != W.shape[1]:
        raise ValueError(f"W must have shape ({X.shape[1]}, D) and b shape (D,), got "
                         f"{tuple(W.shape)} and {tuple(b.shape)}")
    return math.sqrt(2.0 / W.shape[1]) * torch.cos(X @ W + b)


def _mp_stieltjes(ratio, lam):
    """Stieltjes transform m(-lam) = int dF(s)/(s + lam) of the Marchenko–Pastur law of
    ratio p/n (the limit spectrum of X^T X/n, unit variance), and its derivative
    m'(-lam) = int dF(s)/(s + lam)^2, for lam > 0. m solves
    ratio*z*m^2 + (z + ratio - 1)*m + 1 = 0 at z = -lam."""
    a = 1 - ratio + lam
    m = (torch.sqrt(a * a + 4 * ratio * lam) - a) / (2 * ratio * lam)
    dm = (ratio * m * m + m) / (2 * ratio * lam * m + lam + 1 - ratio)
    return m, dm


def ridge_risk_limit(ratio, lam, *, signal=1.0, noise=1.0) -> torch.Tensor:
    r"""Limiting excess risk of ridge with isotropic features, as :math:`p/n \to \gamma`.

    Rows :math:`x_i \sim \mathcal N(0, I_p)`, :math:`y = Xw^\star + \xi` with
    :math:`\|w^\star\|^2 = r^2` (``signal``) and noise variance :math:`\sigma^2`
    (``noise``), and :math:`\hat w` the ridge estimator
    ``ridge(X, y, n * lam)``, i.e. the minimizer of
    :math:`\frac1n\|y - Xw\|^2 + \lambda\|w\|^2` (``lam`` is on this per-sample scale).
    As :math:`n, p \to \infty` with :math:`p/n \to \gamma` (``ratio``), the excess risk
    :math:`\mathbb E_x[(x^\top(\hat w - w^\star))^2] = \|\hat w - w^\star\|^2` tends to

    .. math:: R(\lambda) = r^2\lambda^2 m'(-\lambda)
              + \sigma^2\gamma\bigl(m(-\lambda) - \lambda m'(-\lambda)\bigr),

    where :math:`m` is the Stieltjes transform of the Marchenko–Pastur law
    (Dobriban and Wager, 2018; Hastie, Montanari, Rosset and Tibshirani, 2022), in
    closed form. At :math:`\lambda = 0` it returns the limit of the minimum-norm
    interpolant: :math:`\sigma^2\gamma/(1-\gamma)` for :math:`\gamma < 1`,
    :math:`r^2(1 - 1/\gamma) + \sigma^2/(\gamma - 1)` for :math:`\gamma > 1` and
    infinity at :math:`\gamma = 1`. The minimum over :math:`\lambda` is at
    :math:`\lambda^\star = \sigma^2\gamma/r^2`. The out-of-sample risk of a new
    response is :math:`R + \sigma^2`. Derived in chapter 02. Cost: :math:`O(1)` per
    entry; ``ratio`` and ``lam`` broadcast against each other.

    Parameters
    ----------
    ratio : float or tensor
        Aspect ratio :math:`\gamma = p/n > 0`.
    lam : float or tensor
        Per-sample strength :math:`\lambda \ge 0` (ridge's strength divided by ``n``).
    signal : float
        :math:`r^2 = \|w^\star\|^2 > 0`.
    noise : float
        :math:`\sigma^2 \ge 0`.

    Returns
    -------
    tensor
        :math:`R(\lambda)`, float64 (or the dtype of a floating tensor argument), of the
        broadcast shape of ``ratio`` and ``lam``.

    Examples
    --------
    >>> from regref.ridge import ridge_risk_limit
    >>> round(float(ridge_risk_limit(0.5, 0.0)), 4)  # sigma^2 gamma / (1 - gamma)
    1.0
    >>> round(float(ridge_risk_limit(2.0, 0.0)), 4)  # r^2 (1 - 1/gamma) + 1/(gamma - 1)
    1.5
    >>> round(float(ridge_risk_limit(2.0, 2.0)), 4)  # at the optimum sigma^2 gamma / r^2
    0.7808
    """
    ratio_t = as_float_tensor(ratio, "ratio")
    lam_t = as_float_tensor(lam, "lam", like=ratio_t)
    for name, t in (("ratio", ratio_t), ("lam", lam_t)):
        check_finite(t, name)
        if bool((t < 0).any()) or (name == "ratio" and bool((t == 0).any())):
            raise ValueError(f"{name} must be {'> 0' if name == 'ratio' else '>= 0'}")
    r2 = check_positive(_scalar(signal, "signal"), "signal")
    s2 = _scalar(noise, "noise")
    if not (math.isfinite(s2) and s2 >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    try:
        ratio_t, lam_t = torch.broadcast_tensors(ratio_t, lam_t)
    except RuntimeError as err:
        raise ValueError(f"ratio and lam must broadcast, got shapes {tuple(ratio_t.shape)} "
                         f"and {tuple(lam_t.shape)}") from err
    safe = torch.where(lam_t > 0, lam_t, torch.ones_like(lam_t))
    m, dm = _mp_stieltjes(ratio_t, safe)
    risk = r2 * safe**2 * dm + s2 * ratio_t * (m - safe * dm)
    under = s2 * ratio_t / (1 - ratio_t)  # gamma < 1
    over = r2 * (1 - 1 / ratio_t) + s2 / (ratio_t - 1)  # gamma > 1
    at_zero = torch.where(ratio_t < 1, under, over)
    at_zero = torch.where(ratio_t == 1, torch.full_like(at_zero, math.inf), at_zero)
    return torch.where(lam_t > 0, risk, at_zero)
