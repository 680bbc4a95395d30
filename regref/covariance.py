r"""Sparse inverse covariance: the graphical lasso with screening, and total positivity.

Objectives (scikit-learn's convention: the diagonal is not penalized), for a sample
covariance :math:`S \succeq 0` with a positive diagonal:

.. math::

    \text{graphical lasso:}\quad & \min_{\Theta \succ 0}\ -\log\det\Theta
        + \operatorname{tr}(S\Theta) + \lambda\textstyle\sum_{i \ne j}|\Theta_{ij}|, \\
    \text{M-matrix (MTP}_2\text{):}\quad & \min_{\Theta \succ 0,\ \Theta_{ij} \le 0\ (i \ne j)}
        \ -\log\det\Theta + \operatorname{tr}(S\Theta)
        + \textstyle\sum_{i \ne j}\Lambda_{ij}|\Theta_{ij}| .

Both are solved by one batched core, an orthant-wise Newton method: each step solves the
quadratic model of the log-det term on the free entries (the penalty is linear on the
orthant of their signs) by conjugate gradients preconditioned with the inverse Hessian,
with a Cholesky line search that keeps every iterate positive definite; proximal Newton
steps (FISTA on the model) take over where the free set keeps changing. Every solve is
certified by the **duality gap** against the box-constrained log-det dual
:math:`\max\{\log\det(S + U) + p\}` (:func:`duality_gap`); the certificate a solver
reports is the relative gap, gap / :math:`p` (:math:`p` is the value of
:math:`\operatorname{tr}(S\Theta^\star) + \lambda\|\Theta^\star\|_{1,\text{off}}` at the
optimum), and ``converged`` means certificate :math:`\le` ``tol``. The graphical lasso
first splits the problem into the connected components of
:math:`\{|S_{ij}| > \lambda\}`, whose blocks are solved independently, all blocks of
one size in one batched pass. Derivations: chapter 06.
"""

from __future__ import annotations

import math

import torch

from ._core import (
    Info,
    as_float_tensor,
    check_finite,
    check_ndim,
    check_positive,
    check_positive_int,
    check_strength,
    check_symmetric,
    check_tol,
    fista,
    soft,
    warn_not_converged,
)

__all__ = [
    "graphical_lasso",
    "graphical_lasso_path",
    "mtp2_precision",
    "objective",
    "duality_gap",
    "components",
    "edge_recovery",
]

_NEAR_GAP = 1e-3  # relative gap: below, a stall is the rounding floor and Newton-CG is kept
_SMALL = 32  # blocks up to this size share one batched solve (padded): overhead-bound
_TIGHT = 1e-10  # relative target gap at or below which the last Newton steps overshoot
_HOMOTOPY = 0.6  # ratio of successive strengths on the way down from a cold start
_CG_ITER = 100  # conjugate-gradient steps per Newton-CG solve, at most
_FALLBACK = 15  # Newton-CG steps after which proximal Newton takes over far from the optimum
_STALL = 5  # Newton steps near the optimum without a 10% smaller gap: the rounding floor


# ----------------------------------------------------------------------------- validation

def _check_covariance(S, name: str = "S") -> torch.Tensor:
    """A finite symmetric PSD matrix (p, p) or batch (B, p, p) with a positive diagonal."""
    S = check_ndim(as_float_tensor(S, name), name, (2, 3))
    if S.shape[-1] != S.shape[-2]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(S.shape)}")
    if S.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one variable, got shape "
                         f"{tuple(S.shape)}")
    if S.numel() == 0:  # an empty batch (0, p, p)
        return S
    check_symmetric(S, name)
    check_finite(S, name)
    S = (S + S.mT) / 2  # exactly symmetric (a product X^T X may not be), so is every iterate
    diag = S.diagonal(dim1=-2, dim2=-1)
    if bool((diag <= 0).any()):
        raise ValueError(f"{name} must have a positive diagonal (a variable with zero variance "
                         "has no finite precision)")
    # PSD up to rounding: a Cholesky of S shifted by a rounding-level multiple of its scale
    shift = 1e3 * S.shape[-1] * torch.finfo(S.dtype).eps * diag.amax(-1)
    eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
    if bool((torch.linalg.cholesky_ex(S + shift[..., None, None] * eye).info != 0).any()):
        raise ValueError(f"{name} must be positive semi-definite (a covariance matrix)")
    return S


def _per_problem(lam, S: torch.Tensor, name: str = "lam") -> torch.Tensor:
    """A strength that is a scalar or one value per problem of a batched ``S``: (B,)."""
    lam = check_strength(lam, name, S, ndims=(0, 1))
    B = S.shape[0] if S.ndim == 3 else 1
    if lam.ndim == 1 and lam.shape[0] != B:
        raise ValueError(f"{name} must be a scalar or have {B} entries (one per problem), "
                         f"got shape {tuple(lam.shape)}")
    return lam.expand(B).contiguous()


# ----------------------------------------------------------------------------- certificates

def _offdiag_l1(A: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (weight * A.abs()).sum((-2, -1))


def _logdet_chol(L: torch.Tensor) -> torch.Tensor:
    return 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)


def _dual_logdet(S, W, lo, hi):
    r""":math:`\log\det(S + U)` at the dual-feasible point :math:`U = \text{clip}(W - S, lo, hi)`
    off the diagonal, :math:`U_{ii} = 0`; :math:`-\infty` where :math:`S + U` is not PD."""
    U = torch.minimum(torch.maximum(W - S, lo), hi)
    U = U - torch.diag_embed(U.diagonal(dim1=-2, dim2=-1))
    L, info = torch.linalg.cholesky_ex(S + U)
    return torch.where(info == 0, _logdet_chol(L), -torch.inf)


def _weights(lam: torch.Tensor, p: int) -> torch.Tensor:
    """The off-diagonal weight matrix :math:`\\lambda(11^\\top - I)`, one per problem."""
    off = 1 - torch.eye(p, dtype=lam.dtype, device=lam.device)
    return lam[:, None, None] * off


