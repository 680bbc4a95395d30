r"""Implicit regularization: which minimizer gradient methods choose when there are many.

Least squares :math:`\tfrac12\|y - Xw\|^2` (the book's ridge scaling halved, so that ridge
with strength :math:`\lambda` and gradient descent with step :math:`\eta` compare through
:math:`\lambda = 1/(\eta t)`), a diagonal linear network, logistic regression on separable
data, and the linear stability of (stochastic) gradient descent at a minimum:

- :func:`gd_filter_factors`: the spectral filter :math:`1 - (1 - \eta s^2)^t` of :math:`t`
  steps of gradient descent from zero (early stopping as a filter, like ridge's
  :math:`s^2/(s^2 + \lambda)`);
- :func:`gd_path`: the gradient-descent iterates for many step sizes and stopping times in
  one pass, from one SVD; :math:`t = \infty` gives the minimum-norm solution :math:`X^+y`;
- :func:`diagonal_net_flow`: the gradient flow of :math:`w = u\odot u - v\odot v` from
  :math:`u = v = \alpha\mathbf 1`, for many initialization scales :math:`\alpha` in one pass
  (small :math:`\alpha`: the minimum-:math:`\ell_1` interpolator; large: minimum
  :math:`\ell_2`);
- :func:`diagonal_net_limit`: the limit of that flow directly, as the minimizer of the
  hyperbolic entropy :math:`Q_\alpha` over the interpolators (Newton on the dual);
- :func:`logistic_gd_direction`: the direction :math:`w_t/\|w_t\|` of gradient descent on
  the logistic loss, which tends to the hard-margin SVM direction on separable data;
- :func:`sharpness`: the top Hessian eigenvalue of any loss (a thin wrapper on
  :func:`regref.curvature.hessian_top_eig`);
- :func:`stability_margins`: the two necessary conditions for a minimum to be linearly
  stable, :math:`\eta\lambda_{\max}(H) \le 2` for gradient descent and
  :math:`\eta\, c_B \operatorname{tr} H \le 2` for SGD with batches of size :math:`B`.

Derivations: chapter 08.
"""

from __future__ import annotations

import math

import torch

from ._core import (
    Info,
    as_float_tensor,
    check_data,
    check_finite,
    check_ndim,
    check_positive,
    check_positive_int,
    check_tol,
    warn_not_converged,
)
from .curvature import hessian_top_eig

__all__ = [
    "gd_filter_factors",
    "gd_path",
    "diagonal_net_flow",
    "diagonal_net_limit",
    "logistic_gd_direction",
    "sharpness",
    "stability_margins",
]


# ----------------------------------------------------------------------------- validation

def _positive_vector(value, name: str, like: torch.Tensor) -> torch.Tensor:
    """A scalar or 1-D list of positive finite numbers, as a 1-D tensor like ``like``."""
    t = check_ndim(as_float_tensor(value, name, like=like), name, (0, 1)).reshape(-1)
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    check_finite(t, name)
    if bool((t <= 0).any()):
        raise ValueError(f"{name} must be > 0")
    return t


def _stopping_times(t, like: torch.Tensor) -> torch.Tensor:
    """Non-negative whole numbers of steps (or ``inf``), as a 1-D tensor like ``like``."""
    t = check_ndim(as_float_tensor(t, "t", like=like), "t", (0, 1)).reshape(-1)
    if t.numel() == 0:
        raise ValueError("t must not be empty")
    if bool(torch.isnan(t).any()) or bool((t < 0).any()):
        raise ValueError("t must hold non-negative numbers of steps (or inf)")
    finite = t[torch.isfinite(t)]
    if bool((finite != finite.round()).any()):
        raise ValueError("t must hold whole numbers of steps (or inf)")
    return t


# ----------------------------------------------------------------------------- spectral filters

