"""Oracle, property and bad-input tests of regref.lowrank.

Oracles: numpy's SVD (SVT, nuclear and spectral norms, the polar factor), cvxpy's
``normNuc`` (the exact soft-impute minimiser of a tiny completion problem), the explicit
matrix of a convolution built column by column with ``torch.nn.functional.conv2d`` on
basis images (circular and zero padding), and brute-force sums (hyperspherical energy).
"""

from __future__ import annotations

import itertools
import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
import torch.nn.functional as tnf
from conftest import tol
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import regref
from regref import lowrank

F64, F32 = torch.float64, torch.float32


def np_svt(Y, tau):
    U, s, Vt = np.linalg.svd(Y, full_matrices=False)
    return (U * np.maximum(s - tau, 0)) @ Vt


def np_project_spectral(Y, radius):
    U, s, Vt = np.linalg.svd(Y, full_matrices=False)
    return (U * np.minimum(s, radius)) @ Vt


def completion(rng, m=30, n=20, rank=3, frac=0.5, noise=0.1):
    """A planted low-rank matrix, noisy, with a random mask (True = observed)."""
    Y = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    Y = Y + noise * rng.standard_normal((m, n))
    return Y, rng.random((m, n)) < frac


def objective(Y, mask, Z, lam):
    R = np.where(mask, Y - Z, 0)
    return 0.5 * (R**2).sum() + lam * np.linalg.svd(Z, compute_uv=False).sum()


def exact_gap(Y, mask, Z, lam):
    """The chapter's duality gap with the exact spectral norm of the residual."""
    R = np.where(mask, Y - Z, 0)
    a = min(1.0, lam / np.linalg.norm(R, 2))
    dual = a * (Y * R).sum() - 0.5 * a * a * (R**2).sum()
    return objective(Y, mask, Z, lam) - dual


def f64(t):
    return t.detach().cpu().double().numpy()


# --- nuclear norm and SVT --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (3, 5, 6)])
def test_svt_and_nuclear_norm_match_numpy(rng, dtype, shape):
    Y = rng.standard_normal(shape)
    taus = rng.uniform(0.2, 2.0, shape[:-2])
    Z = lowrank.svt(torch.tensor(Y, dtype=dtype), torch.tensor(taus, dtype=dtype))
    assert Z.dtype == dtype and Z.shape == shape
    want = np_svt(Y, taus) if Y.ndim == 2 else np.stack([np_svt(y, t) for y, t in zip(Y, taus,
                                                                                       strict=True)])
    assert np.abs(f64(Z) - want).max() <= tol(dtype, np.abs(Y).max() * 10)
    nuc = lowrank.nuclear_norm(torch.tensor(Y, dtype=dtype))
    assert np.allclose(f64(nuc), np.linalg.svd(Y, compute_uv=False).sum(-1),
                       rtol=tol(dtype, 10), atol=0)


def test_svt_scalar_tau_batch_and_zero(rng):
    Y = torch.tensor(rng.standard_normal((4, 6, 5)))
    assert torch.allclose(lowrank.svt(Y, 0.0), Y, atol=1e-13)
    assert torch.equal(lowrank.svt(Y, 1e3), torch.zeros_like(Y))
    looped = torch.stack([lowrank.svt(y, 0.7) for y in Y])
    assert torch.allclose(lowrank.svt(Y, 0.7), looped, atol=1e-13)


matrices = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 5)),
                  elements=st.floats(-5, 5, allow_nan=False))


@given(Y=matrices, tau=st.floats(0, 3))
def test_svt_moreau_and_optimality(Y, tau):
    """svt(Y, tau) + projection onto the spectral-norm ball of radius tau = Y, and the
    optimality conditions: ||Y - Z||_2 <= tau, <Y - Z, Z> = tau ||Z||_*."""
    Z = f64(lowrank.svt(Y, tau))
    assert np.allclose(Z + np_project_spectral(Y, tau), Y, atol=1e-10)
    G = Y - Z
    assert np.linalg.norm(G, 2) <= tau + 1e-10
    nuc = np.linalg.svd(Z, compute_uv=False).sum()
    assert abs((G * Z).sum() - tau * nuc) <= 1e-9 * max(1.0, nuc)


@given(Y1=arrays(np.float64, (4, 3), elements=st.floats(-5, 5)),
       Y2=arrays(np.float64, (4, 3), elements=st.floats(-5, 5)), tau=st.floats(0, 3))
