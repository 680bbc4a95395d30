"""Oracle, property and bad-input tests of exact, quadratic and sparse OT and the Monge gap.

Oracles: POT (``ot.emd``, a network simplex; ``ot.smooth.smooth_ot_dual`` with
``reg_type="l2"``, L-BFGS on the same dual) and cvxpy (a conic solver for the quadratic
program). Optimality of a quadratic plan is also checked without any solver: ``P`` solves
min <P, C> + lam/2 ||P||^2 over the transport polytope iff its marginals are right and
there are potentials with ``lam P_ij = [f_i + g_j - C_ij]_+`` (KKT); the potentials are
recovered by least squares on the support, and the dual value at them equals the primal.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import ot
import pytest
import torch
from conftest import tol

from regref import ConvergenceWarning, Info
from regref.ot import exact_ot, monge_gap, quadratic_ot, sparse_ot


def f64(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def problem(rng, n, m, zeros=False):
    """Random weights (some zero if asked) of equal mass and a squared-distance cost."""
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2)) + 0.5
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    if zeros:
        a[[1, 4]], b[2] = 0.0, 0.0
    a, b = a / a.sum(), b / b.sum()
    return a, b, ot.dist(x, y)


def marginal_error(P, a, b) -> float:
    P = f64(P)
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def primal(P, C, lam) -> float:
    P = f64(P)
    return float((P * C).sum() + lam / 2 * (P * P).sum())


def kkt_potentials(P, C, lam):
    """Least-squares f, g with f_i + g_j = C_ij + lam P_ij on the support of P."""
    P = f64(P)
    n, m = P.shape
    rows, cols = np.nonzero(P > 0)
    A = np.zeros((len(rows), n + m))
    A[np.arange(len(rows)), rows] = 1
    A[np.arange(len(rows)), n + cols] = 1
    sol = np.linalg.lstsq(A, C[rows, cols] + lam * P[rows, cols], rcond=None)[0]
    return sol[:n], sol[n:]


def cvx_quadratic(a, b, C, lam):
    P = cp.Variable(C.shape, nonneg=True)
    obj = cp.Minimize(cp.sum(cp.multiply(P, C)) + lam / 2 * cp.sum_squares(P))
    cp.Problem(obj, [cp.sum(P, axis=1) == a, cp.sum(P, axis=0) == b]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return P.value


# --- exact OT ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape, zeros", [((12, 9), False), ((10, 14), True), ((11, 11), False)])
def test_exact_ot_matches_emd(rng, shape, zeros):
    a, b, C = problem(rng, *shape, zeros=zeros)
    P = exact_ot(torch.as_tensor(a), torch.as_tensor(b), torch.as_tensor(C))
    Pe = ot.emd(a, b, C)
    assert abs((f64(P) * C).sum() - (Pe * C).sum()) <= 1e-10
    assert marginal_error(P, a, b) <= 1e-12
    assert bool((P >= 0).all())
    assert (f64(P) > 0).sum() <= shape[0] + shape[1] - 1  # a vertex of the polytope


def test_exact_ot_assignment_path(rng):
    """Uniform weights, n = m: a scaled permutation with the LP's optimal cost."""
    n = 13
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
    C = ot.dist(x, y)
    a = np.full(n, 2.0 / n)  # mass 2: the permutation carries the mass, not 1/n
    P = f64(exact_ot(a, a, C))
    assert sorted(np.count_nonzero(P, axis=1)) == [1] * n
    assert abs((P * C).sum() - (ot.emd(a, a, C) * C).sum()) <= 1e-10
    assert marginal_error(P, a, a) <= 1e-12


def test_exact_ot_dtype_and_batch(rng, dtype):
    a, b, C = problem(rng, 7, 6)
    Cb = torch.as_tensor(np.stack([C, C[::-1].copy()])).to(dtype)
    P = exact_ot(torch.as_tensor(a).to(dtype), torch.as_tensor(b).to(dtype), Cb)
    assert P.dtype == dtype and P.shape == (2, 7, 6)
    for i in range(2):
        ref = (ot.emd(a, b, f64(Cb[i])) * f64(Cb[i])).sum()
        assert abs((f64(P[i]) * f64(Cb[i])).sum() - ref) <= tol(dtype, ref)


