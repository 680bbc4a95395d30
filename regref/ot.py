r"""Optimal transport with entropic regularization: a stable, batched Sinkhorn.

Entropic OT: for weights :math:`a \in \mathbb R^n_+`, :math:`b \in \mathbb R^m_+` of equal
mass and a cost :math:`C \in \mathbb R^{n\times m}`,

.. math:: \mathrm{OT}_\varepsilon(a, b) = \min_{P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
          \langle P, C\rangle - \varepsilon H(P), \qquad
          H(P) = -\sum_{ij} P_{ij}(\log P_{ij} - 1),

whose dual is :math:`\max_{f, g} \langle f, a\rangle + \langle g, b\rangle
- \varepsilon\sum_{ij} e^{(f_i + g_j - C_{ij})/\varepsilon}`, with the optimal plan
:math:`P_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}`. POT's objective uses
:math:`\sum P\log P` instead, which differs by the constant :math:`\varepsilon\sum_i a_i`:
the plans are the same, the values differ by it (and POT's ``ot.sinkhorn2`` returns
:math:`\langle P, C\rangle` alone). Sinkhorn's algorithm maximizes the dual one block at a
time; it runs in the scaling form (two matrix-vector products per iteration) with the
scalings absorbed into the potentials when they grow and a log-domain fallback where the
kernel underflows, which keeps it exact for any :math:`\varepsilon > 0`. :func:`exact_ot`
(and :func:`monge_gap` with ``eps=None``) needs SciPy, the optional extra ``lp``:
``pip install "regref[lp]"``. Derivations: chapter 15.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._core import (
    Info,
    as_float_tensor,
    check_finite,
    check_loop_options,
    check_ndim,
    check_positive,
    check_positive_int,
    check_tol,
    warn_not_converged,
)

__all__ = [
    "sinkhorn",
    "sinkhorn_potentials",
    "sinkhorn_cost",
    "sinkhorn_divergence",
    "sinkhorn_points",
    "exact_ot",
    "quadratic_ot",
    "sparse_ot",
    "monge_gap",
]


# ----------------------------------------------------------------------------- validation

def _strength(value, name: str) -> float:
    """One positive finite strength (``eps`` or ``lam``); a per-problem tensor is rejected."""
    if value is None:
        raise ValueError(f"{name} must be a positive finite number, got None")
    shape = getattr(value, "shape", None)
    if shape is not None and math.prod(shape) != 1:
        raise ValueError(f"{name} must be one positive number for the whole batch, got a "
                         f"tensor of shape {tuple(shape)}; solve problems with different "
                         f"{name} in separate calls")
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a positive finite number, got {value!r}") from err
    return check_positive(number, name)


def _eps(eps) -> float:
    return _strength(eps, "eps")


def _weights(w, name: str, like: torch.Tensor, size: int, batch: int | None):
    w = check_finite(as_float_tensor(w, name, like=like), name)
    bad_batch = w.ndim == 2 and batch not in (None, w.shape[0])
    if w.ndim not in (1, 2) or w.shape[-1] != size or bad_batch:
        want = f"({size},)" + (f" or ({batch}, {size}), the batch size of C" if batch
                               else f" or (B, {size})")
        raise ValueError(f"{name} must have shape {want}, got {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be nonnegative")
    return w


def _problem(a, b, C):
    """Validate and broadcast to a batch: returns a (B, n), b (B, m), C (B or 1, n, m), batched."""
    C = check_finite(as_float_tensor(C, "C"), "C")
    if C.ndim not in (2, 3) or min(C.shape[-2:]) == 0:
        raise ValueError(f"C must be a non-empty (n, m) or (B, n, m) matrix (B may be 0), got "
                         f"{tuple(C.shape)}")
    n, m = C.shape[-2:]
    batch = C.shape[0] if C.ndim == 3 else None
    try:
        a = _weights(a, "a", C, n, batch)
        b = _weights(b, "b", C, m, batch)
    except ValueError as err:
        lengths = tuple(np.shape(w)[-1] if np.ndim(w) else None for w in (a, b))
        if n != m and lengths == (m, n):
            raise ValueError(f"C has shape {tuple(C.shape)} but a and b have lengths {m} and "
                             f"{n}: C must be (n, m) = ({m}, {n}); is C transposed?") from err
        raise
    batched = C.ndim == 3 or a.ndim == 2 or b.ndim == 2
    if a.ndim == 2 and b.ndim == 2 and a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b have different batch sizes {a.shape[0]} and {b.shape[0]}")
    if C.ndim == 3:  # the batch sizes given agree (checked above); B = 0 is allowed
        B = C.shape[0]
    else:
        B = a.shape[0] if a.ndim == 2 else (b.shape[0] if b.ndim == 2 else 1)
    a, b = a.reshape(-1, n).expand(B, n), b.reshape(-1, m).expand(B, m)
    return a, _same_mass(a, b), C.reshape(-1, n, m), batched


def _same_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Check that every row of ``a`` and ``b`` has the same positive mass (1e-8 relative, or
    the dtype's rounding); return ``b`` rescaled to ``a``'s mass exactly, so that both
    marginals can hold at once."""
    mass_a, mass_b = a.double().sum(-1), b.double().sum(-1)
    if bool((mass_a <= 0).any()):
        raise ValueError("a must have positive total mass")
    rel = max(1e-8, 8 * torch.finfo(a.dtype).eps)
    if bool(((mass_a - mass_b).abs() > rel * torch.maximum(mass_a, mass_b)).any()):
        raise ValueError(f"a and b must have the same total mass (within {rel:.0e} relative), "
                         f"got {mass_a.tolist()[:3]} and {mass_b.tolist()[:3]}")
    return b * (mass_a / mass_b).to(b.dtype)[..., None]


def _options(tol, max_iter, check_every, dtype):
    # float32 cannot certify marginals much below 1e-6 of the mass
    return check_loop_options(tol, max_iter, check_every, dtype, 1e-9, 1e-5)


# ----------------------------------------------------------------------------- the kernels

def _sinkhorn_log_steps(a, b, neg_C, v, steps):
    r"""``steps`` log-domain Sinkhorn iterations from the scaled column potential ``v``.

    ``a`` (B, n, 1), ``b`` (B, m, 1) weights as columns, ``neg_C`` :math:`-C/\varepsilon`,
    ``v`` (B, m, 1) :math:`g/\varepsilon`, ``steps >= 1``. Each iteration is
    :math:`u = \log a - \mathrm{LSE}_j(v_j - C_{ij}/\varepsilon)`, then
    :math:`v = \log b - \mathrm{LSE}_i(u_i - C_{ij}/\varepsilon)`. Returns ``u``, ``v`` and
    the row sums :math:`e^{u_i}\sum_j e^{v_j - C_{ij}/\varepsilon}` of their plan.
    """
    row_lse = torch.logsumexp(v.mT + neg_C, dim=2, keepdim=True)
    for _ in range(steps):
        u = torch.log(a) - row_lse
        v = torch.log(b) - torch.logsumexp(u + neg_C, dim=1, keepdim=True).mT
        row_lse = torch.logsumexp(v.mT + neg_C, dim=2, keepdim=True)
    return u, v, torch.exp(u + row_lse)


