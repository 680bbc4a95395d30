"""Oracle, property and bad-input tests of the Sinkhorn part of regref.ot.

Oracles: POT (``ot.sinkhorn(..., method="sinkhorn_log")`` at ``stopThr=1e-13`` for entropic
plans, ``ot.emd2`` for the unregularized cost) and independent numpy formulas for the primal
and dual objectives. Tolerances come from three facts.

* **What the certificate proves.** regref's plan has the Gibbs form
  ``P_ij = exp((f_i + g_j - C_ij) / eps)`` and, after its last (column) half-step, column sums
  ``b``. By Sinkhorn's theorem it is therefore *exactly* the entropic plan between its own
  marginals, ``r = P 1`` and ``b``; the certificate ``||r - a||_1 / mass <= tol`` says how far
  ``r`` is from ``a``. So regref's plan must agree with POT run on ``(r, b)`` to rounding (and
  with POT on ``(a, b)`` up to the plan's sensitivity to its marginal).
* **Rounding in the log domain.** Each plan entry is ``exp`` of an exponent of size about
  ``S = max C / eps + log(nm) + max |log a| + max |log b|``; its relative rounding error is a
  few machine epsilons times ``S`` (``expo_scale``).
* **Primal - dual.** At ``P = exp((f + g - C) / eps)`` with exact column sums,
  ``<P, C> + eps sum P (log P - 1) - D(f, g) = <f, P 1 - a>``, at most ``||f||_inf`` times the
  row error.
"""

from __future__ import annotations

import warnings

import numpy as np
import ot as pot  # POT, the peer (regref.ot is imported below as ``ot``)
import pytest
import torch
from conftest import tol
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import xlogy

import regref
from regref import ot

F64, F32 = torch.float64, torch.float32
# sinkhorn's documented defaults (tol=None): ||P 1 - a||_1 <= tol * mass
DEFAULT_TOL = {torch.float64: 1e-9, torch.float32: 1e-5}
TOL64 = DEFAULT_TOL[torch.float64]
POT_TOL = 1e-13  # the oracle's stopThr (l2 column error)
# How much more the plan may move (l1, relative to the mass) than the marginal error that moved
# it, on the moderate problems below (observed: at most 3; 5 leaves a margin of under 2). Used
# where two plans, each certified
# only to ``tol``, are compared (regref vs POT on the requested marginals, batched vs looped,
# streamed vs dense); never where regref is compared with POT on regref's own marginals.
SENSITIVITY = 5.0
SHAPES = [(12, 12), (25, 14), (9, 31)]
SHAPE_IDS = ["square", "n>m", "n<m"]


# --- problems and oracles ------------------------------------------------------------------------


def sq_dist(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def problem(rng, n, m, cost="euclid", mass=1.0, cmax=1.0):
    """Random weights (no zeros) with total ``mass`` and a cost in [0, cmax]."""
    if cost == "euclid":
        x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2)) + 0.5
        C = sq_dist(x, y)
    else:
        C = rng.uniform(0.0, 1.0, (n, m))
    C = cmax * C / C.max()
    a, b = rng.uniform(0.1, 1.0, n), rng.uniform(0.1, 1.0, m)
    return mass * a / a.sum(), mass * b / b.sum(), C


def expo_scale(a, b, C, reg):
    """Size of the exponents (f_i + g_j - C_ij) / eps the log domain rounds (module docstring)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    logs = [np.abs(np.log(w[w > 0])).max() for w in (a, b)]
    return float(np.abs(C).max() / reg + np.log(a.size * b.size) + sum(logs))


def pot_plan(a, b, C, reg):
    """POT's log-domain Sinkhorn at its tightest, with its convergence checked here. ``b`` is
    rescaled to ``a``'s mass (they differ by rounding at most, e.g. float32 weights), since
    no plan meets both marginals to 1e-13 otherwise."""
    a, b, C = (np.asarray(v, dtype=np.float64) for v in (a, b, C))
    b = b * (a.sum() / b.sum())
    P = pot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=POT_TOL, numItermax=20_000)
    mass = a.sum()
    assert np.abs(P.sum(1) - a).sum() <= 100 * POT_TOL * mass, "oracle did not converge"
    assert np.abs(P.sum(0) - b).sum() <= 100 * POT_TOL * mass, "oracle did not converge"
    return P


def primal(P, C, reg):
    """<P, C> + eps sum P (log P - 1), with 0 log 0 = 0."""
    P = np.asarray(P, dtype=np.float64)
    return float((P * C).sum() + reg * (xlogy(P, P) - P).sum())


def dual(a, b, C, reg, f, g):
    """<f, a> + <g, b> - eps sum exp((f + g - C) / eps) (numpy, float64)."""
    return float(f @ a + g @ b - reg * np.exp((f[:, None] + g[None, :] - C) / reg).sum())


def entropy(w):
    w = w / w.sum()
    return float(-xlogy(w, w).sum())


def f64(t):
    return t.detach().cpu().double().numpy()


def row_error(P, a):
    """The certificate, recomputed: ||P 1 - a||_1 / mass (float64, from the returned plan)."""
    return float(np.abs(f64(P).sum(-1) - a).sum(-1).max() / a.sum(-1).min())


def check_plan(P, a, b, C, reg, dtype, tol_=None, info=None, oracle=True):
    """Shape/dtype, finiteness, exact column marginal, row marginal within ``tol_`` (and the
    certificate equal to it), and (``oracle``) agreement with POT on regref's own marginals."""
    tol_ = DEFAULT_TOL[dtype] if tol_ is None else tol_
    assert isinstance(P, torch.Tensor) and P.dtype == dtype and P.shape == C.shape
    assert torch.isfinite(P).all() and (P >= 0).all()
    Pn = f64(P)
    S = expo_scale(a, b, C, reg)
    # column marginal: every entry carries a relative rounding error of a few eps * S
    assert np.all(np.abs(Pn.sum(0) - b) <= tol(dtype, S + len(a)) * b)
    cert = row_error(P, a)
    assert cert <= tol_ * (1 + 1e-6) + tol(dtype, S + len(b))
    if info is not None:
        assert isinstance(info, regref.Info) and info.converged
        assert abs(info.certificate - cert) <= tol(dtype, S + len(b))
        assert info.certificate <= tol_
    # exact relation: regref's plan is the entropic plan between its own marginals (P^T 1 = b
    # up to rounding; taking both from P keeps the oracle's masses equal in float32 too)
    if not oracle:
        return Pn
    Q = pot_plan(Pn.sum(1), Pn.sum(0), C, reg)
    assert np.all(np.abs(Pn - Q) <= 4 * tol(dtype, S) * Q + 1e3 * POT_TOL * Q.max())
    return Pn