# --- quadratic OT -----------------------------------------------------------------------


@pytest.mark.parametrize("lam", [1.0, 0.1])
def test_quadratic_ot_matches_pot(rng, lam):
    a, b, C = problem(rng, 15, 12)
    P, info = quadratic_ot(a, b, C, lam, return_info=True)
    assert isinstance(info, Info) and info.converged and info.certificate <= 1e-9
    with warnings.catch_warnings():  # POT passes options scipy deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        Pp = ot.smooth.smooth_ot_dual(a, b, C, lam, reg_type="l2", stopThr=1e-12,
                                      numItermax=10_000)
    # POT's L-BFGS-B stops on its own criterion with a marginal error of 1e-6 to 1e-4: its
    # plan is as close as that error allows; the conic solver is the tight oracle.
    assert np.abs(f64(P) - Pp).max() <= max(1e-6, marginal_error(Pp, a, b))
    assert np.abs(f64(P) - cvx_quadratic(a, b, C, lam)).max() <= 1e-8
    # POT's plan misses the marginals by err, so it may undercut the optimum: a feasible
    # plan is within about 2 err (l1) of it, which moves the objective (gradient C + lam P)
    # by at most that times ||C + lam P||_inf.
    slack = 2 * marginal_error(Pp, a, b) * (np.abs(C).max() + lam * Pp.max())
    assert primal(P, C, lam) <= primal(Pp, C, lam) + slack + 1e-9


@pytest.mark.parametrize("lam", [1.0, 0.01, 1e-3])
def test_quadratic_ot_kkt(rng, lam):
    """Marginals, nonnegativity, P = [f + g - C]_+ / lam, and zero duality gap."""
    a, b, C = problem(rng, 14, 17, zeros=True)
    P = f64(quadratic_ot(a, b, C, lam))
    assert (P >= 0).all()
    assert marginal_error(P, a, b) <= 1e-9
    assert (P[a == 0] == 0).all() and (P[:, b == 0] == 0).all()
    f, g = kkt_potentials(P, C, lam)
    S = f[:, None] + g[None, :] - C
    live = np.outer(a > 0, b > 0)  # rows/columns of zero weight carry no condition
    assert np.abs(np.maximum(S, 0) / lam - P)[live].max() <= 1e-8 * max(1.0, P.max())
    dual = f[a > 0] @ a[a > 0] + g[b > 0] @ b[b > 0] \
        - (np.maximum(S, 0)[live] ** 2).sum() / (2 * lam)
    assert abs(primal(P, C, lam) - dual) <= 1e-9 * max(1.0, abs(dual))


def test_quadratic_ot_batch_dtype(rng, dtype):
    a, b, C = problem(rng, 9, 8)
    Cb = np.stack([C, 2 * C, np.sqrt(C)])
    P, info = quadratic_ot(torch.as_tensor(a).to(dtype), torch.as_tensor(b).to(dtype),
                           torch.as_tensor(Cb).to(dtype), 0.2, return_info=True)
    assert P.dtype == dtype and P.shape == (3, 9, 8) and info.converged
    for i in range(3):
        ref = quadratic_ot(a, b, f64(torch.as_tensor(Cb[i]).to(dtype)), 0.2)
        # both solves stop at a marginal error <= 1e-9 (1e-5 in float32), not at the same point
        assert np.abs(f64(P[i]) - f64(ref)).max() <= (1e-8 if dtype == torch.float64 else 1e-5)


def test_quadratic_ot_max_iter_warns(rng):
    a, b, C = problem(rng, 10, 10)
    with pytest.warns(ConvergenceWarning):
        _, info = quadratic_ot(a, b, C, 1e-3, max_iter=2, return_info=True)
    assert not info.converged and info.n_iter == 2