def test_svt_is_firmly_nonexpansive(Y1, Y2, tau):
    D = f64(lowrank.svt(Y1, tau)) - f64(lowrank.svt(Y2, tau))
    assert (D * D).sum() <= (D * (Y1 - Y2)).sum() + 1e-9


# --- soft-impute -----------------------------------------------------------------------------


def test_soft_impute_matches_cvxpy(rng):
    Y, mask = completion(rng, 8, 6, rank=2, frac=0.6)
    lam = 0.5
    Zv = cp.Variable(Y.shape)
    cost = 0.5 * cp.sum_squares(cp.multiply(mask.astype(float), Y - Zv)) + lam * cp.normNuc(Zv)
    prob = cp.Problem(cp.Minimize(cost))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    Z, info = lowrank.soft_impute(Y, mask, lam, return_info=True)
    assert isinstance(info, regref.Info) and info.converged and info.certificate <= 1e-12
    # regref's gap bounds F(Z) - F* by 1e-12 P(0); the interior point is the looser one
    assert objective(Y, mask, f64(Z), lam) <= prob.value + 1e-9
    # F is 1-strongly convex on the observed entries: |Z - Z*| there <= sqrt(2 (F(Z) - F*))
    p0 = 0.5 * (Y[mask] ** 2).sum()
    assert np.abs(f64(Z) - Zv.value)[mask].max() <= math.sqrt(2 * 1e-12 * p0) + 1e-5


def test_soft_impute_is_a_fixed_point_of_svt(rng):
    Y, mask = completion(rng)
    lam = 2.0
    Z = f64(lowrank.soft_impute(Y, mask, lam))
    filled = np.where(mask, Y, Z)
    assert np.abs(np_svt(filled, lam) - Z).max() <= 1e-5 * np.abs(Y).max()
    assert 0 < np.linalg.matrix_rank(Z, 1e-8) < min(Y.shape)


@pytest.mark.parametrize("tol_", [1e-3, 1e-6, 1e-12])
def test_soft_impute_certificate_is_the_true_gap_at_the_returned_point(rng, tol_):
    """The certificate, recomputed independently at the returned point (numpy's exact
    spectral norm), equals info.certificate, and converged == (certificate <= tol)."""
    Y, mask = completion(rng, noise=0.3)
    lam = 1.0
    p0 = 0.5 * (Y[mask] ** 2).sum()
    Z, info = lowrank.soft_impute(Y, mask, lam, tol=tol_, return_info=True)
    gap = exact_gap(Y, mask, f64(Z), lam) / p0
    assert gap >= -1e-14
    # the solver inflates ||R||_2 by 4 min(m, n) eps to cover the SVD's rounding, which moves
    # the gap by at most that times lam ||Z||_* <= P(0): 2e-14 of P(0) here
    assert info.certificate == pytest.approx(gap, rel=1e-6, abs=2e-14)
    assert info.converged == (info.certificate <= tol_) and info.converged


def test_soft_impute_screened_certificate_is_still_the_true_gap(rng):
    """Above 1e5 entries the exact check is screened by a power estimate; what is returned
    is still the gap with the exact ||R||_2."""
    Y, mask = completion(rng, 400, 300, rank=3, frac=0.1, noise=0.1)
    lam = 0.3 * np.linalg.norm(np.where(mask, Y, 0), 2)
    p0 = 0.5 * (Y[mask] ** 2).sum()
    Z, info = lowrank.soft_impute(Y, mask, lam, tol=1e-8, return_info=True)
    assert info.converged
    # the inflation of ||R||_2 by 4 min(m, n) eps moves the gap by at most that times P(0)
    assert info.certificate == pytest.approx(exact_gap(Y, mask, f64(Z), lam) / p0, rel=1e-6,
                                             abs=4 * 300 * np.finfo(float).eps)


@pytest.mark.parametrize("top", [[3.0, 1.0], [2.0, 1.999], [1.0, 1.0, 1.0]],
                         ids=["gap", "near-tie", "triple"])