def gd_filter_factors(s, step, t) -> torch.Tensor:
    r"""Filter factors of :math:`t` steps of gradient descent on least squares from zero.

    Gradient descent :math:`w_{k+1} = w_k - \eta X^\top(Xw_k - y)` from :math:`w_0 = 0`
    gives :math:`w_t = \sum_j \varphi_t(s_j)\,(u_j^\top y / s_j)\, v_j` with

    .. math:: \varphi_t(s) = 1 - (1 - \eta s^2)^t ,

    to compare with ridge's :math:`s^2/(s^2 + \lambda)`. For :math:`\eta s^2 \le 1`,
    :math:`\frac{s^2}{s^2 + 1/(\eta t)} \le \varphi_t(s) \le \min(1, \eta t s^2)`:
    early stopping at :math:`t` filters like ridge at :math:`\lambda = 1/(\eta t)`.
    ``t = inf`` gives 1 where :math:`0 < \eta s^2 < 2` (the minimum-norm solution) and 0
    where :math:`s = 0`. Cost: one power per entry. Derived in chapter 08.

    Parameters
    ----------
    s : tensor of shape (r,)
        Singular values, :math:`\ge 0`.
    step : float or tensor of shape (S,)
        Step sizes :math:`\eta > 0`.
    t : int or tensor of shape (T,)
        Numbers of steps: whole numbers :math:`\ge 0`, or ``inf``.

    Returns
    -------
    tensor of shape (S, T, r)
        :math:`\varphi_t(s_j)` for every step size, stopping time and singular value.

    Examples
    --------
    >>> import torch
    >>> from regref.implicit import gd_filter_factors
    >>> s = torch.tensor([2.0, 1.0, 0.1], dtype=torch.float64)
    >>> gd_filter_factors(s, 0.2, [1, 10])[0]
    tensor([[0.8000, 0.2000, 0.0020],
            [1.0000, 0.8926, 0.0198]], dtype=torch.float64)
    """
    s = check_finite(check_ndim(as_float_tensor(s, "s"), "s", (1,)), "s")
    if bool((s < 0).any()):
        raise ValueError("s must hold singular values >= 0")
    step = _positive_vector(step, "step", s)
    t = _stopping_times(t, s)
    x = 1 - step[:, None, None] * s**2          # (S, 1, r)
    return 1 - x ** t[None, :, None]


def _gd_path_kernel(U, s, Vh, y, step, t):
    r"""The part to copy: gradient descent on :math:`\tfrac12\|y - Xw\|^2` from zero, for
    every step size and stopping time at once, through the SVD :math:`X = U\,\mathrm{diag}(s)
    V^\top` (``s`` > 0 only). ``step`` (S,), ``t`` (T,); returns the iterates (S, T, p).

    :math:`w_t = V\,\mathrm{diag}\bigl(\varphi_t(s)/s\bigr)\,U^\top y` with
    :math:`\varphi_t(s) = 1 - (1 - \eta s^2)^t`: :math:`t` steps cost one power per singular
    value instead of :math:`t` matrix-vector products.
    """
    coef = (U.mT @ y) / s                                  # (r,): the least-squares gains
    keep = (1 - step[:, None] * s**2)[:, None, :] ** t[None, :, None]   # (S, T, r)
    return ((1 - keep) * coef) @ Vh                        # (S, T, p)


def gd_path(X, y, step, t, *, rcond=None) -> torch.Tensor:
    r"""Gradient-descent iterates on least squares from zero, for many step sizes and
    stopping times in one pass.

    .. math:: w_{k+1} = w_k - \eta X^\top (X w_k - y), \qquad w_0 = 0,

    the gradient descent on :math:`\tfrac12\|y - Xw\|^2`. Every iterate lies in the row
    space of :math:`X`, so :math:`w_t = \sum_j \bigl(1 - (1 - \eta s_j^2)^t\bigr)
    (u_j^\top y/s_j)\, v_j` (:func:`gd_filter_factors`), and for
    :math:`0 < \eta < 2/s_1^2` the limit ``t = inf`` is the minimum-norm least-squares
    solution :math:`X^+ y`. Cost: one thin SVD, :math:`O(np\min(n, p))`, then
    :math:`O(STr + STrp)` for :math:`S` steps, :math:`T` stopping times and rank :math:`r`,
    however large :math:`t`. Derived in chapter 08.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    y : tensor of shape (n,)
        Response.
    step : float or tensor of shape (S,)
        Step sizes :math:`\eta > 0`. With ``t = inf`` each must be below :math:`2/s_1^2`
        (otherwise gradient descent diverges).
    t : int or tensor of shape (T,)
        Numbers of steps: whole numbers :math:`\ge 0`, or ``inf``.
    rcond : float, optional
        Singular values at most ``rcond`` :math:`\cdot s_1` count as zero (default: machine
        epsilon times :math:`\max(n, p)`, as ``torch.linalg.pinv``).

    Returns
    -------
    tensor of shape (S, T, p)
        :math:`w_t` for every step size (rows) and stopping time (columns).

    Examples
    --------
    >>> import torch
    >>> from regref.implicit import gd_path
    >>> X = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 3.0], dtype=torch.float64)
    >>> W = gd_path(X, y, 0.2, [1, float("inf")])
    >>> W[0].round(decimals=4)
    tensor([[ 0.2000,  0.8000,  0.6000],
            [-0.3333,  1.3333,  1.6667]], dtype=torch.float64)
    >>> bool(torch.allclose(W[0, 1], torch.linalg.pinv(X) @ y))
    True
    """
    X, y = check_data(X, y)
    check_ndim(y, "y", (1,))
    step = _positive_vector(step, "step", X)
    t = _stopping_times(t, X)
    U, s, Vh = torch.linalg.svd(X, full_matrices=False)
    if rcond is None:
        rcond = torch.finfo(X.dtype).eps * max(X.shape)
    else:
        rcond = check_positive(rcond, "rcond")
    r = int((s > rcond * s[0]).sum())
    if bool(torch.isinf(t).any()) and bool((step * s[0] ** 2 >= 2).any()):
        raise ValueError(f"step must be < 2 / s_1^2 = {2 / float(s[0]) ** 2:.4g} for "
                         "t = inf (gradient descent diverges beyond it)")
    return _gd_path_kernel(U[:, :r], s[:r], Vh[:r], y, step, t)


