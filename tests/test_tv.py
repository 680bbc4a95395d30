"""Oracle, adjoint, property and bad-input tests of regref.tv.

Oracles: scikit-image ``denoise_tv_chambolle`` (same objective, run at a tight ``eps``),
cvxpy (Clarabel, a conic solver) for exact TV minimisers on tiny images, a dense linear
solve for the Fourier deconvolution, ``scipy.ndimage.convolve(mode="wrap")`` for the
periodic blur, ``skimage.transform.radon`` for the projector, and a hand-written ISTA
for plug-and-play. Tolerances on solutions follow from the certificate: the ROF objective is
1-strongly convex, so ``||u - u*||^2 <= 2 (P(u) - P*) <= 2 gap``.
"""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import load_kernel, tol
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import convolve
from skimage.restoration import denoise_tv_chambolle
from skimage.transform import radon

import regref
from regref import prox, sparse, tv

F64 = torch.float64


# --- helpers -------------------------------------------------------------------------------------


def grad_np(u):
    """Forward differences, zero past the last row/column (numpy, independent of regref)."""
    g0 = np.zeros_like(u)
    g1 = np.zeros_like(u)
    g0[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    g1[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    return g0, g1


def tv_np(u, isotropic=True, w=None):
    g0, g1 = grad_np(np.asarray(u, dtype=float))
    mag = np.hypot(g0, g1) if isotropic else np.abs(g0) + np.abs(g1)
    return (mag * (1.0 if w is None else w)).sum(axis=(-2, -1))


def rof_np(u, f, lam, isotropic=True, w=None):
    u = np.asarray(u, dtype=float)
    return 0.5 * ((u - f) ** 2).sum(axis=(-2, -1)) + lam * tv_np(u, isotropic, w)


def rel_scale(f):
    """The certificate's scale, P(mean f) = ||f - mean f||^2 / 2 (per image)."""
    return 0.5 * ((f - f.mean(axis=(-2, -1), keepdims=True)) ** 2).sum(axis=(-2, -1))


def cvx_rof(f, lam, isotropic=True, w=None, A=None, b=None):
    """Exact minimiser of 1/2||u - f||^2 (or 1/2||A vec(u) - b||^2) + lam TV_w(u), by cvxpy."""
    H, W = f.shape
    u = cp.Variable((H, W))
    d0 = cp.vstack([u[1:, :] - u[:-1, :], np.zeros((1, W))])
    d1 = cp.hstack([u[:, 1:] - u[:, :-1], np.zeros((H, 1))])
    w = np.ones((H, W)) if w is None else w
    if isotropic:
        mag = cp.norm(cp.vstack([cp.vec(d0, order="C"), cp.vec(d1, order="C")]), 2, axis=0)
        tvw = cp.sum(cp.multiply(w.reshape(-1), mag))
    else:
        tvw = cp.sum(cp.multiply(w, cp.abs(d0) + cp.abs(d1)))
    fit = cp.sum_squares(u - f) if A is None else cp.sum_squares(A @ cp.vec(u, order="C") - b)
    prob = cp.Problem(cp.Minimize(0.5 * fit + lam * tvw))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return u.value, prob.value


def cp_distance_bound(cert, b, atb, mu):
    """Bound on ||u - u*|| from chambolle_pock's certificate when P is mu-strongly convex.

    With G the Fenchel-Young gap and r the stationarity residual (cert times P(0) and
    ||A^T b||), P(u) - P* <= G + ||u - u*|| r and mu/2 ||u - u*||^2 <= P(u) - P*, so
    ||u - u*|| <= (r + sqrt(r^2 + 2 mu G)) / mu.
    """
    G = cert * 0.5 * float(np.sum(np.asarray(b) ** 2))
    r = cert * float(np.linalg.norm(np.asarray(atb)))
    return (r + math.sqrt(r * r + 2 * mu * G)) / mu


@pytest.fixture
def noisy(rng):
    """A piecewise-constant 24 x 20 image plus noise."""
    img = np.zeros((24, 20))
    img[5:15, 4:12] = 1.0
    img[10:20, 9:17] += 0.5
    return img + 0.2 * rng.standard_normal(img.shape)


# --- 1. gradient, divergence, TV -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7), (3, 1, 6), (2, 3, 4, 4)])
def test_div_is_minus_adjoint_of_grad(rng, shape):
    u = rng.standard_normal(shape)
    p = rng.standard_normal(shape[:-2] + (2,) + shape[-2:])
    g, d = tv.grad2d(u), tv.div2d(p)
    assert g.shape == p.shape and d.shape == u.shape
    lhs, rhs = float((g.numpy() * p).sum()), float(-(u * d.numpy()).sum())
    assert abs(lhs - rhs) <= tol(F64, np.abs(u).sum() * np.abs(p).max() * 4)
    g0, g1 = grad_np(u)
    assert np.allclose(g[..., 0, :, :].numpy(), g0, rtol=0, atol=1e-15)
    assert np.allclose(g[..., 1, :, :].numpy(), g1, rtol=0, atol=1e-15)


def test_grad_norm_squared_exact_and_below_8(rng):
    """||grad||^2 = 4 sin^2(pi (H-1) / 2H) + 4 sin^2(pi (W-1) / 2W) < 8 (chapter 16): power
    iteration on -div grad = grad^T grad approaches it from below."""
    H, W = 12, 9
    v = torch.as_tensor(rng.standard_normal((H, W)))
    for _ in range(2000):
        v = -tv.div2d(tv.grad2d(v))
        v = v / v.norm()
    top = float((-tv.div2d(tv.grad2d(v)) * v).sum())
    exact = sum(4 * math.sin(math.pi * (n - 1) / (2 * n)) ** 2 for n in (H, W))
    assert exact < 8 and exact - 1e-8 < top <= exact + tol(F64, 8)


@pytest.mark.parametrize("isotropic", [True, False])
def test_tv_norm_matches_numpy(rng, isotropic, dtype):
    u = rng.standard_normal((3, 6, 5))
    w = rng.uniform(0, 2, (6, 5))
    got = tv.tv_norm(torch.as_tensor(u, dtype=dtype), isotropic=isotropic, weights=w)
    assert got.dtype == dtype and got.shape == (3,)
    assert np.allclose(got.double().numpy(), tv_np(u, isotropic, w), rtol=tol(dtype, 10))
    single = tv.tv_norm(u[0], isotropic=isotropic)
    assert single.shape == () and math.isclose(float(single), tv_np(u[0], isotropic), rel_tol=1e-12)


# --- 2. tv_denoise against its oracles -----------------------------------------------------------


@pytest.mark.parametrize("lam", [0.05, 0.2])
def test_tv_denoise_matches_skimage_objective(noisy, lam):
    u, info = tv.tv_denoise(noisy, lam, return_info=True)
    assert isinstance(info, regref.Info) and info.converged and info.certificate <= 1e-8
    sk = denoise_tv_chambolle(noisy, weight=lam, eps=1e-12, max_num_iter=20_000)
    P_r, P_sk = rof_np(u.numpy(), noisy, lam), rof_np(sk, noisy, lam)
    gap = info.certificate * rel_scale(noisy) + tol(F64, P_sk)
    # regref is certified within gap of the optimum P*, which skimage cannot beat
    assert P_r <= P_sk + gap
    # strong convexity: ||v - u*||^2 <= 2 (P(v) - P*), and P* >= P_r - gap, for v = u and sk
    dist = math.sqrt(2 * gap) + math.sqrt(2 * (P_sk - P_r + gap))
    assert np.linalg.norm(u.numpy() - sk) <= dist
    assert dist <= 1e-2 * np.linalg.norm(sk)  # skimage itself is close to optimal


@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_tv_denoise_matches_cvxpy(rng, isotropic, weighted):
    f = rng.standard_normal((7, 6))
    w = rng.uniform(0.2, 2.0, f.shape) if weighted else None
    lam = 0.3
    u_star, P_star = cvx_rof(f, lam, isotropic, w)
    u, info = tv.tv_denoise(f, lam, weights=w, isotropic=isotropic, tol=1e-11,
                            max_iter=200_000, return_info=True)
    gap = info.certificate * rel_scale(f)
    P_u = rof_np(u.numpy(), f, lam, isotropic, w)
    assert -1e-7 <= P_u - P_star <= gap + 1e-7  # cvxpy is accurate to ~1e-8
    # strong convexity: ||u - u*||^2 <= 2 (P(u) - P*)
    assert np.linalg.norm(u.numpy() - u_star) <= math.sqrt(2 * (gap + 1e-7))


def test_tv_denoise_certificate_is_a_real_gap(noisy):
    """The reported certificate bounds the true suboptimality (oracle: a tighter solve)."""
    lam = 0.1
    u, info = tv.tv_denoise(noisy, lam, tol=1e-4, return_info=True)
    P_star = rof_np(tv.tv_denoise(noisy, lam, tol=1e-12, max_iter=100_000).numpy(), noisy, lam)
    sub = rof_np(u.numpy(), noisy, lam) - P_star
    assert -1e-9 <= sub <= info.certificate * rel_scale(noisy) + 1e-9
    assert info.certificate <= 1e-4


def test_tv_denoise_preserves_mean_and_limits(noisy):
    u = tv.tv_denoise(noisy, 0.3)
    assert math.isclose(float(u.mean()), noisy.mean(), rel_tol=1e-8)
    assert torch.equal(tv.tv_denoise(noisy, 0.0), torch.as_tensor(noisy))
    big = tv.tv_denoise(noisy, 1e4)  # a huge strength gives the constant mean image
    assert np.abs(big.numpy() - noisy.mean()).max() <= 1e-6


def test_tv_denoise_batched_equals_looped(rng):
    f = rng.standard_normal((3, 12, 10))
    lams = torch.tensor([0.05, 0.2, 0.0])
    U = tv.tv_denoise(f, lams, tol=1e-10)
    for k in range(3):
        Uk = tv.tv_denoise(f[k], float(lams[k]), tol=1e-10)
        assert np.linalg.norm(U[k].numpy() - Uk.numpy()) <= 2 * math.sqrt(2e-10 * rel_scale(f[k]))
    shared = tv.tv_denoise(f, 0.1, weights=np.ones((12, 10)), tol=1e-10)
    assert np.abs(shared.numpy() - tv.tv_denoise(f, 0.1, tol=1e-10).numpy()).max() <= 1e-12


def test_tv_denoise_float32(noisy):
    f32 = torch.as_tensor(noisy, dtype=torch.float32)
    u, info = tv.tv_denoise(f32, 0.1, return_info=True)
    assert u.dtype == torch.float32 and info.converged
    u64 = tv.tv_denoise(noisy, 0.1)
    # both within sqrt(2 gap) of the optimum: gap 1e-5 (float32 default) and 1e-8
    bound = math.sqrt(2e-5 * rel_scale(noisy)) + math.sqrt(2e-8 * rel_scale(noisy)) + 1e-4
    assert float(torch.linalg.norm(u.double() - u64)) <= bound


def test_tv_denoise_warns_at_max_iter(noisy):
    with pytest.warns(regref.ConvergenceWarning):
        _, info = tv.tv_denoise(noisy, 0.1, tol=1e-14, max_iter=30, return_info=True)
    assert not info.converged and info.n_iter == 30


# --- 3. Chambolle-Pock ---------------------------------------------------------------------------


def test_chambolle_pock_identity_equals_tv_denoise(noisy):
    ident = (lambda u: u, lambda y: y)
    u, info = tv.chambolle_pock(*ident, noisy, 0.1, tol=1e-10, op_norm=1.0,
                                max_iter=100_000, return_info=True)
    assert info.converged == (info.certificate <= 1e-10) and info.converged
    ref, info_ref = tv.tv_denoise(noisy, 0.1, tol=1e-14, max_iter=100_000, return_info=True)
    d = cp_distance_bound(info.certificate, noisy, noisy, mu=1.0)
    d_ref = math.sqrt(2 * info_ref.certificate * rel_scale(noisy))
    assert float(torch.linalg.norm(u - ref)) <= d + d_ref
    assert d + d_ref <= 2e-4  # tight enough to catch lam * 1.001 (a 2e-3 change)


@pytest.mark.parametrize("isotropic", [True, False])
def test_chambolle_pock_blur_matches_cvxpy(rng, isotropic):
    H, W = 8, 7
    kernel = np.array([[0.0, 0.15, 0.0], [0.15, 0.4, 0.15], [0.0, 0.15, 0.0]])
    x = (rng.random((H, W)) > 0.5).astype(float)
    b = tv.blur_fft(x, kernel) + 0.05 * torch.as_tensor(rng.standard_normal((H, W)))
    # the blur as a dense matrix (columns = images of unit impulses), for cvxpy
    Amat = np.stack([tv.blur_fft(e.reshape(H, W), kernel).numpy().ravel()
                     for e in np.eye(H * W)], axis=1)
    w = rng.uniform(0.5, 1.5, (H, W))
    u_star, P_star = cvx_rof(np.zeros((H, W)), 0.05, isotropic, w, Amat, b.numpy().ravel())
    A = lambda u: tv.blur_fft(u, kernel)  # noqa: E731
    AT = lambda y: tv.blur_fft(y, kernel[::-1, ::-1].copy())  # noqa: E731
    u, info = tv.chambolle_pock(A, AT, b, 0.05, weights=w, isotropic=isotropic, tol=1e-9,
                                max_iter=200_000, generator=torch.Generator().manual_seed(0),
                                return_info=True)
    assert info.converged and u.shape == (H, W)
    P_u = 0.5 * float(((A(u) - b) ** 2).sum()) + 0.05 * float(tv_np(u.numpy(), isotropic, w))
    # this blur is injective: P is mu-strongly convex with mu = smallest eigenvalue of A^T A
    mu = float(np.linalg.eigvalsh(Amat.T @ Amat)[0])
    assert mu > 1e-3
    d = cp_distance_bound(info.certificate, b.numpy(), AT(b).numpy(), mu)
    r = info.certificate * float(torch.linalg.norm(AT(b)))
    G = info.certificate * 0.5 * float((b * b).sum())
    assert -1e-7 <= P_u - P_star <= G + d * r + 1e-7    # cvxpy is accurate to ~1e-8
    assert np.linalg.norm(u.numpy() - u_star) <= d + 1e-4
    assert d <= 1e-2


def test_chambolle_pock_batched(rng):
    n = 12
    M = tv.parallel_beam(n, torch.linspace(0, math.pi, 7)[:-1])
    A, AT = tv.matrix_operator(M, (n, n))
    X = torch.as_tensor(rng.random((2, n, n)))
    B = A(X)
    assert B.shape == (2, M.shape[0])
    # the same steps and the same number of iterations: a batch is the loop, to rounding
    opts = dict(tol=1e-300, max_iter=300,
                op_norm=float(torch.linalg.matrix_norm(M.to_dense(), 2)))
    with pytest.warns(regref.ConvergenceWarning):
        U = tv.chambolle_pock(A, AT, B, torch.tensor([0.1, 0.5]), **opts)
    for k, lam in enumerate((0.1, 0.5)):
        with pytest.warns(regref.ConvergenceWarning):
            Uk = tv.chambolle_pock(A, AT, B[k], lam, **opts)
        # a batched sparse product rounds differently from a single one, and 300 iterations
        # amplify that to ~1e-9 (measured); a 0.1 % change of lam moves u by ~1e-3
        assert float(torch.linalg.norm(U[k] - Uk)) <= 1e-7 * float(torch.linalg.norm(Uk))


# --- 4. tomography, deconvolution, plug-and-play -------------------------------------------------


def test_parallel_beam_adjoint_and_radon(rng):
    n = 32
    deg = np.linspace(0.0, 180.0, 12, endpoint=False)
    M = tv.parallel_beam(n, np.deg2rad(deg))
    A, AT = tv.matrix_operator(M, (n, n))
    u = torch.as_tensor(rng.standard_normal((n, n)))
    y = torch.as_tensor(rng.standard_normal(M.shape[0]))
    assert abs(float(A(u) @ y) - float((u * AT(y)).sum())) <= tol(F64, 1e3)
    disk = np.zeros((n, n))
    ii, jj = np.mgrid[:n, :n]
    disk[(ii - 12) ** 2 + (jj - 18) ** 2 < 36] = 1.0
    ref = radon(disk, theta=deg, circle=False)                      # (bins, angles)
    mine = A(torch.as_tensor(disk)).reshape(len(deg), -1).T.numpy()
    assert mine.shape == ref.shape
    # each projection keeps the mass exactly; the interpolations differ by a few percent
    assert np.allclose(mine.sum(0), disk.sum(), rtol=1e-12)
    assert np.linalg.norm(mine - ref) <= 0.05 * np.linalg.norm(ref)
    assert np.allclose(mine[:, 0], ref[:, 0], atol=1e-9)            # axis-aligned: exact


def test_blur_fft_is_periodic_convolution(rng):
    u = rng.standard_normal((9, 11))
    k = rng.random((3, 5))
    # ndimage.convolve centres the kernel at (kh // 2, kw // 2) like blur_fft
    assert np.allclose(tv.blur_fft(u, k).numpy(), convolve(u, k, mode="wrap"), atol=1e-12)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_deconvolve_fft_solves_normal_equations(rng, order):
    H, W = 6, 5
    k = rng.random((3, 3))
    f = rng.standard_normal((H, W))
    lam = 0.3
    K = np.stack([tv.blur_fft(e.reshape(H, W), k).numpy().ravel() for e in np.eye(H * W)], 1)
    # periodic forward differences and D^T D = -Laplacian
    D0 = np.kron(np.roll(np.eye(H), 1, axis=1) - np.eye(H), np.eye(W))
    D1 = np.kron(np.eye(H), np.roll(np.eye(W), 1, axis=1) - np.eye(W))
    L = D0.T @ D0 + D1.T @ D1
    R = np.linalg.matrix_power(L, order)
    u_dense = np.linalg.solve(K.T @ K + lam * R, K.T @ f.ravel())
    u = tv.deconvolve_fft(f, k, lam, order=order)
    assert np.allclose(u.numpy().ravel(), u_dense, atol=1e-10)
    U = tv.deconvolve_fft(np.stack([f, 2 * f]), k, lam, order=order)
    assert np.allclose(U[1].numpy(), 2 * u.numpy(), atol=1e-10)


def test_pnp_with_soft_threshold_is_ista(rng):
    n, p, lam = 40, 15, 0.05
    X = torch.as_tensor(rng.standard_normal((n, p)))
    y = torch.as_tensor(rng.standard_normal(n))
    L = float(torch.linalg.matrix_norm(X, 2) ** 2) / n
    step = 1.0 / L

    def grad_f(w):
        return X.T @ (X @ w - y) / n

    def denoiser(v):
        return prox.soft_threshold(v, step * lam)

    w = torch.zeros(p, dtype=F64)
    for k in range(1, 26):  # ISTA by hand, iterate for iterate
        w = prox.soft_threshold(w - step * grad_f(w), step * lam)
        with pytest.warns(regref.ConvergenceWarning):
            x = tv.pnp_proximal_gradient(grad_f, denoiser, torch.zeros(p, dtype=F64), step,
                                         tol=1e-300, max_iter=k)
        assert torch.equal(x, w)
    x, info = tv.pnp_proximal_gradient(grad_f, denoiser, torch.zeros(p, dtype=F64), step,
                                       tol=1e-13, max_iter=100_000, return_info=True)
    assert info.converged
    assert float((x - sparse.lasso(X, y, lam, tol=1e-14)).abs().max()) <= 1e-9


@settings(max_examples=15)
@given(st.floats(0.01, 3.0), st.integers(0, 2**31 - 1))
def test_tv_denoise_is_nonexpansive(lam, seed):
    """u = prox of lam TV: ||prox(f) - prox(g)|| <= ||f - g|| (up to the certified gaps)."""
    rng = np.random.default_rng(seed)
    f, g = rng.standard_normal((2, 6, 5))
    uf = tv.tv_denoise(f, lam, tol=1e-10, max_iter=100_000)
    ug = tv.tv_denoise(g, lam, tol=1e-10, max_iter=100_000)
    slack = math.sqrt(2e-10 * rel_scale(f)) + math.sqrt(2e-10 * rel_scale(g))
    assert float(torch.linalg.norm(uf - ug)) <= np.linalg.norm(f - g) + slack + 1e-12


# --- 5. certificates, kernels, warnings, defaults ---------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_tv_denoise_batch_certificate_holds_for_returned_images(seed):
    """Each returned image is within its certificate of the optimum (oracle: cvxpy), and
    converged == (certificate <= tol): the certificate is that of the returned point."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((3, 7, 6)) + (np.arange(6) > 2)
    lam = rng.uniform(0.05, 0.5, 3)
    for t in (1e-4, 1e-7):
        U, info = tv.tv_denoise(f, torch.tensor(lam), tol=t, check_every=7, return_info=True)
        assert info.converged == (info.certificate <= t) and info.converged
        for k in range(3):
            u_star, P_star = cvx_rof(f[k], lam[k])
            gap = info.certificate * rel_scale(f[k])    # the worst image's relative gap
            P_u = rof_np(U[k].numpy(), f[k], lam[k])
            assert -1e-7 <= P_u - P_star <= gap + 1e-7   # cvxpy is accurate to ~1e-8
            assert np.linalg.norm(U[k].numpy() - u_star) <= math.sqrt(2 * (gap + 1e-7))


def test_tv_denoise_reports_not_converged_consistently(noisy):
    with pytest.warns(regref.ConvergenceWarning):
        _, info = tv.tv_denoise(noisy, 0.1, tol=1e-12, max_iter=40, return_info=True)
    assert info.converged == (info.certificate <= 1e-12) and not info.converged
    assert info.n_iter == 40


def test_rof_kernel_copyable(noisy):
    kernel = load_kernel(tv._rof_kernel)
    f = torch.as_tensor(np.stack([noisy, noisy[::-1].copy()]))
    radius = torch.tensor([0.1, 0.3], dtype=F64).reshape(2, 1, 1)
    u, cert, n_iter = kernel(f, radius, True, 1e-9, 10_000, 20)
    U, info = tv.tv_denoise(f, torch.tensor([0.1, 0.3], dtype=F64), tol=1e-9, return_info=True)
    assert torch.equal(u, U) and n_iter == info.n_iter and float(cert.amax()) == info.certificate


def _fake_compile(calls, fail):
    """A stand-in for ``torch.compile`` that records its calls and, if ``fail``, returns a
    function raising what inductor raises without a working C++ compiler."""
    def fake(fn, **options):
        calls.append(options)
        if not fail:
            return fn

        def broken(*args):
            raise torch._dynamo.exc.TorchDynamoException("no working C++ compiler")
        return broken
    return fake


def test_tv_denoise_compile_falls_back_to_eager(noisy, monkeypatch):
    """Without a compiler the compiled path gives way to eager silently, once per process
    and device type; the answer is the eager one, bit for bit."""
    ref, info_ref = tv.tv_denoise(noisy, 0.1, compile=False, return_info=True)
    calls = []
    monkeypatch.setattr(tv, "_COMPILE_FAILED", set())
    monkeypatch.setattr(torch, "compile", _fake_compile(calls, fail=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u, info = tv.tv_denoise(noisy, 0.1, compile=True, return_info=True)
    assert torch.equal(u, ref) and info == info_ref
    assert tv._COMPILE_FAILED == {"cpu"} and len(calls) == 3   # the three steps
    assert calls[0] == {"fullgraph": True, "dynamic": False}
    assert torch.equal(tv.tv_denoise(noisy, 0.1, compile=True), ref) and len(calls) == 3


def test_tv_denoise_eager_past_the_recompile_limit(noisy, monkeypatch):
    """Past dynamo's recompile limit (a ninth image shape in one process) fullgraph
    compilation raises; that call runs eagerly and later calls still try to compile."""
    def fake(fn, **options):
        def limit(*args):
            raise torch._dynamo.exc.FailOnRecompileLimitHit("Hard failure due to fullgraph")
        return limit

    monkeypatch.setattr(tv, "_COMPILE_FAILED", set())
    monkeypatch.setattr(torch, "compile", fake)
    assert torch.equal(tv.tv_denoise(noisy, 0.1, compile=True), tv.tv_denoise(noisy, 0.1))
    assert tv._COMPILE_FAILED == set()


def test_tv_denoise_compiles_where_it_pays(noisy, monkeypatch):
    """compile=None: eager on the CPU below 2**22 pixels, compiled from there (the threshold
    is lowered here to the test image); compile=True always asks for it, but not under a
    TorchDispatchMode, which torch.compile refuses."""
    from conftest import DispatchCounter

    calls = []
    monkeypatch.setattr(tv, "_COMPILE_FAILED", set())
    monkeypatch.setattr(torch, "compile", _fake_compile(calls, fail=False))
    ref = tv.tv_denoise(noisy, 0.1)
    assert calls == [] and tv._COMPILE_PIXELS == 2**22
    monkeypatch.setattr(tv, "_COMPILE_PIXELS", noisy.size)
    assert torch.equal(tv.tv_denoise(noisy, 0.1), ref) and len(calls) == 3
    with DispatchCounter() as counter:
        assert torch.equal(tv.tv_denoise(noisy, 0.1, compile=True), ref)
    assert len(calls) == 3 and "lerp_" in counter.kernels()


def test_pdhg_kernel_copyable(noisy):
    kernel = load_kernel(tv._pdhg_kernel)
    b = torch.as_tensor(noisy)[None]
    tau = sigma = 0.99 / 3.0                                 # ||K||^2 <= 1 + 8
    u, cert, n_iter = kernel(lambda v: v, lambda y: y, b, torch.full((1, 1, 1), 0.1, dtype=F64),
                             True, tau, sigma, 1e-6, 20_000, 50)
    U, info = tv.chambolle_pock(lambda v: v, lambda y: y, b[0], 0.1, op_norm=1.0, tol=1e-6,
                                return_info=True)
    assert torch.equal(u[0], U) and n_iter == info.n_iter and float(cert.amax()) == info.certificate


def _warning_files(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w.filename for w in caught if issubclass(w.category, regref.ConvergenceWarning)]


@pytest.mark.parametrize("name", ["tv_denoise", "chambolle_pock", "pnp_proximal_gradient"])
def test_convergence_warning_points_at_caller(noisy, name):
    calls = {
        "tv_denoise": lambda: tv.tv_denoise(noisy, 0.1, tol=1e-14, max_iter=5),
        "chambolle_pock": lambda: tv.chambolle_pock(lambda u: u, lambda y: y, noisy, 0.1,
                                                    tol=1e-14, max_iter=5),
        "pnp_proximal_gradient": lambda: tv.pnp_proximal_gradient(
            lambda x: x - 1.0, lambda v: v, torch.zeros(3, dtype=F64), 0.5, max_iter=3),
    }
    assert _warning_files(calls[name]) == [__file__]


@pytest.mark.parametrize("dt, defaults", [(torch.float64, (1e-8, 1e-6, 1e-10)),
                                          (torch.float32, (1e-5, 1e-4, 1e-6))])
def test_default_tolerances(noisy, dt, defaults):
    f = torch.as_tensor(noisy, dtype=dt)
    ident = (lambda u: u, lambda y: y)
    for t, run in zip(defaults, [
            lambda **o: tv.tv_denoise(f, 0.1, return_info=True, **o),
            lambda **o: tv.chambolle_pock(*ident, f, 0.1, op_norm=1.0, return_info=True, **o),
            lambda **o: tv.pnp_proximal_gradient(lambda x: x - f, lambda v: v, f * 0, 0.5,
                                                 return_info=True, **o)], strict=True):
        (u, info), (u_t, info_t) = run(), run(tol=t)
        assert torch.equal(u, u_t) and info == info_t and info.certificate <= t
        # and the default is not looser than t: a 10x looser tol stops no later, and earlier
        # or with a larger certificate
        _, info_loose = run(tol=10 * t)
        assert info_loose.n_iter <= info.n_iter


def test_pnp_certificate_is_the_fixed_point_residual(rng):
    """The certificate bounds the residual of one more step from the returned point (the
    ISTA map is averaged, so its fixed-point residuals do not increase)."""
    X = torch.as_tensor(rng.standard_normal((30, 10)))
    y = torch.as_tensor(rng.standard_normal(30))
    step = 30 / float(torch.linalg.matrix_norm(X, 2) ** 2)

    def grad_f(w):
        return X.T @ (X @ w - y) / 30

    def denoiser(v):
        return prox.soft_threshold(v, step * 0.05)

    x, info = tv.pnp_proximal_gradient(grad_f, denoiser, torch.zeros(10, dtype=F64), step,
                                       tol=1e-8, return_info=True)
    assert info.converged == (info.certificate <= 1e-8) and info.converged
    nxt = denoiser(x - step * grad_f(x))
    assert float((nxt - x).norm() / x.norm().clamp(min=1.0)) <= info.certificate * (1 + 1e-9)


def test_power_iteration_start_uses_cpu_generator(rng):
    n = 10
    M = tv.parallel_beam(n, torch.linspace(0, math.pi, 5)[:-1])
    A, AT = tv.matrix_operator(M, (n, n))
    b = A(torch.as_tensor(rng.random((n, n))))
    runs = [tv.chambolle_pock(A, AT, b, 0.1, tol=1e-4, generator=torch.Generator().manual_seed(3))
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


# --- 6. bad input --------------------------------------------------------------------------------


def _ident():
    return (lambda u: u), (lambda y: y)


# (call, exception, match): match names the argument
BAD = [
    (lambda f: tv.tv_denoise(f, float("nan")), ValueError, "lam"),
    (lambda f: tv.tv_denoise(f, -1.0), ValueError, "lam"),
    (lambda f: tv.tv_denoise(f, [0.1, 0.2, 0.3]), ValueError, "lam"),
    (lambda f: tv.tv_denoise(f, "a"), TypeError, "lam"),
    (lambda f: tv.tv_denoise(f[0, 0], 0.1), ValueError, "f must be 2-D or 3-D"),
    (lambda f: tv.tv_denoise(f[:0], 0.1), ValueError, "f must be non-empty"),
    (lambda f: tv.tv_denoise(np.where(f > 0.5, np.nan, f), 0.1), ValueError, "f contains NaN"),
    (lambda f: tv.tv_denoise(f * np.inf, 0.1), ValueError, "f contains NaN or infinite"),
    (lambda f: tv.tv_denoise(f + 1j, 0.1), TypeError, "f must be real"),
    (lambda f: tv.tv_denoise(f, 0.1, weights=np.ones((3, 3))), ValueError,
     "weights must have shape"),
    (lambda f: tv.tv_denoise(f, 0.1, weights=-np.ones((6, 5))), ValueError,
     "weights must be nonnegative"),
    (lambda f: tv.tv_denoise(f, 0.1, weights=np.full((6, 5), np.nan)), ValueError,
     "weights contains NaN"),
    (lambda f: tv.tv_denoise(f, 0.1, tol=0.0), ValueError, "tol"),
    (lambda f: tv.tv_denoise(f, 0.1, tol=float("nan")), ValueError, "tol"),
    (lambda f: tv.tv_denoise(f, 0.1, max_iter=0), ValueError, "max_iter"),
    (lambda f: tv.tv_denoise(f, 0.1, max_iter=math.inf), ValueError, "max_iter"),
    (lambda f: tv.tv_denoise(f, 0.1, max_iter=1.5), ValueError, "max_iter"),
    (lambda f: tv.tv_denoise(f, 0.1, max_iter=True), ValueError, "max_iter"),
    (lambda f: tv.tv_denoise(f, 0.1, check_every=0), ValueError, "check_every"),
    (lambda f: tv.tv_denoise(f, 0.1, compile="yes"), TypeError, "compile must be None"),
    (lambda f: tv.tv_norm(np.full((4, 4), np.inf)), ValueError, "u contains NaN"),
    (lambda f: tv.grad2d(np.full((4, 4), np.nan)), ValueError, "u contains NaN"),
    (lambda f: tv.grad2d(f[0, 0]), ValueError, "u must have at least 2 dimensions"),
    (lambda f: tv.div2d(f[0]), ValueError, "p must have shape"),
    (lambda f: tv.div2d(np.full((2, 3, 3), np.nan)), ValueError, "p contains NaN"),
    (lambda f: tv.chambolle_pock(lambda u: u[:-1], lambda y: y, f, 0.1), ValueError,
     "A must map"),
    (lambda f: tv.chambolle_pock(lambda u: u, lambda y: y.sum(), f, 0.1), ValueError,
     r"AT\(b\) must be an image"),
    (lambda f: tv.chambolle_pock(*_ident(), f * np.nan, 0.1), ValueError, "b contains NaN"),
    (lambda f: tv.chambolle_pock(*_ident(), f, float("inf")), ValueError, "lam"),
    (lambda f: tv.chambolle_pock(*_ident(), f, 0.1, op_norm=-1.0), ValueError, "op_norm"),
    (lambda f: tv.chambolle_pock(*_ident(), f, 0.1, step_ratio=0.0), ValueError, "step_ratio"),
    (lambda f: tv.chambolle_pock(*_ident(), f, 0.1, max_iter=math.inf), ValueError,
     "max_iter"),
    (lambda f: tv.chambolle_pock(*_ident(), f, 0.1, generator=1), TypeError, "generator"),
    (lambda f: tv.chambolle_pock(*_ident(), f, 0.1, weights=np.ones((2, 2))), ValueError,
     "weights must have shape"),
    (lambda f: tv.deconvolve_fft(f, np.ones((9, 9)), 0.1), ValueError, "kernel must be 2-D"),
    (lambda f: tv.deconvolve_fft(f, np.ones((3, 3)), 0.1, order=-1), ValueError, "order"),
    (lambda f: tv.deconvolve_fft(f, np.ones((3, 3)), 0.1, order=1.5), ValueError, "order"),
    (lambda f: tv.deconvolve_fft(f, np.ones((3, 3)), -0.1), ValueError, "lam"),
    (lambda f: tv.deconvolve_fft(f, np.array([[1.0, -1.0]]), 0.1, order=1), ValueError,
     "singular"),
    (lambda f: tv.blur_fft(f, np.full((3, 3), np.nan)), ValueError, "kernel contains NaN"),
    (lambda f: tv.pnp_proximal_gradient(lambda x: x, lambda v: v, f, 0.0), ValueError, "step"),
    (lambda f: tv.pnp_proximal_gradient(lambda x: x, lambda v: v, f * np.nan, 0.1),
     ValueError, "x0 contains NaN"),
    (lambda f: tv.pnp_proximal_gradient(lambda x: x, lambda v: v, f, 0.1, max_iter=0),
     ValueError, "max_iter"),
    (lambda f: tv.pnp_proximal_gradient(lambda x: x, lambda v: v * np.inf, f, 0.1),
     ValueError, "diverged"),
    (lambda f: tv.parallel_beam(8, [0.0, float("nan")]), ValueError, "angles"),
    (lambda f: tv.parallel_beam(8, []), ValueError, "angles"),
    (lambda f: tv.parallel_beam(0, [0.0]), ValueError, "n must be"),
    (lambda f: tv.parallel_beam(8, [0.0], n_det=0), ValueError, "n_det"),
    (lambda f: tv.matrix_operator(torch.ones(3, 5), (2, 2)), ValueError, "M must have shape"),
]


@pytest.mark.parametrize("call, exc, match", BAD,
                         ids=[f"{i}-{m[:24]}" for i, (_, _, m) in enumerate(BAD)])
def test_bad_input(rng, call, exc, match):
    f = rng.random((2, 6, 5))
    with pytest.raises(exc, match=match):
        call(f)


# --- 7. GPU -------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
def test_gpu_agrees_with_cpu(rng, dt):
    f = torch.as_tensor(rng.random((4, 64, 48)), dtype=dt)
    cpu, icpu = tv.tv_denoise(f, 0.1, return_info=True)
    gpu, igpu = tv.tv_denoise(f.cuda(), 0.1, return_info=True)
    assert gpu.is_cuda and gpu.dtype == dt and icpu.converged and igpu.converged
    t = 1e-2 if dt == torch.float32 else 1e-6
    assert float((gpu.cpu() - cpu).abs().max()) <= t
    kernel = torch.ones(3, 3, dtype=dt) / 9
    assert torch.allclose(tv.deconvolve_fft(f.cuda(), kernel.cuda(), 0.1).cpu(),
                          tv.deconvolve_fft(f, kernel, 0.1), atol=10 * torch.finfo(dt).eps)
    # Chambolle-Pock with the random start drawn on the CPU: same steps, same iterates
    gen_cpu = [torch.Generator().manual_seed(0) for _ in range(2)]
    c_cpu, i_cpu = tv.chambolle_pock(lambda u: u, lambda y: y, f, 0.1, generator=gen_cpu[0],
                                     return_info=True)
    c_gpu, i_gpu = tv.chambolle_pock(lambda u: u, lambda y: y, f.cuda(), 0.1,
                                     generator=gen_cpu[1], return_info=True)
    assert c_gpu.is_cuda and i_cpu.converged and i_gpu.converged
    assert float((c_gpu.cpu() - c_cpu).abs().max()) <= t