def objective(S, Theta, lam) -> torch.Tensor:
    r"""Graphical-lasso objective.

    .. math:: P(\Theta) = -\log\det\Theta + \operatorname{tr}(S\Theta)
              + \lambda\sum_{i\ne j}|\Theta_{ij}|

    Cost: one Cholesky factorization, :math:`O(p^3)`. Derived in chapter 06.

    Parameters
    ----------
    S : tensor or array-like, (p, p) or (B, p, p)
        Covariance, as for :func:`graphical_lasso`.
    Theta : tensor or array-like, shape of ``S``
        The point (converted to ``S``'s dtype and device).
    lam : float >= 0, or (B,)
        Strength.

    Returns
    -------
    value : tensor, () or (B,)
        :math:`P(\Theta)`, ``inf`` where ``Theta`` is not positive definite.

    Examples
    --------
    >>> import torch
    >>> from regref.covariance import objective
    >>> S = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    >>> round(float(objective(S, torch.eye(2, dtype=torch.float64), 0.1)), 4)
    2.0
    """
    S = _check_covariance(S)
    Theta = _check_point(Theta, S)
    lam = _per_problem(lam, S)
    return _objective(S, Theta, lam)


def _check_point(Theta, S):
    Theta = check_finite(as_float_tensor(Theta, "Theta", like=S), "Theta")
    if Theta.shape != S.shape:
        raise ValueError(f"Theta must have the shape of S, {tuple(S.shape)}, got "
                         f"{tuple(Theta.shape)}")
    return Theta


def _objective(S, Theta, lam):
    S3, T3 = S.reshape(-1, *S.shape[-2:]), Theta.reshape(-1, *S.shape[-2:])
    L, info = torch.linalg.cholesky_ex(T3)
    val = -_logdet_chol(L) + (S3 * T3).sum((-2, -1)) + _offdiag_l1(T3, _weights(lam, S.shape[-1]))
    return torch.where(info == 0, val, torch.inf).reshape(S.shape[:-2])


def duality_gap(S, Theta, lam) -> torch.Tensor:
    r"""Duality gap of the graphical lasso at ``Theta``, a bound on its excess objective.

    The dual (derived in chapter 06) is

    .. math:: \max_U\ \log\det(S + U) + p \quad\text{s.t.}\quad |U_{ij}| \le \lambda\ (i \ne j),
              \quad U_{ii} = 0 .

    The dual point is :math:`W = \Theta^{-1}` with :math:`W - S` clipped into that box, so
    the gap is :math:`P(\Theta) - \log\det(S + U) - p \ge 0`, zero exactly at the optimum
    (where :math:`\Theta^{-1} - S` is already in the box). It is ``+inf`` where ``Theta``
    is not positive definite (singular included) or where the clipped point is not.
    Unlike scikit-learn's criterion
    :math:`\operatorname{tr}(S\Theta) - p + \lambda\|\Theta\|_{1,\text{off}}`, which assumes
    :math:`\Theta^{-1}` feasible, this one is a proof. The solvers report it divided by
    :math:`p`. Cost: two Cholesky factorizations, :math:`O(p^3)`.

    Parameters
    ----------
    S : tensor or array-like, (p, p) or (B, p, p)
        Covariance, as for :func:`graphical_lasso`.
    Theta : tensor or array-like, shape of ``S``
        The point (converted to ``S``'s dtype and device).
    lam : float >= 0, or (B,)
        Strength.

    Returns
    -------
    gap : tensor, () or (B,)
        The absolute duality gap, :math:`\ge 0` or ``inf``.

    Examples
    --------
    >>> import torch
    >>> from regref.covariance import duality_gap, graphical_lasso
    >>> S = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    >>> float(duality_gap(S, graphical_lasso(S, 0.1), 0.1)) < 1e-12
    True
    >>> float(duality_gap(S, torch.zeros(2, 2, dtype=torch.float64), 0.1))
    inf
    """
    S = _check_covariance(S)
    Theta = _check_point(Theta, S)
    lam = _per_problem(lam, S)
    P = _objective(S, Theta, lam).reshape(-1)
    S3, T3 = S.reshape(-1, *S.shape[-2:]), Theta.reshape(-1, *S.shape[-2:])
    L, fail = torch.linalg.cholesky_ex(T3)
    W = torch.cholesky_inverse(torch.where(fail[:, None, None] == 0, L, torch.eye(
        S.shape[-1], dtype=S.dtype, device=S.device)))
    box = _weights(lam, S.shape[-1])
    dual = _dual_logdet(S3, (W + W.mT) / 2, -box, box) + S.shape[-1]
    return torch.where(fail == 0, P - dual, torch.inf).reshape(S.shape[:-2])


# ----------------------------------------------------------------------------- the core

def _prox_newton_step(S, Lam, Theta, nonpos=False, max_inner=2000, inner_rtol=1e-3):
    r"""One proximal Newton step on a batch of graphical lassos. The part to copy (with
    :func:`regref._core.fista` and :func:`regref._core.soft`, which it calls).

    Objective, for ``S``, ``Lam`` (weights, zero diagonal) and ``Theta`` of shape (K, m, m):
    :math:`P(\Theta) = -\log\det\Theta + \operatorname{tr}(S\Theta) + \sum_{ij}\Lambda_{ij}
    |\Theta_{ij}|`; with ``nonpos``, :math:`\Theta_{ij} \le 0` off the diagonal as well.
    With :math:`W = \Theta^{-1}`, FISTA minimizes the quadratic model
    :math:`\langle S - W, Z - \Theta\rangle + \frac12\operatorname{tr}(W(Z-\Theta)W(Z-\Theta))`
    plus the penalty (Jacobi-scaled, so the scaled :math:`W` has a unit diagonal; one
    problem per column of ``m*m`` entries) until its prox-gradient step is ``inner_rtol``
    times the first; then :math:`\Theta + \alpha(Z - \Theta)` is halved until its
    Cholesky factor exists and :math:`P` decreases enough. ``Theta`` must be positive
    definite. Returns the new ``Theta`` (the old one where no step is accepted) and its
    objective.
    """
    def objective(T):
        chol, fail = torch.linalg.cholesky_ex(T)
        pen = (Lam * (-T if nonpos else T.abs())).sum((-2, -1))
        val = -2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) + (S * T).sum((-2, -1)) + pen
        return torch.where(fail == 0, val, torch.inf), pen

    K, m = S.shape[0], S.shape[-1]
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=S.device)
    W = torch.cholesky_inverse(torch.linalg.cholesky(Theta))
    d = ((W + W.mT) / 2).diagonal(dim1=-2, dim2=-1).sqrt()
    dd = d[:, :, None] * d[:, None, :]
    Wc, grad, start, weight = W / dd, (S - W) / dd, Theta * dd, Lam / dd  # scaled problem
    columns, matrices = (lambda A: A.reshape(K, m * m).T), (lambda Z: Z.T.reshape(K, m, m))

    def gradient(Z):  # of the quadratic model, one problem per column
        H = Wc @ (matrices(Z) - start) @ Wc
        return columns(grad + (H + H.mT) / 2)

    def prox(V, step):
        V, t = matrices(V), step.reshape(K, 1, 1) * weight
        off = torch.minimum(V + t, torch.zeros_like(V)) if nonpos else soft(V, t)
        return columns(torch.where(off_diagonal, off, V))

    def prox_step(Z):  # the prox-gradient step's length: zero at the model's minimizer
        return (prox(Z - step * gradient(Z), step) - Z).norm(dim=0)

    step = (1 / torch.linalg.eigvalsh(Wc)[:, -1] ** 2)[None, :]
    Z0 = columns(start)
    Z, _, _ = fista(gradient, prox, prox_step, Z0, step, inner_rtol * prox_step(Z0), max_inner)
    D = matrices(Z) / dd - Theta
    value, pen = objective(Theta)
    decrease = ((S - W) * D).sum((-2, -1)) + objective(Theta + D)[1] - pen  # model's slope
    alpha = torch.ones_like(value)
    for _ in range(60):
        new_value = objective(Theta + alpha[:, None, None] * D)[0]
        ok = new_value <= value + 1e-4 * alpha * decrease.clamp(max=0) + 1e-13 * value.abs()
        if bool(ok.all()):
            break
        alpha = torch.where(ok, alpha, alpha / 2)
    alpha = torch.where(ok, alpha, 0.0)
    return Theta + alpha[:, None, None] * D, torch.where(ok, new_value, value)