def _sinkhorn_kernel(a, b, C, eps, g, tol, max_iter, check_every):
    r"""Stabilized Sinkhorn, batched. The part to copy (with :func:`_sinkhorn_log_steps`).

    Solves :math:`\min_{P\mathbf 1 = a,\ P^\top\mathbf 1 = b}\ \langle P, C\rangle +
    \varepsilon\sum_{ij}P_{ij}(\log P_{ij} - 1)` by Sinkhorn's scaling iteration with absorption
    (Schmitzer 2019): :math:`P = \mathrm{diag}(s)\,K\,\mathrm{diag}(t)`, :math:`K = e^{u +
    v^\top - C/\varepsilon}` at absorbed potentials :math:`u = f/\varepsilon`, :math:`v =
    g/\varepsilon`; an iteration is :math:`s = a/(Kt)`, :math:`t = b/(K^\top s)`. Every
    ``check_every`` iterations (one host sync): the row error :math:`\|P\mathbf 1 -
    a\|_1/\|a\|_1`; absorption (:math:`u \mathrel{+}= \log s`, :math:`v \mathrel{+}= \log t`,
    new :math:`K`) once a scaling leaves :math:`[\tau, 1/\tau]`, :math:`\tau =
    \text{tiny}^{1/4}` (entries of :math:`K` below tiny, set to 0, weigh at most
    :math:`\sqrt{\text{tiny}}` in :math:`P`); if one is infinite or zero (a row or column of
    :math:`K` underflowed), those iterations redone in the log domain. On the CPU each :math:`K`
    is split into ``R`` blocks of rows, a batch spread over torch's threads (MKL runs a product
    on one thread). ``a`` (B, n), ``b`` (B, m), ``C`` (B or 1, n, m), ``g`` (B, m) the start.
    Returns f, g, iterations, errors.
    """
    (B, n), mass, a, b = a.shape, a.sum(1), a[:, :, None], b[:, None, :]  # column, row
    R = math.gcd(n, max(1, torch.get_num_threads() // max(B, 1))) if C.is_cpu else 1
    a0 = (a == 0).to(a.dtype).view(B * R, n // R, 1)  # K t + 1 = 1 at a zero weight
    b0 = (b == 0).to(b.dtype).div_(R).repeat_interleave(R, 0)  # summed over the R blocks
    live, neg_C, tiny = torch.cat([a, b.mT], 1) > 0, C / -eps, torch.finfo(C.dtype).tiny
    v, n_iter, absorb = g[:, :, None] / eps, 0, True  # u: the rows of K peak at 1
    u = -(v.mT + neg_C).amax(2, keepdim=True)
    while True:
        if absorb:  # K at the potentials u, v, subnormals flushed (slow); problem i: blocks iR..
            K = torch.threshold_((u + v.mT).add_(neg_C).exp_(), tiny, 0.0).view(B * R, n // R, -1)
            K_t, t = (K.sum(2, keepdim=True) + a0).view(B, n, 1), torch.ones_like(b)
        steps, t0 = min(check_every, max_iter - n_iter), t
        for _ in range(steps):  # s^T K as rows (MKL's batched K^T s is slow), block sums
            s = a / K_t
            t = b / torch.baddbmm(b0, s.view(B * R, 1, -1), K).view(B, R, -1).sum(1, keepdim=True)
            K_t = torch.baddbmm(a0, K, t.expand(B, R, -1).reshape(B * R, 1, -1).mT).view(B, n, 1)
        n_iter += steps
        err = (s * K_t - a).abs().sum((1, 2)) / mass  # of the returned plan
        log_st = torch.log(torch.cat([s, t.mT], 1))
        broken, far, done = torch.stack([(~log_st.isfinite() & live).any(),  # one host sync
                                         ((log_st.abs() > -math.log(tiny) / 4) & live).any(),
                                         (err <= tol).all()]).tolist()
        if broken:  # K t or K^T s underflowed: redo the block in the log domain
            u, v, rows = _sinkhorn_log_steps(a, b.mT, neg_C, v + torch.log(t0.mT), steps)
            err = (rows - a).abs().sum((1, 2)) / mass
            done, far = bool((err <= tol).all()), False
        elif far or done or n_iter >= max_iter:
            u, v = u + log_st[:, :n], v + log_st[:, n:]
        if (done and not far) or n_iter >= max_iter:
            return eps * u[..., 0], eps * v[..., 0], n_iter, err
        absorb = broken or far


def _sinkhorn_points_kernel(x, y, a, b, eps, g, tol, max_iter, check_every, chunk):
    r"""Log-domain Sinkhorn between point clouds, the cost streamed. The part to copy.

    The problem and the iteration of the dense kernel, with
    :math:`C_{ij} = \|x_i - y_j\|^2` recomputed by blocks of ``chunk`` rows inside each
    log-sum-exp and never stored: memory :math:`O(\texttt{chunk}\cdot\max(n, m))`.
    ``x`` (n, d), ``y`` (m, d); ``a`` (n,), ``b`` (m,) weights of equal mass; ``g`` (m,)
    the starting potential. Returns ``f``, ``g``, the iteration count and the relative row
    error :math:`\|P\mathbf 1 - a\|_1/\|a\|_1` of the plan after the last column update.
    """
    def lse(p, q, w):  # LSE_j (w_j - |p_i - q_j|^2 / eps) for every i, by blocks of rows
        shift, out = w - (q * q).sum(1) / eps, []  # |p - q|^2 = |p|^2 + |q|^2 - 2 p.q
        for i in range(0, len(p), chunk):  # one (chunk, m) block: p.q, scaled and shifted
            block = torch.addmm(shift, p[i:i + chunk], q.T, alpha=2 / eps)
            out.append(torch.logsumexp(block, dim=1))
        return torch.cat(out) - (p * p).sum(1) / eps

    log_a, log_b, mass = torch.log(a), torch.log(b), a.sum()
    v = g / eps
    row_lse = lse(x, y, v)
    n_iter = 0
    while True:
        steps = min(check_every, max_iter - n_iter)
        for _ in range(steps):
            u = log_a - row_lse
            v = log_b - lse(y, x, u)
            row_lse = lse(x, y, v)
        n_iter += steps
        row_error = (torch.exp(u + row_lse) - a).abs().sum() / mass
        if bool(row_error <= tol) or n_iter >= max_iter:
            return eps * u, eps * v, n_iter, row_error[None]


# ----------------------------------------------------------------------------- the drivers

def _schedule(eps_schedule, eps: float):
    if eps_schedule is None:
        return []
    try:
        sched = [float(e) for e in eps_schedule]
    except (TypeError, ValueError) as err:
        raise ValueError("eps_schedule must be a sequence of numbers") from err
    if not all(math.isfinite(e) and e > 0 for e in sched):
        raise ValueError(f"eps_schedule must hold positive finite numbers, got {sched}")
    if any(e < eps for e in sched):
        raise ValueError("eps_schedule must not go below eps (it ends at eps)")
    return [e for e in sched if e > eps]


def _run_schedule(kernel, args, g, eps, schedule, tol, max_iter, check_every, *extra):
    r"""The kernel at each strength of ``schedule``, then at ``eps`` (:math:`\varepsilon`-
    scaling, each stage warm-started at the last potential); the intermediate stages stop
    at a rough 1e-3. ``max_iter`` counts the iterations of all stages (at least one each)."""
    n_iter = 0
    for e in schedule:
        _, g, steps, _ = kernel(*args, e, g, max(tol, 1e-3), max(max_iter - n_iter, 1),
                                check_every, *extra)
        n_iter += steps
    f, g, steps, row_error = kernel(*args, eps, g, tol, max(max_iter - n_iter, 1),
                                    check_every, *extra)
    return f, g, n_iter + steps, row_error


def _finish(name, row_error, n_iter, tol, max_iter):
    certificate = float(row_error.amax()) if row_error.numel() else 0.0
    info = Info(n_iter=n_iter, converged=certificate <= tol, certificate=certificate)
    if not info.converged:
        warn_not_converged(f"{name} did not reach a marginal error of {tol:g} in {max_iter} "
                           f"iterations (reached {certificate:.3g}); increase max_iter or "
                           f"use eps_schedule")
    return info


_CPU_BLOCK = 1 << 18  # cost entries per batch block on a CPU (2 MB in float64: cache-sized)


def _potentials(a, b, C, eps, tol, max_iter, check_every, eps_schedule, name="sinkhorn"):
    """Validated options, then the dense kernel on batched input (B, n), (B, m), (B or 1, n, m).

    On a GPU the whole batch is one pass. On a CPU the batch is split into blocks whose
    (block, n, m) kernels stay in cache: the matrix-vector products are memory-bound, and
    one batch larger than the cache is slower than a loop over small problems.
    """
    eps = _eps(eps)
    tol, max_iter, check_every = _options(tol, max_iter, check_every, C.dtype)
    schedule = _schedule(eps_schedule, eps)
    per = max(len(a), 1) if a.is_cuda else max(1, _CPU_BLOCK // (C.shape[1] * C.shape[2]))
    fs, gs, errs, n_iter = [a[:0]], [b[:0]], [a[:0, 0]], 0
    for i in range(0, len(a), per):
        Ci = C if C.shape[0] == 1 else C[i:i + per]
        ai, bi = a[i:i + per], b[i:i + per]
        f, g, steps, err = _run_schedule(_sinkhorn_kernel, (ai, bi, Ci), torch.zeros_like(bi),
                                         eps, schedule, tol, max_iter, check_every)
        fs.append(f)
        gs.append(g)
        errs.append(err)
        n_iter = max(n_iter, steps)
    info = _finish(name, torch.cat(errs), n_iter, tol, max_iter)
    return torch.cat(fs), torch.cat(gs), info


def sinkhorn_potentials(a, b, C, eps, *, tol=None, max_iter: int = 10_000,
                        check_every: int = 10, eps_schedule=None, return_info: bool = False):
    r"""Optimal dual potentials :math:`(f, g)` of entropic OT, by stabilized Sinkhorn.

    .. math:: \max_{f, g}\ \langle f, a\rangle + \langle g, b\rangle
              - \varepsilon\sum_{ij} e^{(f_i + g_j - C_{ij})/\varepsilon},

    the dual of the problem of :func:`sinkhorn`; the optimal plan is
    :math:`P_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}`. The potentials are those after the
    last (column) update. Each iteration is two matrix-vector products with the kernel
    (:math:`Bnm` entries), as in :func:`sinkhorn`. Derivation: chapter 15.

    Parameters
    ----------
    a : tensor of shape (n,) or (B, n)
        Nonnegative weights (zeros allowed), converted to ``C``'s dtype and device.
    b : tensor of shape (m,) or (B, m)
        Nonnegative weights with the same total mass as ``a`` (within 1e-8 relative).
    C : tensor of shape (n, m) or (B, n, m)
        Finite cost (shared by the batch when 2-D).
    eps : float
        Entropic strength ``> 0``, one number for the whole batch.
    tol, max_iter, check_every, eps_schedule
        As in :func:`sinkhorn`.
    return_info : bool
        Also return a :class:`regref.Info`, as in :func:`sinkhorn`.

    Returns
    -------
    f : tensor of shape (n,) or (B, n)
        Row potential; :math:`-\infty` where ``a`` is zero.
    g : tensor of shape (m,) or (B, m)
        Column potential; :math:`-\infty` where ``b`` is zero.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import sinkhorn_potentials
    >>> a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> f, g = sinkhorn_potentials(a, a, C, 0.5)
    >>> round(float((f[0] + g[0]) - (f[1] + g[1])), 4)
    0.0
    """
    a, b, C, batched = _problem(a, b, C)
    f, g, info = _potentials(a, b, C, eps, tol, max_iter, check_every, eps_schedule)
    if not batched:
        f, g = f[0], g[0]
    return (f, g, info) if return_info else (f, g)


def sinkhorn(a, b, C, eps, *, tol=None, max_iter: int = 10_000, check_every: int = 10,
             eps_schedule=None, return_info: bool = False):
    r"""Entropic optimal transport plan, by stabilized Sinkhorn (batched).

    .. math:: P = \arg\min_{P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
              \langle P, C\rangle - \varepsilon H(P),\qquad
              H(P) = -\sum_{ij} P_{ij}(\log P_{ij} - 1),

    and :math:`P_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}` at the optimal potentials.
    The plan equals POT's ``ot.sinkhorn(a, b, C, eps)`` (POT's entropy
    :math:`-\sum P\log P` differs from :math:`H` by the constant mass, which does not move
    the minimizer). The updates :math:`f_i = \varepsilon\log a_i - \varepsilon\log\sum_j
    e^{(g_j - C_{ij})/\varepsilon}` (and symmetrically for :math:`g`) run in the scaling form
    :math:`s = a/(Kt)`, :math:`t = b/(K^\top s)` on a kernel
    :math:`K = e^{(\bar f_i + \bar g_j - C_{ij})/\varepsilon}` at absorbed potentials; the
    scalings are absorbed into :math:`\bar f, \bar g` when they leave
    :math:`[\text{tiny}^{1/4}, \text{tiny}^{-1/4}]`, and a block of iterations in which a row
    or column of :math:`K` underflows is redone in the log domain (log-sum-exps), so
    :math:`\varepsilon = 10^{-3}` with costs of order 1 is fine and the iterates are those of
    the log-domain iteration to rounding. The returned plan is the one after the last
    (column) half-step, so :math:`P^\top\mathbf 1 = b` to rounding. Cost per iteration: two
    matrix-vector products over :math:`Bnm` entries, nothing of that size written; one host
    synchronization per ``check_every`` iterations. Derivation: chapter 15.

    Parameters
    ----------
    a : tensor of shape (n,) or (B, n)
        Nonnegative weights (zeros allowed), converted to ``C``'s dtype and device.
    b : tensor of shape (m,) or (B, m)
        Nonnegative weights with the same total mass as ``a`` (within 1e-8 relative),
        converted to ``C``'s dtype and device.
    C : tensor of shape (n, m) or (B, n, m)
        Finite cost (shared by the batch when 2-D). A batch of size 0 gives an empty plan.
    eps : float
        Entropic strength ``> 0``, one number for the whole batch (solve problems with
        different strengths in separate calls).
    tol : float, optional
        Stop when :math:`\|P\mathbf 1 - a\|_1 \le` ``tol`` times the mass, for every problem.
        Default ``1e-9`` in float64, ``1e-5`` in float32.
    max_iter : int
        Iterations (one row and one column update each), all ``eps_schedule`` stages
        included; reaching it without meeting ``tol`` warns
        :class:`regref.ConvergenceWarning`.
    check_every : int
        The error is checked (one host synchronization) every ``check_every`` iterations.
    eps_schedule : sequence of float, optional
        Decreasing strengths above ``eps`` solved first, each warm-starting the next
        (:math:`\varepsilon`-scaling), e.g. a geometric sequence from ``C.max()``.
    return_info : bool
        Also return :class:`regref.Info`; ``certificate`` is the largest relative row-marginal
        :math:`\ell_1` error of the returned plan over the batch.

    Returns
    -------
    P : tensor of shape (n, m) or (B, n, m)
        The plan.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import sinkhorn
    >>> a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> P, info = sinkhorn(a, a, C, 0.5, return_info=True)
    >>> torch.round(P, decimals=4)
    tensor([[0.4404, 0.0596],
            [0.0596, 0.4404]], dtype=torch.float64)
    >>> info.converged
    True
    """
    a_, b_, C_, batched = _problem(a, b, C)
    f, g, info = _potentials(a_, b_, C_, eps, tol, max_iter, check_every, eps_schedule)
    P = torch.exp((f[:, :, None] + g[:, None, :] - C_) / _eps(eps))
    if not batched:
        P = P[0]
    return (P, info) if return_info else P


def _dual_value(a, b, C, f, g, eps):
    r"""The dual objective at *fixed* potentials: differentiable in ``a``, ``b``, ``C``.

    By the envelope theorem its gradients at the optimal potentials are those of
    :math:`\mathrm{OT}_\varepsilon`: :math:`\partial/\partial C = P`,
    :math:`\partial/\partial a = f`, :math:`\partial/\partial b = g`. Zero weights contribute
    nothing.
    """
    live = (a > 0)[:, :, None] & (b > 0)[:, None, :]
    f0 = torch.where(a > 0, f, 0.0)
    g0 = torch.where(b > 0, g, 0.0)
    expo = torch.where(live, (f0[:, :, None] + g0[:, None, :] - C) / eps, -torch.inf)
    return (a * f0).sum(1) + (b * g0).sum(1) - eps * torch.exp(expo).sum((1, 2))


def sinkhorn_cost(a, b, C, eps, *, tol=None, max_iter: int = 10_000, check_every: int = 10,
                  eps_schedule=None, return_info: bool = False):
    r"""The entropic OT value :math:`\mathrm{OT}_\varepsilon(a, b)`, differentiable.

    .. math:: \mathrm{OT}_\varepsilon
              = \langle P, C\rangle + \varepsilon\sum_{ij}P_{ij}(\log P_{ij} - 1)
              = \langle f, a\rangle + \langle g, b\rangle - \varepsilon\,\textstyle\sum_{ij} P_{ij}.

    This is not POT's ``ot.sinkhorn2``, which returns :math:`\langle P, C\rangle` alone.
    The value can be negative (the entropy term is). The potentials are computed without
    autograd; the value is the dual objective at them, so gradients follow the envelope
    theorem (:math:`\nabla_C = P`, :math:`\nabla_a = f`, :math:`\nabla_b = g`) instead of
    differentiating through the iterations. Cost: that of :func:`sinkhorn`. Derivation:
    chapter 15.

    Parameters
    ----------
    a, b, C, eps
        As in :func:`sinkhorn`.
    tol, max_iter, check_every, eps_schedule
        As in :func:`sinkhorn`.
    return_info : bool
        Also return the :class:`regref.Info` of the Sinkhorn solve.

    Returns
    -------
    value : tensor of shape () or (B,)
        :math:`\mathrm{OT}_\varepsilon`.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import sinkhorn_cost
    >>> a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> round(float(sinkhorn_cost(a, a, C, 0.5)), 4)
    -0.91
    """
    a_, b_, C_, batched = _problem(a, b, C)
    eps = _eps(eps)
    with torch.no_grad():
        f, g, info = _potentials(a_, b_, C_, eps, tol, max_iter, check_every, eps_schedule,
                                 "sinkhorn_cost")
    value = _dual_value(a_, b_, C_, f, g, eps)
    value = value if batched else value[0]
    return (value, info) if return_info else value


def _sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2 * x @ y.mT).clamp(min=0)


def _points(x, y, a, b):
    x = check_finite(as_float_tensor(x, "x"), "x")
    y = check_finite(as_float_tensor(y, "y", like=x), "y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(x.shape + y.shape) == 0:
        raise ValueError(f"x and y must be non-empty (n, d) and (m, d) point clouds, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    n, m = len(x), len(y)
    a = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device) if a is None else a
    b = torch.full((m,), 1.0 / m, dtype=x.dtype, device=x.device) if b is None else b
    a = _weights(a, "a", x, n, None)
    b = _weights(b, "b", x, m, None)
    return x, y, a, _same_mass(a[None], b[None])[0]


def sinkhorn_divergence(x, y, eps, a=None, b=None, *, tol=None, max_iter: int = 10_000,
                        check_every: int = 10, eps_schedule=None, return_info: bool = False):
    r"""Debiased Sinkhorn divergence between point clouds, squared Euclidean cost.

    .. math:: S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
              - \tfrac12\mathrm{OT}_\varepsilon(\alpha, \alpha)
              - \tfrac12\mathrm{OT}_\varepsilon(\beta, \beta),

    with :math:`C_{ij} = \|x_i - y_j\|^2` and uniform weights unless given. The debiasing
    removes the entropic blur: :math:`S_\varepsilon \ge 0`, with equality iff the measures
    coincide (Feydy et al., 2019). Differentiable in ``x``, ``y``, ``a``, ``b``.
    The two symmetric terms use the symmetric fixed point :math:`f = g` with averaged
    updates :math:`u \leftarrow \tfrac12(u + \log a - \mathrm{LSE}_j(u_j - C_{ij}/\varepsilon))`
    (run in scaling form, like the cross term), which converge in a few iterations where
    alternating updates can stall. Cost: three
    Sinkhorn solves on :math:`nm`, :math:`n^2` and :math:`m^2` costs. Derivation: chapter 15.

    Parameters
    ----------
    x : tensor of shape (n, d)
        Support of :math:`\alpha`.
    y : tensor of shape (m, d)
        Support of :math:`\beta`, converted to ``x``'s dtype and device.
    eps : float
        Entropic strength ``> 0``.
    a, b : tensor of shape (n,) and (m,), optional
        Weights of equal mass; uniform (mass 1) by default; converted to ``x``'s dtype and
        device.
    tol, max_iter, check_every
        As in :func:`sinkhorn`, for each of the three solves.
    eps_schedule : sequence of float, optional
        As in :func:`sinkhorn`, for the cross term only.
    return_info : bool
        Also return one :class:`regref.Info` for the three solves: the largest iteration
        count and the largest certificate (relative marginal error) of the three.

    Returns
    -------
    value : 0-d tensor
        :math:`S_\varepsilon(\alpha, \beta)`.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import sinkhorn_divergence
    >>> x = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    >>> round(float(sinkhorn_divergence(x, x, 0.5)), 6)
    0.0
    >>> round(float(sinkhorn_divergence(x, x + 0.3, 0.5)), 4)  # a translation: |t|^2
    0.09
    """
    x, y, a, b = _points(x, y, a, b)
    eps = _eps(eps)
    tol, max_iter, check_every = _options(tol, max_iter, check_every, x.dtype)
    cross, info_xy = sinkhorn_cost(a, b, _sq_dist(x, y), eps, tol=tol, max_iter=max_iter,
                                   check_every=check_every, eps_schedule=eps_schedule,
                                   return_info=True)
    self_a, info_a = _symmetric_cost(a, _sq_dist(x, x), eps, tol, max_iter, check_every)
    self_b, info_b = _symmetric_cost(b, _sq_dist(y, y), eps, tol, max_iter, check_every)
    value = cross - self_a / 2 - self_b / 2
    infos = (info_xy, info_a, info_b)
    certificate = max(i.certificate for i in infos)
    info = Info(n_iter=max(i.n_iter for i in infos), converged=certificate <= tol,
                certificate=certificate)
    return (value, info) if return_info else value


def _symmetric_cost(a, C, eps, tol, max_iter, check_every):
    r""":math:`\mathrm{OT}_\varepsilon(a, a)` for a symmetric cost, from the symmetric
    potential, and its :class:`Info` (certificate: the relative row error of the plan).

    The averaged update :math:`u \leftarrow \tfrac12(u + \log a - \mathrm{LSE}_j(u_j -
    C_{ij}/\varepsilon))` in scaling form, as in :func:`_sinkhorn_kernel`: with
    :math:`K = e^{u_0 + u_0^\top - C/\varepsilon}` at an absorbed :math:`u_0` and
    :math:`s = e^{u - u_0}`, it is :math:`s \leftarrow \sqrt{s \odot a / (Ks)}`, one
    matrix-vector product per iteration instead of :math:`n^2` exponentials; absorption
    when :math:`s` leaves :math:`[\tau, 1/\tau]`, the log domain where :math:`Ks`
    underflows.
    """
    with torch.no_grad():
        neg_C, log_a, mass, tiny = C / -eps, torch.log(a), a.sum(), torch.finfo(C.dtype).tiny
        n = len(a)  # R blocks of rows on the CPU, as in _sinkhorn_kernel
        R = math.gcd(n, torch.get_num_threads()) if C.is_cpu else 1
        a0, live = (a == 0).to(a.dtype), a > 0  # K s + 1 = 1 at a zero weight
        u, n_iter, absorb = torch.zeros_like(a), 0, True  # K's diagonal is 1 at u = 0
        while True:
            if absorb:
                K = torch.threshold_((u[:, None] + u[None, :]).add_(neg_C).exp_(), tiny, 0.0)
                K, s = K.view(R, n // R, n), torch.ones_like(a)
                Ks = K.sum(2).view(n) + a0
            steps, s0 = min(check_every, max_iter - n_iter), s
            for _ in range(steps):
                s = torch.sqrt(s * a / Ks)
                Ks = torch.baddbmm(a0.view(R, -1, 1), K, s.expand(R, n)[:, :, None]).view(n)
            n_iter += steps
            err = (s * Ks - a).abs().sum() / mass
            log_s = torch.log(s)
            broken, far, done = torch.stack([(~log_s.isfinite() & live).any(),
                                             ((log_s.abs() > -math.log(tiny) / 4) & live).any(),
                                             err <= tol]).tolist()
            if broken:  # K s underflowed: redo the block in the log domain
                u = u + torch.log(s0)
                for _ in range(steps):
                    u = (u + log_a - torch.logsumexp(neg_C + u[None, :], dim=1)) / 2
                err = (torch.exp(u + torch.logsumexp(neg_C + u[None, :], dim=1)) - a).abs(
                    ).sum() / mass
                done, far = bool(err <= tol), False
            elif far or done or n_iter >= max_iter:
                u = u + log_s
            if (done and not far) or n_iter >= max_iter:
                break
            absorb = broken or far
    info = _finish("sinkhorn_divergence (symmetric term)", err, n_iter, tol, max_iter)
    f = eps * u
    return _dual_value(a[None], a[None], C[None], f[None], f[None], eps)[0], info


def sinkhorn_points(x, y, eps, a=None, b=None, *, chunk: int = 4096, tol=None,
                    max_iter: int = 10_000, check_every: int = 10, eps_schedule=None,
                    return_info: bool = False):
    r"""Sinkhorn potentials for point clouds with :math:`C_{ij} = \|x_i - y_j\|^2`, streamed.

    .. math:: \max_{f, g}\ \langle f, a\rangle + \langle g, b\rangle
              - \varepsilon\sum_{ij} e^{(f_i + g_j - \|x_i - y_j\|^2)/\varepsilon}.

    The cost matrix is never stored: each log-sum-exp is computed over blocks of
    ``chunk`` rows (or columns), recomputing the cost block
    :math:`\|x_i\|^2 + \|y_j\|^2 - 2x_i^\top y_j` by one small matrix product. Memory is
    :math:`O(\texttt{chunk}\cdot\max(n, m))` instead of :math:`O(nm)`, so
    :math:`n = m = 10^5` fits on a GPU; the work per iteration is :math:`2nm` exponentials.
    Equals :func:`sinkhorn_potentials` on the dense cost. Derivation: chapter 15.

    Parameters
    ----------
    x : tensor of shape (n, d)
        Source points.
    y : tensor of shape (m, d)
        Target points, converted to ``x``'s dtype and device.
    eps : float
        Entropic strength ``> 0``.
    a, b : tensor of shape (n,) and (m,), optional
        Weights of equal mass; uniform (mass 1) by default; converted to ``x``'s dtype and
        device.
    chunk : int
        Rows (or columns) of the cost recomputed at a time.
    tol, max_iter, check_every, eps_schedule, return_info
        As in :func:`sinkhorn`.

    Returns
    -------
    f : tensor of shape (n,)
        Source potential.
    g : tensor of shape (m,)
        Target potential.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import sinkhorn_points
    >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> f, g, info = sinkhorn_points(x, x, 0.5, return_info=True)
    >>> info.converged
    True
    """
    x, y, a, b = _points(x, y, a, b)
    eps = _eps(eps)
    tol, max_iter, check_every = _options(tol, max_iter, check_every, x.dtype)
    chunk = check_positive_int(chunk, "chunk")
    f, g, n_iter, err = _run_schedule(_sinkhorn_points_kernel, (x, y, a, b),
                                      torch.zeros_like(b), eps, _schedule(eps_schedule, eps),
                                      tol, max_iter, check_every, chunk)
    info = _finish("sinkhorn_points", err, n_iter, tol, max_iter)
    return (f, g, info) if return_info else (f, g)


# ------------------------------------------------------------------ exact, quadratic, sparse OT

_ARMIJO = 1e-4  # sufficient-increase constant of the backtracking line search
_MAX_HALVINGS = 40  # backtracking steps before a Newton step is given up for a sweep
_SHRINK = 0.1  # ratio of two strengths of the continuation
_STAGE_TOL = 1e-4  # marginal error at which an intermediate strength is left
_STALL = 20  # Newton steps without a 0.1% smaller marginal error after which a solve stops
_DAMP = 1e-4  # Levenberg damping of the Newton system, in units of support counts, times the error


# ----------------------------------------------------------------------------- exact OT

def _is_uniform(w: torch.Tensor) -> bool:
    return bool((w > 0).all()) and float(w.max() - w.min()) <= 1e-12 * float(w.max())


def _scipy():
    """SciPy's LP and assignment solvers, imported lazily: SciPy is the optional extra
    ``lp`` (``pip install "regref[lp]"``), needed by :func:`exact_ot` only."""
    try:
        from scipy.optimize import linear_sum_assignment, linprog
        from scipy.sparse import eye_array, kron, vstack
    except ImportError as err:
        raise ImportError('regref.ot.exact_ot (and monge_gap with eps=None) needs SciPy, '
                          'the optional extra "lp": pip install "regref[lp]"') from err
    return linear_sum_assignment, linprog, eye_array, kron, vstack


def _lp_plan(a, b, C):
    """One exact OT problem on the CPU in float64 (numpy arrays in, numpy array out)."""
    linear_sum_assignment, linprog, eye_array, kron, vstack = _scipy()

    n, m = C.shape
    if n == m and _is_uniform(torch.as_tensor(a)) and _is_uniform(torch.as_tensor(b)):
        rows, cols = linear_sum_assignment(C)  # a permutation is a vertex of U(a, b)
        P = np.zeros((n, m))
        P[rows, cols] = a.sum() / n
        return P
    b = b * (a.sum() / b.sum())  # masses equal to 1e-8 already: make the LP exactly feasible
    A_eq = vstack([kron(eye_array(n), np.ones((1, m))),
                   kron(np.ones((1, n)), eye_array(m))]).tocsr()
    res = linprog(C.reshape(-1), A_eq=A_eq, b_eq=np.concatenate([a, b]), bounds=(0, None),
                  method="highs-ds")
    if res.status != 0:  # cannot happen for a feasible, bounded transport LP
        raise RuntimeError(f"exact_ot: HiGHS failed: {res.message}")
    return np.clip(res.x, 0, None).reshape(n, m)


def exact_ot(a, b, C) -> torch.Tensor:
    r"""Unregularized optimal transport plan (a linear program; CPU reference).

    .. math:: P^\star \in \arg\min_{P \ge 0,\ P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
              \langle P, C\rangle .

    Algorithm: when ``a`` and ``b`` are uniform with :math:`n = m` the problem is an
    assignment problem and an optimal vertex is a scaled permutation, found by
    ``scipy.optimize.linear_sum_assignment`` (Jonker--Volgenant, :math:`O(n^3)`); otherwise
    the LP with :math:`nm` variables and :math:`n + m` equality constraints is solved by
    ``scipy.optimize.linprog(method="highs-ds")`` (dual simplex), which returns a vertex, hence
    a plan with at most :math:`n + m - 1` nonzeros, like POT's ``ot.emd``. The solve runs in
    float64 on the CPU; for large problems use :func:`regref.ot.sinkhorn` instead.
    Chapter 15 uses it as the reference.

    Parameters
    ----------
    a : tensor of shape (n,) or (B, n)
        Nonnegative source weights.
    b : tensor of shape (m,) or (B, m)
        Nonnegative target weights, same total mass as ``a`` (1e-8 relative). ``a`` and
        ``b`` are converted to ``C``'s dtype and device.
    C : tensor of shape (n, m) or (B, n, m)
        Finite cost matrix. A batch is solved one problem at a time.

    Returns
    -------
    P : tensor of shape (n, m) or (B, n, m)
        An optimal plan (a vertex), on ``C``'s device and dtype.

    Raises
    ------
    ImportError
        If SciPy, the optional extra ``lp`` (``pip install "regref[lp]"``), is missing.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import exact_ot
    >>> a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> exact_ot(a, a, C)
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    a_, b_, C_, batched = _problem(a, b, C)
    C_ = C_.expand(len(a_), -1, -1)
    if len(a_) == 0:
        return torch.zeros_like(C_)
    _scipy()  # the ImportError naming the extra, before any work

    def to_np(t):
        return t.detach().cpu().double().numpy()

    plans = [torch.as_tensor(_lp_plan(to_np(a_[i]), to_np(b_[i]), to_np(C_[i])))
             for i in range(C_.shape[0])]
    P = torch.stack(plans).to(dtype=C_.dtype, device=C_.device)
    return P if batched else P[0]


# ----------------------------------------------------------------------------- regularized OT

def _f64(*ts):
    """The regularized solvers work in float64 (the Newton systems are ill-conditioned)."""
    return tuple(t.to(torch.float64) for t in ts)


def _threshold(v: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
    r"""The :math:`\tau` with :math:`\sum_{l \le k} [v_{(l)} + \tau]_+ = t` (last dim of ``v``).

    :math:`v_{(l)}` are the entries sorted in decreasing order; only the ``k`` largest count.
    This is the threshold of a Euclidean projection onto a scaled simplex (sort, cumulative
    sum, the largest feasible support size); for ``t = 0`` it returns :math:`-v_{(1)}`.
    """
    s = torch.sort(v, dim=-1, descending=True).values[..., :k]
    ranks = torch.arange(1, s.shape[-1] + 1, dtype=v.dtype, device=v.device)
    taus = (t[..., None] - s.cumsum(-1)) / ranks
    ok = (s + taus) > 0
    ok[..., 0] = True  # the support has at least one entry (t = 0: tau = -v_(1))
    last = (ok * ranks).argmax(-1, keepdim=True)  # largest feasible support size, minus one
    return taus.gather(-1, last)[..., 0]


def _dual_parts(a, b, C, f, g, lam, k):
    """Dual value, gradient (a - P1, b - P^T 1), the plan and its active mask."""
    S = f[:, :, None] + g[:, None, :] - C
    live = (a > 0)[:, :, None] & (b > 0)[:, None, :]  # zero weights: zero rows and columns
    Z = torch.where(live, S.clamp(min=0), 0.0)
    if k < C.shape[1]:  # keep the k largest entries of every column (exactly k, ties broken)
        idx = S.topk(k, dim=1).indices
        keep = torch.zeros_like(S, dtype=torch.bool).scatter_(1, idx, True)
        Z = torch.where(keep, Z, 0.0)
    value = (f * a).sum(1) + (g * b).sum(1) - (Z * Z).sum((1, 2)) / (2 * lam)
    P = Z / lam
    return value, a - P.sum(2), b - P.sum(1), P


def _sweep(a, b, C, f, g, lam, k):
    """Exact block ascent: best f for g (ignoring k), then best g for f (with top-k columns)."""
    f = _threshold(g[:, None, :] - C, lam * a, C.shape[2])
    g = _threshold((f[:, :, None] - C).mT, lam * b, k)
    return f, g


def _newton_direction(P, Gf, Gg, lam, damping):
    r"""Solve :math:`(H + \delta I)\,d = G` with the generalized Hessian of the negated dual.

    :math:`H = \lambda^{-1}\begin{pmatrix}\operatorname{diag}(A\mathbf 1) & A\\ A^\top &
    \operatorname{diag}(A^\top\mathbf 1)\end{pmatrix}`, :math:`A` the 0/1 support of the plan.
    """
    A = (P > 0).to(P.dtype)
    B, n, m = A.shape
    H = torch.zeros(B, n + m, n + m, dtype=P.dtype, device=P.device)
    H[:, :n, n:] = A
    H[:, n:, :n] = A.mT
    diag = torch.cat([A.sum(2), A.sum(1)], 1) + (lam * damping)[:, None]
    H.diagonal(dim1=1, dim2=2).copy_(diag)
    L, _ = torch.linalg.cholesky_ex(H)
    d = torch.cholesky_solve(torch.cat([Gf, Gg], 1)[:, :, None], L)[:, :, 0] * lam
    return d[:, :n], d[:, n:]


def _newton(a, b, C, f, g, lam, k, tol, budget):
    """Semismooth Newton ascent on the (k-sparse) quadratic OT dual from (f, g); batched.

    Returns ``(f, g, err, steps)``: ``err`` the relative l1 marginal error per problem.
    """
    mass = a.sum(1)
    tiny = torch.finfo(C.dtype).eps
    steps = 0
    best, since = torch.full_like(mass, math.inf), 0
    while True:
        value, Gf, Gg, P = _dual_parts(a, b, C, f, g, lam, k)
        err = (Gf.abs().sum(1) + Gg.abs().sum(1)) / mass
        live = err > tol
        since = 0 if bool((err < (1 - 1e-3) * best).any()) else since + 1
        best = torch.minimum(best, err)
        if not bool(live.any()) or steps == budget or since == _STALL:
            return f, g, err, steps
        steps += 1
        # Levenberg damping proportional to the residual: global, and superlinear near the end
        damping = _DAMP * err.clamp(min=tiny, max=1.0) / lam
        df, dg = _newton_direction(P, Gf, Gg, lam, damping)
        slope = (Gf * df).sum(1) + (Gg * dg).sum(1)
        step = torch.ones_like(mass)
        accepted = ~live
        for _ in range(_MAX_HALVINGS):
            f_try, g_try = f + step[:, None] * df, g + step[:, None] * dg
            v_try = _dual_parts(a, b, C, f_try, g_try, lam, k)[0]
            ok = (v_try >= value + _ARMIJO * step * slope) & ~accepted
            accepted |= ok
            f = torch.where(ok[:, None], f_try, f)
            g = torch.where(ok[:, None], g_try, g)
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, step / 2)
        stuck = ~accepted
        if bool(stuck.any()):  # no ascent along d (a kink of the k-sparse dual): one exact sweep
            f_s, g_s = _sweep(a, b, C, f, g, lam, k)
            f = torch.where(stuck[:, None], f_s, f)
            g = torch.where(stuck[:, None], g_s, g)


def _lam_schedule(a, C, lam):
    """Decreasing strengths ending at ``lam``, from one where the plan is dense."""
    n, m = C.shape[1:]
    spread = (C.amax((1, 2)) - C.amin((1, 2))) * n * m / a.sum(1)
    start = float(spread.max())
    sched = []
    while start > _SHRINK * lam:
        sched.append(start)
        start *= _SHRINK
    return sched + [lam]


def _solve_dual(a, b, C, lam, k, tol, max_iter, name):
    """Continuation in lam (warm-started Newton at each strength), then the final solve."""
    f, g = _sweep(a, b, C, torch.zeros_like(a), torch.zeros_like(b), lam, k)
    n_iter = 0
    stages = [(gam, C.shape[1]) for gam in _lam_schedule(a, C, lam)]
    if k < C.shape[1]:  # the k-sparse problem last, from the quadratic solution
        stages.append((lam, k))
    for gam, kk in stages:
        f, g = _sweep(a, b, C, f, g, gam, kk)
        stage_tol = tol if (gam, kk) == stages[-1] else max(tol, _STAGE_TOL)
        f, g, err, steps = _newton(a, b, C, f, g, gam, kk, stage_tol, max_iter - n_iter)
        n_iter += steps
    P = _dual_parts(a, b, C, f, g, lam, k)[3]
    certificate = float(err.max())
    converged = certificate <= tol
    if not converged:
        warn_not_converged(f"{name} stopped after {n_iter} Newton steps (max_iter={max_iter}) "
                           f"with marginal error {certificate:.3g} > tol={tol:g}")
    return P, f, g, Info(n_iter=n_iter, converged=converged, certificate=certificate)


def quadratic_ot(a, b, C, lam, *, tol=None, max_iter: int = 200, return_info: bool = False):
    r"""Optimal transport with squared-Frobenius regularization (sparse plans).

    .. math:: \min_{P \ge 0,\ P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
              \langle P, C\rangle + \tfrac\lambda2\|P\|_F^2 .

    Its dual is smooth and concave,

    .. math:: \max_{f, g}\ \langle f, a\rangle + \langle g, b\rangle
              - \frac1{2\lambda}\sum_{ij}\bigl[f_i + g_j - C_{ij}\bigr]_+^2,

    with gradient :math:`(a - P\mathbf 1,\ b - P^\top\mathbf 1)` at the plan
    :math:`P_{ij} = [f_i + g_j - C_{ij}]_+/\lambda`, which is the primal solution at the dual
    optimum (unlike entropic OT, most of its entries are exactly zero).

    Algorithm: an exact block-ascent sweep (each :math:`f_i` given :math:`g`, then each
    :math:`g_j` given :math:`f`, by a sorted simplex threshold) starts a semismooth Newton
    ascent: the generalized Hessian is :math:`\lambda^{-1}` times the signless Laplacian of
    the bipartite support graph of :math:`P`, damped by the current marginal error
    (Levenberg), and each step is globalized by an Armijo backtracking line search. The
    dual is piecewise quadratic, so the method typically ends in a few dozen steps once the
    support is identified. The solve runs in float64 on the input's device (the result is cast
    back), and a continuation in :math:`\lambda` (geometric, from a strength at which the plan
    is dense, each stage warm-starting the next) keeps the number of support changes per
    stage small. Cost per step: :math:`O(nm)` for the gradient and a dense
    Cholesky factorization, :math:`O((n + m)^3)`; batches are factorized together.
    Derivation: chapter 15.

    Parameters
    ----------
    a : tensor of shape (n,) or (B, n)
        Nonnegative weights; zeros allowed.
    b : tensor of shape (m,) or (B, m)
        Nonnegative weights with the same total mass as ``a`` (1e-8 relative). ``a`` and
        ``b`` are converted to ``C``'s dtype and device.
    C : tensor of shape (n, m) or (B, n, m)
        Finite cost; a batch of size 0 gives an empty plan.
    lam : float > 0
        Regularization strength; the plan tends to the exact one as ``lam`` -> 0.
    tol : float, optional
        Default 1e-9 in float64, 1e-5 otherwise. Stop when
        :math:`(\|P\mathbf 1 - a\|_1 + \|P^\top\mathbf 1 - b\|_1)/\text{mass} \le` ``tol``
        (the certificate: the plan is then optimal for the marginals it has).
    max_iter : int
        Newton steps in all (the continuation included). Reaching it, or 20 steps without
        progress, warns :class:`regref.ConvergenceWarning`.
    return_info : bool
        Also return a :class:`regref.Info` (certificate = the relative marginal error above,
        largest over the batch).

    Returns
    -------
    P : tensor of shape (n, m) or (B, n, m)
        The plan, on ``C``'s device and dtype.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import quadratic_ot
    >>> a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> torch.round(quadratic_ot(a, a, C, 4.0), decimals=4)  # P = [f + g - C]_+ / lam
    tensor([[0.3750, 0.1250],
            [0.1250, 0.3750]], dtype=torch.float64)
    >>> quadratic_ot(a, a, C, 0.5)  # small lam: sparse, here the exact plan
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    return _regularized_ot(a, b, C, lam, None, tol, max_iter, return_info, "quadratic_ot")


def _regularized_ot(a, b, C, lam, k, tol, max_iter, return_info, name):
    """Validate, solve the (k-sparse) quadratic dual in float64, return the plan."""
    a_, b_, C_, batched = _problem(a, b, C)
    C_ = C_.expand(len(a_), -1, -1)
    lam = _strength(lam, "lam")
    tol = check_tol(tol, C_.dtype, 1e-9, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    k = C_.shape[1] if k is None else min(check_positive_int(k, "k"), C_.shape[1])
    if len(a_) == 0:
        P, info = torch.zeros_like(C_), Info(n_iter=0, converged=True, certificate=0.0)
    else:
        with torch.no_grad():
            P, _, _, info = _solve_dual(*_f64(a_, b_, C_), lam, k, tol, max_iter, name)
    P = P.to(C_.dtype)
    P = P if batched else P[0]
    return (P, info) if return_info else P


def sparse_ot(a, b, C, lam, k, *, tol=None, max_iter: int = 200, return_info: bool = False):
    r"""Quadratically regularized OT with at most ``k`` nonzeros in every column of the plan.

    After Liu, Puigcerver and Blondel, *Sparsity-Constrained Optimal Transport* (ICLR 2023):

    .. math:: \min_{P \in U(a, b)} \sum_j \Omega_k(P_{:,j}) + \langle P, C\rangle, \qquad
              \Omega_k(p) = \tfrac\lambda2\|p\|_2^2 + \iota\{\|p\|_0 \le k\}.

    The conjugate of :math:`\Omega_k` on :math:`\mathbb R^n_+` keeps the :math:`k` largest
    entries of its argument and applies the squared hinge to them,
    :math:`\Omega_k^*(s) = \frac1{2\lambda}\sum_{l \le k}[s_{(l)}]_+^2`, which gives the
    concave dual

    .. math:: \max_{f, g}\ \langle f, a\rangle + \langle g, b\rangle
              - \sum_j \Omega_k^*\bigl(f + g_j\mathbf 1 - C_{:,j}\bigr),

    and the plan :math:`P_{:,j} = \nabla\Omega_k^*(f + g_j - C_{:,j})`: column :math:`j`
    keeps its top-:math:`k` entries of :math:`[f_i + g_j - C_{ij}]_+/\lambda`. The primal is
    non-convex; the dual solves its convex relaxation, and the returned plan has at most
    ``k`` nonzeros per column by construction. The solve is continued from the quadratic
    solution (:func:`quadratic_ot` at the same ``lam``). Its marginals are exact when the
    top-``k`` sets are unambiguous at the dual optimum; when the optimum sits on a tie (the
    relaxed plan needs more than ``k`` entries in a column) the certificate reports the
    marginal error that remains, and a :class:`regref.ConvergenceWarning` is issued.
    ``k >= n`` is :func:`quadratic_ot`. For ``k = 1`` with uniform weights and
    :math:`n = m` the feasible plans are the assignments, on which the regularizer is
    constant, so the solutions are the unregularized optimal assignments for every
    ``lam``; the dual ascent reaches one on the book's problems, but it can stall at ties
    (seen for some ``lam`` near 1), and then the certificate reports the marginal error
    left and a warning is issued.

    Algorithm and cost: as :func:`quadratic_ot` (semismooth Newton on the dual, restricted to
    the top-:math:`k` supports, with an exact block sweep when the line search finds no
    ascent at a kink), plus a top-:math:`k` selection per column, :math:`O(nm\log k)`.
    Chapter 15 reproduces the paper's :math:`k = 1` and large-:math:`k` limits.

    Parameters
    ----------
    a, b, C, lam, tol, max_iter, return_info
        As in :func:`quadratic_ot`.
    k : int >= 1
        Largest number of nonzeros allowed in a column.

    Returns
    -------
    P : tensor of shape (n, m) or (B, n, m)
        The plan, on ``C``'s device and dtype.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import sparse_ot
    >>> a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> sparse_ot(a, a, C, 4.0, 1)  # one nonzero per column: an assignment
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    return _regularized_ot(a, b, C, lam, k, tol, max_iter, return_info, "sparse_ot")


# ----------------------------------------------------------------------------- Monge gap

def monge_gap(x, T_x, eps=None, **options) -> torch.Tensor:
    r"""Monge gap of a map :math:`T` on samples :math:`x_1, \dots, x_n` (Uscidda & Cuturi 2023).

    .. math:: \mathcal M(T) = \frac1n\sum_i c(x_i, T(x_i))
              - W_c\Bigl(\tfrac1n\textstyle\sum_i\delta_{x_i},\
                         \tfrac1n\sum_i\delta_{T(x_i)}\Bigr),
              \qquad c(x, y) = \|x - y\|_2^2 .

    The coupling :math:`(x_i, T(x_i))_i` is one feasible plan, so :math:`\mathcal M \ge 0`,
    with equality iff :math:`T` moves the samples optimally (the diagonal plan is optimal).
    ``eps=None`` uses the exact OT cost (:func:`exact_ot`, an assignment problem). With
    ``eps > 0`` the OT term is the entropic cost of the paper,
    :math:`W_{c,\varepsilon} = \min_P \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P\,\|\,
    \tfrac1{n^2}\mathbf 1\mathbf 1^\top) = \mathrm{OT}_\varepsilon + \varepsilon(1 + 2\log n)`
    (:func:`regref.ot.sinkhorn_cost`); that gap is only :math:`\ge -\varepsilon\log n` and
    tends to the exact one as :math:`\varepsilon \to 0`.

    The value is differentiable in ``x`` and ``T_x``: the OT term is evaluated at a plan
    (or potentials) computed without autograd, which by the envelope theorem gives its
    gradient. Cost: an :math:`O(n^3)` assignment, or Sinkhorn on the :math:`n \times n` cost.
    Chapter 15 shows it on affine maps and a rotation.

    Parameters
    ----------
    x : tensor of shape (n, d) or (n,)
        Samples of the source measure.
    T_x : tensor of the same shape
        Their images :math:`T(x_i)`.
    eps : float > 0 or None
        Entropic regularization, or ``None`` for the exact gap.
    **options
        Passed to :func:`regref.ot.sinkhorn_cost` when ``eps`` is given (e.g. ``eps_schedule``).

    Returns
    -------
    gap : 0-d tensor
        The Monge gap, on ``x``'s device and dtype.

    Raises
    ------
    ImportError
        With ``eps=None``, if SciPy (the optional extra ``lp``) is missing.

    Examples
    --------
    >>> import torch
    >>> from regref.ot import monge_gap
    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> round(float(monge_gap(x, 2 * x)), 6)  # a gradient of a convex function: optimal
    0.0
    >>> round(float(monge_gap(x, x.flip(0))), 4)  # swapping two points is not
    0.6667
    """
    x = as_float_tensor(x, "x")
    T_x = as_float_tensor(T_x, "T_x", like=x)
    check_ndim(x, "x", (1, 2))
    if x.shape[0] == 0:
        raise ValueError(f"x must be non-empty, got shape {tuple(x.shape)}")
    if tuple(T_x.shape) != tuple(x.shape):
        raise ValueError(f"T_x must have the shape of x, {tuple(x.shape)}, got "
                         f"{tuple(T_x.shape)}")
    check_finite(x, "x")
    check_finite(T_x, "T_x")
    if eps is not None:
        eps = check_positive(eps, "eps")
    X, Y = (x[:, None], T_x[:, None]) if x.ndim == 1 else (x, T_x)
    n = X.shape[0]
    C = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    moved = C.diagonal().mean()
    w = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)
    if eps is None:
        ot_cost = (exact_ot(w, w, C.detach()) * C).sum()
    else:
        ot_cost = sinkhorn_cost(w, w, C, eps, **options) + eps * (1 + 2 * math.log(n))
    return moved - ot_cost
