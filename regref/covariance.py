r"""Sparse inverse covariance: the graphical lasso with screening, and total positivity.

Objectives (scikit-learn's convention: the diagonal is not penalized), for a sample
covariance :math:`S \succeq 0` with a positive diagonal:

.. math::

    \text{graphical lasso:}\quad & \min_{\Theta \succ 0}\ -\log\det\Theta
        + \operatorname{tr}(S\Theta) + \lambda\textstyle\sum_{i \ne j}|\Theta_{ij}|, \\
    \text{M-matrix (MTP}_2\text{):}\quad & \min_{\Theta \succ 0,\ \Theta_{ij} \le 0\ (i \ne j)}
        \ -\log\det\Theta + \operatorname{tr}(S\Theta)
        + \textstyle\sum_{i \ne j}\Lambda_{ij}|\Theta_{ij}| .

Both are solved by one batched core, a proximal Newton method (each step minimizes the
quadratic model of the log-det term plus the penalty, by FISTA on matrix products) with
a Cholesky line search that keeps every iterate positive definite. Every solve is
certified by the **duality gap** against the box-constrained log-det dual
:math:`\max\{\log\det(S + U) + p\}` (:func:`duality_gap`); ``tol`` is relative to
:math:`p`, the value of :math:`\operatorname{tr}(S\Theta^\star) + \lambda\|\Theta^\star\|_{1,
\text{off}}` at the optimum. The graphical lasso first splits the problem into the
connected components of :math:`\{|S_{ij}| > \lambda\}`, whose blocks are solved
independently, all blocks of one size in one batched pass. Derivations: chapter 06.
"""

from __future__ import annotations

import math
import warnings

import torch

