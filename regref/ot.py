r"""Optimal transport with entropic regularization: a stable, batched Sinkhorn.

Entropic OT (POT's convention): for weights :math:`a \in \mathbb R^n_+`,
:math:`b \in \mathbb R^m_+` of equal mass and a cost :math:`C \in \mathbb R^{n\times m}`,

.. math:: \mathrm{OT}_\varepsilon(a, b) = \min_{P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
          \langle P, C\rangle + \varepsilon\sum_{ij} P_{ij}(\log P_{ij} - 1),

whose dual is :math:`\max_{f, g} \langle f, a\rangle + \langle g, b\rangle
- \varepsilon\sum_{ij} e^{(f_i + g_j - C_{ij})/\varepsilon}`, with the optimal plan
:math:`P_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}`. Sinkhorn's algorithm maximizes the
dual one block at a time; in the log domain (potentials, log-sum-exp) it is stable for any
:math:`\varepsilon > 0`. Derivations: chapter 15.
"""

from __future__ import annotations

import math
import warnings

import torch

from ._core import ConvergenceWarning, Info, as_float_tensor, check_finite

__all__ = [
    "sinkhorn",
    "sinkhorn_potentials",
    "sinkhorn_cost",
    "sinkhorn_divergence",
    "sinkhorn_points",
]


# ----------------------------------------------------------------------------- validation

def _eps(eps) -> float:
    e = float(eps)
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    return e


def _weights(w, name: str, like: torch.Tensor, size: int, batch: int | None):
    w = check_finite(as_float_tensor(w, name, like=like), name)
    bad_batch = w.ndim == 2 and batch not in (None, w.shape[0])
    if w.ndim not in (1, 2) or w.shape[-1] != size or bad_batch:
        want = f"({size},)" + (f" or ({batch}, {size})" if batch else f" or (B, {size})")
        raise ValueError(f"{name} must have shape {want}, got {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be nonnegative")
    return w