# ----------------------------------------------------------------------------- diagonal network

def _diagonal_net_kernel(X, y, alpha, step, tol, max_iter, check_every=50):
    r"""The part to copy: gradient flow of the diagonal linear network
    :math:`w = u\odot u - v\odot v` on :math:`\tfrac12\|Xw - y\|^2`, from
    :math:`u = v = \alpha`, one row per entry of ``alpha`` (A,), with steps ``step`` (A,).

    Each step is the exact flow of :math:`(u, v)` for the current gradient
    :math:`g = X^\top(Xw - y)` held fixed: :math:`u \leftarrow u\,e^{-2\eta g}`,
    :math:`v \leftarrow v\,e^{2\eta g}`. It keeps the two invariants of the flow,
    :math:`u\odot v = \alpha^2` and :math:`\log(u/\alpha) \in \mathrm{range}(X^\top)`, so it
    stops at the flow's own limit. Stops when :math:`\max_a \|Xw_a - y\| \le tol\,\|y\|`
    (checked every ``check_every`` steps) or after ``max_iter`` steps. Returns
    ``(W (A, p), relative residual, n_iter)``.
    """
    u = alpha[:, None] * torch.ones_like(X[0])             # (A, p)
    v = u.clone()
    eta, scale = step[:, None], torch.linalg.vector_norm(y)
    n_iter, residual = 0, math.inf
    while n_iter < max_iter:
        for _ in range(min(check_every, max_iter - n_iter)):
            g = ((u * u - v * v) @ X.mT - y) @ X           # (A, p): gradient in w
            u, v = u * torch.exp(-2 * eta * g), v * torch.exp(2 * eta * g)
            n_iter += 1
        res = torch.linalg.vector_norm((u * u - v * v) @ X.mT - y, dim=-1)
        residual = float(res.max() / scale)
        if not math.isfinite(residual) or residual <= tol:
            break
    return u * u - v * v, residual, n_iter