def _conjugate_gradients(W, Theta, g, free, D, rz0, cg_rtol, cg_iter):
    r"""Preconditioned conjugate gradients for Newton's model on the free entries: part of
    the step to copy (:func:`_newton_cg_step` calls it).

    Minimizes :math:`\langle g, D\rangle + \frac12\operatorname{tr}(WDWD)` over the
    entries where ``free`` (K, m, m), from ``D``, preconditioned by :math:`R \mapsto
    \Theta R\Theta` (the inverse of the Hessian on all entries, restricted: exact when every
    entry is free): four matrix products per step, until the preconditioned residual is
    ``cg_rtol`` times ``rz0`` (that of the first residual when None) or for ``cg_iter``
    steps. In float32 for float64 input while ``cg_rtol >= 1e-3`` (enough digits, twice the
    speed). Returns ``(D, rz0)``.
    """
    low = torch.float32 if g.dtype == torch.float64 and cg_rtol >= 1e-3 else g.dtype
    W, Theta, mask, D, b = W.to(low), Theta.to(low), free.to(low), D.to(low), -g.to(low)

    def dot(A, B):
        return (A * B).sum((-2, -1), keepdim=True)

    def product(A, X):  # A X A on the free entries
        return (A @ X @ A).mul_(mask)

    r = b if rz0 is None else b - product(W, D)
    z = product(Theta, r)
    v, rz = z, dot(r, z)
    rz0 = rz if rz0 is None else rz0
    for _ in range(cg_iter):
        if bool((rz <= cg_rtol ** 2 * rz0).all()):
            break
        Hv = product(W, v)
        a = torch.where(rz > 0, rz / dot(v, Hv), 0)
        D, r = torch.addcmul(D, a, v), torch.addcmul(r, a, Hv, value=-1)
        z = product(Theta, r)
        rz, rz_old = dot(r, z), rz
        v = torch.addcmul(z, torch.where(rz_old > 0, rz / rz_old, 0), v)
    return D.to(g.dtype), rz0


def _newton_cg_step(S, Lam, Theta, W, nonpos=False, cg_iter=100, cg_rtol=1e-2, passes=5):
    r"""One orthant-wise Newton-CG step on a batch of graphical lassos. The part to copy.

    Objective, for ``S``, ``Lam`` (weights, zero diagonal) and ``Theta`` of shape (K, m, m):
    :math:`P(\Theta) = -\log\det\Theta + \operatorname{tr}(S\Theta) + \sum_{ij}\Lambda_{ij}
    |\Theta_{ij}|`; with ``nonpos``, :math:`\Theta_{ij} \le 0` off the diagonal as well.
    ``W`` is :math:`\Theta^{-1}`, :math:`G = S - W`. An entry is free if it is on the
    diagonal, nonzero, or zero with :math:`|G_{ij}| > \Lambda_{ij}` (the penalty cannot hold
    it at zero; with ``nonpos`` only :math:`G_{ij} > \Lambda_{ij}`). Free entries keep their
    sign :math:`\sigma` (or take :math:`-\operatorname{sign}G_{ij}`), so the penalty is linear
    there and the Newton model :math:`\langle G + \Lambda\sigma, D\rangle
    + \frac12\operatorname{tr}(WDWD)` over :math:`D` on the free set is a quadratic:
    :func:`_conjugate_gradients` (four matrix products per step, preconditioned by the
    inverse Hessian) reduces its residual by ``cg_rtol`` or runs ``cg_iter`` steps. Zeros
    that the solution moves against their sign leave the free set and the model is solved
    again from there, at most ``passes`` times (projecting them instead makes the direction
    inconsistent: long line searches). Then :math:`\Theta + \alpha D`, with entries that
    cross zero set to zero, is halved until its Cholesky factor exists and :math:`P`
    decreases enough. ``Theta`` must be positive
    definite. Returns the new ``Theta`` (the old one where no step is accepted), its
    objective and its inverse.
    """
    def objective(T):
        chol, fail = torch.linalg.cholesky_ex(T)
        val = -2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        val = val + (S * T + Lam * T.abs()).sum((-2, -1))
        return torch.where(fail == 0, val, torch.inf), chol

    G = S - W
    leave = -torch.ones_like(G) if nonpos else -G.sign()  # the way a zero would move
    sigma = torch.where(Theta != 0, Theta.sign(), leave)
    diagonal = torch.eye(S.shape[-1], dtype=torch.bool, device=S.device)
    free = (Theta != 0) | (-sigma * G > Lam) | diagonal
    g = torch.where(free, G + Lam * sigma, 0)  # the gradient of P on the free orthant face
    D, rz0 = _conjugate_gradients(W, Theta, g, free, torch.zeros_like(Theta), None,
                                  cg_rtol, cg_iter)
    for _ in range(passes):
        wrong = (Theta == 0) & (D * sigma < 0)  # zeros the model moves against their sign
        if not bool(wrong.any()):
            break
        free, g = free & ~wrong, g.masked_fill(wrong, 0)  # they stay: solve again without
        D, _ = _conjugate_gradients(W, Theta, g, free, D.masked_fill(wrong, 0), rz0,
                                    cg_rtol, cg_iter)
    D = torch.where((Theta == 0) & (D * sigma < 0), 0, (D + D.mT) / 2)
    value = objective(Theta)[0]
    alpha = torch.ones_like(value)
    for _ in range(60):
        T = Theta + alpha[:, None, None] * D
        T = T.masked_fill_(T * sigma < 0, 0)  # entries that cross zero stop at zero
        new_value, chol = objective(T)
        ok = new_value <= value + 1e-4 * (g * (T - Theta)).sum((-2, -1)) + 1e-13 * value.abs()
        if bool(ok.all()):
            break
        alpha = torch.where(ok, alpha, alpha / 2)
    W_new = torch.cholesky_inverse(torch.where(ok[:, None, None], chol, 1))
    keep = ok[:, None, None]
    return (torch.where(keep, T, Theta), torch.where(ok, new_value, value),
            torch.where(keep, (W_new + W_new.mT) / 2, W))