def test_gram_iteration_bounds_the_spectral_norm_from_above(rng, top):
    """Above 1e6 entries the certificate's ||R||_2 comes from Gram iteration: an upper
    bound, tight to about 1e-12 even when the top singular values tie."""
    m, n = 60, 40
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.concatenate([top, rng.uniform(0, 0.9, n - len(top))])
    R = (U * s) @ V.T
    mask = rng.random((m, n)) < 0.7
    Rm = np.where(mask, R, 0)
    exact = np.linalg.norm(Rm, 2)
    for A in (Rm, Rm.T):  # both sides: G = R^T R when n <= m, else R R^T
        i, j = np.nonzero(A)
        bound = lowrank._norm_gram(torch.as_tensor(i), torch.as_tensor(j), A.shape)(
            torch.as_tensor(A[i, j]))
        assert exact <= bound <= exact * (1 + 1e-12), bound / exact - 1


def test_soft_impute_gram_certified_is_the_true_gap(rng, monkeypatch):
    """Forced onto the Gram-iteration path (as above 1e6 entries), the certificate is
    still the true gap at the returned point."""
    monkeypatch.setattr(lowrank, "_EXACT_MAX", 100)
    Y, mask = completion(rng, noise=0.3)
    p0 = 0.5 * (Y[mask] ** 2).sum()
    Z, info = lowrank.soft_impute(Y, mask, 1.0, tol=1e-10, return_info=True)
    assert info.converged
    assert info.certificate == pytest.approx(exact_gap(Y, mask, f64(Z), 1.0) / p0, rel=1e-6,
                                             abs=2e-14)


def test_soft_impute_certificate_at_max_iter_is_true_too(rng):
    Y, mask = completion(rng, noise=0.3)
    p0 = 0.5 * (Y[mask] ** 2).sum()
    with pytest.warns(regref.ConvergenceWarning):
        Z, info = lowrank.soft_impute(Y, mask, 1.0, max_iter=3, return_info=True)
    assert info.n_iter == 3 and not info.converged
    assert info.certificate == pytest.approx(exact_gap(Y, mask, f64(Z), 1.0) / p0, rel=1e-6,
                                             abs=2e-14)


def test_soft_impute_default_tol_is_pinned(rng):
    Y, mask = completion(rng)
    _, info = lowrank.soft_impute(Y, mask, 1.0, return_info=True)
    assert info.certificate <= 1e-12
    _, info = lowrank.soft_impute(Y, mask, 1.0, tol=1e-12, return_info=True)
    assert info.certificate <= 1e-12
    _, info32 = lowrank.soft_impute(torch.tensor(Y, dtype=F32), torch.tensor(mask), 1.0,
                                    return_info=True)
    assert info32.converged and info32.certificate <= 1e-6


@pytest.mark.parametrize("dense", [False, True])  # P_Omega(R) as values or as a matrix
def test_soft_impute_kernel_is_copyable(rng, dense):
    from conftest import load_kernel

    Y, mask = completion(rng)
    lam = 1.5
    kernel = load_kernel(lowrank._soft_impute_kernel)
    Yt, mt = torch.tensor(Y), torch.tensor(mask)
    rows, cols = mt.nonzero(as_tuple=True)
    empty = Yt.new_zeros(30, 0), Yt.new_zeros(0), Yt.new_zeros(20, 0)

    def norm(r):  # the exact ||R||_2 of the residual, as the public function uses
        R = torch.zeros(Y.shape, dtype=F64)
        R[rows, cols] = r
        return float(torch.linalg.matrix_norm(R, 2))

    U, s, V, _, n_iter, gap = kernel(rows, cols, Yt[rows, cols], Y.shape, lam, *empty, 10,
                                     1e-12, 5000, 5, torch.Generator().manual_seed(0), norm,
                                     dense=dense)
    assert gap <= 1e-12 and n_iter < 5000
    Z = lowrank.soft_impute(Y, mask, lam, generator=torch.Generator().manual_seed(0))
    assert torch.allclose((U * s) @ V.T, Z, atol=1e-5)
    assert exact_gap(Y, mask, f64((U * s) @ V.T), lam) <= 1.001e-12 * 0.5 * (Y[mask] ** 2).sum()


def test_soft_impute_sparse_inputs_match_dense(rng):
    Y, mask = completion(rng)
    lam = 1.5
    Z = lowrank.soft_impute(Y, mask, lam)
    r, c = np.nonzero(mask)
    F = lowrank.soft_impute((r, c, Y[r, c], Y.shape), None, lam)
    assert isinstance(F, lowrank.Factors) and F.U.shape[1] == F.s.shape[0] == F.V.shape[1]
    # both are within a gap of 1e-12 P(0) of the unique minimizer: 1e-5 on the entries
    assert torch.allclose(F.dense(), Z, atol=1e-5)
    assert torch.allclose(F.at(torch.as_tensor(r), torch.as_tensor(c)), Z[mask], atol=1e-5)
    coo = torch.sparse_coo_tensor(np.stack([r, c]), Y[r, c], Y.shape, check_invariants=True)
    assert torch.allclose(lowrank.soft_impute(coo, None, lam).dense(), Z, atol=1e-5)


