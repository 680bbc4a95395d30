"""regref.implicit against explicit iterations and independent oracles.

Oracles: an explicit gradient-descent loop (filter factors, GD path); ``torch.linalg.pinv``
and ``lstsq`` (minimum-norm limit); basis pursuit solved by cvxpy (the small-scale limit
of the diagonal network); a hard-margin SVM solved by cvxpy (the logistic direction);
``torch.func.hessian`` (sharpness, stability margins); the mean-square operator of SGD
written as an explicit matrix (the trace bound).
"""

from __future__ import annotations

import math

import cvxpy as cp
import pytest
import torch
from conftest import load_kernel

from regref import ConvergenceWarning, implicit

F64 = torch.float64
INF = float("inf")


def _problem(n, p, seed=0, sparse=None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=F64)
    if sparse is None:
        y = torch.randn(n, generator=g, dtype=F64)
    else:
        w = torch.zeros(p, dtype=F64)
        w[:len(sparse)] = torch.tensor(sparse, dtype=F64)
        y = X @ w
    return X, y


def _gd_loop(X, y, step, t):
    w = torch.zeros(X.shape[1], dtype=X.dtype)
    for _ in range(t):
        w = w - step * X.T @ (X @ w - y)
    return w


# --- gradient descent on least squares --------------------------------------------------

@pytest.mark.parametrize("shape", [(12, 5), (6, 15)])
def test_gd_path_equals_explicit_iterates(shape):
    X, y = _problem(*shape, seed=1)
    s1 = float(torch.linalg.matrix_norm(X, ord=2))
    steps = torch.tensor([0.3, 1.0, 1.9], dtype=F64) / s1**2
    ts = torch.tensor([0, 1, 7, 40], dtype=F64)
    W = implicit.gd_path(X, y, steps, ts)
    assert W.shape == (3, 4, shape[1])
    for i, eta in enumerate(steps.tolist()):
        for j, t in enumerate(ts.long().tolist()):
            torch.testing.assert_close(W[i, j], _gd_loop(X, y, eta, t), rtol=1e-10,
                                       atol=1e-12)


def test_filter_factors_reproduce_the_iterates():
    X, y = _problem(10, 4, seed=2)
    U, s, Vh = torch.linalg.svd(X, full_matrices=False)
    eta = 0.5 / float(s[0]) ** 2
    phi = implicit.gd_filter_factors(s, eta, [13])[0, 0]
    torch.testing.assert_close(Vh.T @ (phi * (U.T @ y) / s), _gd_loop(X, y, eta, 13),
                               rtol=1e-11, atol=1e-12)


def test_filter_factors_between_ridge_and_its_double():
    s = torch.logspace(-3, 0, 50, dtype=F64)
    eta, ts = 1.0, torch.tensor([1, 3, 10, 100, 1000], dtype=F64)
    phi = implicit.gd_filter_factors(s, eta, ts)[0]             # eta s^2 <= 1
    ridge = s**2 / (s**2 + 1 / (eta * ts[:, None]))
    assert bool((ridge <= phi + 1e-15).all())
    assert bool((phi <= torch.clamp(eta * ts[:, None] * s**2, max=1) + 1e-15).all())
    assert bool((phi <= 2 * ridge + 1e-15).all())