def _newton(S, Lam, Theta, tol, max_iter, nonpos=False, homotopy=False):
    r"""Batched orthant-wise Newton-CG on :math:`K` problems of one size :math:`m`: the outer
    loop.

    ``S`` (K, m, m), ``Lam`` (K, m, m) off-diagonal weights (zero diagonal), ``Theta``
    (K, m, m) a positive-definite start. Each outer step is :func:`_newton_cg_step`, its
    conjugate gradients stopped at the relative residual :func:`_cg_rtol` gives (inexact
    far from the optimum, superlinear near it). With
    ``homotopy`` (a cold start at the diagonal solution) the first steps use the weights
    scaled by :math:`c_k = \max(1, c_0 0.6^k)`, :math:`c_0 \Lambda` the largest
    :math:`|S_{ij}|`: one Newton step per strength on the way down, each from a point near
    its solution, instead of long line searches on the dense model far from the optimum.
    The duality gap of every problem is computed before each step; problems whose gap is
    below ``tol * m`` (``tol`` a float or one per problem; a tight ``tol``, at most
    :data:`_TIGHT`, is overshot by 1e3 unless a step stalls, since the gap bounds the error
    of the entries only by its square root), or that stalled at their rounding floor, leave
    the batch. Returns
    ``(Theta, gap, n_iter)``: ``gap`` is the absolute duality gap at the returned
    ``Theta``, ``n_iter`` the number of outer steps.
    """
    K, m, _ = S.shape
    target = torch.as_tensor(tol * m, dtype=S.dtype, device=S.device).expand(K)
    is_diag = torch.eye(m, dtype=torch.bool, device=S.device)
    hi = torch.full_like(Lam, torch.inf).masked_fill(is_diag, 0) if nonpos else Lam
    scale = torch.ones(K, dtype=S.dtype, device=S.device)
    if homotopy:
        top = Lam.amax((-2, -1))
        scale = ((S.abs().masked_fill(is_diag, 0).amax((-2, -1)) / top)
                 .nan_to_num(1.0).clamp(min=1.0))
    L = torch.linalg.cholesky(Theta)
    W = torch.cholesky_inverse(L)
    P = _gap_primal(S, Lam, Theta, L, nonpos)
    gap = torch.full((K,), torch.inf, dtype=S.dtype, device=S.device)
    best, since = gap.clone(), torch.zeros(K, dtype=torch.long, device=S.device)
    idx = torch.arange(K, device=S.device)
    live = (S, Lam, hi, Theta.clone(), (W + W.mT) / 2, P, scale, target, best, since, idx)
    n_iter = 0
    while True:  # the live problems are kept contiguous: no gather per step
        S_, Lam_, hi_, T_, W_, P_, scale_, target_, best_, since_, idx_ = live
        g = _gap(S_, Lam_, hi_, T_, W_, nonpos, P_)
        # the gap need not decrease monotonically far from the optimum (the objective does):
        # only count a stall near the optimum, where the rounding floor is the limit
        improved = (g < 0.9 * best_) | ~torch.isfinite(g) | (g > _NEAR_GAP * m)
        best_ = torch.where(improved, g, best_)
        since_ = torch.where(improved, 0, since_ + 1)
        # a tight target (the default) is overshot by a factor 1e3 unless the last step
        # stalled: the gap bounds the error of the entries only by its square root
        done = (g <= target_) & ((target_ > _TIGHT * m) | (g <= 1e-3 * target_) | (since_ > 0))
        keep = (~done | (scale_ > 1)) & (since_ < _STALL)
        if n_iter >= max_iter or not bool(keep.all()):  # some leave: write them back
            Theta[idx_], gap[idx_] = T_, g
            if n_iter >= max_iter or not bool(keep.any()):
                return Theta, gap, n_iter
            live = tuple(t[keep] for t in (S_, Lam_, hi_, T_, W_, P_, scale_, target_, best_,
                                           since_, idx_))
            S_, Lam_, hi_, T_, W_, P_, scale_, target_, best_, since_, idx_ = live
            g = g[keep]
        scale_ = (scale_ * _HOMOTOPY).clamp(min=1.0)
        rtol = _cg_rtol(max(float(g.max()), 1e-300) / m, float(target_.min()) / m)
        Lam_k = Lam_ * scale_[:, None, None] if homotopy else Lam_
        late = n_iter - _FALLBACK
        if late >= 0 and rtol > math.sqrt(_NEAR_GAP):  # slow and far: proximal Newton
            T_, P_ = _prox_newton_step(S_, Lam_k, T_, nonpos, min(2000, 20 * 2 ** late),
                                       max(1e-2 * 0.3 ** late, 1e-3))
            W_ = torch.cholesky_inverse(torch.linalg.cholesky(T_))
            W_ = (W_ + W_.mT) / 2
        else:
            T_, P_, W_ = _newton_cg_step(S_, Lam_k, T_, W_, nonpos, _CG_ITER, rtol)
        if homotopy:  # the step's value is at the scaled weights: back to the unscaled ones
            P_ = P_ + ((Lam_ - Lam_k) * T_.abs()).sum((-2, -1))
        live = (S_, Lam_, hi_, T_, W_, P_, scale_, target_, best_, since_, idx_)
        n_iter += 1