def _problem(a, b, C):
    """Validate and broadcast to a batch: returns a (B, n), b (B, m), C (B or 1, n, m), batched."""
    C = check_finite(as_float_tensor(C, "C"), "C")
    if C.ndim not in (2, 3) or min(C.shape[-2:]) == 0:
        raise ValueError(f"C must be a non-empty (n, m) or (B, n, m) matrix, got {tuple(C.shape)}")
    n, m = C.shape[-2:]
    batch = C.shape[0] if C.ndim == 3 else None
    a = _weights(a, "a", C, n, batch)
    b = _weights(b, "b", C, m, batch)
    batched = C.ndim == 3 or a.ndim == 2 or b.ndim == 2
    B = max(C.shape[0] if C.ndim == 3 else 1, a.shape[0] if a.ndim == 2 else 1,
            b.shape[0] if b.ndim == 2 else 1)
    if a.ndim == 2 and b.ndim == 2 and a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b have different batch sizes {a.shape[0]} and {b.shape[0]}")
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
    if tol is None:  # float32 cannot certify marginals much below 1e-6 of the mass
        tol = 1e-9 if dtype == torch.float64 else 1e-5
    tol = float(tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol}")
    for name, v in (("max_iter", max_iter), ("check_every", check_every)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    return tol, int(max_iter), int(check_every)


# ----------------------------------------------------------------------------- the solver

def _log(w: torch.Tensor) -> torch.Tensor:
    return torch.where(w > 0, torch.log(w.clamp(min=torch.finfo(w.dtype).tiny)), -torch.inf)


def _sinkhorn_log(a, b, lse_rows, lse_cols, eps, tol, max_iter, check_every, schedule, g):
    r"""Log-domain Sinkhorn on the potentials scaled by :math:`1/\varepsilon`: :math:`u`, :math:`v`.

    ``lse_rows(v, eps)`` returns :math:`\mathrm{LSE}_j(v_j - C_{ij}/\varepsilon)` (shape (B, n)),
    ``lse_cols(u, eps)`` the same over :math:`i`. Each iteration is
    :math:`u = \log a - \mathrm{LSE}_j(v_j - C_{ij}/\varepsilon)`, then
    :math:`v = \log b - \mathrm{LSE}_i(u_i - C_{ij}/\varepsilon)`, so :math:`P^\top\mathbf 1 = b`
    holds after every iteration. Every ``check_every`` iterations the row error
    :math:`\|P\mathbf 1 - a\|_1` comes for free from the next row log-sum-exp (one host
    sync per check). ``schedule`` is a decreasing list of strengths solved first, each
    warm-starting the next (:math:`\varepsilon`-scaling). Returns ``(f, g, info)``.
    """
    la, lb = _log(a), _log(b)
    mass = a.sum(1)
    n_iter, err = 0, torch.full_like(mass, torch.inf)
    for k, e in enumerate(list(schedule) + [eps]):
        last = k == len(schedule)
        stage_tol = tol if last else max(tol, 1e-3)  # intermediate stages: rough is enough
        v = g / e
        s = lse_rows(v, e)
        while True:
            steps = min(check_every, max(max_iter - n_iter, 1))  # never past max_iter
            for _ in range(steps):
                u = la - s
                v = lb - lse_cols(u, e)
                s = lse_rows(v, e)
            n_iter += steps
            err = (torch.exp(u + s) - a).abs().sum(1) / mass  # row marginal error, relative
            if bool((err <= stage_tol).all()) or n_iter >= max_iter:
                break
        f, g = e * u, e * v
    rel = float(err.amax())
    info = Info(n_iter=n_iter, converged=rel <= tol, certificate=rel)
    if not info.converged:
        warnings.warn(f"sinkhorn did not reach a marginal error of {tol:g} in {max_iter} "
                      f"iterations (reached {rel:.3g}); increase max_iter or use eps_schedule",
                      ConvergenceWarning, stacklevel=3)
    return f, g, info


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


def _dense_ops(C: torch.Tensor):
    r"""The two log-sum-exps of a dense cost; :math:`-C/\varepsilon` is formed once per strength."""
    cache: dict[float, torch.Tensor] = {}

    def kernel(e):
        if e not in cache:
            cache.clear()
            cache[e] = C / -e
        return cache[e]

    def lse_rows(v, e):  # LSE_j (v_j - C_ij / e), batched
        return torch.logsumexp(v[:, None, :] + kernel(e), dim=2)

    def lse_cols(u, e):
        return torch.logsumexp(u[:, :, None] + kernel(e), dim=1)

    return lse_rows, lse_cols


def sinkhorn_potentials(a, b, C, eps, *, tol=None, max_iter: int = 10_000,
                        check_every: int = 10, eps_schedule=None, return_info: bool = False):
    r"""Optimal dual potentials :math:`(f, g)` of entropic OT, by log-domain Sinkhorn.

    See :func:`sinkhorn` for the problem and the options. Each iteration reads :math:`C`
    twice (two log-sum-exps over :math:`B n m` entries).

    Returns
    -------
    f : tensor of shape (n,) or (B, n); g : tensor of shape (m,) or (B, m)
        (and a :class:`regref.Info` with ``return_info=True``). Where a weight is zero its
        potential is :math:`-\infty`.
    """
    a, b, C, batched = _problem(a, b, C)
    f, g, info = _potentials(a, b, C, eps, tol, max_iter, check_every, eps_schedule)
    if not batched:
        f, g = f[0], g[0]
    return (f, g, info) if return_info else (f, g)


def _potentials(a, b, C, eps, tol=None, max_iter=10_000, check_every=10, eps_schedule=None):
    """:func:`sinkhorn_potentials` on validated, batched input: (B, n), (B, m), (B or 1, n, m)."""
    eps = _eps(eps)
    tol, max_iter, check_every = _options(tol, max_iter, check_every, C.dtype)
    return _sinkhorn_log(a, b, *_dense_ops(C), eps, tol, max_iter, check_every,
                         _schedule(eps_schedule, eps), torch.zeros_like(b))


def sinkhorn(a, b, C, eps, *, tol=None, max_iter: int = 10_000, check_every: int = 10,
             eps_schedule=None, return_info: bool = False):
    r"""Entropic optimal transport plan, by log-domain Sinkhorn (batched).

    .. math:: P = \arg\min_{P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
              \langle P, C\rangle + \varepsilon\sum_{ij} P_{ij}(\log P_{ij} - 1),
              \qquad P_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}.

    Matches POT ``ot.sinkhorn(a, b, C, eps)``. The potentials are updated in the log domain,
    :math:`f_i = \varepsilon\log a_i - \varepsilon\,\mathrm{LSE}_j((g_j - C_{ij})/\varepsilon)`
    and symmetrically for :math:`g`, so no kernel :math:`e^{-C/\varepsilon}` underflows:
    :math:`\varepsilon = 10^{-3}` with costs of order 1 is fine. The returned plan is the one
    after the last (column) half-step, so :math:`P^\top\mathbf 1 = b` to rounding.

    Parameters
    ----------
    a : tensor of shape (n,) or (B, n)
        Nonnegative weights (zeros allowed).
    b : tensor of shape (m,) or (B, m)
        Nonnegative weights with the same total mass as ``a`` (within 1e-8 relative).
    C : tensor of shape (n, m) or (B, n, m)
        Cost (shared by the batch when 2-D).
    eps : float
        Regularization ``> 0``.
    tol : float, optional
        Stop when :math:`\|P\mathbf 1 - a\|_1 \le` ``tol`` times the mass, for every problem.
        Default ``1e-9`` in float64, ``1e-5`` in float32.
    max_iter, check_every : int
        Iteration budget; the error is checked (one host synchronization) every
        ``check_every`` iterations.
    eps_schedule : sequence of float, optional
        Decreasing strengths above ``eps`` solved first, each warm-starting the next
        (:math:`\varepsilon`-scaling), e.g. a geometric sequence from ``C.max()``.
    return_info : bool
        Also return :class:`regref.Info`; ``certificate`` is the largest relative row-marginal
        :math:`\ell_1` error.

    Returns
    -------
    P : tensor of shape (n, m) or (B, n, m)
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


def sinkhorn_cost(a, b, C, eps, **options) -> torch.Tensor:
    r"""The entropic OT value :math:`\mathrm{OT}_\varepsilon(a, b)`, differentiable.

    .. math:: \mathrm{OT}_\varepsilon
              = \langle P, C\rangle + \varepsilon\sum_{ij}P_{ij}(\log P_{ij} - 1)
              = \langle f, a\rangle + \langle g, b\rangle - \varepsilon\,\textstyle\sum_{ij} P_{ij}.

    The potentials are computed without autograd; the value is the dual objective at them,
    so gradients follow the envelope theorem (:math:`\nabla_C = P`, :math:`\nabla_a = f`,
    :math:`\nabla_b = g`) instead of differentiating through the iterations.
    ``options`` are those of :func:`sinkhorn`.

    Returns
    -------
    tensor of shape () or (B,)
    """
    a_, b_, C_, batched = _problem(a, b, C)
    eps = _eps(eps)
    with torch.no_grad():
        f, g, _ = _potentials(a_, b_, C_, eps, **options)
    value = _dual_value(a_, b_, C_, f, g, eps)
    return value if batched else value[0]


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
    return x, y, a, b


def sinkhorn_divergence(x, y, eps, a=None, b=None, **options) -> torch.Tensor:
    r"""Debiased Sinkhorn divergence between point clouds, squared Euclidean cost.

    .. math:: S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
              - \tfrac12\mathrm{OT}_\varepsilon(\alpha, \alpha)
              - \tfrac12\mathrm{OT}_\varepsilon(\beta, \beta),

    with :math:`C_{ij} = \|x_i - y_j\|^2` and uniform weights unless given. The debiasing
    removes the entropic blur: :math:`S_\varepsilon \ge 0`, with equality iff the measures
    coincide (Feydy et al., 2019). Differentiable in ``x``, ``y``, ``a``, ``b``.
    """
    x, y, a, b = _points(x, y, a, b)
    return (sinkhorn_cost(a, b, _sq_dist(x, y), eps, **options)
            - sinkhorn_cost(a, a, _sq_dist(x, x), eps, **options) / 2
            - sinkhorn_cost(b, b, _sq_dist(y, y), eps, **options) / 2)


def sinkhorn_points(x, y, eps, a=None, b=None, *, chunk: int = 4096, tol=None,
                    max_iter: int = 10_000, check_every: int = 10, eps_schedule=None,
                    return_info: bool = False):
    r"""Sinkhorn potentials for point clouds with :math:`C_{ij} = \|x_i - y_j\|^2`, streamed.

    The cost matrix is never stored: each log-sum-exp is computed over blocks of
    ``chunk`` rows (or columns), recomputing the cost block
    :math:`\|x_i\|^2 + \|y_j\|^2 - 2x_i^\top y_j` by one small matrix product. Memory is
    :math:`O(\texttt{chunk}\cdot\max(n, m))` instead of :math:`O(nm)`, so
    :math:`n = m = 10^5` fits on a GPU; the work per iteration is :math:`2nm` exponentials.
    Equals :func:`sinkhorn_potentials` on the dense cost.

    Returns
    -------
    f : tensor of shape (n,); g : tensor of shape (m,) (and :class:`regref.Info`)
    """
    x, y, a, b = _points(x, y, a, b)
    eps = _eps(eps)
    tol, max_iter, check_every = _options(tol, max_iter, check_every, x.dtype)
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    b = _same_mass(a[None], b[None])[0]

    def blocked_lse(p, q, w, e):  # LSE_j (w_j - |p_i - q_j|^2 / e) for every i, by row blocks
        return torch.cat([torch.logsumexp(w[None, :] - _sq_dist(p[i:i + chunk], q) / e, dim=1)
                          for i in range(0, len(p), chunk)])

    def lse_rows(v, e):
        return blocked_lse(x, y, v[0], e)[None]

    def lse_cols(u, e):
        return blocked_lse(y, x, u[0], e)[None]

    f, g, info = _sinkhorn_log(a[None], b[None], lse_rows, lse_cols, eps, tol, max_iter,
                               check_every, _schedule(eps_schedule, eps), torch.zeros_like(b[None]))
    return (f[0], g[0], info) if return_info else (f[0], g[0])
