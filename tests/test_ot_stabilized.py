"""The stabilized (scaling-form) Sinkhorn kernel against the log-domain iteration it replaces.

``regref.ot._sinkhorn_kernel`` iterates the scalings ``s = a / (K t)``, ``t = b / (K^T s)`` of
a kernel ``K = exp(u + v^T - C / eps)`` at absorbed potentials, absorbs them when they grow
and redoes a block of iterations in the log domain when a row or column of ``K`` underflows.
Mathematically its iterates are those of the log-domain iteration
``u = log a - LSE_j(v_j - C_ij / eps)``, ``v = log b - LSE_i(u_i - C_ij / eps)`` from the
same start, so after the same number of iterations the two plans agree to rounding: each
entry is ``exp`` of an exponent of size about ``S`` (``test_ot.expo_scale``), rounded to a few
machine epsilons times ``S``, and the iteration is a contraction, so rounding does not pile
up. The l1 distance of the two plans is therefore bounded by ``tol(dtype, S)`` times the
mass. Agreement with POT's default (exp-domain) solver holds on regref's own marginals
(``test_ot.check_plan``: the certificate makes the plan exactly the entropic plan between
``P 1`` and ``b``).
"""

from __future__ import annotations

import numpy as np
import ot as pot
import pytest
import torch
from conftest import DispatchCounter, load_kernel, tol
from test_ot import check_plan, expo_scale

from regref import ot

F64, F32 = torch.float64, torch.float32


def log_sinkhorn(a, b, C, eps, n_iter, g=None):
    """The log-domain iteration regref used before (the reference), ``n_iter`` iterations
    from ``g`` (zero by default), batched: returns f, g after the last column update."""
    neg_C, log_a, log_b = C / -eps, torch.log(a), torch.log(b)
    v = torch.zeros_like(b) if g is None else g / eps
    for _ in range(n_iter):
        u = log_a - torch.logsumexp(v[:, None, :] + neg_C, dim=2)
        v = log_b - torch.logsumexp(u[:, :, None] + neg_C, dim=1)
    return eps * u, eps * v


def plan(f, g, C, eps):
    return torch.exp((f[..., :, None] + g[..., None, :] - C) / eps)