# --- sparse OT --------------------------------------------------------------------------


def test_sparse_ot_column_sparsity_and_honest_certificates(rng):
    """12 rows, 10 columns, weights not uniform: with k <= 3 nonzeros per column the
    relaxation does not reach the marginals here (k = 1 cannot: 10 nonzeros leave at least
    two rows empty). The certificate must say so, the warning must be issued, and the error
    left must shrink as k grows."""
    a, b, C = problem(rng, 12, 10)
    certs = []
    for k in (1, 2, 3):
        with pytest.warns(ConvergenceWarning, match="sparse_ot"):
            P, info = sparse_ot(a, b, C, 0.5, k, return_info=True)
        P = f64(P)
        assert (np.count_nonzero(P, axis=0) <= k).all() and (P >= 0).all()
        assert abs(marginal_error(P, a, b) - info.certificate) <= 1e-12  # honest
        assert not info.converged and info.certificate > info_tol(P)
        certs.append(info.certificate)
    assert certs[0] >= np.sort(a)[:2].sum()  # two rows at least get no mass
    assert certs[0] > certs[1] > certs[2]


def info_tol(P):
    return 1e-9 if P.dtype == np.float64 else 1e-5


def test_sparse_ot_large_k_is_quadratic(rng):
    """k = n, and any k at least the densest column of the quadratic plan, give that plan."""
    a, b, C = problem(rng, 12, 10)
    Pq = f64(quadratic_ot(a, b, C, 0.5))
    kmax = int(np.count_nonzero(Pq, axis=0).max())
    assert kmax < 12  # the quadratic plan is itself sparse here, so the k = kmax case bites
    for k in (12, kmax):
        P, info = sparse_ot(a, b, C, 0.5, k, return_info=True)
        assert info.converged
        assert np.abs(f64(P) - Pq).max() <= 1e-9
        assert marginal_error(P, a, b) <= 1e-9


@pytest.mark.parametrize("lam", [1.0, 1e-2])
def test_sparse_ot_k1_is_unregularized(rng, lam):
    """k = 1, uniform weights, n = m: an optimal assignment, whatever lam."""
    n = 12
    C = ot.dist(rng.standard_normal((n, 2)), rng.standard_normal((n, 2)))
    a = np.full(n, 1.0 / n)
    P, info = sparse_ot(a, a, C, lam, 1, return_info=True)
    assert info.converged
    P = f64(P)
    assert (np.count_nonzero(P, axis=0) == 1).all()
    assert marginal_error(P, a, a) <= 1e-9
    assert abs((P * C).sum() - (f64(exact_ot(a, a, C)) * C).sum()) <= 1e-9


# --- Monge gap --------------------------------------------------------------------------


def test_monge_gap_zero_for_optimal_maps(rng):
    x = torch.as_tensor(rng.standard_normal((25, 2)))
    assert abs(float(monge_gap(x, x))) <= 1e-12
    # gradients of convex functions are optimal for the squared cost (Brenier)
    assert abs(float(monge_gap(x, 2 * x + torch.tensor([1.0, -3.0], dtype=x.dtype)))) <= 1e-10
    x1 = torch.as_tensor(rng.standard_normal(20))
    assert abs(float(monge_gap(x1, x1**3 + x1))) <= 1e-10  # monotone map in 1-D


def test_monge_gap_positive_for_non_optimal_maps(rng):
    x1 = torch.as_tensor(rng.standard_normal(20) + 0.3)
    gap = float(monge_gap(x1, -x1))  # a decreasing map: the reversed matching is optimal
    y = np.sort(-f64(x1))
    ref = np.mean((f64(x1) + f64(x1)) ** 2) - np.mean((np.sort(f64(x1)) - y) ** 2)
    assert gap > 0.1 and abs(gap - ref) <= 1e-10 * ref
    x = torch.as_tensor(rng.standard_normal((20, 2)))
    assert float(monge_gap(x, x @ torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=x.dtype))) > 0