def test_soft_impute_path_order_warm_starts_and_one_info(rng):
    Y, mask = completion(rng)
    lams = torch.tensor([0.5, 4.0, 1.5])  # not sorted: rows follow the caller's order
    Zs, info = lowrank.soft_impute_path(Y, mask, lams, return_info=True)
    assert Zs.shape == (3,) + Y.shape and info.converged and info.certificate <= 1e-12
    p0 = 0.5 * (Y[mask] ** 2).sum()
    gaps = [exact_gap(Y, mask, f64(Zi), lam) / p0 for Zi, lam in zip(Zs, lams.tolist(),
                                                                     strict=True)]
    assert info.certificate == pytest.approx(max(gaps), rel=1e-6, abs=2e-14)  # the worst
    for Zi, lam in zip(Zs, lams.tolist(), strict=True):
        assert torch.allclose(Zi, lowrank.soft_impute(Y, mask, lam), atol=1e-5)
    # n_iter is the most iterations of one strength, which is what max_iter limits
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    _, info = lowrank.soft_impute_path(Y, mask, lams, generator=g(), return_info=True)
    _, again = lowrank.soft_impute_path(Y, mask, lams, max_iter=info.n_iter, generator=g(),
                                        return_info=True)
    assert again == info and info.n_iter < 5000
    # the gap is checked every _CHECK_EVERY iterations, so the slowest strength stopped at a
    # check, and the check before it (same arithmetic: same generator) found the gap above
    # tol; one iteration fewer would be unchecked until max_iter and could already meet tol
    every = lowrank._CHECK_EVERY
    assert info.n_iter % every == 0 and info.n_iter > every
    with pytest.warns(regref.ConvergenceWarning):
        _, short = lowrank.soft_impute_path(Y, mask, lams, max_iter=info.n_iter - every,
                                            generator=g(), return_info=True)
    assert short.n_iter == info.n_iter - every and not short.converged
    ranks = [np.linalg.matrix_rank(f64(Zi), 1e-8) for Zi in Zs]
    assert ranks[1] <= ranks[2] <= ranks[0]


def test_soft_impute_zero_above_lambda_max_and_float32(rng):
    Y, mask = completion(rng)
    lam_max = np.linalg.norm(np.where(mask, Y, 0), 2)
    zero, info = lowrank.soft_impute(Y, mask, 1.01 * lam_max, return_info=True)
    assert torch.equal(zero, torch.zeros(Y.shape, dtype=F64)) and info.certificate == 0
    Z32 = lowrank.soft_impute(torch.tensor(Y, dtype=F32), torch.tensor(mask), 1.0)
    assert Z32.dtype == F32
    assert (Z32.double() - lowrank.soft_impute(Y, mask, 1.0)).abs().max() <= 1e-2 * np.abs(Y).max()


def test_soft_impute_no_observed_entries_gives_zero():
    F, info = lowrank.soft_impute((np.zeros(0, int), np.zeros(0, int), np.zeros(0), (4, 3)),
                                  None, 1.0, return_info=True)
    assert F.dense().shape == (4, 3) and torch.equal(F.dense(), torch.zeros(4, 3, dtype=F64))
    assert info.converged and info.certificate == 0