def clouds(seed, n, m, B=1, shift=0.5, zeros=False, outlier=0.0, dtype=F64):
    """Gaussian clouds ``shift`` apart, random weights (a zero in each when ``zeros``), the
    last target moved ``outlier`` further (its column of exp(-C / eps) underflows)."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((B, n, 2)), rng.standard_normal((B, m, 2)) + shift
    y[:, -1] += outlier
    a, b = rng.uniform(0.1, 1.0, (B, n)), rng.uniform(0.1, 1.0, (B, m))
    if zeros:
        a[:, 1], b[:, 0] = 0.0, 0.0
    a, b = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
    C = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    return [torch.as_tensor(t).to(dtype) for t in (a, b, C)]


@pytest.fixture
def fallbacks(monkeypatch):
    """Counts the blocks the kernel redoes in the log domain (calls of its helper)."""
    calls = []
    helper = ot._sinkhorn_log_steps

    def counted(*args):
        calls.append(args[-1])
        return helper(*args)

    monkeypatch.setattr(ot, "_sinkhorn_log_steps", counted)
    return calls


def np64(t):
    return t.detach().cpu().double().numpy()


def assert_same_plan(f, g, f_ref, g_ref, a, b, C, eps):
    """l1 distance of the two plans, per problem, within the rounding of their exponents."""
    S = expo_scale(np64(a).ravel(), np64(b).ravel(), np64(C), eps)
    P, P_ref = plan(f, g, C, eps).double(), plan(f_ref, g_ref, C, eps).double()
    dist = (P - P_ref).abs().sum((-2, -1)) / a.double().sum(-1)
    assert float(dist.max()) <= tol(f.dtype, S), (float(dist.max()), tol(f.dtype, S))


# --- 1. the same iterates as the log domain, across eps ----------------------------------------

@pytest.mark.parametrize("frac", [1.0, 0.1, 0.01, 1e-3])
@pytest.mark.parametrize("shape", [(12, 12), (10, 8)], ids=["square", "n>m"])
def test_kernel_equals_log_domain_iteration(frac, shape, fallbacks):
    # at 1e-3 x median an outlying target makes its column of K underflow: the fallback
    B = 2 if frac >= 0.01 else 1  # (the log-domain reference is slow at 1e-3)
    a, b, C = clouds(1, *shape, B=B, outlier=3.0 if frac < 0.01 else 0.0)
    eps = frac * float(C.median())
    f, g, n_iter, err = ot._sinkhorn_kernel(a, b, C, eps, torch.zeros_like(b), 1e-9,
                                            100_000, 10)
    assert bool((err <= 1e-9).all())
    assert bool(fallbacks) == (frac < 0.01), fallbacks
    f_ref, g_ref = log_sinkhorn(a, b, C, eps, n_iter)
    assert_same_plan(f, g, f_ref, g_ref, a, b, C, eps)
    for i in range(B):  # the certificate is true, and POT agrees on regref's own marginals
        check_plan(plan(f[i], g[i], C[i], eps), np64(a[i]), np64(b[i]), np64(C[i]), eps, F64,
                   oracle=frac > 1e-3)  # POT's log solver takes minutes at C/eps ~ 1e4


def test_public_solver_takes_the_fallback(fallbacks):
    a, b, C = clouds(1, 10, 8, outlier=6.0)
    eps = 1e-3 * float(C.median())
    P, info = ot.sinkhorn(a[0], b[0], C[0], eps, max_iter=100_000, return_info=True)
    assert fallbacks and info.converged
    check_plan(P, np64(a[0]), np64(b[0]), np64(C[0]), eps, F64, info=info, oracle=False)
    # with eps-scaling the potentials arrive warm and no block needs the log domain
    fallbacks.clear()
    sched = np.geomspace(float(C.max()), eps, 8)
    P_s, info_s = ot.sinkhorn(a[0], b[0], C[0], eps, eps_schedule=sched, return_info=True)
    assert not fallbacks and info_s.converged and info_s.n_iter < info.n_iter
    assert float((P_s - P).abs().sum()) <= 5 * 2e-9  # both certified to 1e-9


def test_matches_pot_default_solver():
    # POT's default is the plain scaling iteration: on regref's own marginals, the same plan
    a, b, C = clouds(4, 30, 20)
    eps = 0.05 * float(C.median())
    P = ot.sinkhorn(a[0], b[0], C[0], eps)
    r = np64(P).sum(1)
    P_pot = pot.sinkhorn(r, np64(b[0]), np64(C[0]), eps, stopThr=1e-14, numItermax=100_000)
    S = expo_scale(r, np64(b[0]), np64(C[0]), eps)
    assert np.abs(np64(P) - P_pot).sum() <= tol(F64, S) + 1e-13 * np.sqrt(C.numel())


# --- 2. absorption, float32, batches, zero weights ----------------------------------------------

def test_scalings_are_absorbed_float32():
    # float32: scalings leave [e^-21.8, e^21.8] within a few blocks at 0.02 x median
    a, b, C = clouds(5, 20, 15, dtype=F32)
    eps = 0.02 * float(C.median())
    with DispatchCounter() as counter:
        f, g, n_iter, err = ot._sinkhorn_kernel(a, b, C, eps, torch.zeros_like(b), 1e-5,
                                                100_000, 10)
    absorptions = counter.ops.count("exp_") - 1  # K = exp_(u + v^T - C / eps), first included
    assert absorptions >= 1
    assert f.dtype == F32 and bool((err <= 1e-5).all())
    f_ref, g_ref = log_sinkhorn(a.double(), b.double(), C.double(), eps, n_iter)
    assert_same_plan(f, g, f_ref.float(), g_ref.float(), a, b, C, eps)
    check_plan(plan(f[0], g[0], C[0], eps), np64(a[0]), np64(b[0]), np64(C[0]), eps, F32)


def test_batch_with_shared_cost_zero_weights_equals_looped():
    a, b, C = clouds(6, 14, 9, B=3, zeros=True)
    C = C[0]  # one cost, three pairs of weights (each with a zero)
    eps = 0.05 * float(C.median())
    P, info = ot.sinkhorn(a, b, C, eps, tol=1e-11, return_info=True)
    assert P.shape == (3, 14, 9) and info.converged
    assert bool((P[:, 1, :] == 0).all()) and bool((P[:, :, 0] == 0).all())
    f, g = ot.sinkhorn_potentials(a, b, C, eps, tol=1e-11)
    assert bool(torch.isneginf(f[:, 1]).all()) and bool(torch.isneginf(g[:, 0]).all())
    f_ref, g_ref = log_sinkhorn(a, b, C[None], eps, info.n_iter)
    assert_same_plan(f, g, f_ref, g_ref, a, b, C[None].expand(3, -1, -1), eps)
    for i in range(3):
        P_i = ot.sinkhorn(a[i], b[i], C, eps, tol=1e-11)
        # each problem stops at its own check: both certified to 1e-11 (SENSITIVITY 5)
        assert float((P_i - P[i]).abs().sum()) <= 5 * 2e-11


def test_kernel_pastes_with_its_helper_and_falls_back():
    kernel = load_kernel(ot._sinkhorn_kernel, ot._sinkhorn_log_steps)
    a, b, C = clouds(1, 10, 8, outlier=3.0)
    eps = 1e-3 * float(C.median())
    f, g, n_iter, err = kernel(a, b, C, eps, torch.zeros_like(b), 1e-9, 100_000, 10)
    f_ref, g_ref, n_ref, err_ref = ot._sinkhorn_kernel(a, b, C, eps, torch.zeros_like(b),
                                                       1e-9, 100_000, 10)
    assert n_iter == n_ref and torch.equal(f, f_ref) and torch.equal(g, g_ref)


def _symmetric_log_domain(a, C, eps, tol, check_every=10):
    """The symmetric averaged update in the log domain (the reference for the scaling form)."""
    neg_C, log_a, u, n_iter = C / -eps, torch.log(a), torch.zeros_like(a), 0
    while True:
        for _ in range(check_every):
            u = (u + log_a - torch.logsumexp(neg_C + u[None, :], dim=1)) / 2
        n_iter += check_every
        err = (torch.exp(u + torch.logsumexp(neg_C + u[None, :], dim=1)) - a).abs().sum()
        if float(err / a.sum()) <= tol:
            return u, n_iter


@pytest.mark.parametrize("case", ["uniform", "spread weights", "zero weights"])
def test_symmetric_term_in_scaling_form_matches_the_log_domain(case):
    """The divergence's self terms run the averaged update as scalings (absorbing, and
    falling back to the log domain where K s underflows): the same iterates as the log
    domain, so the same iteration count and the same value to rounding. With weights down
    to 1e-250 the potentials reach -eps * 300 and K's rows underflow, which must not break
    the solve; zero weights have no potential at all."""
    rng = np.random.default_rng(7)
    x = torch.as_tensor(np.concatenate([rng.standard_normal((12, 2)),
                                        rng.standard_normal((8, 2)) + 4]))
    a = torch.full((20,), 1 / 20, dtype=F64)
    if case == "spread weights":
        a = torch.as_tensor(10.0 ** -rng.uniform(0, 250, 20))
    if case == "zero weights":
        a[[3, 15]] = 0.0
    a = a / a.sum()
    C, eps = ot._sq_dist(x, x), 0.05
    value, info = ot._symmetric_cost(a, C, eps, 1e-12, 100_000, 10)
    u, n_iter = _symmetric_log_domain(a, C, eps, 1e-12)
    assert info.converged and info.n_iter == n_iter
    f = eps * u
    expected = ot._dual_value(a[None], a[None], C[None], f[None], f[None], eps)[0]
    assert float(abs(value - expected)) <= 1e-12 * max(1.0, float(abs(expected)))