from ._core import (
    ConvergenceWarning,
    Info,
    as_float_tensor,
    check_finite,
    check_ndim,
    check_positive,
    check_positive_int,
    check_strength,
    check_symmetric,
    check_tol,
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

_POLISH_GAP = 1e-3  # relative gap below which the support is trusted for a Newton polish
_MAX_BACKTRACK = 60  # halvings of a step before giving up
_STALL = 5  # Newton steps without a 10% smaller gap after which a problem stops (rounding floor)


# ----------------------------------------------------------------------------- validation

def _default_tol(tol, S: torch.Tensor) -> float:
    return check_tol(tol, S.dtype, 1e-12, 1e-5)


def _check_covariance(S, name: str = "S") -> torch.Tensor:
    """A finite symmetric PSD matrix (p, p) or batch (B, p, p) with a positive diagonal."""
    S = check_ndim(as_float_tensor(S, name), name, (2, 3))
    if S.shape[-1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(S.shape)}")
    check_finite(S, name)
    check_symmetric(S, name)
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

    ``S`` and ``Theta`` are (p, p) or batched (B, p, p); ``lam`` a scalar or (B,).
    Returns ``inf`` where ``Theta`` is not positive definite. Shape () or (B,).
    """
    S = _check_covariance(S)
    Theta = check_finite(as_float_tensor(Theta, "Theta", like=S), "Theta")
    if Theta.shape != S.shape:
        raise ValueError(f"Theta must have the shape of S, {tuple(S.shape)}, got "
                         f"{tuple(Theta.shape)}")
    lam = _per_problem(lam, S)
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
    (where :math:`\Theta^{-1} - S` is already in the box), and ``inf`` if the clipped point
    is not positive definite. Unlike scikit-learn's criterion
    :math:`\operatorname{tr}(S\Theta) - p + \lambda\|\Theta\|_{1,\text{off}}`, which assumes
    :math:`\Theta^{-1}` feasible, this one is a proof. Shape () or (B,).
    """
    P = objective(S, Theta, lam)
    S = as_float_tensor(S, "S")
    lam = _per_problem(lam, S)
    S3 = S.reshape(-1, *S.shape[-2:])
    W = torch.linalg.inv(as_float_tensor(Theta, "Theta", like=S).reshape(S3.shape))
    box = _weights(lam, S.shape[-1])
    dual = _dual_logdet(S3, (W + W.mT) / 2, -box, box) + S.shape[-1]
    return (P.reshape(-1) - dual).reshape(S.shape[:-2])


# ----------------------------------------------------------------------------- the core

def _model_step(W, G, T, Lam, prox, rtol, max_steps=2000):
    r"""Minimize the quadratic model of the log-det part plus the penalty :math:`h`,

    .. math:: \langle G, Z - T\rangle + \tfrac12\operatorname{tr}(W(Z-T)W(Z-T)) + h(Z).

    Jacobi-scaled first: with :math:`d = \sqrt{\operatorname{diag} W}` the substitution
    :math:`Z' = Z \circ dd^\top` turns :math:`W` into the correlation matrix
    :math:`W/dd^\top` and keeps the penalty separable (weights :math:`\Lambda/dd^\top`).
    Then FISTA with gradient restart, step :math:`1/\lambda_{\max}(W)^2`, until the step
    moves less than ``rtol`` times the first one.
    Returns ``(Z, steps)``.
    """
    d = W.diagonal(dim1=-2, dim2=-1).sqrt()
    dd = d[:, :, None] * d[:, None, :]
    W, G, T, Lam = W / dd, G / dd, T * dd, Lam / dd
    step = 1 / torch.linalg.eigvalsh(W)[:, -1] ** 2  # one O(m^3) per model, cheap vs. steps
    Z, Y, tk = T, T, torch.ones_like(step)
    start = None
    for k in range(1, max_steps + 1):
        H = W @ (Y - T) @ W
        Z_new = prox(Y - step[:, None, None] * (G + (H + H.mT) / 2), step, Lam)
        if k % 10 == 1:
            move = (Z_new - Y).flatten(1).norm(dim=1)
            start = move if start is None else start
            if bool((move <= rtol * start).all()):
                return Z_new / dd, k
        restart = ((Y - Z_new) * (Z_new - Z)).sum((-2, -1)) > 0  # O'Donoghue & Candes
        t_new = (1 + torch.sqrt(1 + 4 * tk * tk)) / 2
        beta = torch.where(restart, 0.0, (tk - 1) / t_new)[:, None, None]
        tk = torch.where(restart, 1.0, t_new)
        Y = Z_new + beta * (Z_new - Z)
        Z = Z_new
    return Z / dd, max_steps


def _support_newton(S, Lam, T, nonpos, steps=6, max_vars=2000):
    r"""Newton's method on the support of ``T`` with its signs fixed (the polish).

    Once the support :math:`E` and the signs :math:`\sigma` of the optimum are known, the
    problem restricted to :math:`E` is smooth,
    :math:`\min -\log\det\Theta + \operatorname{tr}((S + \Lambda\circ\sigma)\Theta)`, and
    Newton's method converges quadratically. Variables: one per edge :math:`i < j` and
    diagonal entry; Hessian :math:`(W_{ik}W_{jl} + W_{il}W_{jk})\cdot 2/(c_ec_f)` with
    :math:`c = 2` on the diagonal, 1 off it (:math:`W = \Theta^{-1}`). Problems are padded
    to the largest support and solved by one batched Cholesky, :math:`O(Kq^3)`. Steps are
    halved until :math:`\Theta` stays positive definite and keeps its signs. Returns a
    positive-definite candidate (``T`` itself where the support is too large or a step
    fails); the caller keeps it only if its duality gap is smaller.
    """
    K, m, _ = T.shape
    iu = torch.triu_indices(m, m, device=T.device)
    A = T[:, iu[0], iu[1]] != 0
    na = A.sum(1)
    q = int(na.max())
    if q > max_vars:
        return T
    order = torch.argsort(A.to(torch.int8), dim=1, descending=True, stable=True)[:, :q]
    valid = torch.arange(q, device=T.device) < na[:, None]  # (K, q)
    i, j = iu[0][order], iu[1][order]  # (K, q)
    c = torch.where(i == j, 2.0, 1.0).to(T.dtype)
    sigma = torch.sign(T)
    b = torch.arange(K, device=T.device)[:, None, None]
    for _ in range(steps):
        W = torch.cholesky_inverse(torch.linalg.cholesky(T))
        grad = S - W + Lam * (-1 if nonpos else sigma)
        g = torch.where(valid, 2 * grad[b[:, :, 0], i, j] / c, 0)
        ie, je, jf, if_ = i[:, :, None], j[:, :, None], j[:, None, :], i[:, None, :]
        H = (W[b, ie, if_] * W[b, je, jf] + W[b, ie, jf] * W[b, je, if_]) * 2 \
            / (c[:, :, None] * c[:, None, :])
        both = valid[:, :, None] & valid[:, None, :]
        H = torch.where(both, H, torch.diag_embed(valid.logical_not().to(T.dtype)))
        Lh, info = torch.linalg.cholesky_ex(H)
        if bool((info != 0).any()):
            return T
        dx = -torch.cholesky_solve(g[:, :, None], Lh)[:, :, 0]
        D = torch.zeros_like(T)
        D[b[:, :, 0], i, j] = torch.where(valid, dx, 0)
        D = D + D.mT - torch.diag_embed(D.diagonal(dim1=-2, dim2=-1))
        alpha = torch.ones(K, 1, 1, dtype=T.dtype, device=T.device)
        for _ in range(30):
            T_new = T + alpha * D
            ok = (torch.linalg.cholesky_ex(T_new).info == 0) \
                & ((torch.sign(T_new) == sigma) | (sigma == 0)).flatten(1).all(1)
            if bool(ok.all()):
                break
            alpha = torch.where(ok[:, None, None], alpha, alpha / 2)
        else:
            return T
        T = T_new
        if float((g * dx).sum(1).abs().max()) < 1e-30:
            break
    return T


def _newton(S, Lam, Theta, tol, max_iter, nonpos=False):
    r"""Batched proximal Newton on :math:`K` problems of one size :math:`m`.

    ``S`` (K, m, m), ``Lam`` (K, m, m) off-diagonal weights (zero diagonal), ``Theta``
    (K, m, m) a positive-definite start. The penalty is
    :math:`h(\Theta) = \sum_{i \ne j}\Lambda_{ij}|\Theta_{ij}|`, with ``nonpos`` plus the
    constraint :math:`\Theta_{ij} \le 0` (then :math:`h` is linear and its prox a shifted
    clamp). Outer step: with :math:`W = \Theta^{-1}` and :math:`G = S - W`, minimize the
    quadratic model of :math:`f = -\log\det + \operatorname{tr}(S\,\cdot)` plus :math:`h`,

    .. math:: Z^+ = \operatorname*{arg\,min}_Z\ \langle G, Z - \Theta\rangle
              + \tfrac12\operatorname{tr}\bigl(W(Z - \Theta)W(Z - \Theta)\bigr) + h(Z),

    by FISTA with restart (two :math:`m \times m` products per step), then a backtracking
    line search on :math:`\Theta + \alpha(Z^+ - \Theta)` whose Cholesky factor proves it
    positive definite and gives the sufficient decrease. After each outer step the
    duality gap of every problem is computed; problems below ``tol * m`` (or stalled at
    their rounding floor) leave the batch. Cost per outer step: :math:`O(Km^3)` times the
    inner steps. Returns ``(Theta, gap, n_iter)`` (``n_iter`` counts outer steps).
    """
    K, m, _ = S.shape
    dtype = S.dtype
    eye = torch.eye(m, dtype=dtype, device=S.device).bool()
    hi = torch.full_like(Lam, torch.inf).masked_fill(eye, 0) if nonpos else Lam

    def prox(Z, t, Lm):
        t = t[:, None, None]
        off = torch.minimum(Z + t * Lm, torch.zeros_like(Z)) if nonpos else \
            torch.sign(Z) * (Z.abs() - t * Lm).clamp(min=0)
        return torch.where(eye, Z, off)

    def penalty(T, Lm):
        return (Lm * (-T if nonpos else T.abs())).sum((-2, -1))

    def value(T, Sl, Lm):
        L, info = torch.linalg.cholesky_ex(T)
        F = -_logdet_chol(L) + (Sl * T).sum((-2, -1)) + penalty(T, Lm)
        return L, torch.where(info == 0, F, torch.inf)

    L, F = value(Theta, S, Lam)
    if not bool(torch.isfinite(F).all()):
        raise ValueError("Theta0 must be positive definite")
    gap = torch.full((K,), torch.inf, dtype=dtype, device=S.device)
    best = gap.clone()
    since = torch.zeros(K, dtype=torch.long, device=S.device)
    live = torch.arange(K, device=S.device)
    n_iter = 0
    inner_rtol = 1e-2
    while True:
        Sl, Lm, Tl, Ll, Fl, hl = S[live], Lam[live], Theta[live], L[live], F[live], hi[live]
        W = torch.cholesky_inverse(Ll)
        W = (W + W.mT) / 2
        g = Fl - _dual_logdet(Sl, W, -Lm, hl) - m
        near = (g > tol * m) & (g < _POLISH_GAP * m)
        if bool(near.any()):  # polish: Newton on the current support, once it is nearly right
            P = _support_newton(Sl, Lm, Tl, nonpos)
            LP, FP = value(P, Sl, Lm)
            WP = torch.cholesky_inverse(LP)
            WP = (WP + WP.mT) / 2
            gP = FP - _dual_logdet(Sl, WP, -Lm, hl) - m
            better = (gP < g)[:, None, None]
            Tl, Ll, W = (torch.where(better, x, y) for x, y in ((P, Tl), (LP, Ll), (WP, W)))
            Fl, g = torch.where(better[:, 0, 0], FP, Fl), torch.minimum(gP, g)
            Theta[live], L[live], F[live] = Tl, Ll, Fl
        gap[live] = g
        improved = (g < 0.9 * best[live]) | ~torch.isfinite(g)
        best[live] = torch.where(improved, g, best[live])
        since[live] = torch.where(improved, 0, since[live] + 1)
        keep = (g > tol * m) & (since[live] < _STALL)
        if n_iter >= max_iter or not bool(keep.any()):
            break
        live, Sl, Lm, Tl, Fl, W, hl = (a[keep] for a in (live, Sl, Lm, Tl, Fl, W, hl))
        G = Sl - W
        Z, _ = _model_step(W, G, Tl, Lm, prox, inner_rtol, min(2000, 20 * 2 ** n_iter))
        inner_rtol = max(inner_rtol * 0.3, 1e-3)  # inexact early, tighter later
        # --- line search: positive definite and sufficient decrease
        D = Z - Tl
        delta = (G * D).sum((-2, -1)) + penalty(Z, Lm) - penalty(Tl, Lm)
        alpha = torch.ones_like(Fl)
        for _ in range(_MAX_BACKTRACK):
            T_new = Tl + alpha[:, None, None] * D
            L_new, F_new = value(T_new, Sl, Lm)
            ok = F_new <= Fl + 1e-4 * alpha * delta.clamp(max=0) + 1e-13 * Fl.abs()
            if bool(ok.all()):
                break
            alpha = torch.where(ok, alpha, alpha / 2)
        else:
            ok_any = ok
            T_new = torch.where(ok_any[:, None, None], T_new, Tl)
            L_new, F_new = value(T_new, Sl, Lm)
        Theta[live], L[live], F[live] = T_new, L_new, F_new
        n_iter += 1
    return Theta, gap, n_iter


# ----------------------------------------------------------------------------- screening

def components(S, lam) -> torch.Tensor:
    r"""Connected components of the thresholded graph :math:`\{(i, j): |S_{ij}| > \lambda\}`.

    By the screening theorem (chapter 06) they are exactly the blocks of the graphical
    lasso solution: :math:`\hat\Theta_{ij} = 0` whenever :math:`i` and :math:`j` lie in
    different components. Min-label propagation with pointer jumping, :math:`O(p^2)` per
    round, on (p, p) or batched (B, p, p) ``S``.

    Returns
    -------
    labels : long tensor (p,) or (B, p); the label of a node is the smallest node index
        of its component.
    """
    S = check_ndim(as_float_tensor(S, "S"), "S", (2, 3))
    lam = _per_problem(lam, S)
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


def _solve_blocks(S, Lam_fn, Theta0, lam, tol, max_iter, screen):
    """Split every problem of ``S`` (B, p, p) into its components, solve all blocks of one
    size in one batched :func:`_newton` call, scatter back. Returns ``(Theta, gap, n_iter)``."""
    B, p, _ = S.shape
    Theta = torch.zeros_like(S)
    gap = torch.zeros(B, dtype=S.dtype, device=S.device)
    if not screen:
        T0 = torch.diag_embed(1 / S.diagonal(dim1=-2, dim2=-1)) if Theta0 is None else Theta0
        return _newton(S, Lam_fn(lam, p), T0.clone(), tol, max_iter)
    labels = _components(S, lam)
    key = torch.arange(B, device=S.device)[:, None] * p + labels  # component id, batch-wide
    order = torch.argsort(key.reshape(-1), stable=True)
    _, sizes = torch.unique_consecutive(key.reshape(-1)[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    n_iter = 0
    for m in torch.unique(sizes).tolist():
        first = starts[sizes == m]
        flat = order[first[:, None] + torch.arange(m, device=S.device)]  # (K, m)
        b, idx = flat // p, flat % p
        rows, cols = idx[:, :, None], idx[:, None, :]
        Sb = S[b[:, :1, None], rows, cols]
        if m == 1:  # an isolated variable: Theta_ii = 1 / S_ii, gap 0
            Theta[b[:, :1, None], rows, cols] = 1 / Sb
            continue
        if Theta0 is None:
            T0 = torch.diag_embed(1 / Sb.diagonal(dim1=-2, dim2=-1))
        else:
            T0 = Theta0[b[:, :1, None], rows, cols]
        Tb, gb, it = _newton(Sb, Lam_fn(lam[b[:, 0]], m), T0, tol, max_iter)
        Theta[b[:, :1, None], rows, cols] = Tb
        gap.index_add_(0, b[:, 0], gb)
        n_iter = max(n_iter, it)
    return Theta, gap, n_iter


def _finish(Theta, gap, n_iter, tol, max_iter, shape, return_info, what):
    p = shape[-1]
    converged = bool((gap <= tol * p).all())
    certificate = float(gap.max())
    if not converged:
        reason = f"max_iter={max_iter}" if n_iter >= max_iter else "the rounding floor"
        warnings.warn(f"{what} stopped at {reason} with duality gap {certificate:.3g} > "
                      f"tol * p = {tol * p:.3g}", ConvergenceWarning, stacklevel=3)
    Theta = (Theta + Theta.mT) / 2
    Theta = Theta.reshape(shape)
    return (Theta, Info(n_iter, converged, certificate)) if return_info else Theta


def _theta0(Theta0, S):
    if Theta0 is None:
        return None
    T = check_finite(as_float_tensor(Theta0, "Theta0", like=S), "Theta0")
    if T.shape != S.shape:
        raise ValueError(f"Theta0 must have the shape of S, {tuple(S.shape)}, got "
                         f"{tuple(T.shape)}")
    if bool((torch.linalg.cholesky_ex(T).info != 0).any()):
        raise ValueError("Theta0 must be positive definite")
    return T


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
    get :math:`1/S_{ii}`, and all blocks of one size (across a batch too) go through one
    batched proximal Newton solve: each step minimizes the quadratic model of
    :math:`-\log\det` plus the penalty by FISTA (two matrix products per step), then a
    Cholesky line search keeps every iterate positive definite. Cost per inner step
    :math:`O(\sum_k m_k^3)` over block sizes :math:`m_k` instead of :math:`O(p^3)`.

    Certificate: the duality gap against the box-constrained log-det dual
    (:func:`duality_gap`), summed over blocks; the solver stops when it is
    :math:`\le` ``tol`` :math:`\cdot p` (:math:`p = \operatorname{tr}(W^\star\Theta^\star)`
    is the scale of the objective's linear terms at the optimum).

    Parameters
    ----------
    S : (p, p) or (B, p, p) symmetric positive semi-definite, positive diagonal. It may be
        singular (:math:`p > n`): for :math:`\lambda > 0` the solution exists.
    lam : float >= 0, or (B,) one per problem. ``lam = 0`` needs a nonsingular ``S``.
    tol : relative duality gap; default 1e-12 (float64), 1e-5 (float32).
    max_iter : Newton steps per block size.
    screen : bool, split into connected components first (exact, never changes the answer).
    Theta0 : optional positive-definite warm start, shape of ``S``.
    return_info : also return ``regref.Info(n_iter, converged, certificate=gap)``.

    Returns
    -------
    Theta : tensor like ``S``, symmetric positive definite.

    Raises ``ValueError`` on a non-symmetric, non-PSD or non-finite ``S``, a zero variance,
    a negative or non-finite ``lam``, or if a step cannot keep :math:`\Theta` positive
    definite (``lam = 0`` with a singular ``S``). Derived in chapter 06.
    """
    S = _check_covariance(S)
    lam = _per_problem(lam, S)
    tol = _default_tol(tol, S)
    max_iter = check_positive_int(max_iter, "max_iter")
    T0 = _theta0(Theta0, S)
    S3 = S.reshape(-1, *S.shape[-2:])
    if bool((torch.linalg.cholesky_ex(S3[lam == 0]).info != 0).any()):
        raise ValueError("lam = 0 needs a positive definite S (the maximum-likelihood "
                         "estimate does not exist for a singular S): use lam > 0")
    T03 = None if T0 is None else T0.reshape(S3.shape)
    Theta, gap, n_iter = _solve_blocks(S3, _weights, T03, lam, tol, max_iter, bool(screen))
    return _finish(Theta, gap, n_iter, tol, max_iter, S.shape, return_info, "graphical_lasso")


def graphical_lasso_path(S, lams, *, tol=None, max_iter=10_000, screen=True,
                         return_info=False):
    r"""The graphical lasso for every strength in ``lams``, with warm starts.

    Solves from the largest strength down (sparsest first), each solve starting from the
    previous solution, whose diagonal blocks stay positive definite as the components
    merge; rows are returned in the caller's order. Same objective, algorithm and
    certificate as :func:`graphical_lasso`.

    Parameters
    ----------
    S : (p, p) covariance.
    lams : (L,) strengths >= 0.

    Returns
    -------
    Thetas : (L, p, p); with ``return_info`` also a list of ``Info``, one per strength.

    Derived in chapter 06.
    """
    S = _check_covariance(S)
    check_ndim(S, "S", (2,))
    lams = check_strength(lams, "lams", S, ndims=(1,))
    tol = _default_tol(tol, S)
    out = torch.empty(len(lams), *S.shape, dtype=S.dtype, device=S.device)
    infos = [None] * len(lams)
    Theta = None
    for k in torch.argsort(lams, descending=True).tolist():
        Theta, info = graphical_lasso(S, lams[k], tol=tol, max_iter=max_iter, screen=screen,
                                      Theta0=Theta, return_info=True)
        out[k], infos[k] = Theta, info
    return (out, infos) if return_info else out


def mtp2_precision(S, lam=0.0, *, n_stages=1, penalty="mcp", gamma=2.0, tol=None,
                   max_iter=10_000, return_info=False):
    r"""Precision matrix of an :math:`\text{MTP}_2` Gaussian (an M-matrix), by weighted stages.

    Each stage solves

    .. math:: \min_{\Theta \succ 0,\ \Theta_{ij} \le 0\,(i \ne j)}\ -\log\det\Theta
              + \operatorname{tr}(S\Theta) + \sum_{i \ne j}\Lambda_{ij}|\Theta_{ij}|,

    the first with :math:`\Lambda_{ij} = \lambda`, the next ones with weights from the
    previous estimate, :math:`\Lambda_{ij} = p'_\lambda(|\Theta_{ij}|)` for the MCP
    (:math:`p'_\lambda(x) = (\lambda - x/\gamma)_+`) or SCAD
    (:math:`\lambda` for :math:`x \le \lambda`, :math:`(\gamma\lambda - x)_+/(\gamma - 1)`
    beyond, :math:`\gamma > 2`) penalty: large entries stop being shrunk (Ying, Cardoso and
    Palomar, 2023). ``lam = 0`` and one stage is the constrained maximum-likelihood
    estimate, which exists as soon as :math:`S` has a positive diagonal and
    :math:`S_{ij} < \sqrt{S_{ii}S_{jj}}` (e.g. two distinct observations).

    Algorithm: the proximal Newton core of :func:`graphical_lasso` with the prox of a linear
    penalty on :math:`\Theta_{ij} \le 0`, :math:`\min(z + t\Lambda_{ij}, 0)`, and a Cholesky
    line search, batched over a leading dimension of ``S``. Cost :math:`O(p^3)` per step.
    Certificate: the duality gap against
    :math:`\max \log\det(S + U) + p` over :math:`U_{ij} \ge -\Lambda_{ij}`, :math:`U_{ii} = 0`,
    of the last stage; stops when it is :math:`\le` ``tol`` :math:`\cdot p``.

    Parameters
    ----------
    S : (p, p) or (B, p, p) covariance (may be singular).
    lam : float >= 0, or (B,).
    n_stages : number of weighted stages (1: plain :math:`\ell_1`).
    penalty : "mcp" or "scad", the folded-concave penalty whose derivative gives the weights.
    gamma : its shape parameter (> 0 for MCP, > 2 for SCAD).

    Returns
    -------
    Theta : like ``S``, an M-matrix; with ``return_info`` the ``Info`` of the last stage.

    Derived in chapter 06.
    """
    S = _check_covariance(S)
    lam = _per_problem(lam, S)
    tol = _default_tol(tol, S)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_stages = check_positive_int(n_stages, "n_stages")
    if penalty not in ("mcp", "scad"):
        raise ValueError(f"penalty must be 'mcp' or 'scad', got {penalty!r}")
    gamma = check_positive(gamma, "gamma")
    if penalty == "scad" and gamma <= 2:
        raise ValueError(f"gamma must be > 2 for SCAD, got {gamma}")
    S3 = S.reshape(-1, *S.shape[-2:])
    p = S.shape[-1]
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
                Lam = torch.where(x <= lm, lm, (gamma * lm - x).clamp(min=0) / (gamma - 1)) * off
        Theta, gap, n_iter = _newton(S3, Lam, Theta.clone(), tol, max_iter, nonpos=True)
        n_total += n_iter
    return _finish(Theta, gap, n_total, tol, max_iter, S.shape, return_info, "mtp2_precision")


# ----------------------------------------------------------------------------- evaluation

def edge_recovery(Theta_hat, Theta_true, threshold=0.0) -> dict[str, float]:
    r"""How well the support of ``Theta_hat`` recovers the graph of ``Theta_true``.

    Edges are the off-diagonal pairs :math:`i < j` with :math:`|\Theta_{ij}| > ` ``threshold``.
    Returns precision (true edges among the found), recall (found among the true) and F1
    (their harmonic mean), as floats (0 where a ratio is 0/0), plus the counts ``tp``,
    ``fp``, ``fn``.
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