def diagonal_net_flow(X, y, alpha, *, step=None, tol=None, max_iter: int = 200_000,
                      return_info: bool = False):
    r"""Gradient flow of a diagonal linear network from initialization scale
    :math:`\alpha`, for many scales in one pass.

    The network predicts :math:`Xw` with :math:`w = u\odot u - v\odot v`; the flow
    :math:`\dot u = -\nabla_u L`, :math:`\dot v = -\nabla_v L` on
    :math:`L = \tfrac12\|Xw - y\|^2` starts at :math:`u = v = \alpha\mathbf 1` (so
    :math:`w = 0`). Its limit is the interpolator that minimizes the hyperbolic entropy
    :math:`Q_\alpha(w) = \sum_i \bigl(2\alpha^2 - \sqrt{4\alpha^4 + w_i^2} + w_i
    \operatorname{arcsinh}\tfrac{w_i}{2\alpha^2}\bigr)`: the minimum-:math:`\ell_1`
    interpolator (basis pursuit) as :math:`\alpha \to 0` and the minimum-:math:`\ell_2` one
    as :math:`\alpha \to \infty`. The flow is integrated with steps that are exact for a
    frozen gradient (:func:`_diagonal_net_kernel`), which conserve
    :math:`u\odot v = \alpha^2`. Cost: two products with :math:`X` per step for all scales
    together, :math:`O(Anp)`. Derived in chapter 08.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix (:math:`n < p` for many interpolators).
    y : tensor of shape (n,)
        Response.
    alpha : float or tensor of shape (A,)
        Initialization scales :math:`\alpha > 0`.
    step : float or tensor of shape (A,), optional
        Step per scale. Default :math:`1/\bigl(4 s_1^2 (\|X^+y\|_1 + 2\alpha^2)\bigr)`,
        small enough for the flow's curvature at every :math:`w` of that size.
    tol : float, optional
        Stop when every relative residual :math:`\|Xw - y\|/\|y\| \le` ``tol`` (the
        certificate, the worst over scales). Default 1e-8 (float64), 1e-5 (float32).
        From a small :math:`\alpha` the flow learns one coordinate after another, and the
        last ones slowly: use :func:`diagonal_net_limit` for the limit itself.
    max_iter : int
        Maximum number of steps.
    return_info : bool
        Also return an :class:`~regref.Info`.

    Returns
    -------
    W : tensor of shape (A, p)
        The limit :math:`w` for each scale.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.implicit import diagonal_net_flow
    >>> X = torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([2.0], dtype=torch.float64)
    >>> W = diagonal_net_flow(X, y, torch.tensor([1e-6, 10.0], dtype=torch.float64))
    >>> W.round(decimals=3)              # min-l1: (0, 1, 0); min-l2: X^T y / 6
    tensor([[0.0000, 1.0000, 0.0000],
            [0.3330, 0.6670, 0.3330]], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    check_ndim(y, "y", (1,))
    alpha = _positive_vector(alpha, "alpha", X)
    tol = check_tol(tol, X.dtype, 1e-8, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    if float(torch.linalg.vector_norm(y)) == 0:
        W = X.new_zeros(alpha.shape[0], X.shape[1])
        return (W, Info(0, True, 0.0)) if return_info else W
    if step is None:
        s1 = torch.linalg.matrix_norm(X, ord=2)
        size = torch.linalg.vector_norm(torch.linalg.pinv(X) @ y, ord=1)
        step = 1 / (4 * s1**2 * (size + 2 * alpha**2))
    else:
        step = _positive_vector(step, "step", X)
        if step.shape[0] not in (1, alpha.shape[0]):
            raise ValueError(f"step must be a number or have one entry per alpha "
                             f"({alpha.shape[0]}), got shape {tuple(step.shape)}")
        step = step.expand(alpha.shape[0])
    W, residual, n_iter = _diagonal_net_kernel(X, y, alpha, step, tol, max_iter)
    if not math.isfinite(residual):
        raise FloatingPointError("diagonal_net_flow diverged: decrease step")
    converged = residual <= tol
    if not converged:
        warn_not_converged(f"diagonal_net_flow: relative residual {residual:.2e} > tol "
                           f"{tol:.1e} after max_iter={max_iter} steps")
    return (W, Info(n_iter, converged, residual)) if return_info else W


def _diagonal_limit_kernel(X, y, alpha, tol, max_iter):
    r"""The part to copy: the limit of the diagonal-network flow for each ``alpha`` (A,),
    by damped Newton on the dual of :math:`\min Q_\alpha(w)` s.t. :math:`Xw = y`,

    .. math:: \min_\mu\ \sum_j 2\alpha^2\sinh^2\bigl((X^\top\mu)_j\bigr) - y^\top\mu,
              \qquad w = 2\alpha^2 \sinh(2X^\top\mu),

    whose gradient is :math:`Xw - y`. Steps are capped so that no :math:`(X^\top\mu)_j`
    moves by more than 1 (the function is exponential), then halved until they decrease
    the dual (or, where rounding hides the decrease, the residual). A row stops when
    :math:`\|Xw - y\| \le tol\,\|y\|`, or when rounding stops the progress (no
    decrease, or a residual below 1e-6 not halved in 10 steps). Returns
    ``(W (A, p), residuals (A,), n_iter)``.
    """
    a2 = (alpha**2)[:, None]
    mu = X.new_zeros(alpha.shape[0], X.shape[0])              # (A, n)

    def dual(mu):
        return (2 * a2 * torch.sinh(mu @ X) ** 2).sum(-1) - mu @ y

    def residual(mu):
        r = (2 * a2 * torch.sinh(2 * (mu @ X))) @ X.mT - y     # X w - y
        return r, torch.linalg.vector_norm(r, dim=-1) / scale

    scale, n_iter = torch.linalg.vector_norm(y), 0
    active = torch.ones_like(alpha, dtype=torch.bool)
    best, stalled = torch.full_like(alpha, math.inf), torch.zeros_like(alpha)
    while True:
        z = mu @ X
        r, res = residual(mu)
        near = (res < 0.5 * best) | (res > 1e-6)      # still far, or still halving
        stalled = torch.where(near, 0, stalled + 1)   # near the rounding floor
        best = torch.minimum(best, res)
        active &= (res > tol) & (stalled < 10)
        if n_iter >= max_iter or not bool(active.any()):
            return 2 * a2 * torch.sinh(2 * z), res, n_iter
        H = (X * (4 * a2 * torch.cosh(2 * z))[:, None, :]) @ X.mT   # (A, n, n)
        d = -torch.linalg.solve(H, r[..., None])[..., 0]
        s = (1 / (d @ X).abs().amax(-1)).clamp(max=1)
        f0, slope = dual(mu), (r * d).sum(-1)
        ok = torch.zeros_like(active)
        for _ in range(50):     # backtracking: decrease the dual (or, at its rounding
            trial = mu + s[:, None] * d                        # floor, the residual)
            ok = (dual(trial) <= f0 + 0.25 * s * slope) | (residual(trial)[1] < res)
            if bool(ok[active].all()):
                break
            s = torch.where(ok, s, s / 2)
        active &= ok                                          # no decrease: rounding
        mu = mu + torch.where(active, s, 0.0)[:, None] * d
        n_iter += 1


def diagonal_net_limit(X, y, alpha, *, tol=None, max_iter: int = 500,
                       return_info: bool = False):
    r"""The limit of the diagonal-network gradient flow, computed directly, for many
    initialization scales.

    The flow of :func:`diagonal_net_flow` from :math:`u = v = \alpha\mathbf 1`
    conserves :math:`u\odot v = \alpha^2` and keeps :math:`\log(u/\alpha)` in the row
    space of :math:`X`, so its limit is the interpolator
    :math:`w = 2\alpha^2\sinh(2X^\top\mu)` with :math:`Xw = y`: the solution of

    .. math:: \min_w\ Q_\alpha(w) = \sum_i \Bigl(2\alpha^2 - \sqrt{4\alpha^4 + w_i^2}
              + w_i\operatorname{arcsinh}\frac{w_i}{2\alpha^2}\Bigr)
              \quad\text{s.t.}\quad Xw = y

    (Woodworth et al., 2020). It is found by damped Newton on the dual variable
    :math:`\mu \in \mathbb R^n` (:func:`_diagonal_limit_kernel`), for all scales at once.
    Cost per iteration: :math:`O(Anp + An^2 p + An^3)`; a few dozen iterations even for
    :math:`\alpha = 10^{-12}`. Derived in chapter 08.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix of rank :math:`n` (so that the interpolators exist).
    y : tensor of shape (n,)
        Response.
    alpha : float or tensor of shape (A,)
        Initialization scales :math:`\alpha > 0`.
    tol : float, optional
        Stop when every relative residual :math:`\|Xw - y\|/\|y\| \le` ``tol`` (the
        certificate, the worst over scales). Default 1e-10 (float64), 1e-5 (float32).
    max_iter : int
        Maximum number of Newton iterations.
    return_info : bool
        Also return an :class:`~regref.Info`.

    Returns
    -------
    W : tensor of shape (A, p)
        The limit :math:`w` for each scale.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.implicit import diagonal_net_limit
    >>> X = torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([2.0], dtype=torch.float64)
    >>> W = diagonal_net_limit(X, y, torch.tensor([1e-8, 1.0, 100.0], dtype=torch.float64))
    >>> W.round(decimals=4)              # min-l1: (0, 1, 0); min-l2: X^T y / 6
    tensor([[0.0000, 1.0000, 0.0000],
            [0.3303, 0.6697, 0.3303],
            [0.3333, 0.6667, 0.3333]], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    check_ndim(y, "y", (1,))
    alpha = _positive_vector(alpha, "alpha", X)
    tol = check_tol(tol, X.dtype, 1e-10, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    if float(torch.linalg.vector_norm(y)) == 0:
        W = X.new_zeros(alpha.shape[0], X.shape[1])
        return (W, Info(0, True, 0.0)) if return_info else W
    W, res, n_iter = _diagonal_limit_kernel(X, y, alpha, tol, max_iter)
    residual = float(res.max())
    converged = residual <= tol
    if not converged:
        warn_not_converged(f"diagonal_net_limit: relative residual {residual:.2e} > tol "
                           f"{tol:.1e} after {n_iter} Newton iterations (max_iter="
                           f"{max_iter})")
    return (W, Info(n_iter, converged, residual)) if return_info else W


# ----------------------------------------------------------------------------- logistic loss

def logistic_gd_direction(X, y, t, *, step=None) -> torch.Tensor:
    r"""Directions :math:`w_t/\|w_t\|` of gradient descent on the logistic loss, from zero.

    .. math:: L(w) = \frac1n\sum_{i=1}^n \log\bigl(1 + e^{-y_i x_i^\top w}\bigr), \qquad
              w_{k+1} = w_k - \eta \nabla L(w_k),

    with labels :math:`y_i = \pm 1`. On linearly separable data :math:`\|w_t\| \to \infty`
    like :math:`\log t` and the direction tends to that of the hard-margin SVM,
    :math:`\arg\min\{\|w\| : y_i x_i^\top w \ge 1\}`, at the slow rate
    :math:`1/\log t` (Soudry et al., 2018). Cost: :math:`O(np)` per step,
    :math:`\max t` steps. Derived in chapter 08.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Inputs (add a column of ones for an intercept).
    y : tensor of shape (n,)
        Labels in :math:`\{-1, +1\}`.
    t : int or tensor of shape (T,)
        Iteration counts :math:`\ge 1` at which to record the direction.
    step : float, optional
        Step size; default :math:`1/\beta` with :math:`\beta = s_1^2/(4n)` the smoothness of
        :math:`L` (any :math:`\eta < 2/\beta` gives the same limit direction).

    Returns
    -------
    tensor of shape (T, p)
        The unit directions, in the order of ``t``.

    Examples
    --------
    >>> import torch
    >>> from regref.implicit import logistic_gd_direction
    >>> X = torch.tensor([[1.0, 3.0], [2.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    >>> logistic_gd_direction(X, y, [10, 1000]).round(decimals=3)
    tensor([[0.6790, 0.7340],
            [0.7120, 0.7020]], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    check_ndim(y, "y", (1,))
    if not bool(((y == 1) | (y == -1)).all()):
        raise ValueError("y must hold labels -1 and +1")
    t = _stopping_times(t, X)
    if bool(torch.isinf(t).any()) or bool((t < 1).any()):
        raise ValueError("t must hold whole numbers of steps >= 1")
    if step is None:
        step = 4 * X.shape[0] / float(torch.linalg.matrix_norm(X, ord=2)) ** 2
    step = check_positive(step, "step")
    Z = y[:, None] * X                                   # rows y_i x_i
    order = torch.argsort(t)
    marks = t[order].long().tolist()
    out = X.new_empty(t.shape[0], X.shape[1])
    w, k = X.new_zeros(X.shape[1]), 0
    for j, mark in zip(order.tolist(), marks, strict=True):
        while k < mark:
            w = w + (step / X.shape[0]) * (torch.sigmoid(-(Z @ w)) @ Z)
            k += 1
        out[j] = w / torch.linalg.vector_norm(w)
    return out


# ----------------------------------------------------------------------------- stability

def sharpness(loss_fn, params, *, tol=None, max_iter: int = 200, generator=None,
              return_info: bool = False):
    r"""The sharpness :math:`\lambda_{\max}(\nabla^2 L(\theta))` of a loss at
    :math:`\theta`.

    A thin wrapper on :func:`regref.curvature.hessian_top_eig` (power iteration on
    Hessian-vector products, one HVP per iteration) that returns only the eigenvalue. Near
    a minimum :math:`H \succeq 0`; gradient descent with step :math:`\eta` can only stay
    at a minimum whose sharpness is at most :math:`2/\eta`. Derived in chapter 08.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor.
    params : tensor or tuple/list/dict of tensors
        The point :math:`\theta`.
    tol : float, optional
        Relative residual of the eigenpair at which to stop (the certificate); see
        :func:`~regref.curvature.hessian_top_eig`. Default 1e-6 (float64), 1e-4 (float32).
    max_iter : int
        Maximum number of Hessian-vector products.
    generator : torch.Generator, optional
        CPU generator for the start vector.
    return_info : bool
        Also return an :class:`~regref.Info`.

    Returns
    -------
    tensor of shape ()
        The eigenvalue of largest magnitude of the Hessian.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.implicit import sharpness
    >>> X = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    >>> loss = lambda w: 0.5 * ((X @ w) ** 2).mean()     # Hessian X^T X / 2
    >>> round(float(sharpness(loss, torch.zeros(2, dtype=torch.float64),
    ...                       generator=torch.Generator().manual_seed(0))), 4)
    2.618
    """
    out = hessian_top_eig(loss_fn, params, tol=tol, max_iter=max_iter, generator=generator,
                          return_info=return_info)
    return (out[0], out[2]) if return_info else out[0]


def stability_margins(J, step, batch_size: int = 1) -> torch.Tensor:
    r"""The two necessary conditions for linear stability of a minimum, for gradient
    descent and for SGD.

    At an interpolating minimum of :math:`L(\theta) = \frac1{2n}\sum_i (f_i(\theta) -
    y_i)^2`, the per-sample Hessians are :math:`H_i = j_i j_i^\top` with
    :math:`j_i = \nabla f_i` and :math:`H = \frac1n\sum_i H_i = J^\top J/n`. Linearized SGD
    with step :math:`\eta` on batches of :math:`B` distinct samples drawn uniformly at
    random can only be stable (in mean square) if

    .. math:: \tfrac{\eta}{2}\lambda_{\max}(H) \le 1 \quad\text{and}\quad
              \tfrac{\eta}{2}\,c_B \operatorname{tr} H \le 1, \qquad
              c_B = \frac{n - B}{B(n - 1)} ,

    the first being gradient descent's condition (:math:`B = n`, :math:`c_n = 0`), the
    second the trace bound of SGD (for :math:`B = 1`: :math:`\operatorname{tr} H \le
    2/\eta`). Cost: the eigenvalues of the :math:`n\times n` Gram matrix,
    :math:`O(n^2 d + n^3)`, batched over leading dimensions. Derived in chapter 08.

    Parameters
    ----------
    J : tensor of shape (..., n, d)
        Per-sample gradients :math:`j_i = \nabla_\theta f_i` of the outputs (rows), e.g. from
        :func:`regref.curvature.per_sample_grads`; a leading batch of minima is allowed.
    step : float or tensor broadcastable to the batch shape
        Step sizes :math:`\eta > 0`.
    batch_size : int
        :math:`B`, between 1 and :math:`n`.

    Returns
    -------
    tensor of shape (..., 2)
        :math:`(\eta\lambda_{\max}(H)/2,\ \eta c_B\operatorname{tr}H/2)`: both must be
        :math:`\le 1` for the minimum to be stable.

    Examples
    --------
    >>> import torch
    >>> from regref.implicit import stability_margins
    >>> J = torch.eye(3, dtype=torch.float64)          # H = I/3: lambda_max 1/3, trace 1
    >>> stability_margins(J, 5.0).round(decimals=4)    # GD stable, SGD (B = 1) not
    tensor([0.8333, 2.5000], dtype=torch.float64)
    """
    J = check_finite(as_float_tensor(J, "J"), "J")
    if J.ndim < 2 or J.shape[-2] < 2 or J.shape[-1] == 0:
        raise ValueError(f"J must have shape (..., n, d) with n >= 2 samples, got "
                         f"{tuple(J.shape)}")
    n = J.shape[-2]
    step = check_finite(as_float_tensor(step, "step", like=J), "step")
    if bool((step <= 0).any()):
        raise ValueError("step must be > 0")
    batch_size = check_positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must be at most n = {n}, got {batch_size}")
    gram = J @ J.mT / n                                  # same nonzero spectrum as H
    lam_max = torch.linalg.eigvalsh(gram)[..., -1]
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    c_b = (n - batch_size) / (batch_size * (n - 1))
    return torch.stack(torch.broadcast_tensors(step * lam_max / 2, step * c_b * trace / 2),
                       dim=-1)