def test_soft_impute_warns_at_max_iter_from_the_callers_line(rng):
    Y, mask = completion(rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = lowrank.soft_impute(Y, mask, 0.5, max_iter=2, return_info=True)
    assert not info.converged and info.n_iter == 2
    (w,) = [w for w in caught if issubclass(w.category, regref.ConvergenceWarning)]
    assert w.filename == __file__


def test_soft_impute_generator_is_cpu_and_reproducible(rng):
    Y, mask = completion(rng)
    Z1 = lowrank.soft_impute(Y, mask, 1.0, generator=torch.Generator().manual_seed(3))
    Z2 = lowrank.soft_impute(Y, mask, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(Z1, Z2)


# --- spectral norms --------------------------------------------------------------------------


def test_spectral_norm_batched_matches_numpy(rng, dtype, gen):
    W = torch.tensor(rng.standard_normal((5, 12, 7)), dtype=dtype)
    sigma, u, v, info = lowrank.spectral_norm(W, generator=gen, return_vectors=True,
                                              return_info=True)
    want = np.linalg.norm(f64(W), 2, axis=(-2, -1))
    assert sigma.dtype == dtype and sigma.shape == (5,)
    assert info.converged and info.n_iter % 10 == 0
    assert np.allclose(f64(sigma), want, rtol=tol(dtype, 100), atol=0)
    assert torch.allclose(W @ v[..., None], (sigma[:, None] * u)[..., None],
                          atol=tol(dtype, 100, factor=1e4))


def test_spectral_norm_certificate_is_the_residual_at_the_returned_vector(rng, gen):
    W = torch.tensor(rng.standard_normal((3, 9, 6)))
    sigma, _, v, info = lowrank.spectral_norm(W, tol=1e-6, generator=gen,
                                              return_vectors=True, return_info=True)
    theta = sigma**2
    resid = (W.mT @ (W @ v[..., None]))[..., 0] - theta[:, None] * v
    cert = float((resid.norm(dim=-1) / theta).max())
    # the returned sigma is ||W v|| for the same v: the residual matches up to rounding
    assert info.certificate == pytest.approx(cert, rel=1e-6, abs=1e-15)
    assert info.converged == (info.certificate <= 1e-6) and info.converged
    assert info.n_iter % 10 == 0


def test_spectral_norm_default_tol_is_pinned(rng, gen):
    W = torch.tensor(rng.standard_normal((8, 5)))
    _, info = lowrank.spectral_norm(W, generator=gen, return_info=True)
    assert info.certificate <= 1e-8
    _, info32 = lowrank.spectral_norm(W.float(), generator=gen, return_info=True)
    assert info32.certificate <= 1e-4


def test_spectral_norm_warns_from_the_callers_line(gen):
    W = np.diag([1.0, 0.999999, 0.5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sigma, info = lowrank.spectral_norm(W, max_iter=10, generator=gen, return_info=True)
    (w,) = [w for w in caught if issubclass(w.category, regref.ConvergenceWarning)]
    assert w.filename == __file__
    assert info.n_iter == 10 and not info.converged and info.certificate > 1e-8
    assert 0.999999 <= float(sigma) <= 1.0  # a lower bound, already close


def test_spectral_norm_empty_batch():
    assert lowrank.spectral_norm(torch.zeros(0, 3, 4)).shape == (0,)


def test_spectral_norm_of_zero_matrix(gen):
    sigma, info = lowrank.spectral_norm(torch.zeros(3, 4), generator=gen, return_info=True)
    assert float(sigma) == 0 and info.converged


def conv_matrix(K, n, padding):
    """The explicit (c_out n^2) x (c_in n^2) matrix of conv2d with 'same' output size."""
    c_in, k = K.shape[1], K.shape[-1]
    basis = torch.eye(c_in * n * n, dtype=K.dtype).reshape(-1, c_in, n, n)
    if padding == "circular":
        out = tnf.conv2d(tnf.pad(basis, [k // 2, (k - 1) // 2] * 2, mode="circular"), K)
    else:
        out = tnf.conv2d(basis, K, padding=k // 2)  # any stride-1 zero padding is a restriction
    return out.reshape(basis.shape[0], -1).T


@pytest.mark.parametrize("c_out, c_in, k, n", [(3, 2, 3, 5), (2, 4, 2, 4), (1, 1, 3, 6)])
def test_conv_singular_values_match_explicit_matrix(rng, c_out, c_in, k, n):
    K = torch.tensor(rng.standard_normal((c_out, c_in, k, k)))
    sv = lowrank.conv_singular_values(K, n)
    assert sv.shape == (n, n, min(c_out, c_in))
    dense = np.linalg.svd(f64(conv_matrix(K, n, "circular")), compute_uv=False)
    got = np.sort(f64(sv).ravel())[::-1]
    assert np.allclose(got, dense[: got.size], atol=1e-10)
    assert np.allclose(dense[got.size:], 0, atol=1e-10)  # the rest are zero (c_out != c_in)
    norm_c = float(lowrank.conv_spectral_norm(K, n))
    assert norm_c == pytest.approx(dense[0], rel=1e-12)
    zero_exact = np.linalg.norm(f64(conv_matrix(K, n, "zeros")), 2)
    assert float(lowrank.conv_spectral_norm(K, n, padding="zeros")) >= zero_exact - 1e-12


def test_conv_spectral_norm_batched(rng):
    K = torch.tensor(rng.standard_normal((4, 2, 3, 3, 3)))
    looped = torch.stack([lowrank.conv_spectral_norm(k, 8) for k in K])
    assert torch.allclose(lowrank.conv_spectral_norm(K, 8), looped, rtol=1e-13)


# --- orthogonality ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(9, 4), (4, 9), (3, 6, 6)])
@pytest.mark.parametrize("order, steps", [("cubic", 40), ("quintic", 25)])
def test_newton_schulz_matches_svd_polar(rng, dtype, shape, order, steps):
    W = rng.standard_normal(shape)
    U, _, Vt = np.linalg.svd(W, full_matrices=False)
    P = lowrank.newton_schulz(torch.tensor(W, dtype=dtype), steps, order=order)
    assert P.dtype == dtype
    assert np.abs(f64(P) - U @ Vt).max() <= tol(dtype, 1e3)


def test_newton_schulz_accuracy_depends_on_conditioning(rng):
    Q1, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    Q2, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    err = {}
    for smin in (0.5, 1e-3):
        W = (Q1 * np.geomspace(1, smin, 20)) @ Q2.T
        err[smin] = np.abs(f64(lowrank.newton_schulz(W, 10)) - Q1 @ Q2.T).max()
    assert err[0.5] < 1e-8 < err[1e-3]


def test_orthogonality_penalties(rng, dtype):
    W = torch.tensor(rng.standard_normal((7, 4)), dtype=dtype, requires_grad=True)
    pen = lowrank.orthogonality_penalty(W)
    pen.backward()
    Wd = W.detach()
    G = Wd.T @ Wd - torch.eye(4, dtype=dtype)
    assert torch.allclose(pen, (G * G).sum())
    assert torch.allclose(W.grad, 4 * Wd @ G, atol=tol(dtype, 100))
    s = np.linalg.svd(f64(Wd), compute_uv=False)
    spec = lowrank.orthogonality_penalty(Wd, kind="spectral")
    assert float(spec) == pytest.approx(np.abs(s**2 - 1).max(), rel=tol(dtype, 100))
    Q = torch.linalg.qr(torch.tensor(rng.standard_normal((4, 7)).T)).Q
    for M in (Q, Q.T):  # tall and wide
        assert float(lowrank.orthogonality_penalty(M)) <= 1e-24


def test_hyperspherical_energy(rng, dtype):
    W = rng.standard_normal((2, 6, 3))
    E = lowrank.hyperspherical_energy(torch.tensor(W, dtype=dtype))
    E0 = lowrank.hyperspherical_energy(W, s=0)
    for b in range(2):
        Wn = W[b] / np.linalg.norm(W[b], axis=1, keepdims=True)
        d = [np.linalg.norm(Wn[i] - Wn[j]) for i, j in itertools.combinations(range(6), 2)]
        assert float(E[b]) == pytest.approx(sum(1 / x for x in d), rel=tol(dtype, 100))
        assert float(E0[b]) == pytest.approx(-sum(math.log(x) for x in d), rel=1e-12)
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    # six edges of length sqrt(8/3): the Thomson minimum for N = 4
    assert float(lowrank.hyperspherical_energy(tetra)) == pytest.approx(6 / math.sqrt(8 / 3))
    assert float(lowrank.hyperspherical_energy(tetra)) == pytest.approx(3.674234, abs=1e-6)


# --- bad input -------------------------------------------------------------------------------

Y0, M0 = np.ones((4, 3)), np.ones((4, 3), bool)
SP0 = ([0, 1], [0, 1], [1.0, 2.0], (4, 3))
K0 = np.ones((1, 1, 3, 3))
BAD = [  # (call, exception, match): match names the argument
    (lambda: lowrank.svt(np.ones(3), 1.0), ValueError, r"\bY\b"),
    (lambda: lowrank.svt(Y0, -1.0), ValueError, r"\btau\b"),
    (lambda: lowrank.svt(Y0, [1.0, 2.0]), ValueError, r"\btau\b"),
    (lambda: lowrank.svt(Y0, float("nan")), ValueError, r"\btau\b"),
    (lambda: lowrank.svt(np.full((2, 2), np.nan), 1.0), ValueError, r"\bY\b"),
    (lambda: lowrank.nuclear_norm(np.ones((0, 3))), ValueError, r"\bW\b"),
    (lambda: lowrank.nuclear_norm(np.ones(3)), ValueError, r"\bW\b"),
    (lambda: lowrank.soft_impute(Y0, None, 1.0), ValueError, r"\bmask\b"),
    (lambda: lowrank.soft_impute(Y0, M0.astype(int), 1.0), ValueError, r"\bmask\b"),
    (lambda: lowrank.soft_impute(Y0, M0[:2], 1.0), ValueError, r"\bmask\b"),
    (lambda: lowrank.soft_impute(np.ones((2, 3, 4)), None, 1.0), ValueError, r"\bY\b"),
    (lambda: lowrank.soft_impute(np.ones((0, 3)), np.ones((0, 3), bool), 1.0), ValueError,
     r"\bY\b"),
    (lambda: lowrank.soft_impute(Y0, M0, -1.0), ValueError, r"\blam\b"),
    (lambda: lowrank.soft_impute(Y0, M0, float("nan")), ValueError, r"\blam\b"),
    (lambda: lowrank.soft_impute(Y0, M0, [1.0, 2.0]), ValueError, r"\blam\b"),
    (lambda: lowrank.soft_impute(Y0, M0, 1.0, tol=0), ValueError, r"\btol\b"),
    (lambda: lowrank.soft_impute(Y0, M0, 1.0, max_iter=0), ValueError, r"\bmax_iter\b"),
    (lambda: lowrank.soft_impute(Y0, M0, 1.0, max_iter=1.5), ValueError, r"\bmax_iter\b"),
    (lambda: lowrank.soft_impute(Y0, M0, 1.0, max_iter=True), ValueError, r"\bmax_iter\b"),
    (lambda: lowrank.soft_impute(Y0, M0, 1.0, max_iter=math.inf), ValueError,
     r"\bmax_iter\b"),
    (lambda: lowrank.soft_impute(Y0, M0, 1.0, rank=0), ValueError, r"\brank\b"),
    (lambda: lowrank.soft_impute(Y0, M0, 1.0, generator=1), TypeError, r"\bgenerator\b"),
    (lambda: lowrank.soft_impute(np.where(M0, np.inf, 0), M0, 1.0), ValueError, r"\bY\b"),
    (lambda: lowrank.soft_impute(([0, 5], [0, 1], [1.0, 2.0], (4, 3)), None, 1.0),
     ValueError, r"\bY rows\b"),
    (lambda: lowrank.soft_impute(([0, 0], [1, 1], [1.0, 2.0], (4, 3)), None, 1.0),
     ValueError, r"\bY has duplicate\b"),
    (lambda: lowrank.soft_impute(([0.0, 1.0], [0, 1], [1.0, 2.0], (4, 3)), None, 1.0),
     ValueError, r"\bY rows and cols\b"),
    (lambda: lowrank.soft_impute(([0, 1], [0, 1], [1.0], (4, 3)), None, 1.0), ValueError,
     r"\bY rows, cols and values\b"),
    (lambda: lowrank.soft_impute(([0, 1], [0, 1], [1.0, 2.0], (4, 0)), None, 1.0),
     ValueError, r"\bY shape\b"),
    (lambda: lowrank.soft_impute(SP0, M0, 1.0), ValueError, r"\bmask=None\b"),
    (lambda: lowrank.soft_impute(SP0[:3], None, 1.0), ValueError, r"\bY as a tuple\b"),
    (lambda: lowrank.soft_impute_path(Y0, M0, []), ValueError, r"\blams\b"),
    (lambda: lowrank.soft_impute_path(Y0, M0, [1.0, -1.0]), ValueError, r"\blams\b"),
    (lambda: lowrank.spectral_norm(np.ones(3)), ValueError, r"\bW\b"),
    (lambda: lowrank.spectral_norm(np.full((2, 2), np.inf)), ValueError, r"\bW\b"),
    (lambda: lowrank.spectral_norm(Y0, tol=-1), ValueError, r"\btol\b"),
    (lambda: lowrank.spectral_norm(Y0, max_iter=0), ValueError, r"\bmax_iter\b"),
    (lambda: lowrank.spectral_norm(Y0, max_iter=2.5), ValueError, r"\bmax_iter\b"),
    (lambda: lowrank.spectral_norm(Y0, generator="cpu"), TypeError, r"\bgenerator\b"),
    (lambda: lowrank.conv_singular_values(np.ones((2, 3, 3)), 5), ValueError, r"\bkernel\b"),
    (lambda: lowrank.conv_singular_values(np.ones((1, 1, 5, 5)), 3), ValueError,
     r"\bkernel\b"),
    (lambda: lowrank.conv_singular_values(np.ones((0, 1, 3, 3)), 5), ValueError,
     r"\bkernel\b"),
    (lambda: lowrank.conv_singular_values(np.full((1, 1, 3, 3), np.nan), 5), ValueError,
     r"\bkernel\b"),
    (lambda: lowrank.conv_spectral_norm(K0, 5, padding="same"), ValueError, r"\bpadding\b"),
    (lambda: lowrank.conv_spectral_norm(K0, 0), ValueError, r"\bn\b"),
    (lambda: lowrank.conv_spectral_norm(K0, (5, 5, 5)), ValueError, r"\bn\b"),
    (lambda: lowrank.conv_spectral_norm(K0, 5.5), ValueError, r"\bn\b"),
    (lambda: lowrank.newton_schulz(Y0, -1), ValueError, r"\bsteps\b"),
    (lambda: lowrank.newton_schulz(Y0, 2.5), ValueError, r"\bsteps\b"),
    (lambda: lowrank.newton_schulz(Y0, True), ValueError, r"\bsteps\b"),
    (lambda: lowrank.newton_schulz(Y0, order="septic"), ValueError, r"\border\b"),
    (lambda: lowrank.orthogonality_penalty(Y0, kind="l1"), ValueError, r"\bkind\b"),
    (lambda: lowrank.hyperspherical_energy(Y0, s=-1), ValueError, r"\bs\b"),
    (lambda: lowrank.hyperspherical_energy(Y0, s="x"), ValueError, r"\bs\b"),
    (lambda: lowrank.hyperspherical_energy(Y0, s=math.inf), ValueError, r"\bs\b"),
    (lambda: lowrank.hyperspherical_energy(np.ones((1, 3))), ValueError, r"\bW\b"),
    (lambda: lowrank.hyperspherical_energy(np.zeros((3, 3))), ValueError, r"\bW\b"),
    (lambda: lowrank.hyperspherical_energy(np.array([[1.0, 0], [2.0, 0], [0, 1]])),
     ValueError, r"\bW\b.*same direction"),
]


@pytest.mark.parametrize("call, exc, match", BAD,
                         ids=[f"{i}-{m}" for i, (_, _, m) in enumerate(BAD)])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_hyperspherical_energy_antipodal_rows_are_fine():
    assert float(lowrank.hyperspherical_energy(np.array([[1.0, 0], [-3.0, 0]]))) == 0.5


# --- GPU -------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cpu_gpu_agree(rng):
    Y, mask = completion(rng, 60, 50)
    g = torch.Generator().manual_seed(0)  # a CPU generator works with CUDA data
    Z = lowrank.soft_impute(Y, mask, 1.0, generator=g)
    Zc = lowrank.soft_impute(torch.tensor(Y, device="cuda"), torch.tensor(mask, device="cuda"),
                             1.0, generator=torch.Generator().manual_seed(0))
    assert Zc.device.type == "cuda" and torch.allclose(Zc.cpu(), Z, atol=1e-5)
    r, c = np.nonzero(mask)
    F = lowrank.soft_impute((torch.tensor(r, device="cuda"), torch.tensor(c, device="cuda"),
                             torch.tensor(Y[r, c], device="cuda"), Y.shape), None, 1.0)
    assert F.U.device.type == "cuda" and torch.allclose(F.dense().cpu(), Z, atol=1e-5)
    W = torch.tensor(rng.standard_normal((3, 20, 10)))
    assert torch.allclose(lowrank.svt(W.cuda(), 0.5).cpu(), lowrank.svt(W, 0.5), atol=1e-10)
    assert torch.allclose(lowrank.newton_schulz(W.cuda(), 30).cpu(),
                          lowrank.newton_schulz(W, 30), atol=1e-10)
    K = torch.tensor(rng.standard_normal((4, 3, 3, 3)))
    assert torch.allclose(lowrank.conv_spectral_norm(K.cuda(), 16).cpu(),
                          lowrank.conv_spectral_norm(K, 16))
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(lowrank.spectral_norm(W.cuda(), generator=g).cpu(),
                          torch.linalg.matrix_norm(W, 2), rtol=1e-10)