def _cg_rtol(gap, target):
    r"""CG's relative residual for a step from relative gap ``gap``: the gap falls by about
    its square. Far from the optimum :math:`\sqrt{\text{gap}}`; a loose ``target`` is not
    overshot (at least ``0.3 target / gap``); a tight one (the default) is, with ``gap``
    near the optimum: the entries are then accurate well beyond what the gap proves."""
    if target > _TIGHT:
        return min(0.3, max(math.sqrt(gap), 0.3 * target / gap))
    return min(0.3, math.sqrt(gap) if gap > _NEAR_GAP else gap)


def _gap_primal(S, Lam, Theta, chol, nonpos):
    """The objective at ``Theta`` from its Cholesky factor ``chol``."""
    pen = (Lam * (-Theta if nonpos else Theta.abs())).sum((-2, -1))
    return -_logdet_chol(chol) + (S * Theta).sum((-2, -1)) + pen


def _gap(S, Lam, hi, Theta, W, nonpos, primal=None):
    """Absolute duality gap of each problem at a positive-definite ``Theta`` (K, m, m) with
    inverse ``W``: two Cholesky factorizations, no inverse; one where its objective
    ``primal`` is given (the value the Newton step's line search computed)."""
    if primal is None:
        chol, fail = torch.linalg.cholesky_ex(Theta)
        primal = torch.where(fail == 0, _gap_primal(S, Lam, Theta, chol, nonpos), torch.inf)
    dual = _dual_logdet(S, W, -Lam, hi) + S.shape[-1]
    return primal - dual


# ----------------------------------------------------------------------------- screening

def components(S, lam) -> torch.Tensor:
    r"""Connected components of the thresholded graph :math:`\{(i, j): |S_{ij}| > \lambda\}`.

    By the screening theorem (chapter 06) they are exactly the blocks of the graphical
    lasso solution: :math:`\hat\Theta_{ij} = 0` whenever :math:`i` and :math:`j` lie in
    different components. Min-label propagation with pointer jumping, :math:`O(p^2)` per
    round (a few rounds in practice, at most :math:`p`), on (p, p) or batched (B, p, p)
    ``S``.

    Parameters
    ----------
    S : tensor or array-like, (p, p) or (B, p, p)
        Symmetric finite matrices (sample covariances; any symmetric matrix is accepted).
    lam : float >= 0, or (B,)
        The threshold, one per problem of a batch.

    Returns
    -------
    labels : long tensor, (p,) or (B, p)
        The label of a node is the smallest node index of its component.

    Examples
    --------
    >>> import torch
    >>> from regref.covariance import components
    >>> S = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.1], [0.0, 0.1, 1.0]])
    >>> components(S, 0.2).tolist()
    [0, 0, 2]
    """
    S = check_ndim(as_float_tensor(S, "S"), "S", (2, 3))
    if S.shape[-1] != S.shape[-2]:
        raise ValueError(f"S must be a square matrix, got shape {tuple(S.shape)}")
    lam = _per_problem(lam, S)
    if S.numel() == 0:
        return torch.zeros(S.shape[:-1], dtype=torch.long, device=S.device)
    check_symmetric(S, "S")
    check_finite(S, "S")
    return _components(S.reshape(-1, *S.shape[-2:]), lam).reshape(S.shape[:-1])


def _components(S, lam):
    B, p, _ = S.shape
    A = S.abs() > lam[:, None, None]
    labels = torch.arange(p, device=S.device).expand(B, p)
    big = torch.full_like(labels[:, :1], p)
    while True:
        new = torch.where(A, labels[:, None, :], big[:, :, None]).amin(-1)
        new = torch.minimum(new, labels)
        new = torch.gather(new, 1, new)  # pointer jumping: labels only ever decrease
        if torch.equal(new, labels):
            return labels
        labels = new