@pytest.mark.parametrize("shape", [(8, 20), (20, 8)])
def test_infinite_time_is_the_minimum_norm_solution(shape):
    X, y = _problem(*shape, seed=3)
    X[:, -1] = X[:, 0]                                   # rank deficient in both cases
    s1 = float(torch.linalg.matrix_norm(X, ord=2))
    W = implicit.gd_path(X, y, torch.tensor([0.5, 1.5], dtype=F64) / s1**2, INF)
    pinv = torch.linalg.pinv(X) @ y
    lstsq = torch.linalg.lstsq(X, y[:, None], driver="gelsd").solution[:, 0]
    for w in W[:, 0]:
        torch.testing.assert_close(w, pinv, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(w, lstsq, rtol=1e-9, atol=1e-10)
    # and the long iterates approach it
    far = implicit.gd_path(X, y, 1.0 / s1**2, 10**6)[0, 0]
    torch.testing.assert_close(far, pinv, rtol=1e-6, atol=1e-8)


def test_gd_path_kernel_pastes_alone():
    X, y = _problem(9, 6, seed=4)
    U, s, Vh = torch.linalg.svd(X, full_matrices=False)
    kernel = load_kernel(implicit._gd_path_kernel)
    steps, ts = torch.tensor([0.01, 0.02], dtype=F64), torch.tensor([5.0, INF], dtype=F64)
    torch.testing.assert_close(kernel(U, s, Vh, y, steps, ts), implicit.gd_path(X, y, steps, ts))


def test_gd_path_keeps_dtype():
    X, y = _problem(9, 6, seed=5)
    W = implicit.gd_path(X.float(), y.float(), 0.01, [3])
    assert W.dtype == torch.float32
    torch.testing.assert_close(W.double(), implicit.gd_path(X, y, 0.01, [3]), rtol=1e-4,
                               atol=1e-5)


# --- diagonal linear networks ------------------------------------------------------------

def _basis_pursuit(X, y):
    w = cp.Variable(X.shape[1])
    prob = cp.Problem(cp.Minimize(cp.norm1(w)), [X.numpy() @ w == y.numpy()])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return torch.as_tensor(w.value)


def test_small_init_limit_is_basis_pursuit():
    # a 2-sparse vector seen through 8 random measurements in dimension 20: basis pursuit
    # recovers it; the limit deviates from it by O(alpha^(2 kappa)), kappa the dual margin
    X, y = _problem(8, 20, seed=6, sparse=[1.5, -2.0])
    bp = _basis_pursuit(X, y)
    W, info = implicit.diagonal_net_limit(X, y, torch.tensor([1e-12, 1e-8], dtype=F64),
                                          return_info=True)
    assert info.converged and info.certificate <= 1e-10
    assert float((W[0] - bp).abs().max()) < 1e-5
    assert float((W[1] - bp).abs().max()) > float((W[0] - bp).abs().max())


def test_large_init_limit_is_minimum_l2():
    X, y = _problem(6, 15, seed=8)
    W = implicit.diagonal_net_limit(X, y, torch.tensor([30.0, 300.0], dtype=F64))
    pinv = torch.linalg.pinv(X) @ y
    err = (W - pinv).abs().max(1).values
    assert float(err[1]) < 1e-4 and float(err[1]) < float(err[0]) / 50  # O(1/alpha^2)


def test_flow_reaches_the_limit_and_keeps_its_invariants():
    X, y = _problem(5, 10, seed=9)
    alphas = torch.tensor([0.5, 1.0, 3.0], dtype=F64)
    W, info = implicit.diagonal_net_flow(X, y, alphas, tol=1e-11, return_info=True)
    assert info.converged and info.certificate <= 1e-11
    torch.testing.assert_close(W, implicit.diagonal_net_limit(X, y, alphas, tol=1e-12),
                               rtol=0, atol=1e-8)
    # the kernel's u, v: u v = alpha^2 and log(u / alpha) in the row space of X
    kernel = load_kernel(implicit._diagonal_net_kernel)
    step = torch.full((3,), 1e-4, dtype=F64)
    W_k, res, n = kernel(X, y, alphas, step, 1e-3, 50)
    zeta = 0.5 * torch.arcsinh(W_k / (2 * alphas[:, None] ** 2))   # w = 2a^2 sinh(2 zeta)
    P = torch.linalg.pinv(X) @ X                                      # row-space projector
    torch.testing.assert_close(zeta @ P, zeta, rtol=1e-8, atol=1e-10)


def test_diagonal_kernels_paste_alone():
    X, y = _problem(4, 9, seed=10)
    alphas = torch.tensor([0.1, 2.0], dtype=F64)
    kernel = load_kernel(implicit._diagonal_limit_kernel)
    W, res, _ = kernel(X, y, alphas, 1e-12, 200)
    torch.testing.assert_close(W, implicit.diagonal_net_limit(X, y, alphas, tol=1e-12))
    assert float(res.max()) <= 1e-12


def test_flow_warns_at_max_iter_and_zero_response():
    X, y = _problem(4, 9, seed=11)
    with pytest.warns(ConvergenceWarning) as record:
        implicit.diagonal_net_flow(X, y, 0.01, max_iter=3)
    assert record[0].filename == __file__
    W, info = implicit.diagonal_net_limit(X, torch.zeros(4, dtype=F64), [1.0, 2.0],
                                          return_info=True)
    assert W.shape == (2, 9) and info.converged and float(W.abs().max()) == 0


# --- logistic regression on separable data -----------------------------------------------

def _hard_margin_svm(X, y):
    w = cp.Variable(X.shape[1])
    cons = [cp.multiply(y.numpy(), X.numpy() @ w) >= 1]
    cp.Problem(cp.Minimize(cp.sum_squares(w)), cons).solve(solver=cp.CLARABEL)
    return torch.as_tensor(w.value)


def test_logistic_direction_tends_to_the_hard_margin_svm():
    g = torch.Generator().manual_seed(3)
    y = torch.cat([torch.ones(15), -torch.ones(15)]).double()
    X = torch.randn(30, 2, generator=g, dtype=F64) + 2.0 * y[:, None] * torch.tensor(
        [1.0, 0.0], dtype=F64)
    w_svm = _hard_margin_svm(X, y)
    assert bool((y * (X @ w_svm) > 0.99).all())          # separable
    ts = torch.tensor([10, 100, 1000, 10000], dtype=F64)
    D = implicit.logistic_gd_direction(X, y, ts)
    torch.testing.assert_close(torch.linalg.vector_norm(D, dim=1), torch.ones(4, dtype=F64))
    angle = torch.arccos((D @ w_svm / w_svm.norm()).clamp(max=1))
    assert bool((angle.diff() < 0).all())
    # the 1/log t rate: angle * log t stays bounded (and the angle is small at the end)
    assert float(angle[-1]) < 0.06 and float((angle * ts.log()).max()) < 3
    # the order of t does not matter
    D_rev = implicit.logistic_gd_direction(X, y, ts.flip(0))
    torch.testing.assert_close(D_rev, D.flip(0))


# --- sharpness and stability -------------------------------------------------------------

def _mlp(seed=0, n=8, d=3, h=5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randn(n, generator=g, dtype=F64)
    theta = torch.randn(h * d + h, generator=g, dtype=F64) / 2

    def out(theta, X=X):
        W, v = theta[:h * d].view(h, d), theta[h * d:]
        return torch.tanh(X @ W.T) @ v

    def loss(theta):
        return 0.5 * ((out(theta) - y) ** 2).mean()

    return out, loss, theta, X


def test_sharpness_is_the_top_eigenvalue_of_the_exact_hessian():
    _, loss, theta, _ = _mlp(seed=13)
    H = torch.func.hessian(loss)(theta)
    evals = torch.linalg.eigvalsh(H)
    top = evals[evals.abs().argmax()]
    lam, info = implicit.sharpness(loss, theta, tol=1e-10, max_iter=5000,
                                   generator=torch.Generator().manual_seed(0),
                                   return_info=True)
    assert info.converged
    assert abs(float(lam - top)) <= 1e-8 * abs(float(top))


def test_stability_margins_equal_the_gauss_newton_hessian():
    out, _, theta, X = _mlp(seed=14)
    J = torch.func.jacrev(out)(theta)                    # (n, d): rows grad f_i
    n = J.shape[0]
    H = J.T @ J / n
    eta = 0.3
    for B in (1, 3, n):
        m = implicit.stability_margins(J, eta, B)
        c = (n - B) / (B * (n - 1))
        torch.testing.assert_close(m, torch.stack([eta * torch.linalg.eigvalsh(H)[-1] / 2,
                                                   eta * c * H.trace() / 2]))
    # batched over minima and steps
    Js = torch.stack([J, 2 * J])
    m = implicit.stability_margins(Js, torch.tensor([0.1, 0.2], dtype=F64), 1)
    assert m.shape == (2, 2)
    torch.testing.assert_close(m[1], 8 * m[0])


def _second_moment_operator(J, eta, B):
    """The matrix of T(S) = E_batch[(I - eta H_B) S (I - eta H_B)] on vec(S), batches of B
    distinct samples drawn uniformly, summed over every batch (brute force)."""
    from itertools import combinations

    n, d = J.shape
    T = torch.zeros(d * d, d * d, dtype=F64)
    batches = list(combinations(range(n), B))
    for batch in batches:
        HB = sum(torch.outer(J[i], J[i]) for i in batch) / B
        A = torch.eye(d, dtype=F64) - eta * HB
        T += torch.kron(A, A) / len(batches)
    return T


@pytest.mark.parametrize("B", [1, 2])
def test_trace_bound_is_necessary_for_mean_square_stability(B):
    # on random interpolation problems: spectral radius of T <= 1 implies both margins <= 1,
    # and the brute-force operator agrees with the closed form behind stability_margins
    g = torch.Generator().manual_seed(15 + B)
    unstable_gd_stable = 0
    for _ in range(60):
        n, d = 4, 3
        J = torch.randn(n, d, generator=g, dtype=F64) * torch.rand(n, 1, generator=g,
                                                                      dtype=F64)
        eta = float(torch.rand((), generator=g, dtype=F64)) * 6
        rho = float(torch.linalg.eigvals(_second_moment_operator(J, eta, B)).abs().max())
        gd, sgd = implicit.stability_margins(J, eta, B).tolist()
        if rho <= 1 + 1e-12:
            assert gd <= 1 + 1e-12 and sgd <= 1 + 1e-12
        if sgd > 1:
            assert rho > 1
        unstable_gd_stable += gd <= 1 < rho
    assert unstable_gd_stable > 0          # SGD is unstable where GD is stable, sometimes


BAD = [
    (lambda: implicit.gd_filter_factors([[1.0]], 0.1, 1), ValueError, "s"),
    (lambda: implicit.gd_filter_factors([-1.0], 0.1, 1), ValueError, "s"),
    (lambda: implicit.gd_filter_factors([1.0], 0.0, 1), ValueError, "step"),
    (lambda: implicit.gd_filter_factors([1.0], 0.1, 1.5), ValueError, "t"),
    (lambda: implicit.gd_filter_factors([1.0], 0.1, -1), ValueError, "t"),
    (lambda: implicit.gd_filter_factors([1.0], 0.1, []), ValueError, "t"),
    (lambda: implicit.gd_path(torch.ones(3, 2), torch.ones(4), 0.1, 1), ValueError, "y"),
    (lambda: implicit.gd_path(torch.ones(3, 2), torch.ones(3, 2), 0.1, 1), ValueError, "y"),
    (lambda: implicit.gd_path(torch.ones(3, 2), torch.ones(3), math.nan, 1), ValueError,
     "step"),
    (lambda: implicit.gd_path(torch.ones(3, 2), torch.ones(3), 1.0, INF), ValueError, "step"),
    (lambda: implicit.gd_path(torch.ones(3, 2), torch.ones(3), 0.1, 1, rcond=-1.0),
     ValueError, "rcond"),
    (lambda: implicit.gd_path(torch.full((3, 2), math.nan), torch.ones(3), 0.1, 1),
     ValueError, "X"),
    (lambda: implicit.diagonal_net_flow(torch.ones(2, 3), torch.ones(2), 0.0), ValueError,
     "alpha"),
    (lambda: implicit.diagonal_net_flow(torch.ones(2, 3), torch.ones(2), [1.0, 2.0],
                                        step=[0.1, 0.1, 0.1]), ValueError, "step"),
    (lambda: implicit.diagonal_net_flow(torch.ones(2, 3), torch.ones(2), 1.0, max_iter=0),
     ValueError, "max_iter"),
    (lambda: implicit.diagonal_net_limit(torch.ones(2, 3), torch.ones(2), -1.0), ValueError,
     "alpha"),
    (lambda: implicit.diagonal_net_limit(torch.ones(2, 3), torch.ones(2), 1.0, tol=0),
     ValueError, "tol"),
    (lambda: implicit.logistic_gd_direction(torch.ones(2, 2), torch.tensor([1.0, 0.0]), 5),
     ValueError, "y"),
    (lambda: implicit.logistic_gd_direction(torch.ones(2, 2), torch.tensor([1.0, -1.0]), 0),
     ValueError, "t"),
    (lambda: implicit.logistic_gd_direction(torch.ones(2, 2), torch.tensor([1.0, -1.0]), 5,
                                            step=-1.0), ValueError, "step"),
    (lambda: implicit.sharpness(None, torch.zeros(2)), TypeError, "loss_fn"),
    (lambda: implicit.sharpness(lambda w: w.sum(), torch.zeros(2), max_iter=1.0), ValueError,
     "max_iter"),
    (lambda: implicit.stability_margins(torch.ones(1, 3), 0.1), ValueError, "J"),
    (lambda: implicit.stability_margins(torch.ones(4, 3), 0.0), ValueError, "step"),
    (lambda: implicit.stability_margins(torch.ones(4, 3), 0.1, 5), ValueError, "batch_size"),
    (lambda: implicit.stability_margins(torch.ones(4, 3), 0.1, 0), ValueError, "batch_size"),
    (lambda: implicit.stability_margins(torch.full((4, 3), math.inf), 0.1), ValueError, "J"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.gpu
def test_gpu_matches_cpu():
    X, y = _problem(20, 50, seed=16, sparse=[1.0, -1.0, 0.5])
    steps = torch.tensor([0.001, 0.002], dtype=F64)
    ts = torch.tensor([10.0, 100.0, INF], dtype=F64)
    W_cpu = implicit.gd_path(X, y, steps, ts)
    W_gpu = implicit.gd_path(X.cuda(), y.cuda(), steps.cuda(), ts.cuda())
    assert W_gpu.is_cuda
    torch.testing.assert_close(W_gpu.cpu(), W_cpu, rtol=1e-9, atol=1e-10)
    alphas = torch.tensor([1e-6, 0.1, 10.0], dtype=F64)
    L_cpu = implicit.diagonal_net_limit(X, y, alphas)
    L_gpu = implicit.diagonal_net_limit(X.cuda(), y.cuda(), alphas.cuda())
    torch.testing.assert_close(L_gpu.cpu(), L_cpu, rtol=0, atol=1e-7)
    F_gpu = implicit.diagonal_net_flow(X.cuda(), y.cuda(), alphas[1:], tol=1e-6)
    assert F_gpu.is_cuda
    torch.testing.assert_close(F_gpu.cpu(), L_cpu[1:], rtol=0, atol=1e-4)