def test_monge_gap_entropic_and_gradient(rng):
    x = torch.as_tensor(rng.standard_normal((15, 2)))
    T = (x.flip(0) + 0.1).requires_grad_()
    exact = monge_gap(x, T)
    exact.backward()
    assert T.grad is not None and bool(torch.isfinite(T.grad).all())
    entropic = monge_gap(x, T.detach(), eps=1e-3, eps_schedule=[1.0, 0.1, 0.01])
    assert abs(float(entropic) - float(exact.detach())) <= 1e-3 * np.log(15) + 1e-6


# --- bad input --------------------------------------------------------------------------

A3, B3, C3 = np.full(3, 1 / 3), np.full(4, 1 / 4), np.ones((3, 4))
NAN_C = C3.copy()
NAN_C[0, 1] = np.nan
BAD = [
    ("negative a", dict(a=[0.5, 0.6, -0.1]), "a"),
    ("unequal mass", dict(b=np.full(4, 0.3)), "mass"),
    ("b wrong length", dict(b=np.full(3, 1 / 3)), "b"),
    ("C 1-D", dict(C=np.ones(12)), "C"),
    ("C NaN", dict(C=NAN_C), "C"),
    ("a NaN", dict(a=[np.nan, 0.5, 0.5]), "a"),
    ("batch mismatch", dict(a=np.full((2, 3), 1 / 3), C=np.ones((3, 3, 4))), "batch"),
]


@pytest.mark.parametrize("fn", ["exact", "quadratic", "sparse"])
@pytest.mark.parametrize("case, change, match", BAD, ids=[c[0] for c in BAD])
def test_bad_problem(fn, case, change, match):
    args = dict(a=A3, b=B3, C=C3) | change
    call = {"exact": lambda: exact_ot(**args),
            "quadratic": lambda: quadratic_ot(**args, lam=1.0),
            "sparse": lambda: sparse_ot(**args, lam=1.0, k=2)}[fn]
    with pytest.raises(ValueError, match=rf"\b{match}\b"):
        call()


@pytest.mark.parametrize("lam", [0.0, -1.0, np.nan, np.inf])
def test_bad_lam(lam):
    with pytest.raises(ValueError, match=r"\blam\b"):
        quadratic_ot(A3, B3, C3, lam)
    with pytest.raises(ValueError, match=r"\blam\b"):
        sparse_ot(A3, B3, C3, lam, 1)


@pytest.mark.parametrize("k", [0, -2, 1.5])
def test_bad_k(k):
    with pytest.raises(ValueError, match=r"\bk\b"):
        sparse_ot(A3, B3, C3, 1.0, k)


def test_bad_solver_options():
    with pytest.raises(ValueError, match="tol"):
        quadratic_ot(A3, B3, C3, 1.0, tol=-1e-3)
    with pytest.raises(ValueError, match="max_iter"):
        sparse_ot(A3, B3, C3, 1.0, 2, max_iter=0)


@pytest.mark.parametrize("x, T_x, eps, match", [
    (np.ones((4, 2)), np.ones((4, 3)), None, "T_x"),
    (np.ones((4, 2)), np.ones((5, 2)), None, "T_x"),
    (np.ones((2, 2, 2)), np.ones((2, 2, 2)), None, "x"),
    (np.array([[np.nan, 0.0]]), np.ones((1, 2)), None, "x"),
    (np.ones((4, 2)), np.full((4, 2), np.inf), None, "T_x"),
    (np.ones((4, 2)), np.ones((4, 2)), 0.0, "eps"),
    (np.ones((4, 2)), np.ones((4, 2)), -1.0, "eps"),
])
def test_bad_monge_gap(x, T_x, eps, match):
    with pytest.raises(ValueError, match=rf"\b{match}\b"):
        monge_gap(x, T_x, eps=eps)