def _solve_blocks(S, lam, Theta0, tol, max_iter, screen):
    r"""Split every problem of ``S`` (B, p, p) into its components, solve the blocks in
    buckets of sizes above half the bucket's largest (or all at most :data:`_SMALL`, where
    per-call overhead dominates), each bucket in one batched :func:`_newton` call, padded
    to its largest size with isolated unit variables (they keep :math:`\Theta_{ii} = 1` and
    add no gap; the target gap stays ``tol`` times the block's own size), and scatter back.
    Returns ``(Theta, gap, n_iter)`` with ``gap`` (B,) the absolute duality gap at
    ``Theta``, summed over the blocks."""
    B, p, _ = S.shape
    zero = lam == 0
    if bool(zero.any()):  # the maximum-likelihood estimate S^-1, exactly (S is PD here)
        Theta, gap = torch.empty_like(S), S.new_zeros(B)
        Tz = torch.cholesky_inverse(torch.linalg.cholesky(S[zero]))
        Theta[zero] = (Tz + Tz.mT) / 2
        none = torch.zeros_like(Tz)
        gap[zero] = _gap(S[zero], none, none, Theta[zero], S[zero], False)
        n_iter, rest = 0, ~zero
        if bool(rest.any()):
            T0 = None if Theta0 is None else Theta0[rest]
            Theta[rest], gap[rest], n_iter = _solve_blocks(S[rest], lam[rest], T0, tol,
                                                           max_iter, screen)
        return Theta, gap, n_iter
    if not screen:
        T0 = torch.diag_embed(1 / S.diagonal(dim1=-2, dim2=-1)) if Theta0 is None else Theta0
        return _newton(S, _weights(lam, p), T0.clone(), tol, max_iter, homotopy=Theta0 is None)
    Theta = torch.zeros_like(S)
    gap = torch.zeros(B, dtype=S.dtype, device=S.device)
    labels = _components(S, lam)
    key = torch.arange(B, device=S.device)[:, None] * p + labels  # component id, batch-wide
    order = torch.argsort(key.reshape(-1), stable=True)
    _, sizes = torch.unique_consecutive(key.reshape(-1)[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    n_iter = 0
    tops = []  # the largest size of each bucket: 1 alone, else above half its top or <= 32
    for s in torch.unique(sizes).flip(0).tolist():
        if not tops or s == 1 or 2 * s <= tops[-1] and tops[-1] > _SMALL:
            tops.append(s)
    tops = torch.tensor(tops[::-1], device=S.device)
    bucket = torch.searchsorted(tops, sizes)
    for k in torch.unique(bucket).tolist():
        first, m = starts[bucket == k], sizes[bucket == k]
        M = int(m.max())
        slot = torch.arange(M, device=S.device)
        valid = slot < m[:, None]  # (K, M); padded slots are isolated unit variables
        flat = order[first[:, None] + torch.minimum(slot, m[:, None] - 1)]
        b, idx = flat // p, flat % p
        rows, cols, bb = idx[:, :, None], idx[:, None, :], b[:, :1, None]
        pair = valid[:, :, None] & valid[:, None, :]
        eye = torch.eye(M, dtype=S.dtype, device=S.device)
        Sb = torch.where(pair, S[bb, rows, cols], eye)
        if M == 1:  # an isolated variable: Theta_ii = 1 / S_ii, gap 0
            Theta[bb, rows, cols] = 1 / Sb
            continue
        if Theta0 is None:
            T0 = torch.diag_embed(1 / Sb.diagonal(dim1=-2, dim2=-1))
        else:
            T0 = torch.where(pair, Theta0[bb, rows, cols], eye)
        Tb, gb, it = _newton(Sb, _weights(lam[b[:, 0]], M), T0, tol * m / M, max_iter,
                             homotopy=Theta0 is None)
        bb, rows, cols = (t.expand(pair.shape)[pair] for t in (bb, rows, cols))
        Theta[bb, rows, cols] = Tb[pair]
        gap.index_add_(0, b[:, 0], gb)
        n_iter = max(n_iter, it)
    return Theta, gap, n_iter


def _info(gap, n_iter, tol, p):
    """One ``Info`` for a batch: the worst relative gap ``gap / p`` over its problems."""
    certificate = float(gap.max()) / p if gap.numel() else 0.0
    return Info(n_iter, certificate <= tol, certificate)


def _warn(info, tol, max_iter, what):
    if not info.converged:
        reason = f"max_iter={max_iter}" if info.n_iter >= max_iter else "the rounding floor"
        warn_not_converged(f"{what} stopped at {reason} with relative duality gap "
                           f"{info.certificate:.3g} > tol = {tol:.3g}")


def _theta0(Theta0, S):
    if Theta0 is None:
        return None
    T = check_finite(as_float_tensor(Theta0, "Theta0", like=S), "Theta0")
    if T.shape != S.shape:
        raise ValueError(f"Theta0 must have the shape of S, {tuple(S.shape)}, got "
                         f"{tuple(T.shape)}")
    check_symmetric(T, "Theta0")
    if bool((torch.linalg.cholesky_ex(T).info != 0).any()):
        raise ValueError("Theta0 must be positive definite")
    return T


def _check_lam_zero(S3, lam):
    if bool((torch.linalg.cholesky_ex(S3[lam == 0]).info != 0).any()):
        raise ValueError("lam = 0 needs a positive definite S (the maximum-likelihood "
                         "estimate does not exist for a singular S): use lam > 0")


# ----------------------------------------------------------------------------- public solvers

def graphical_lasso(S, lam, *, tol=None, max_iter=10_000, screen=True, Theta0=None,
                    return_info=False):
    r"""Sparse precision matrix: the graphical lasso.

    .. math:: \hat\Theta = \operatorname*{arg\,min}_{\Theta \succ 0}\ -\log\det\Theta
              + \operatorname{tr}(S\Theta) + \lambda\sum_{i \ne j}|\Theta_{ij}|

    (scikit-learn's ``graphical_lasso(S, alpha=lam)``: the diagonal is not penalized).

    Algorithm: with ``screen`` (default), the connected components of
    :math:`\{|S_{ij}| > \lambda\}` are found (:func:`components`) and each block is solved
    on its own, since :math:`\hat\Theta` is block diagonal along them; isolated variables
    get :math:`1/S_{ii}`, and blocks of similar sizes (across a batch too, padded to one
    size) go through one batched solve: orthant-wise Newton steps from the diagonal
    solution, the strength coming down from :math:`\max_{i \ne j}|S_{ij}|` by 0.6 per step;
    each solves the Newton model on the free entries (where the penalty is linear) by
    conjugate gradients, four matrix products per step, preconditioned by
    :math:`R \mapsto \Theta R\Theta` (``_newton_cg_step``, the part to copy), and a
    Cholesky line search keeps every iterate positive definite. Where the free set keeps
    changing (after 15 steps far from the optimum), proximal Newton steps, FISTA on the
    model (``_prox_newton_step``), take over until the gap is small. Cost per CG step
    :math:`O(\sum_k m_k^3)` over block sizes :math:`m_k` instead of :math:`O(p^3)`.
    Derived in chapter 06.

    Certificate: the **relative duality gap** :math:`\text{gap}/p`, where the gap (summed
    over blocks) is :func:`duality_gap` at the returned :math:`\Theta`, a proof that
    :math:`P(\Theta) - P(\hat\Theta) \le p\cdot\text{certificate}`. The scale :math:`p`
    is :math:`\operatorname{tr}(W^\star\hat\Theta)`, the size of the objective's linear
    terms at the optimum. ``converged`` is ``certificate <= tol``.

    Parameters
    ----------
    S : tensor or array-like, (p, p) or (B, p, p)
        Symmetric positive semi-definite, positive diagonal. It may be singular
        (:math:`p > n`): for :math:`\lambda > 0` the solution exists. A batch with
        ``B = 0`` returns an empty result.
    lam : float >= 0, or (B,)
        Strength, one per problem of a batch. ``lam = 0`` needs a nonsingular ``S``.
        Converted to ``S``'s dtype and device.
    tol : float, optional
        Relative duality gap to reach; default 1e-12 (float64), 1e-5 (float32).
    max_iter : int
        Newton steps per batch of blocks (the outer iterations), a positive int.
    screen : bool
        Split into connected components first (exact, never changes the answer).
    Theta0 : tensor, optional
        Positive-definite warm start, shape of ``S`` (converted to its dtype and device).
    return_info : bool
        Also return ``regref.Info(n_iter, converged, certificate)``: worst relative gap
        over a batch, ``n_iter`` the most Newton steps over batches of blocks.

    Returns
    -------
    Theta : tensor like ``S``
        Symmetric positive definite. With ``return_info``, ``(Theta, info)``.

    Raises
    ------
    ValueError
        On a non-symmetric, non-PSD or non-finite ``S``, a zero variance, a negative or
        non-finite ``lam``, bad options, or ``lam = 0`` with a singular ``S``.

    Examples
    --------
    >>> import torch
    >>> from regref.covariance import graphical_lasso
    >>> S = torch.tensor([[1.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.0]],
    ...                  dtype=torch.float64)
    >>> Theta, info = graphical_lasso(S, 0.2, return_info=True)
    >>> torch.round(Theta, decimals=4)
    tensor([[ 1.0989, -0.3297,  0.0000],
            [-0.3297,  1.1090, -0.1010],
            [ 0.0000, -0.1010,  1.0101]], dtype=torch.float64)
    >>> info.converged, info.certificate <= 1e-12
    (True, True)
    """
    S = _check_covariance(S)
    lam = _per_problem(lam, S)
    tol = check_tol(tol, S.dtype, 1e-12, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    T0 = _theta0(Theta0, S)
    S3 = S.reshape(-1, *S.shape[-2:])
    _check_lam_zero(S3, lam)
    T03 = None if T0 is None else T0.reshape(S3.shape)
    Theta, gap, n_iter = _solve(S3, lam, T03, tol, max_iter, bool(screen))
    info = _info(gap, n_iter, tol, S.shape[-1])
    _warn(info, tol, max_iter, "graphical_lasso")
    Theta = Theta.reshape(S.shape)
    return (Theta, info) if return_info else Theta


def _solve(S3, lam, T03, tol, max_iter, screen):
    if S3.shape[0] == 0:
        return torch.empty_like(S3), S3.new_zeros(0), 0
    return _solve_blocks(S3, lam, T03, tol, max_iter, screen)


def graphical_lasso_path(S, lams, *, tol=None, max_iter=10_000, screen=True,
                         return_info=False):
    r"""The graphical lasso for every strength in ``lams``, with warm starts.

    Same objective, algorithm and certificate as :func:`graphical_lasso`:

    .. math:: \hat\Theta(\lambda) = \operatorname*{arg\,min}_{\Theta \succ 0}\ -\log\det\Theta
              + \operatorname{tr}(S\Theta) + \lambda\sum_{i \ne j}|\Theta_{ij}| .

    Solves from the largest strength down (sparsest first), each solve starting from the
    previous solution, whose diagonal blocks stay positive definite as the components
    merge; rows are returned in the caller's order. ``S`` is validated once. A batched
    ``S`` (B, p, p) is solved in one pass per strength, all B problems together (e.g. the
    subsamples of stability selection). Cost: :math:`L` warm-started solves. Derived in
    chapter 06.

    Parameters
    ----------
    S : tensor or array-like, (p, p) or (B, p, p)
        Covariance, as for :func:`graphical_lasso`; a batch of B problems shares ``lams``.
    lams : sequence or tensor, (L,)
        Strengths >= 0, in any order.
    tol : float, optional
        Relative duality gap for every strength; default 1e-12 (float64), 1e-5 (float32).
    max_iter : int
        Newton steps per batch of blocks, for each strength.
    screen : bool
        Split into connected components first.
    return_info : bool
        Also return one ``regref.Info``, the worst case over the strengths: ``converged``
        if every solve converged, ``certificate`` the largest relative gap, ``n_iter`` the
        total number of Newton steps.

    Returns
    -------
    Thetas : tensor, (L, p, p) or (L, B, p, p)
        One precision matrix per strength (and problem); with ``return_info``,
        ``(Thetas, info)``.

    Examples
    --------
    >>> import torch
    >>> from regref.covariance import graphical_lasso_path
    >>> S = torch.tensor([[1.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.0]],
    ...                  dtype=torch.float64)
    >>> path, info = graphical_lasso_path(S, [0.6, 0.2, 0.01], return_info=True)
    >>> [int((T.abs() > 0).sum() - 3) // 2 for T in path], info.converged
    ([0, 2, 3], True)
    """
    S = _check_covariance(S)
    lams = check_strength(lams, "lams", S, ndims=(1,))
    tol = check_tol(tol, S.dtype, 1e-12, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    S3 = S.reshape(-1, *S.shape[-2:])
    B = S3.shape[0]
    out = torch.empty(len(lams), *S.shape, dtype=S.dtype, device=S.device)
    if B == 0:
        info = Info(0, True, 0.0)
        return (out, info) if return_info else out
    _check_lam_zero(S3, lams.amin().expand(B))
    Theta, worst, total = None, 0.0, 0
    for k in torch.argsort(lams, descending=True).tolist():
        Theta, gap, n_iter = _solve_blocks(S3, lams[k].expand(B), Theta, tol, max_iter,
                                           bool(screen))
        out[k] = Theta.reshape(S.shape)
        worst, total = max(worst, float(gap.max()) / S.shape[-1]), total + n_iter
    info = Info(total, worst <= tol, worst)
    _warn(info, tol, max_iter * len(lams), "graphical_lasso_path")
    return (out, info) if return_info else out


def mtp2_precision(S, lam=0.0, *, n_stages=1, penalty="mcp", gamma=2.0, a=3.7, tol=None,
                   max_iter=10_000, return_info=False):
    r"""Precision matrix of an :math:`\text{MTP}_2` Gaussian (an M-matrix), by weighted stages.

    Each stage solves

    .. math:: \min_{\Theta \succ 0,\ \Theta_{ij} \le 0\,(i \ne j)}\ -\log\det\Theta
              + \operatorname{tr}(S\Theta) + \sum_{i \ne j}\Lambda_{ij}|\Theta_{ij}|,

    the first with :math:`\Lambda_{ij} = \lambda`, the next ones with weights from the
    previous estimate, :math:`\Lambda_{ij} = p'_\lambda(|\Theta_{ij}|)` for the MCP
    (:math:`p'_\lambda(x) = (\lambda - x/\gamma)_+`) or SCAD
    (:math:`\lambda` for :math:`x \le \lambda`, :math:`(a\lambda - x)_+/(a - 1)` beyond)
    penalty: large entries stop being shrunk (Ying, Cardoso and Palomar, 2023).
    ``lam = 0`` and one stage is the constrained maximum-likelihood estimate, which exists
    as soon as :math:`S` has a positive diagonal and :math:`S_{ij} < \sqrt{S_{ii}S_{jj}}`
    (e.g. two distinct observations).

    Algorithm: the Newton core of :func:`graphical_lasso` on the orthant
    :math:`\Theta_{ij} \le 0` (a zero is free only when :math:`G_{ij} > \Lambda_{ij}`; its
    proximal Newton fallback uses the prox of a linear penalty on :math:`\Theta_{ij} \le 0`,
    :math:`\min(z + t\Lambda_{ij}, 0)`), with a Cholesky line search, batched over a leading
    dimension of ``S``, no homotopy. Cost :math:`O(p^3)` per conjugate-gradient (or inner)
    step. Certificate: the relative duality gap (gap / p) of the last stage, against
    :math:`\max \log\det(S + U) + p` over :math:`U_{ij} \ge -\Lambda_{ij}`,
    :math:`U_{ii} = 0`, at the returned :math:`\Theta`; ``converged`` is
    ``certificate <= tol``. Derived in chapter 06.

    Parameters
    ----------
    S : tensor or array-like, (p, p) or (B, p, p)
        Covariance (may be singular); ``B = 0`` returns an empty result.
    lam : float >= 0, or (B,)
        Strength, one per problem of a batch.
    n_stages : int
        Number of weighted stages (1: plain :math:`\ell_1`).
    penalty : {"mcp", "scad"}
        The folded-concave penalty whose derivative gives the weights of later stages.
    gamma : float
        MCP's concavity, > 0 (used only with ``penalty="mcp"``).
    a : float
        SCAD's shape, > 2 (used only with ``penalty="scad"``).
    tol : float, optional
        Relative duality gap of each stage; default 1e-12 (float64), 1e-5 (float32).
    max_iter : int
        Newton steps per stage (the outer iterations), a positive int.
    return_info : bool
        Also return ``regref.Info``: ``n_iter`` the Newton steps summed over the stages,
        ``certificate`` and ``converged`` those of the last stage (worst over a batch).

    Returns
    -------
    Theta : tensor like ``S``
        An M-matrix; with ``return_info``, ``(Theta, info)``.

    Examples
    --------
    >>> import torch
    >>> from regref.covariance import mtp2_precision
    >>> S = torch.tensor([[1.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.0]],
    ...                  dtype=torch.float64)
    >>> Theta = mtp2_precision(S, 0.05, n_stages=2)
    >>> bool((Theta - torch.diag(Theta.diagonal()) <= 0).all())
    True
    >>> torch.round(Theta[0, 1], decimals=4).item()
    -0.6667
    """
    S = _check_covariance(S)
    lam = _per_problem(lam, S)
    tol = check_tol(tol, S.dtype, 1e-12, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_stages = check_positive_int(n_stages, "n_stages")
    if penalty not in ("mcp", "scad"):
        raise ValueError(f"penalty must be 'mcp' or 'scad', got {penalty!r}")
    gamma = check_positive(gamma, "gamma")
    a = check_positive(a, "a")
    if a <= 2:
        raise ValueError(f"a (SCAD's shape) must be > 2, got {a}")
    S3 = S.reshape(-1, *S.shape[-2:])
    p = S.shape[-1]
    if S3.shape[0] == 0:
        info = Info(0, True, 0.0)
        return (S.clone(), info) if return_info else S.clone()
    off = 1 - torch.eye(p, dtype=S.dtype, device=S.device)
    Lam = _weights(lam, p)
    Theta = torch.diag_embed(1 / S3.diagonal(dim1=-2, dim2=-1))
    n_total = 0
    for stage in range(n_stages):
        if stage:
            x, lm = Theta.abs(), lam[:, None, None]
            if penalty == "mcp":
                Lam = (lm - x / gamma).clamp(min=0) * off
            else:
                Lam = torch.where(x <= lm, lm, (a * lm - x).clamp(min=0) / (a - 1)) * off
        Theta, gap, n_iter = _newton(S3, Lam, Theta.clone(), tol, max_iter, nonpos=True)
        n_total += n_iter
    info = _info(gap, n_total, tol, p)
    _warn(info, tol, max_iter * n_stages, "mtp2_precision")
    Theta = Theta.reshape(S.shape)
    return (Theta, info) if return_info else Theta


# ----------------------------------------------------------------------------- evaluation

def edge_recovery(Theta_hat, Theta_true, threshold=0.0) -> dict[str, float]:
    r"""How well the support of ``Theta_hat`` recovers the graph of ``Theta_true``.

    Edges are the off-diagonal pairs :math:`i < j` with :math:`|\Theta_{ij}| >` ``threshold``.
    With :math:`E` the estimated and :math:`E^\star` the true edge set, precision is
    :math:`|E \cap E^\star|/|E|`, recall :math:`|E \cap E^\star|/|E^\star|`, and F1 their
    harmonic mean. Cost :math:`O(p^2)`.

    Parameters
    ----------
    Theta_hat : tensor or array-like, (p, p)
        Estimated precision matrix (symmetric, finite).
    Theta_true : tensor or array-like, (p, p)
        True precision matrix (converted to ``Theta_hat``'s dtype and device).
    threshold : float >= 0
        Entries of absolute value at most ``threshold`` count as zeros.

    Returns
    -------
    scores : dict
        ``precision``, ``recall``, ``f1`` as floats (0 where a ratio is 0/0) and the counts
        ``tp``, ``fp``, ``fn``.

    Examples
    --------
    >>> import torch
    >>> from regref.covariance import edge_recovery
    >>> truth = torch.tensor([[1.0, -0.4, 0.0], [-0.4, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> found = torch.tensor([[1.0, -0.2, 0.1], [-0.2, 1.0, 0.0], [0.1, 0.0, 1.0]])
    >>> edge_recovery(found, truth)
    {'precision': 0.5, 'recall': 1.0, 'f1': 0.6666666666666666, 'tp': 1, 'fp': 1, 'fn': 0}
    """
    A = check_ndim(as_float_tensor(Theta_hat, "Theta_hat"), "Theta_hat", (2,))
    T = check_ndim(as_float_tensor(Theta_true, "Theta_true", like=A), "Theta_true", (2,))
    check_symmetric(A, "Theta_hat")
    if T.shape != A.shape:
        raise ValueError(f"Theta_true must have shape {tuple(A.shape)}, got {tuple(T.shape)}")
    check_finite(A, "Theta_hat")
    check_finite(T, "Theta_true")
    thr = float(threshold)
    if not (math.isfinite(thr) and thr >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    iu = torch.triu_indices(*A.shape, offset=1, device=A.device)
    found, true = A[iu[0], iu[1]].abs() > thr, T[iu[0], iu[1]].abs() > thr
    tp, fp, fn = (int((found & true).sum()), int((found & ~true).sum()),
                  int((~found & true).sum()))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