# --- 1. sinkhorn against POT ---------------------------------------------------------------------


@pytest.mark.parametrize("n, m", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reg", [0.5, 0.05])
@pytest.mark.parametrize("cost", ["euclid", "uniform"])
def test_sinkhorn_matches_pot_float64(rng, n, m, reg, cost):
    a, b, C = problem(rng, n, m, cost)
    P, info = ot.sinkhorn(a, b, C, reg, return_info=True)  # numpy in, float64 tensor out
    Pn = check_plan(P, a, b, C, reg, F64, info=info)
    # and POT on the requested marginals, up to the plan's sensitivity to its marginal
    Q = pot_plan(a, b, C, reg)
    assert np.abs(Pn - Q).sum() <= SENSITIVITY * TOL64 * a.sum()


@pytest.mark.parametrize("mass", [1e-3, 7.0])
def test_sinkhorn_tolerance_is_relative_to_the_mass(rng, mass):
    a, b, C = problem(rng, 15, 11, mass=mass)
    P, info = ot.sinkhorn(a, b, C, 0.1, return_info=True)
    check_plan(P, a, b, C, 0.1, F64, info=info)


@pytest.mark.parametrize("n, m", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reg", [0.5, 0.05])
def test_sinkhorn_matches_pot_float32(rng, n, m, reg):
    a, b, C = problem(rng, n, m)
    at, bt, Ct = (torch.as_tensor(v).to(F32) for v in (a, b, C))
    ad, bd, Cd = (t.double().numpy() for t in (at, bt, Ct))  # the rounded numbers, for oracles
    P, info = ot.sinkhorn(at, bt, Ct, reg, return_info=True)
    assert P.dtype == F32 and P.device == Ct.device
    Pn = check_plan(P, ad, bd, Cd, reg, F32, info=info)
    Q = pot_plan(ad, bd, Cd, reg)
    assert np.abs(Pn - Q).sum() <= SENSITIVITY * DEFAULT_TOL[F32] * ad.sum()


def test_sinkhorn_potentials_give_the_plan(rng, dtype):
    a, b, C = problem(rng, 14, 9)
    at, bt, Ct = (torch.as_tensor(v).to(dtype) for v in (a, b, C))
    f, g = ot.sinkhorn_potentials(at, bt, Ct, 0.1)
    assert f.shape == (14,) and g.shape == (9,) and f.dtype == g.dtype == dtype
    P = ot.sinkhorn(at, bt, Ct, 0.1)
    Pf = torch.exp((f.double()[:, None] + g.double()[None, :] - Ct.double()) / 0.1)
    S = expo_scale(a, b, C, 0.1)
    assert torch.all((P.double() - Pf).abs() <= 4 * tol(dtype, S) * Pf)
    # (f, g) maximizes the dual: the numpy dual at (f, g) equals the primal at the plan
    fn, gn, Cn = f64(f), f64(g), Ct.double().numpy()
    an, bn = at.double().numpy(), bt.double().numpy()
    gap = abs(primal(Pf.numpy(), Cn, 0.1) - dual(an, bn, Cn, 0.1, fn, gn))
    err = row_error(Pf, an)
    assert gap <= (np.abs(fn).max() + 1) * (err + tol(dtype, S)) * an.sum() + tol(dtype, S)


# --- 2. batching ---------------------------------------------------------------------------------


def batch_problem(rng, B=4, n=10, m=13):
    probs = [problem(rng, n, m, cost=("euclid", "uniform")[k % 2], mass=1.0 + k)
             for k in range(B)]
    return tuple(np.stack(v) for v in zip(*probs, strict=True))


def test_batched_equals_loop(rng, dtype):
    a, b, C = batch_problem(rng)
    at, bt, Ct = (torch.as_tensor(v).to(dtype) for v in (a, b, C))
    tight = 1e-12 if dtype == F64 else 1e-5
    P, info = ot.sinkhorn(at, bt, Ct, 0.1, tol=tight, return_info=True)
    f, g = ot.sinkhorn_potentials(at, bt, Ct, 0.1, tol=tight)
    cost = ot.sinkhorn_cost(at, bt, Ct, 0.1, tol=tight)
    assert P.shape == C.shape and f.shape == a.shape and g.shape == b.shape
    assert cost.shape == (len(a),) and P.dtype == f.dtype == cost.dtype == dtype
    # the certificate is the largest relative row error over the batch
    errs = [row_error(P[k], at[k].double().numpy()) for k in range(len(a))]
    S = max(expo_scale(a[k], b[k], C[k], 0.1) for k in range(len(a)))
    assert abs(info.certificate - max(errs)) <= tol(dtype, S + 13)
    for k in range(len(a)):
        Pk = ot.sinkhorn(at[k], bt[k], Ct[k], 0.1, tol=tight)
        assert Pk.shape == C[k].shape
        # both within ``tight`` of the marginals: equal up to the plan's sensitivity
        diff = float((P[k].double() - Pk.double()).abs().sum())
        assert diff <= SENSITIVITY * max(tight, tol(dtype, S)) * a[k].sum()
        ck = ot.sinkhorn_cost(at[k], bt[k], Ct[k], 0.1, tol=tight)
        assert abs(float(cost[k]) - float(ck)) <= SENSITIVITY * max(tight, tol(dtype, S)) * (
            abs(float(ck)) + a[k].sum())


def test_shared_cost_with_batched_weights(rng):
    a, b, C = batch_problem(rng, B=3, n=8, m=6)
    C0 = C[0]
    P, info = ot.sinkhorn(a, b, C0, 0.2, tol=1e-12, return_info=True)
    assert P.shape == (3, 8, 6)
    PB = ot.sinkhorn(a, b, np.broadcast_to(C0, C.shape).copy(), 0.2, tol=1e-12)
    for k in range(3):
        check_plan(P[k], a[k], b[k], C0, 0.2, F64, tol_=1e-12)
        Pk = ot.sinkhorn(a[k], b[k], C0, 0.2, tol=1e-12)
        torch.testing.assert_close(P[k], Pk, rtol=SENSITIVITY * 1e-12, atol=1e-15)
        torch.testing.assert_close(P[k], PB[k], rtol=SENSITIVITY * 1e-12, atol=1e-15)
    fg = ot.sinkhorn_potentials(a, b, C0, 0.2)
    assert fg[0].shape == (3, 8) and fg[1].shape == (3, 6)
    assert ot.sinkhorn_cost(a, b, C0, 0.2).shape == (3,)


# --- 3. small and large eps ----------------------------------------------------------------------


@pytest.mark.parametrize("cmax", [1.0, 10.0])
def test_small_eps_is_stable_float64(rng, cmax):
    # eps = 1e-3 with costs up to 10: exp(-C/eps) = exp(-1e4) underflows; the log domain must not
    a, b, C = problem(rng, 16, 12, cmax=cmax)
    reg = 1e-3
    sched = np.geomspace(C.max(), reg, 12)
    P, info = ot.sinkhorn(a, b, C, reg, eps_schedule=sched, max_iter=100_000, return_info=True)
    check_plan(P, a, b, C, reg, F64, info=info, oracle=cmax == 1.0)  # POT is slow at C/eps=1e4
    f, g = ot.sinkhorn_potentials(a, b, C, reg, eps_schedule=sched, max_iter=100_000)
    # the potentials give the same plan (same deterministic solve), to rounding
    Pf = np.exp((f64(f)[:, None] + f64(g)[None, :] - C) / reg)
    assert np.abs(Pf - f64(P)).sum() <= tol(F64, expo_scale(a, b, C, reg)) * C.size
    c = ot.sinkhorn_cost(a, b, C, reg, eps_schedule=sched, max_iter=100_000)
    # the primal value at the plan, up to ||f||_inf times the row error (module docstring)
    gap = float(np.abs(f64(f)).max()) * info.certificate + 1e-12
    assert abs(float(c) - primal(f64(P), C, reg)) <= gap


def test_small_eps_without_schedule_and_float32(rng):
    a, b, C = problem(rng, 12, 10)
    reg = 1e-3
    P, info = ot.sinkhorn(a, b, C, reg, max_iter=50_000, return_info=True)
    check_plan(P, a, b, C, reg, F64, info=info)
    # float32: exponents up to 1e3 are rounded to ~1e3 * 1.2e-7; ask for what that allows
    S = expo_scale(a, b, C, reg)
    t32 = tol(F32, S + 12)
    at, bt, Ct = (torch.as_tensor(v).to(F32) for v in (a, b, C))
    P32, info32 = ot.sinkhorn(at, bt, Ct, reg, tol=t32, max_iter=50_000, return_info=True,
                              eps_schedule=np.geomspace(1.0, reg, 8))
    assert P32.dtype == F32 and torch.isfinite(P32).all()
    check_plan(P32, *(t.double().numpy() for t in (at, bt, Ct)), reg, F32, tol_=t32,
               info=info32)


@pytest.mark.parametrize("reg", [0.05, 0.01])
def test_eps_schedule_gives_the_same_plan(rng, reg):
    a, b, C = problem(rng, 13, 17, "uniform")
    P0, i0 = ot.sinkhorn(a, b, C, reg, tol=1e-12, max_iter=50_000, return_info=True)
    check_plan(P0, a, b, C, reg, F64, tol_=1e-12, info=i0)
    for sched in (np.geomspace(C.max(), reg, 6), [4 * reg, 2 * reg, reg], [10 * reg]):
        P1, i1 = ot.sinkhorn(a, b, C, reg, tol=1e-12, max_iter=50_000, eps_schedule=sched,
                             return_info=True)
        check_plan(P1, a, b, C, reg, F64, tol_=1e-12, info=i1, oracle=False)
        assert float((P1 - P0).abs().sum()) <= SENSITIVITY * 1e-12 * a.sum()


def test_eps_to_zero_approaches_exact_ot(rng):
    # 0 <= <P_eps, C> - OT_0 <= eps (H(P*) ... ): with P_eps optimal for the entropic problem and
    # P* for the exact one, <P_eps,C> - <P*,C> <= eps (H(P_eps) - H(P*)) <= eps min(H(a), H(b))
    # (H(P_eps) <= H(a) + H(b), H(P*) >= max(H(a), H(b))), mass 1. Slack: row error * max C.
    a, b, C = problem(rng, 15, 12)
    ot0 = pot.emd2(a, b, C)
    gaps = []
    for reg in [0.3, 0.03, 0.003]:
        P, info = ot.sinkhorn(a, b, C, reg, eps_schedule=np.geomspace(1.0, reg, 8),
                              max_iter=50_000, return_info=True)
        lin = float((f64(P) * C).sum())
        slack = C.max() * (row_error(P, a) + 1e-14)
        assert ot0 - slack <= lin <= ot0 + reg * min(entropy(a), entropy(b)) + slack
        gaps.append(lin - ot0)
    assert gaps[-1] < gaps[0]


def test_eps_to_infinity_approaches_independent_coupling(rng):
    # eps KL(P || r b^T) <= <r b^T - P, C> <= max C - min C (mass 1, r = P 1), and Pinsker:
    # ||P - r b^T||_1 <= sqrt(2 KL); plus ||r b^T - a b^T||_1 = ||r - a||_1.
    a, b, C = problem(rng, 11, 9, "uniform")
    dists = []
    for reg in [1e1, 1e3, 1e5]:
        P = ot.sinkhorn(a, b, C, reg)
        dist = np.abs(f64(P) - np.outer(a, b)).sum()
        assert dist <= np.sqrt(2 * (C.max() - C.min()) / reg) + row_error(P, a) + 1e-14
        dists.append(dist)
    assert dists[2] < dists[1] < dists[0]


# --- 4. sinkhorn_cost: value, gradients ----------------------------------------------------------


@pytest.mark.parametrize("n, m", SHAPES[:2], ids=SHAPE_IDS[:2])
@pytest.mark.parametrize("reg", [0.5, 0.05])
def test_sinkhorn_cost_is_the_primal_at_the_plan(rng, n, m, reg):
    a, b, C = problem(rng, n, m)
    val = ot.sinkhorn_cost(a, b, C, reg)
    assert val.shape == () and val.dtype == F64
    P = ot.sinkhorn(a, b, C, reg)
    f, g = ot.sinkhorn_potentials(a, b, C, reg)
    fn, gn = f64(f), f64(g)
    S = expo_scale(a, b, C, reg)
    err = row_error(P, a)
    # primal - dual = <f, P 1 - a> (module docstring), plus rounding
    bound = np.abs(fn).max() * (err + tol(F64, S)) * a.sum() + tol(F64, S * (1 + abs(float(val))))
    assert abs(float(val) - primal(P, C, reg)) <= bound
    assert abs(float(val) - dual(a, b, C, reg, fn, gn)) <= tol(F64, S * (1 + abs(float(val))))
    # and the peer's plan, within what the two row errors allow
    Q = pot_plan(a, b, C, reg)
    assert abs(float(val) - primal(Q, C, reg)) <= 2 * bound + (np.abs(fn).max() + np.abs(
        gn).max()) * 100 * POT_TOL * a.sum()


def test_sinkhorn_cost_gradients_are_plan_and_potentials(rng):
    a, b, C = problem(rng, 9, 7)
    reg = 0.1
    at, bt, Ct = (torch.tensor(v, requires_grad=True) for v in (a, b, C))
    val = ot.sinkhorn_cost(at, bt, Ct, reg, tol=1e-12)
    val.backward()
    P = ot.sinkhorn(a, b, C, reg, tol=1e-12)
    f, g = ot.sinkhorn_potentials(a, b, C, reg, tol=1e-12)
    S = expo_scale(a, b, C, reg)
    torch.testing.assert_close(Ct.grad, P, rtol=4 * tol(F64, S), atol=0)
    # dOT/da = f and dOT/db = g up to one additive constant (f + c, g - c): compare centered
    ga, gb = at.grad - at.grad.mean(), bt.grad - bt.grad.mean()
    torch.testing.assert_close(ga, f - f.mean(), rtol=0, atol=tol(F64, S * reg))
    torch.testing.assert_close(gb, g - g.mean(), rtol=0, atol=tol(F64, S * reg))
    # the additive constants of the two gradients cancel on a mass-preserving direction
    assert abs(float(at.grad.mean() + bt.grad.mean() - f.mean() - g.mean())) <= tol(F64, S)


def test_sinkhorn_cost_gradients_by_finite_differences(rng):
    a, b, C = problem(rng, 8, 6)
    reg, t = 0.2, 1e-5

    def cost(a_, b_, C_):
        return float(ot.sinkhorn_cost(a_, b_, C_, reg, tol=1e-13, max_iter=100_000))

    at, bt, Ct = (torch.tensor(v, requires_grad=True) for v in (a, b, C))
    ot.sinkhorn_cost(at, bt, Ct, reg, tol=1e-13).backward()
    H = rng.standard_normal(C.shape)
    ha, hb = rng.standard_normal(8), rng.standard_normal(6)
    ha, hb = ha - ha.mean(), hb - hb.mean()  # keep the masses equal (else ValueError)
    val = cost(a, b, C)
    # central differences: truncation t^2 |D^3 OT|/6 with third derivatives ~ |h|^3 / eps^2
    # (per unit weight), rounding ~ eps_mach |OT| / t
    for (da, db, dC), grad in (((0, 0, H), Ct.grad), ((ha, 0, 0), at.grad), ((0, hb, 0), bt.grad)):
        h = np.abs(np.asarray(da + db + dC)).max()
        fd = (cost(a + t * da, b + t * db, C + t * dC)
              - cost(a - t * da, b - t * db, C - t * dC)) / (2 * t)
        exact = float((grad * torch.as_tensor(da + db + dC)).sum())
        bound = t**2 * h**3 * C.size / reg**2 + tol(F64, abs(val) + 1) / t
        assert abs(fd - exact) <= bound, (fd, exact, bound)


# --- 5. sinkhorn_divergence ----------------------------------------------------------------------


def clouds(rng, n=9, m=7, d=2, shift=0.3):
    """Points in the unit cube (y shifted): no isolated clusters at the strengths used, so
    Sinkhorn, including the self terms OT(a, a) of the divergence, converges quickly."""
    return rng.uniform(0, 1, (n, d)), rng.uniform(0, 1, (m, d)) + shift


def pot_ot_eps(x, y, a, b, reg):
    C = sq_dist(x, y)
    return primal(pot_plan(a, b, C, reg), C, reg)


@pytest.mark.parametrize("weights", [False, True], ids=["uniform", "weighted"])
@pytest.mark.parametrize("reg", [0.5, 0.1])
def test_divergence_matches_pot(rng, weights, reg):
    x, y = clouds(rng)
    a = rng.uniform(0.1, 1, len(x)) if weights else np.full(len(x), 1 / len(x))
    b = rng.uniform(0.1, 1, len(y)) if weights else np.full(len(y), 1 / len(y))
    a, b = a / a.sum(), b / b.sum()
    s = ot.sinkhorn_divergence(x, y, reg, a, b) if weights else ot.sinkhorn_divergence(x, y, reg)
    assert s.shape == () and s.dtype == F64
    ref = (pot_ot_eps(x, y, a, b, reg) - pot_ot_eps(x, x, a, a, reg) / 2
           - pot_ot_eps(y, y, b, b, reg) / 2)
    scale = sq_dist(np.vstack([x, y]), np.vstack([x, y])).max() / reg
    # three costs, each within (potential size) * (row error) of its optimum
    assert abs(float(s) - ref) <= 3 * scale * reg * SENSITIVITY * TOL64
    assert float(s) > 0


def test_divergence_zero_for_identical_and_translation_identity(rng):
    # S(x, x) = 0; and for a translate, S(x, x + t) = |t|^2 exactly (cross terms are absorbed
    # by the potentials, the self terms are translation invariant), whatever eps.
    x, _ = clouds(rng)
    a = rng.uniform(0.1, 1, len(x))
    a /= a.sum()
    scale = sq_dist(x, x).max()
    assert abs(float(ot.sinkhorn_divergence(x, x, 0.3))) <= 3 * scale * SENSITIVITY * TOL64
    assert abs(float(ot.sinkhorn_divergence(x, x, 0.3, a, a))) <= 3 * scale * SENSITIVITY * \
        TOL64
    t = np.array([0.4, -0.3])
    for reg in (0.05, 0.5, 5.0):
        s = float(ot.sinkhorn_divergence(x, x + t, reg, a, a))
        assert abs(s - t @ t) <= 3 * (scale + t @ t) * SENSITIVITY * TOL64


def test_divergence_positive_for_different_weights_same_support(rng):
    x, _ = clouds(rng)
    a = np.full(len(x), 1 / len(x))
    b = rng.uniform(0.1, 1, len(x))
    b /= b.sum()
    s = float(ot.sinkhorn_divergence(x, x, 0.2, a, b))
    assert s > 3 * sq_dist(x, x).max() * SENSITIVITY * TOL64


coords = st.floats(0, 1, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@given(x=arrays(np.float64, (5, 2), elements=coords), y=arrays(np.float64, (4, 2), elements=coords),
       reg=st.sampled_from([0.5, 1.0, 4.0]))
def test_divergence_nonnegative_and_symmetric(x, y, reg):
    s_xy = float(ot.sinkhorn_divergence(x, y, reg))
    s_yx = float(ot.sinkhorn_divergence(y, x, reg))
    scale = sq_dist(np.vstack([x, y]), np.vstack([x, y])).max() + 1
    slack = 3 * scale * SENSITIVITY * TOL64
    assert s_xy >= -slack
    assert abs(s_xy - s_yx) <= 2 * slack


# --- 6. sinkhorn_points (streamed) equals the dense solver ---------------------------------------


@pytest.mark.parametrize("n, m, chunk", [(11, 7, 3), (6, 13, 4), (9, 9, 1), (8, 5, 100)],
                         ids=["n>m", "n<m", "chunk1", "one-chunk"])
@pytest.mark.parametrize("weights", [False, True], ids=["uniform", "weighted"])
def test_points_equal_dense_potentials(rng, n, m, chunk, weights):
    x, y = clouds(rng, n, m, d=3)
    reg = 0.3
    if weights:
        a, b = rng.uniform(0.1, 1, n), rng.uniform(0.1, 1, m)
        a, b = a / a.sum(), b / b.sum()
        f, g, info = ot.sinkhorn_points(x, y, reg, a, b, chunk=chunk, tol=1e-12,
                                        return_info=True)
    else:
        a, b = np.full(n, 1 / n), np.full(m, 1 / m)
        f, g, info = ot.sinkhorn_points(x, y, reg, chunk=chunk, tol=1e-12, return_info=True)
    assert f.shape == (n,) and g.shape == (m,) and f.dtype == g.dtype == F64
    assert info.converged and info.certificate <= 1e-12
    C = sq_dist(x, y)
    fd, gd = ot.sinkhorn_potentials(a, b, C, reg, tol=1e-12)
    S = expo_scale(a, b, C, reg)
    # the plans they define (gauge free)
    P = np.exp((f64(f)[:, None] + f64(g)[None, :] - C) / reg)
    Pd = np.exp((f64(fd)[:, None] + f64(gd)[None, :] - C) / reg)
    assert np.abs(P - Pd).sum() <= SENSITIVITY * (1e-12 + tol(F64, S)) * a.sum()
    assert row_error(torch.as_tensor(P), a) <= 1e-12 + tol(F64, S + m)
    # the potentials themselves, after fixing the gauge (f + c, g - c)
    c = float((f64(f) - f64(fd)).mean())
    assert np.abs(f64(f) - c - f64(fd)).max() <= reg * SENSITIVITY * (1e-12 + tol(F64, S))
    assert np.abs(f64(g) + c - f64(gd)).max() <= reg * SENSITIVITY * (1e-12 + tol(F64, S))


def test_points_float32_and_default_chunk(rng):
    x, y = clouds(rng, 20, 15)
    xt, yt = torch.as_tensor(x, dtype=F32), torch.as_tensor(y, dtype=F32)
    f, g, info = ot.sinkhorn_points(xt, yt, 0.5, chunk=6, tol=1e-5, return_info=True)
    assert f.dtype == g.dtype == F32 and info.certificate <= 1e-5
    f2, g2 = ot.sinkhorn_points(xt, yt, 0.5, tol=1e-5)
    C = sq_dist(xt.double().numpy(), yt.double().numpy())
    S = expo_scale(np.full(20, 1 / 20), np.full(15, 1 / 15), C, 0.5)
    for ff, gg in ((f, g), (f2, g2)):
        P = torch.exp((ff.double()[:, None] + gg.double()[None, :] - torch.as_tensor(C)) / 0.5)
        assert np.all(np.abs(f64(P).sum(0) - 1 / 15) <= tol(F32, S + 20) / 15)
        assert row_error(P, np.full(20, 1 / 20)) <= 1e-5 + tol(F32, S + 15)


# --- 7. certificate, warnings, zero weights ------------------------------------------------------


@pytest.mark.parametrize("tol_", [1e-3, 1e-7, 1e-11])
@pytest.mark.parametrize("check_every", [1, 10])
def test_certificate_meets_tol(rng, tol_, check_every):
    a, b, C = problem(rng, 10, 8)
    P, info = ot.sinkhorn(a, b, C, 0.05, tol=tol_, check_every=check_every, return_info=True)
    check_plan(P, a, b, C, 0.05, F64, tol_=tol_, info=info)
    assert 0 < info.n_iter <= 10_000


def _tiny_budget_calls(a, b, C, x, y):
    kw = dict(max_iter=3, check_every=1)
    return {
        "sinkhorn": lambda: ot.sinkhorn(a, b, C, 1e-3, return_info=True, **kw),
        "sinkhorn_potentials": lambda: ot.sinkhorn_potentials(a, b, C, 1e-3, return_info=True,
                                                              **kw),
        "sinkhorn_points": lambda: ot.sinkhorn_points(x, y, 1e-3, chunk=4, return_info=True,
                                                      **kw),
        "sinkhorn_cost": lambda: (ot.sinkhorn_cost(a, b, C, 1e-3, **kw), None),
        "sinkhorn_divergence": lambda: (ot.sinkhorn_divergence(x, y, 1e-3, **kw), None),
    }


@pytest.mark.parametrize("name", list(_tiny_budget_calls(*[None] * 5)))
def test_tiny_max_iter_warns(rng, name):
    a, b, C = problem(rng, 12, 10)
    x, y = clouds(rng)
    with pytest.warns(regref.ConvergenceWarning):
        *out, info = _tiny_budget_calls(a, b, C, x, y)[name]()
    for t in out:
        assert not torch.isnan(t).any()
    if info is not None:
        assert not info.converged and info.certificate > TOL64
        assert info.n_iter <= 3, "max_iter is the iteration budget"


@pytest.mark.parametrize("max_iter", [3, 25])
def test_max_iter_is_an_iteration_budget(rng, max_iter):
    # with the default check_every=10, too: max_iter bounds the iterations performed
    a, b, C = problem(rng, 12, 10)
    with pytest.warns(regref.ConvergenceWarning):
        _, info = ot.sinkhorn(a, b, C, 1e-3, max_iter=max_iter, return_info=True)
    assert info.n_iter <= max_iter


def test_no_warnings_on_clean_input(rng):
    a, b, C = problem(rng, 10, 8)
    x, y = clouds(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ot.sinkhorn(a, b, C, 0.1)
        ot.sinkhorn_potentials(a, b, C, 0.1)
        ot.sinkhorn_cost(a, b, C, 0.1)
        ot.sinkhorn_divergence(x, y, 0.1)
        ot.sinkhorn_points(x, y, 0.1, chunk=3)


def test_zero_weights_drop_out(rng):
    # zero rows/columns carry no mass; the rest is the plan of the problem without them
    a, b, C = problem(rng, 10, 8)
    a[[1, 6]] = 0.0
    b[[0, 3, 7]] = 0.0
    a, b = a / a.sum(), b / b.sum()
    P, info = ot.sinkhorn(a, b, C, 0.1, tol=1e-12, return_info=True)
    assert torch.isfinite(P).all() and info.converged
    assert torch.all(P[[1, 6]] == 0) and torch.all(P[:, [0, 3, 7]] == 0)
    ka, kb = a > 0, b > 0
    Pr = ot.sinkhorn(a[ka], b[kb], C[ka][:, kb], 0.1, tol=1e-12)
    check_plan(Pr, a[ka], b[kb], C[ka][:, kb], 0.1, F64, tol_=1e-12)
    torch.testing.assert_close(P[ka][:, kb], Pr, rtol=SENSITIVITY * 1e-12, atol=1e-15)
    val = ot.sinkhorn_cost(a, b, C, 0.1, tol=1e-12)
    vr = ot.sinkhorn_cost(a[ka], b[kb], C[ka][:, kb], 0.1, tol=1e-12)
    assert torch.isfinite(val)
    assert abs(float(val - vr)) <= SENSITIVITY * 1e-12 * (1 + abs(float(vr)))
    # gradients stay finite where the weights are positive
    Ct = torch.tensor(C, requires_grad=True)
    ot.sinkhorn_cost(a, b, Ct, 0.1, tol=1e-12).backward()
    assert torch.isfinite(Ct.grad).all()
    torch.testing.assert_close(Ct.grad, P, rtol=1e-10, atol=1e-15)
    # the points solver and the divergence accept zero weights too
    x, y = clouds(rng, 10, 8)
    f, g = ot.sinkhorn_points(x, y, 0.5, a, b, chunk=3, tol=1e-12)
    assert torch.all(torch.isneginf(f[[1, 6]])) and torch.all(torch.isneginf(g[[0, 3, 7]]))
    fr, gr = ot.sinkhorn_points(x[ka], y[kb], 0.5, a[ka], b[kb], chunk=3, tol=1e-12)
    Cr = sq_dist(x[ka], y[kb])
    Pp = np.exp((f64(f[ka])[:, None] + f64(g[kb])[None, :] - Cr) / 0.5)
    Ppr = np.exp((f64(fr)[:, None] + f64(gr)[None, :] - Cr) / 0.5)
    assert np.abs(Pp - Ppr).sum() <= SENSITIVITY * 1e-12
    s = ot.sinkhorn_divergence(x, y, 0.5, a, b, tol=1e-12)
    sr = ot.sinkhorn_divergence(x[ka], y[kb], 0.5, a[ka], b[kb], tol=1e-12)
    assert abs(float(s - sr)) <= SENSITIVITY * 1e-12 * (1 + abs(float(sr)))


def test_point_mass_source(rng):
    # a = delta_0: the only coupling is P = e_0 b^T, whatever C and eps
    _, b, C = problem(rng, 5, 7)
    a = np.zeros(5)
    a[0] = 1.0
    P = ot.sinkhorn(a, b, C, 0.05)
    expected = np.zeros_like(C)
    expected[0] = b
    np.testing.assert_allclose(f64(P), expected, rtol=1e-12, atol=0)


# --- 8. array-likes, dtypes, no mutation ---------------------------------------------------------


def test_numpy_lists_tensors_agree_and_dtype_kept(rng):
    a, b, C = problem(rng, 6, 5)
    ref = ot.sinkhorn(torch.as_tensor(a), torch.as_tensor(b), torch.as_tensor(C), 0.2)
    for args in ((a, b, C), (a.tolist(), b.tolist(), C.tolist())):
        out = ot.sinkhorn(*args, 0.2)
        assert out.dtype == F64
        torch.testing.assert_close(out, ref, rtol=1e-14, atol=0)
    a32, b32, C32 = (torch.as_tensor(v, dtype=F32) for v in (a, b, C))
    assert ot.sinkhorn(a32, b32, C32, 0.2).dtype == F32
    assert ot.sinkhorn_cost(a32, b32, C32, 0.2).dtype == F32
    assert all(t.dtype == F32 for t in ot.sinkhorn_potentials(a32, b32, C32, 0.2))
    x, y = clouds(rng)
    assert ot.sinkhorn_divergence(torch.as_tensor(x, dtype=F32), torch.as_tensor(y, dtype=F32),
                                  0.5).dtype == F32


def test_inputs_not_modified(rng):
    a, b, C = (torch.as_tensor(v) for v in problem(rng, 6, 5))
    x, y = (torch.as_tensor(v) for v in clouds(rng))
    copies = [t.clone() for t in (a, b, C, x, y)]
    ot.sinkhorn(a, b, C, 0.2)
    ot.sinkhorn_cost(a, b, C, 0.2)
    ot.sinkhorn_points(x, y, 0.2, chunk=2)
    ot.sinkhorn_divergence(x, y, 0.2)
    for t, c in zip((a, b, C, x, y), copies, strict=True):
        assert torch.equal(t, c)


# --- 9. bad input --------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
_g = np.random.default_rng(0)
A0 = np.full(4, 0.25)
B0 = np.full(3, 1 / 3)
C0 = _g.uniform(0, 1, (4, 3))
X0, Y0 = _g.standard_normal((4, 2)), _g.standard_normal((3, 2))


def _with(v, index, value):
    v = np.array(v, dtype=float)
    v[index] = value
    return v


DENSE = {"sinkhorn": ot.sinkhorn, "potentials": ot.sinkhorn_potentials, "cost": ot.sinkhorn_cost}
BAD = {}
for _name, _fn in DENSE.items():
    BAD.update({
        f"{_name}-eps-0": (lambda fn=_fn: fn(A0, B0, C0, 0.0), "eps"),
        f"{_name}-eps-neg": (lambda fn=_fn: fn(A0, B0, C0, -0.1), "eps"),
        f"{_name}-eps-nan": (lambda fn=_fn: fn(A0, B0, C0, NAN), "eps"),
        f"{_name}-eps-inf": (lambda fn=_fn: fn(A0, B0, C0, INF), "eps"),
        f"{_name}-a-neg": (lambda fn=_fn: fn([0.35, 0.25, 0.5, -0.1], B0, C0, 0.1), "a"),
        f"{_name}-b-neg": (lambda fn=_fn: fn(A0, [0.5, 0.6, -0.1], C0, 0.1), "b"),
        f"{_name}-mass": (lambda fn=_fn: fn(A0 * (1 + 1e-6), B0, C0, 0.1), "a|b"),
        f"{_name}-a-len": (lambda fn=_fn: fn(A0[:3] * 4 / 3, B0, C0, 0.1), "a"),
        f"{_name}-b-len": (lambda fn=_fn: fn(A0, np.full(4, 0.25), C0, 0.1), "b"),
        f"{_name}-C-nan": (lambda fn=_fn: fn(A0, B0, _with(C0, (1, 2), NAN), 0.1), "C"),
        f"{_name}-C-inf": (lambda fn=_fn: fn(A0, B0, _with(C0, (0, 0), INF), 0.1), "C"),
        f"{_name}-a-nan": (lambda fn=_fn: fn(_with(A0, 0, NAN), B0, C0, 0.1), "a"),
        f"{_name}-C-1d": (lambda fn=_fn: fn(A0, B0, C0.ravel(), 0.1), "C"),
        f"{_name}-C-4d": (lambda fn=_fn: fn(A0, B0, C0[None, None], 0.1), "C"),
        f"{_name}-batch": (lambda fn=_fn: fn(np.stack([A0, A0]), np.stack([B0, B0]),
                                             np.stack([C0] * 3), 0.1), "a|b|C"),
        f"{_name}-empty": (lambda fn=_fn: fn(np.zeros(0), np.zeros(0), np.zeros((0, 0)), 0.1),
                           "a|b|C"),
        f"{_name}-zero-mass": (lambda fn=_fn: fn(np.zeros(4), np.zeros(3), C0, 0.1), "a|b"),
        f"{_name}-tol": (lambda fn=_fn: fn(A0, B0, C0, 0.1, tol=0.0), "tol"),
        f"{_name}-max_iter": (lambda fn=_fn: fn(A0, B0, C0, 0.1, max_iter=0), "max_iter"),
        f"{_name}-schedule": (lambda fn=_fn: fn(A0, B0, C0, 0.1, eps_schedule=[1.0, 0.01]),
                              "eps_schedule"),
        f"{_name}-schedule-nan": (lambda fn=_fn: fn(A0, B0, C0, 0.1, eps_schedule=[NAN, 1.0]),
                                  "eps_schedule"),
    })
POINTS = {"points": ot.sinkhorn_points, "divergence": ot.sinkhorn_divergence}
for _name, _fn in POINTS.items():
    BAD.update({
        f"{_name}-eps-0": (lambda fn=_fn: fn(X0, Y0, 0.0), "eps"),
        f"{_name}-eps-nan": (lambda fn=_fn: fn(X0, Y0, NAN), "eps"),
        f"{_name}-x-nan": (lambda fn=_fn: fn(_with(X0, (0, 1), NAN), Y0, 0.1), "x"),
        f"{_name}-y-inf": (lambda fn=_fn: fn(X0, _with(Y0, (2, 0), INF), 0.1), "y"),
        f"{_name}-x-1d": (lambda fn=_fn: fn(X0[:, 0], Y0, 0.1), "x"),
        f"{_name}-dims": (lambda fn=_fn: fn(X0, np.hstack([Y0, Y0]), 0.1), "x|y"),
        f"{_name}-x-empty": (lambda fn=_fn: fn(X0[:0], Y0, 0.1), "x"),
        f"{_name}-a-neg": (lambda fn=_fn: fn(X0, Y0, 0.1, [0.5, 0.5, 0.5, -0.5], B0), "a"),
        f"{_name}-a-len": (lambda fn=_fn: fn(X0, Y0, 0.1, B0, B0), "a"),
        f"{_name}-mass": (lambda fn=_fn: fn(X0, Y0, 0.1, A0, B0 * 2), "a|b"),
    })
BAD["points-chunk"] = (lambda: ot.sinkhorn_points(X0, Y0, 0.1, chunk=0), "chunk")


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_value_error_naming_the_argument(name):
    call, arg = BAD[name]
    with pytest.raises(ValueError, match=rf"\b({arg})\b"):
        call()


@pytest.mark.parametrize("rel", [1e-10, 5e-9])
def test_masses_equal_within_1e8_relative_are_accepted(rel):
    # accepted input must be solvable at the default tolerance: when P^T 1 = b exactly,
    # ||P 1 - a||_1 >= |mass(a) - mass(b)|, so the mismatch cannot be left in the row error
    a = A0 * (1 + rel)
    P, info = ot.sinkhorn(a, B0, C0, 0.1, return_info=True)  # no ConvergenceWarning
    assert torch.isfinite(P).all() and info.converged
    Pn = f64(P)
    assert np.abs(Pn.sum(1) - a).sum() <= (TOL64 + rel) * a.sum()
    assert np.abs(Pn.sum(0) - B0).sum() <= (TOL64 + rel) * a.sum()
    f, g, pinfo = ot.sinkhorn_points(X0, Y0, 0.1, a, B0, return_info=True)
    Pp = np.exp((f64(f)[:, None] + f64(g)[None, :] - sq_dist(X0, Y0)) / 0.1)
    assert pinfo.converged and np.abs(Pp.sum(1) - a).sum() <= (TOL64 + rel) * a.sum()
    # the cost is the primal at the plan, up to ||f||_inf times the row error
    fd, _ = ot.sinkhorn_potentials(a, B0, C0, 0.1)
    bound = float(np.abs(f64(fd)).max()) * (info.certificate + rel) * a.sum() + 1e-14
    assert abs(float(ot.sinkhorn_cost(a, B0, C0, 0.1)) - primal(Pn, C0, 0.1)) <= bound


# --- 10. GPU -------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    a, b, C = batch_problem(rng, B=3, n=40, m=30)
    x, y = clouds(rng, 50, 40, d=3)
    for dtype, tight in ((F64, 1e-12), (F32, 1e-5)):
        at, bt, Ct = (torch.as_tensor(v).to(dtype) for v in (a, b, C))
        cpu, icpu = ot.sinkhorn(at, bt, Ct, 0.1, tol=tight, return_info=True)
        gpu, igpu = ot.sinkhorn(at.cuda(), bt.cuda(), Ct.cuda(), 0.1, tol=tight,
                                return_info=True)
        assert gpu.is_cuda and gpu.dtype == dtype and gpu.shape == cpu.shape
        assert icpu.converged and igpu.converged
        S = max(expo_scale(a[k], b[k], C[k], 0.1) for k in range(3))
        for k in range(3):
            diff = float((gpu[k].cpu().double() - cpu[k].double()).abs().sum())
            assert diff <= SENSITIVITY * max(tight, tol(dtype, S)) * a[k].sum()
        Cg = Ct.cuda().requires_grad_()
        val = ot.sinkhorn_cost(at.cuda(), bt.cuda(), Cg, 0.1, tol=tight)
        val.sum().backward()
        assert val.is_cuda and Cg.grad.is_cuda
        torch.testing.assert_close(Cg.grad.cpu(), cpu, rtol=SENSITIVITY * max(tight, tol(
            dtype, S)), atol=SENSITIVITY * max(tight, tol(dtype, S)) * float(cpu.max()))
        xt, yt = torch.as_tensor(x).to(dtype), torch.as_tensor(y).to(dtype)
        fc, gc = ot.sinkhorn_points(xt, yt, 0.5, chunk=16, tol=tight)
        fg, gg = ot.sinkhorn_points(xt.cuda(), yt.cuda(), 0.5, chunk=16, tol=tight)
        assert fg.is_cuda and fg.dtype == dtype
        Cx = torch.as_tensor(sq_dist(x, y))
        Pc = torch.exp((fc.double()[:, None] + gc.double()[None, :] - Cx) / 0.5)
        Pg = torch.exp((fg.cpu().double()[:, None] + gg.cpu().double()[None, :] - Cx) / 0.5)
        assert float((Pc - Pg).abs().sum()) <= SENSITIVITY * max(tight, tol(
            dtype, expo_scale(np.ones(50) / 50, np.ones(40) / 40, Cx.numpy(), 0.5)))


def test_divergence_self_terms_do_not_stall_on_clustered_clouds():
    """Alternating updates stall near 1e-7 on OT(b, b) here; the symmetric ones converge
    (a ConvergenceWarning would be an error under the test configuration)."""
    rng = np.random.default_rng(20240607)
    x = rng.standard_normal((9, 2))
    y = rng.standard_normal((7, 2)) + 0.7
    s = ot.sinkhorn_divergence(x, y, 0.5)
    assert float(s) > 0
    assert abs(float(ot.sinkhorn_divergence(x, x, 0.5))) < 1e-12
