"""Oracle tests of regref.ridge against scikit-learn and explicit numpy formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import eps
from sklearn.kernel_approximation import RBFSampler
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics.pairwise import rbf_kernel as sk_rbf_kernel

from regref import ConvergenceWarning, Info, ridge

SHAPES = [(40, 8), (9, 25)]  # n > p and n < p
SHAPE_IDS = ["n>p", "n<p"]
LAMS = [3.0, 0.05, 40.0, 1.0]  # deliberately unsorted


def problem(rng, n, p, k=None):
    """A well-conditioned Gaussian design and a response with signal and noise."""
    X = rng.standard_normal((n, p))
    w = rng.standard_normal((p,) if k is None else (p, k))
    y = X @ w + 0.5 * rng.standard_normal((n,) if k is None else (n, k))
    return X, y


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(np.float64).tiny))


def sk_ridge(X, y, lam):
    """scikit-learn's coefficients, shaped like regref's: (p,) or (p, k)."""
    coef = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(X, y).coef_
    return coef.T


def hat(X, lam):
    """The explicit hat matrix X (X^T X + lam I)^+ X^T."""
    p = X.shape[1]
    return X @ np.linalg.pinv(X.T @ X + lam * np.eye(p), hermitian=True) @ X.T


# --- ridge and ridge_path vs scikit-learn ----------------------------------------------


@pytest.mark.parametrize("n, p", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("k", [None, 3], ids=["y1d", "y2d"])
def test_ridge_path_matches_sklearn(rng, n, p, k):
    X, y = problem(rng, n, p, k)
    W = ridge.ridge_path(torch.as_tensor(X), torch.as_tensor(y), torch.tensor(LAMS))
    assert W.dtype == torch.float64
    assert W.shape == (len(LAMS), p) + (() if k is None else (k,))
    for row, lam in zip(W, LAMS, strict=True):  # rows follow the caller's order
        assert rel_err(row.numpy(), sk_ridge(X, y, lam)) < 1e-8


@pytest.mark.parametrize("n, p", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("k", [None, 3], ids=["y1d", "y2d"])
@pytest.mark.parametrize("lam", [0.05, 1.0, 40.0])
def test_ridge_matches_sklearn(rng, n, p, k, lam):
    X, y = problem(rng, n, p, k)
    w = ridge.ridge(torch.as_tensor(X), torch.as_tensor(y), lam)
    assert w.dtype == torch.float64 and w.shape == (p,) + (() if k is None else (k,))
    assert rel_err(w.numpy(), sk_ridge(X, y, lam)) < 1e-8


def test_ridge_path_row_order_follows_lams(rng):
    X, y = problem(rng, 30, 6)
    lams = torch.tensor(LAMS, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])
    W = ridge.ridge_path(X, y, lams)
    torch.testing.assert_close(ridge.ridge_path(X, y, lams[perm]), W[perm], rtol=1e-12, atol=0)
    # rows differ (so the check above has teeth), and shrink monotonically with lam
    norms = W.norm(dim=1)
    order = torch.argsort(lams)
    assert torch.all(norms[order][1:] < norms[order][:-1])


@pytest.mark.parametrize("n, p", SHAPES + [(20, 20)], ids=SHAPE_IDS + ["n=p"])
@pytest.mark.parametrize("k", [None, 2], ids=["y1d", "y2d"])
def test_lam_zero_is_minimum_norm_least_squares(rng, n, p, k):
    X, y = problem(rng, n, p, k)
    if n == p:  # make it rank deficient, so the minimum-norm choice matters
        X[:, -1] = X[:, 0]
    expected = np.linalg.lstsq(X, y, rcond=None)[0]
    cond = np.linalg.cond(X[:, :-1] if n == p else X)
    tol_ = 100 * eps(torch.float64) * cond**2
    assert rel_err(ridge.ridge(X, y, 0.0).numpy(), expected) < tol_
    W = ridge.ridge_path(X, y, [1.0, 0.0])
    assert rel_err(W[1].numpy(), expected) < tol_
    assert rel_err(W[0].numpy(), sk_ridge(X, y, 1.0)) < 1e-8


# --- LOO, GCV, degrees of freedom ------------------------------------------------------


def brute_force_loo(X, y, lam):
    """Mean squared error of predicting each y_i from a ridge fit without point i."""
    n, p = X.shape
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        Xi, yi = X[keep], y[keep]
        w = np.linalg.lstsq(np.vstack([Xi, np.sqrt(lam) * np.eye(p)]),
                            np.concatenate([yi, np.zeros((p,) + y.shape[1:])]), rcond=None)[0]
        errs.append((y[i] - X[i] @ w) ** 2)
    return float(np.mean(errs))


@pytest.mark.parametrize("n, p, lams", [(15, 4, [0.0, 2.0, 0.3]), (8, 12, [5.0, 0.1])],
                         ids=SHAPE_IDS)
@pytest.mark.parametrize("k", [None, 2], ids=["y1d", "y2d"])
def test_ridge_loo_matches_brute_force_refits(rng, n, p, lams, k):
    X, y = problem(rng, n, p, k)
    loo = ridge.ridge_loo(X, y, lams)
    assert loo.shape == (len(lams),) and loo.dtype == torch.float64
    expected = [brute_force_loo(X, y, lam) for lam in lams]
    np.testing.assert_allclose(loo.numpy(), expected, rtol=1e-9)


def conditioned_design(rng, n, p, cond):
    """An n x p design (either shape) with singular values from 1 down to 1/cond."""
    return ill_conditioned(rng, n, p, cond) if n >= p else ill_conditioned(rng, p, n, cond).T


# (n, p, cond(X)): both shapes (n < p: the Gram eigendecomposition, in 4 block rows; n >= p:
# the SVD), a well- and an ill-conditioned design
CV_CASES = [(60, 12, 10.0), (60, 12, 1e3), (12, 60, 10.0), (12, 60, 1e3), (30, 30, 1e2)]


@pytest.mark.parametrize("n, p, cond", CV_CASES)
@pytest.mark.parametrize("k", [None, 3], ids=["y1d", "y2d"])
def test_ridge_loo_return_coef_matches_sklearn_ridgecv(rng, n, p, cond, k):
    X = conditioned_design(rng, n, p, cond)
    w_true = rng.standard_normal((p,) if k is None else (p, k))
    y = X @ w_true + 0.05 * rng.standard_normal((n,) if k is None else (n, k))
    lams = np.logspace(-6, 2, 33)[::-1].copy()  # descending: the order is the caller's
    loo, w = ridge.ridge_loo(X, y, lams, return_coef=True)
    model = RidgeCV(alphas=lams, fit_intercept=False).fit(X, y)
    i = int(loo.argmin())
    assert 0 < i < len(lams) - 1  # an interior minimum: the selection is tested
    # the same choice; not a near tie, so rounding cannot flip it
    assert lams[i] == model.alpha_
    runner_up = float(loo[[i - 1, i + 1]].min())
    assert runner_up > float(loo[i]) * (1 + 1e-9)
    assert torch.equal(loo, ridge.ridge_loo(X, y, lams))  # return_coef changes nothing
    assert w.shape == (p,) + (() if k is None else (k,)) and w.dtype == torch.float64
    # both solve (X^T X + lam I) w = X^T y (or its dual) through a symmetric eigen/SVD
    # factorization: forward error <= max(n, p) eps kappa, kappa the condition number of
    # the system, (s_max^2 + lam) / (s_min^2 + lam) over the nonzero singular values
    s = np.linalg.svd(X, compute_uv=False)
    kappa = (s[0] ** 2 + lams[i]) / (s[-1] ** 2 + lams[i])
    assert rel_err(w.numpy(), model.coef_.T) < max(n, p) * eps(torch.float64) * kappa
    # and it is the ridge solution at the chosen strength
    assert rel_err(w.numpy(), sk_ridge(X, y, lams[i])) < max(n, p) * eps(torch.float64) * kappa


def test_ridge_loo_return_coef_is_float32_and_on_the_path(rng, dtype):
    X, y = problem(rng, 10, 30, 2)
    Xt, yt = torch.as_tensor(X).to(dtype), torch.as_tensor(y).to(dtype)
    lams = torch.logspace(-2, 3, 11, dtype=dtype)
    loo, w = ridge.ridge_loo(Xt, yt, lams, return_coef=True)
    assert loo.dtype == w.dtype == dtype and w.shape == (30, 2)
    W = ridge.ridge_path(Xt, yt, lams)
    assert rel_err(w.double().numpy(), W[int(loo.argmin())].double().numpy()) < 1e3 * eps(dtype)


@pytest.mark.parametrize("n, p, lams", [(25, 6, [0.0, 2.0, 0.3]), (8, 12, [5.0, 0.1, 60.0])],
                         ids=SHAPE_IDS)
@pytest.mark.parametrize("k", [None, 2], ids=["y1d", "y2d"])
def test_ridge_gcv_matches_explicit_formula(rng, n, p, lams, k):
    X, y = problem(rng, n, p, k)
    gcv = ridge.ridge_gcv(X, y, lams)
    assert gcv.shape == (len(lams),)
    expected = []
    for lam in lams:
        H = hat(X, lam)
        r = y - H @ y
        expected.append(np.mean(r**2) / (1 - np.trace(H) / n) ** 2)
    np.testing.assert_allclose(gcv.numpy(), expected, rtol=1e-9)


@pytest.mark.parametrize("n, p", SHAPES, ids=SHAPE_IDS)
def test_ridge_df_is_trace_of_hat_matrix(rng, n, p):
    X, _ = problem(rng, n, p)
    lams = [2.0, 0.0, 0.5, 100.0]
    df = ridge.ridge_df(X, lams)
    assert df.shape == (len(lams),)
    np.testing.assert_allclose(df.numpy(), [np.trace(hat(X, lam)) for lam in lams], rtol=1e-10)
    assert abs(float(df[1]) - min(n, p)) < 1e-10  # rank at lam = 0


def test_ridge_df_counts_rank_of_deficient_design(rng):
    X, _ = problem(rng, 12, 5)
    X[:, 4] = X[:, 0] - X[:, 1]  # rank 4
    assert abs(float(ridge.ridge_df(X, [0.0])[0]) - 4) < 1e-10


# --- kernel ridge, RBF kernel, random features -----------------------------------------


@pytest.mark.parametrize("k", [None, 2], ids=["y1d", "y2d"])
def test_kernel_ridge_matches_sklearn(rng, k):
    Xs, y = problem(rng, 30, 4, k)
    K = sk_rbf_kernel(Xs, gamma=0.3)
    for lam in (1e-3, 0.5, 10.0):
        expected = KernelRidge(alpha=lam, kernel="precomputed").fit(K, y).dual_coef_
        alpha = ridge.kernel_ridge(torch.as_tensor(K), torch.as_tensor(y), lam)
        assert alpha.shape == y.shape and alpha.dtype == torch.float64
        assert rel_err(alpha.numpy(), expected) < 1e-8
    lams = torch.tensor([10.0, 0.01, 0.5], dtype=torch.float64)
    A = ridge.kernel_ridge(K, y, lams)
    assert A.shape == (3,) + y.shape
    for row, lam in zip(A, lams.tolist(), strict=True):
        expected = KernelRidge(alpha=lam, kernel="precomputed").fit(K, y).dual_coef_
        assert rel_err(row.numpy(), expected) < 1e-8


def test_kernel_ridge_is_ridge_for_linear_kernel(rng):
    # representer theorem: X^T alpha = w_ridge for K = X X^T
    X, y = problem(rng, 10, 30)
    alpha = ridge.kernel_ridge(X @ X.T, y, 0.7)
    assert rel_err(X.T @ alpha.numpy(), sk_ridge(X, y, 0.7)) < 1e-8


@pytest.mark.parametrize("length_scale", [None, 0.5, 3.0])
@pytest.mark.parametrize("with_z", [False, True])
def test_rbf_kernel_matches_sklearn(rng, length_scale, with_z):
    X = rng.standard_normal((12, 5))
    Z = rng.standard_normal((7, 5)) if with_z else None
    K = ridge.rbf_kernel(torch.as_tensor(X), None if Z is None else torch.as_tensor(Z),
                         length_scale)
    # scikit-learn's gamma is 1/(2 l^2); its default gamma = 1/p is l = sqrt(p/2)
    gamma = None if length_scale is None else 1 / (2 * length_scale**2)
    expected = sk_rbf_kernel(X, Z, gamma=gamma)
    assert K.shape == expected.shape and K.dtype == torch.float64
    np.testing.assert_allclose(K.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_rbf_kernel_is_the_documented_formula():
    X = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)  # distance 5
    K = ridge.rbf_kernel(X, length_scale=2.0)
    assert abs(float(K[0, 1]) - np.exp(-25 / 8)) < 1e-15


def test_random_features_match_sklearn_rbf_sampler(rng, gen):
    X = rng.standard_normal((20, 6))
    length_scale, D = 1.1, 64
    W, b = ridge.rff_weights(6, D, length_scale, generator=gen)
    assert W.shape == (6, D) and b.shape == (D,) and W.dtype == torch.float64
    sampler = RBFSampler(gamma=1 / (2 * length_scale**2), n_components=D,
                         random_state=0).fit(X)
    sampler.random_weights_ = W.numpy()
    sampler.random_offset_ = b.numpy()
    Phi = ridge.random_features(torch.as_tensor(X), W, b)
    np.testing.assert_allclose(Phi.numpy(), sampler.transform(X), rtol=1e-12, atol=1e-14)


def test_rff_weights_are_reproducible_and_distributed_as_documented():
    length_scale = 0.8
    W1, b1 = ridge.rff_weights(3, 20000, length_scale,
                               generator=torch.Generator().manual_seed(5))
    W2, b2 = ridge.rff_weights(3, 20000, length_scale,
                               generator=torch.Generator().manual_seed(5))
    assert torch.equal(W1, W2) and torch.equal(b1, b2)
    # W ~ N(0, 1/l^2), b ~ U[0, 2 pi): 60000 and 20000 draws; 6 standard errors
    m, var = W1.numel(), 1 / length_scale**2
    assert abs(float(W1.mean())) < 6 * np.sqrt(var / m)
    assert abs(float(W1.var()) - var) < 6 * var * np.sqrt(2 / m)
    assert float(b1.min()) >= 0 and float(b1.max()) < 2 * np.pi
    assert abs(float(b1.mean()) - np.pi) < 6 * (2 * np.pi / np.sqrt(12)) / np.sqrt(b1.numel())


def test_rff_weights_draw_in_float64_on_the_cpu_whatever_the_dtype():
    # the float32 weights are the float64 ones rounded: the dtype does not change the draws
    W64, b64 = ridge.rff_weights(4, 7, 0.5, generator=torch.Generator().manual_seed(2))
    W32, b32 = ridge.rff_weights(4, 7, 0.5, generator=torch.Generator().manual_seed(2),
                                 dtype=torch.float32)
    assert W32.dtype == b32.dtype == torch.float32
    assert torch.equal(W32, W64.float()) and torch.equal(b32, b64.float())


def test_random_features_kernel_error_shrinks_with_d(rng):
    X = torch.as_tensor(rng.standard_normal((25, 4)))
    length_scale = np.sqrt(2.0)
    K = ridge.rbf_kernel(X, length_scale=length_scale)
    errs = []
    for D in (16, 256, 4096):
        W, b = ridge.rff_weights(4, D, length_scale, generator=torch.Generator().manual_seed(D))
        Phi = ridge.random_features(X, W, b)
        errs.append(float((Phi @ Phi.T - K).abs().max()))
    # O(D^-1/2): a factor 16 in D is a factor 4 in error; demand at least 2 each step
    assert errs[1] < errs[0] / 2 and errs[2] < errs[1] / 2
    assert errs[2] < 6 / np.sqrt(4096)  # entries have variance <= 1/D


# --- Info, dtypes, array-likes ---------------------------------------------------------


def ill_conditioned(rng, n, p, cond):
    """A design with singular values spread log-uniformly from 1 down to 1/cond."""
    U, _ = np.linalg.qr(rng.standard_normal((n, p)))
    V, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return (U * np.logspace(0, -np.log10(cond), p)) @ V.T


def kkt(X, y, lam, w) -> float:
    """The relative KKT residual ||X^T(Xw - y) + lam w|| / ||X^T y||, in float64 numpy."""
    X, y, w = (np.asarray(a, dtype=np.float64) for a in (X, y, w))
    return float(np.linalg.norm(X.T @ (X @ w - y) + lam * w) / np.linalg.norm(X.T @ y))


# (dtype, cond(X), lam): certificates from about 1e-16 to about 1e-3, on both sides of
# the default tolerances 1e-8 (float64) and 1e-4 (float32)
CERT_CASES = [(torch.float64, 10, 0.0), (torch.float64, 1e7, 0.0), (torch.float64, 1e3, 1.0),
              (torch.float32, 10, 0.0), (torch.float32, 1e3, 0.0), (torch.float32, 1e5, 0.0),
              (torch.float32, 1e5, 1e-3)]


@pytest.mark.parametrize("solver", ["ridge", "ridge_path"])
@pytest.mark.parametrize("dtype_, cond, lam", CERT_CASES)
def test_certificate_is_the_kkt_residual_of_the_returned_point(rng, solver, dtype_, cond,
                                                               lam):
    X = torch.as_tensor(ill_conditioned(rng, 40, 8, cond)).to(dtype_)
    y = torch.as_tensor(rng.standard_normal(40)).to(dtype_)
    tol_ = ridge.TOL_FLOAT64 if dtype_ == torch.float64 else ridge.TOL_FLOAT32
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        if solver == "ridge":
            w, info = ridge.ridge(X, y, lam, return_info=True)
        else:
            W, info = ridge.ridge_path(X, y, [lam, 10.0], return_info=True)
            w = W[0]
    # recomputed in float64 from the returned point (the data as the solver saw them)
    cert = kkt(X.double(), y.double(), lam, w.double())
    if solver == "ridge_path":
        cert = max(cert, kkt(X.double(), y.double(), 10.0, W[1].double()))
    assert isinstance(info, Info) and info.n_iter == 1
    # both are rounding-level residuals: computed in dtype they agree to within 50 %
    assert abs(info.certificate - cert) <= 0.5 * max(info.certificate, cert)
    assert info.converged == (info.certificate <= tol_)
    assert info.converged == (cert <= tol_)  # no case is within 50 % of the tolerance


@pytest.mark.parametrize("dtype_, default, conds", [
    (torch.float64, 1e-8, np.logspace(1, 15, 15)), (torch.float32, 1e-4, np.logspace(1, 7, 13))])
def test_default_tolerance_is_pinned(rng, dtype_, default, conds):
    assert (ridge.TOL_FLOAT64, ridge.TOL_FLOAT32) == (1e-8, 1e-4)
    outcomes = set()
    for cond in conds:  # certificates from rounding level up past the default tolerance
        X = torch.as_tensor(ill_conditioned(rng, 40, 8, cond)).to(dtype_)
        y = torch.as_tensor(rng.standard_normal(40)).to(dtype_)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            _, info = ridge.ridge(X, y, 0.0, return_info=True)
        assert info.converged == (info.certificate <= default)
        outcomes.add(info.converged)
    assert outcomes == {True, False}  # the default was met and missed


def test_not_converged_warns_at_the_callers_line(rng):
    X, y = problem(rng, 20, 5)
    for call in (lambda: ridge.ridge(X, y, 1.0, tol=1e-30, return_info=True),
                 lambda: ridge.ridge(X, y, 0.0, tol=1e-30, return_info=True),
                 lambda: ridge.ridge_path(X, y, [0.5, 1.0], tol=1e-30, return_info=True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, info = call()
        assert not info.converged and info.certificate > 1e-30
        assert len(caught) == 1 and issubclass(caught[0].category, ConvergenceWarning)
        assert caught[0].filename == __file__
        assert "tol" in str(caught[0].message)


@pytest.mark.parametrize("n, p", SHAPES, ids=SHAPE_IDS)
def test_return_info_does_not_change_the_solution(rng, n, p, dtype):
    X, y = problem(rng, n, p, 2)
    Xt, yt = torch.as_tensor(X).to(dtype), torch.as_tensor(y).to(dtype)
    w, info = ridge.ridge(Xt, yt, 0.7, return_info=True)
    assert info.converged
    assert torch.equal(w, ridge.ridge(Xt, yt, 0.7))
    W, info = ridge.ridge_path(Xt, yt, [0.0, 0.7, 5.0], return_info=True)
    assert info.converged and torch.equal(W, ridge.ridge_path(Xt, yt, [0.0, 0.7, 5.0]))
    w0, info0 = ridge.ridge(Xt, yt, 0.0, return_info=True)
    assert w0.shape == (p, 2) and info0.converged


# --- limiting risk (proportional asymptotics) ------------------------------------------


def simulated_risk(ratio, lam, n, seeds, signal=1.0, noise=1.0):
    """||w_hat - w_star||^2 of ridge(X, y, n lam) over seeds: isotropic Gaussian rows,
    ||w_star||^2 = signal, noise variance noise."""
    p = int(round(ratio * n))
    out = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(n, p, generator=g, dtype=torch.float64)
        w = torch.randn(p, generator=g, dtype=torch.float64)
        w *= np.sqrt(signal) / w.norm()
        y = X @ w + np.sqrt(noise) * torch.randn(n, generator=g, dtype=torch.float64)
        out.append(float((ridge.ridge(X, y, n * lam) - w).square().sum()))
    return np.array(out)


@pytest.mark.parametrize("ratio, lam, signal, noise", [
    (0.5, 0.0, 1.0, 1.0), (0.5, 0.3, 1.0, 1.0), (2.0, 0.01, 1.0, 1.0),
    (2.0, 2.0, 1.0, 1.0), (1.0, 0.5, 2.0, 0.5), (3.0, 0.1, 1.0, 0.25)])
def test_ridge_risk_limit_matches_simulation(ratio, lam, signal, noise):
    n, seeds = 200, 12
    risks = simulated_risk(ratio, lam, n, seeds, signal, noise)
    limit = float(ridge.ridge_risk_limit(ratio, lam, signal=signal, noise=noise))
    # 4 Monte Carlo standard errors, plus the O(1/n) finite-size bias: at lam = 0 and
    # ratio < 1 the exact mean is noise * p / (n - p - 1), so the bias is about
    # limit * (1 + 1/(1 - ratio)) / n; allow 3/n of the limit
    margin = 4 * risks.std(ddof=1) / np.sqrt(seeds) + 3 * limit / n
    assert abs(risks.mean() - limit) < margin


def test_ridge_risk_limit_properties():
    lam = torch.logspace(-3, 2, 400, dtype=torch.float64)
    for ratio in (0.3, 1.0, 2.5):
        for signal, noise in ((1.0, 1.0), (2.0, 0.5)):
            R = ridge.ridge_risk_limit(ratio, lam, signal=signal, noise=noise)
            best = float(lam[R.argmin()])
            star = noise * ratio / signal
            # the grid minimizer is the grid point next to lambda* = sigma^2 gamma / r^2
            assert abs(np.log(best / star)) <= np.log(float(lam[1] / lam[0])) + 1e-12
    # continuity at lam = 0 (the ridgeless limits) and the infinite peak at ratio = 1
    for ratio in (0.5, 2.0):
        at0 = float(ridge.ridge_risk_limit(ratio, 0.0))
        assert abs(float(ridge.ridge_risk_limit(ratio, 1e-7)) - at0) < 1e-5
    assert float(ridge.ridge_risk_limit(1.0, 0.0)) == np.inf
    # lam -> infinity: w_hat -> 0, the risk tends to ||w_star||^2
    assert abs(float(ridge.ridge_risk_limit(2.0, 1e8, signal=3.0)) - 3.0) < 1e-6
    R = ridge.ridge_risk_limit(torch.tensor([[0.5], [2.0]]), torch.tensor([0.0, 1.0, 2.0]))
    assert R.shape == (2, 3) and R.dtype == torch.float32


def _all_calls(X, y, K):
    n, p = X.shape
    # float64 weights from a fixed seed; random_features converts them to X's dtype
    W, b = ridge.rff_weights(p, 16, 1.0, generator=torch.Generator().manual_seed(0))
    if not isinstance(X, torch.Tensor):
        W, b = W.numpy(), b.numpy()
    return {
        "ridge": lambda: ridge.ridge(X, y, 0.5),
        "ridge_path": lambda: ridge.ridge_path(X, y, [0.5, 2.0]),
        "ridge_df": lambda: ridge.ridge_df(X, [0.5, 2.0]),
        "ridge_loo": lambda: ridge.ridge_loo(X, y, [0.5, 2.0]),
        "ridge_gcv": lambda: ridge.ridge_gcv(X, y, [0.5, 2.0]),
        "kernel_ridge": lambda: ridge.kernel_ridge(K, y, 0.5),
        "kernel_ridge_lams": lambda: ridge.kernel_ridge(K, y, [0.5, 2.0]),
        "rbf_kernel": lambda: ridge.rbf_kernel(X),
        "random_features": lambda: ridge.random_features(X, W, b),
    }


CALLS = list(_all_calls(np.ones((3, 2)), np.ones(3), np.eye(3)))


@pytest.mark.parametrize("name", CALLS)
def test_dtype_preserved_and_close_to_float64(rng, name, dtype):
    X, y = problem(rng, 12, 4)
    K = sk_rbf_kernel(X, gamma=0.5)
    ref = _all_calls(torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(K))[name]()
    def t(a):
        return torch.as_tensor(a).to(dtype)

    out = _all_calls(t(X), t(y), t(K))[name]()
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out.double().numpy(), ref.numpy()) < 1e4 * eps(dtype)


@pytest.mark.parametrize("name", CALLS)
def test_numpy_in_tensor_out(rng, name):
    X, y = problem(rng, 12, 4)
    K = sk_rbf_kernel(X, gamma=0.5)
    out = _all_calls(X, y, K)[name]()
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    out32 = _all_calls(X.astype(np.float32), y, K.astype(np.float32))[name]()
    assert out32.dtype == torch.float32


def test_python_lists_are_float64(rng):
    X, y = problem(rng, 6, 3)
    w = ridge.ridge(X.tolist(), y.tolist(), 1)
    assert w.dtype == torch.float64
    assert rel_err(w.numpy(), sk_ridge(X, y, 1.0)) < 1e-8


# --- bad input -------------------------------------------------------------------------

_r = np.random.default_rng(3)
X0 = torch.as_tensor(_r.standard_normal((6, 3)))
y0 = torch.as_tensor(_r.standard_normal(6))
Xw = torch.as_tensor(_r.standard_normal((4, 7)))  # n < p
yw = torch.as_tensor(_r.standard_normal(4))
K0 = torch.as_tensor(sk_rbf_kernel(X0.numpy()))
W0, b0 = ridge.rff_weights(3, 5, 1.0, generator=torch.Generator().manual_seed(0))
NAN_X = X0.clone()
NAN_X[2, 1] = float("nan")
INF_Y = y0.clone()
INF_Y[0] = float("inf")
ASYM = K0.clone()
ASYM[0, 1] += 0.1
NAN, INF = float("nan"), float("inf")
NOT_PSD = -torch.eye(4, dtype=torch.float64)  # symmetric, negative definite

V, T = ValueError, TypeError

# (call, exception, match): match names the argument (as a whole word)
BAD = {
    # data
    "ridge-X-1d": (lambda: ridge.ridge(y0, y0, 1.0), V, "X"),
    "ridge-X-3d": (lambda: ridge.ridge(X0[None], y0, 1.0), V, "X"),
    "ridge-y-rows": (lambda: ridge.ridge(X0, y0[:5], 1.0), V, "y"),
    "ridge-y-3d": (lambda: ridge.ridge(X0, y0[:, None, None], 1.0), V, "y"),
    "ridge-X-nan": (lambda: ridge.ridge(NAN_X, y0, 1.0), V, "X"),
    "ridge-y-inf": (lambda: ridge.ridge(X0, INF_Y, 1.0), V, "y"),
    "ridge-X-empty": (lambda: ridge.ridge(X0[:, :0], y0, 1.0), V, "X"),
    "ridge-X-no-rows": (lambda: ridge.ridge(X0[:0], y0[:0], 1.0), V, "X"),
    "ridge-X-complex": (lambda: ridge.ridge(X0.to(torch.complex128), y0, 1.0), T, "X"),
    "ridge-y-strings": (lambda: ridge.ridge(X0, ["a"] * 6, 1.0), T, "y"),
    "ridge-lam-neg": (lambda: ridge.ridge(X0, y0, -1.0), V, "lam"),
    "ridge-lam-nan": (lambda: ridge.ridge(X0, y0, NAN), V, "lam"),
    "ridge-lam-inf": (lambda: ridge.ridge(X0, y0, INF), V, "lam"),
    "ridge-lam-vector": (lambda: ridge.ridge(X0, y0, [1.0, 2.0]), V, "lam"),
    "ridge-lam-string": (lambda: ridge.ridge(X0, y0, "abc"), T, "lam"),
    "ridge-lam-complex": (lambda: ridge.ridge(X0, y0, [1j, 2.0]), T, "lam"),
    "ridge-tol-zero": (lambda: ridge.ridge(X0, y0, 1.0, tol=0.0), V, "tol"),
    "ridge-tol-nan": (lambda: ridge.ridge(X0, y0, 1.0, tol=NAN), V, "tol"),
    "path-X-nan": (lambda: ridge.ridge_path(NAN_X, y0, [1.0]), V, "X"),
    "path-y-rows": (lambda: ridge.ridge_path(X0, y0[:4], [1.0]), V, "y"),
    "path-y-inf": (lambda: ridge.ridge_path(X0, INF_Y, [1.0]), V, "y"),
    "path-lams-empty": (lambda: ridge.ridge_path(X0, y0, []), V, "lams"),
    "path-lams-neg": (lambda: ridge.ridge_path(X0, y0, [1.0, -0.1]), V, "lams"),
    "path-lams-nan": (lambda: ridge.ridge_path(X0, y0, [NAN]), V, "lams"),
    "path-lams-2d": (lambda: ridge.ridge_path(X0, y0, [[1.0]]), V, "lams"),
    "path-lams-scalar": (lambda: ridge.ridge_path(X0, y0, 1.0), V, "lams"),
    "path-tol-neg": (lambda: ridge.ridge_path(X0, y0, [1.0], tol=-1e-3), V, "tol"),
    "path-tol-inf": (lambda: ridge.ridge_path(X0, y0, [1.0], tol=INF), V, "tol"),
    "df-X-1d": (lambda: ridge.ridge_df(y0, [1.0]), V, "X"),
    "df-X-nan": (lambda: ridge.ridge_df(NAN_X, [1.0]), V, "X"),
    "df-X-no-rows": (lambda: ridge.ridge_df(X0[:0], [1.0]), V, "X"),
    "df-X-no-cols": (lambda: ridge.ridge_df(X0[:, :0], [1.0]), V, "X"),
    "df-lams-neg": (lambda: ridge.ridge_df(X0, [-1.0]), V, "lams"),
    "df-lams-empty": (lambda: ridge.ridge_df(X0, []), V, "lams"),
    "loo-X-nan": (lambda: ridge.ridge_loo(NAN_X, y0, [1.0]), V, "X"),
    "loo-y-rows": (lambda: ridge.ridge_loo(X0, y0[:5], [1.0]), V, "y"),
    "loo-lams-neg": (lambda: ridge.ridge_loo(X0, y0, [-1.0]), V, "lams"),
    "loo-lams-nan": (lambda: ridge.ridge_loo(X0, y0, [NAN]), V, "lams"),
    "loo-lams-empty": (lambda: ridge.ridge_loo(X0, y0, []), V, "lams"),
    "loo-leverage-1": (lambda: ridge.ridge_loo(Xw, yw, [1.0, 0.0]), V, "leverage"),
    "loo-leverage-1-coef": (lambda: ridge.ridge_loo(Xw, yw, [1.0, 0.0], return_coef=True), V,
                            "leverage"),
    "loo-y-no-targets": (lambda: ridge.ridge_loo(X0, y0[:, None][:, :0], [1.0]), V, "y"),
    "gcv-y-no-targets": (lambda: ridge.ridge_gcv(X0, y0[:, None][:, :0], [1.0]), V, "y"),
    "gcv-y-inf": (lambda: ridge.ridge_gcv(X0, INF_Y, [1.0]), V, "y"),
    "gcv-y-rows": (lambda: ridge.ridge_gcv(X0, y0[:5], [1.0]), V, "y"),
    "gcv-lams-neg": (lambda: ridge.ridge_gcv(X0, y0, [-1.0]), V, "lams"),
    "gcv-lams-empty": (lambda: ridge.ridge_gcv(X0, y0, []), V, "lams"),
    "gcv-trH-n": (lambda: ridge.ridge_gcv(Xw, yw, [0.0]), V, "lams"),
    "kr-K-nonsym": (lambda: ridge.kernel_ridge(ASYM, y0, 1.0), V, "K"),
    "kr-K-nonsquare": (lambda: ridge.kernel_ridge(K0[:, :5], y0, 1.0), V, "K"),
    "kr-K-nan": (lambda: ridge.kernel_ridge(NAN_X @ NAN_X.T, y0, 1.0), V, "K"),
    "kr-K-not-psd": (lambda: ridge.kernel_ridge(NOT_PSD, torch.ones(4), 0.5), V, "K"),
    "kr-K-not-psd-lams": (lambda: ridge.kernel_ridge(NOT_PSD, torch.ones(4), [1.0, 2.0]),
                          V, "K"),
    "kr-y-rows": (lambda: ridge.kernel_ridge(K0, y0[:5], 1.0), V, "y"),
    "kr-y-inf": (lambda: ridge.kernel_ridge(K0, INF_Y, 1.0), V, "y"),
    "kr-lam-zero": (lambda: ridge.kernel_ridge(K0, y0, 0.0), V, "lam"),
    "kr-lam-neg": (lambda: ridge.kernel_ridge(K0, y0, -1.0), V, "lam"),
    "kr-lam-nan": (lambda: ridge.kernel_ridge(K0, y0, NAN), V, "lam"),
    "kr-lams-empty": (lambda: ridge.kernel_ridge(K0, y0, []), V, "lam"),
    "kr-lams-2d": (lambda: ridge.kernel_ridge(K0, y0, [[1.0]]), V, "lam"),
    "rbf-X-1d": (lambda: ridge.rbf_kernel(y0), V, "X"),
    "rbf-X-nan": (lambda: ridge.rbf_kernel(NAN_X), V, "X"),
    "rbf-X-no-cols": (lambda: ridge.rbf_kernel(X0[:, :0]), V, "X"),
    "rbf-Z-cols": (lambda: ridge.rbf_kernel(X0, Xw), V, "Z"),
    "rbf-Z-nan": (lambda: ridge.rbf_kernel(X0, NAN_X), V, "Z"),
    "rbf-length_scale-zero": (lambda: ridge.rbf_kernel(X0, length_scale=0.0), V,
                              "length_scale"),
    "rbf-length_scale-neg": (lambda: ridge.rbf_kernel(X0, length_scale=-1.0), V,
                             "length_scale"),
    "rbf-length_scale-nan": (lambda: ridge.rbf_kernel(X0, length_scale=NAN), V,
                             "length_scale"),
    "rbf-length_scale-vector": (lambda: ridge.rbf_kernel(X0, length_scale=[1.0, 2.0]), V,
                                "length_scale"),
    "rff-n_inputs": (lambda: ridge.rff_weights(0, 5, 1.0), V, "n_inputs"),
    "rff-n_inputs-float": (lambda: ridge.rff_weights(3.0, 5, 1.0), V, "n_inputs"),
    "rff-n_inputs-bool": (lambda: ridge.rff_weights(True, 5, 1.0), V, "n_inputs"),
    "rff-n_features": (lambda: ridge.rff_weights(3, -2, 1.0), V, "n_features"),
    "rff-n_features-inf": (lambda: ridge.rff_weights(3, INF, 1.0), V, "n_features"),
    "rff-length_scale-zero": (lambda: ridge.rff_weights(3, 5, 0.0), V, "length_scale"),
    "rff-length_scale-nan": (lambda: ridge.rff_weights(3, 5, NAN), V, "length_scale"),
    "rff-length_scale-inf": (lambda: ridge.rff_weights(3, 5, INF), V, "length_scale"),
    "rff-length_scale-vector": (lambda: ridge.rff_weights(3, 5, [1.0, 2.0]), V,
                                "length_scale"),
    "rff-length_scale-string": (lambda: ridge.rff_weights(3, 5, "abc"), T, "length_scale"),
    "rff-generator-seed": (lambda: ridge.rff_weights(3, 5, 1.0, generator=0), T,
                           "generator"),
    "rff-dtype-int": (lambda: ridge.rff_weights(3, 5, 1.0, dtype=torch.int64), V, "dtype"),
    "rf-X-nan": (lambda: ridge.random_features(NAN_X, W0, b0), V, "X"),
    "rf-X-1d": (lambda: ridge.random_features(y0, W0, b0), V, "X"),
    "rf-W-rows": (lambda: ridge.random_features(X0, W0[:2], b0), V, "W"),
    "rf-W-nan": (lambda: ridge.random_features(X0, W0 * NAN, b0), V, "W"),
    "rf-W-no-features": (lambda: ridge.random_features(X0, W0[:, :0], b0[:0]), V, "W"),
    "rf-b-len": (lambda: ridge.random_features(X0, W0, b0[:4]), V, "b shape"),
    "rf-b-2d": (lambda: ridge.random_features(X0, W0, b0[None]), V, "b"),
    "rf-b-inf": (lambda: ridge.random_features(X0, W0, b0 * INF), V, "b"),
    "risk-ratio-zero": (lambda: ridge.ridge_risk_limit(0.0, 1.0), V, "ratio"),
    "risk-ratio-nan": (lambda: ridge.ridge_risk_limit(NAN, 1.0), V, "ratio"),
    "risk-ratio-string": (lambda: ridge.ridge_risk_limit("abc", 1.0), T, "ratio"),
    "risk-lam-neg": (lambda: ridge.ridge_risk_limit(0.5, -1.0), V, "lam"),
    "risk-lam-inf": (lambda: ridge.ridge_risk_limit(0.5, INF), V, "lam"),
    "risk-shapes": (lambda: ridge.ridge_risk_limit([0.5, 2.0], [1.0, 2.0, 3.0]), V,
                    "ratio and lam"),
    "risk-signal-zero": (lambda: ridge.ridge_risk_limit(0.5, 1.0, signal=0.0), V, "signal"),
    "risk-noise-neg": (lambda: ridge.ridge_risk_limit(0.5, 1.0, noise=-1.0), V, "noise"),
    "risk-noise-nan": (lambda: ridge.ridge_risk_limit(0.5, 1.0, noise=NAN), V, "noise"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_a_clear_error_naming_the_argument(name):
    call, exception, arg = BAD[name]
    with pytest.raises(exception, match=rf"\b{arg}\b"):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA generator")
def test_rff_weights_rejects_a_cuda_generator():
    with pytest.raises(ValueError, match=r"\bgenerator\b"):
        ridge.rff_weights(3, 5, 1.0, generator=torch.Generator(device="cuda"))


def test_loo_at_lam_zero_is_least_squares_loo_when_n_exceeds_p(rng):
    X, y = problem(rng, 10, 3)
    loo = float(ridge.ridge_loo(X, y, [0.0])[0])
    assert abs(loo - brute_force_loo(X, y, 0.0)) < 1e-10 * loo


def test_zero_targets_give_empty_results():
    # y of shape (n, 0): solutions with no columns (LOO and GCV, which average over
    # targets, raise instead; see the table above)
    Y = torch.zeros(6, 0, dtype=torch.float64)
    assert ridge.ridge(X0, Y, 1.0).shape == (3, 0)
    assert ridge.ridge_path(X0, Y, [1.0, 2.0]).shape == (2, 3, 0)
    assert ridge.kernel_ridge(K0, Y, [1.0, 2.0]).shape == (2, 6, 0)
    assert ridge.ridge_risk_limit(torch.zeros(0), 1.0).shape == (0,)


def test_no_warnings_on_clean_input(rng):
    X, y = problem(rng, 10, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ridge.ridge(X, y, 1.0)
        ridge.ridge_path(X, y, [0.0, 1.0])
        ridge.ridge_loo(X, y, [0.0, 1.0])


# --- regressions: validation bugs these tests found, fixed since ---------------------------

def test_kernel_ridge_non_psd_k_scalar_lam_is_value_error():
    # was: torch.linalg.LinAlgError (a RuntimeError) from the Cholesky factorization
    with pytest.raises(ValueError, match="K"):
        ridge.kernel_ridge(NOT_PSD, torch.ones(4), 0.5)


def test_kernel_ridge_non_psd_k_lam_vector_is_value_error():
    # was: silent NaN (division by e + lam = 0 at lam = 1)
    with pytest.raises(ValueError, match="K"):
        alpha = ridge.kernel_ridge(NOT_PSD, torch.ones(4), [1.0, 2.0])
        assert torch.isfinite(alpha).all()  # reached only if nothing was raised


@pytest.mark.parametrize("shape", [(0, 3), (3, 0)])
def test_ridge_df_empty_x_is_value_error(shape):
    # was: IndexError in _svd
    with pytest.raises(ValueError, match="X"):
        ridge.ridge_df(torch.zeros(shape, dtype=torch.float64), [1.0])


def test_rbf_kernel_zero_columns_is_value_error():
    # was: ZeroDivisionError (default gamma = 1/p)
    with pytest.raises(ValueError, match="X"):
        ridge.rbf_kernel(torch.zeros(3, 0, dtype=torch.float64))


def test_random_features_zero_features_is_value_error():
    # was: ZeroDivisionError (sqrt(2/D) with D = 0)
    with pytest.raises(ValueError, match="W"):
        ridge.random_features(torch.zeros(3, 2, dtype=torch.float64),
                              torch.zeros(2, 0, dtype=torch.float64),
                              torch.zeros(0, dtype=torch.float64))


@pytest.mark.parametrize("args", [(np.int64(3), 8, 0.5), (3, np.int64(8), 0.5),
                                  (3, 8, np.int64(1)), (3, 8, torch.tensor(0.5))],
                         ids=["np-n_inputs", "np-n_features", "np-int-length_scale",
                              "tensor-length_scale"])
def test_rff_weights_accepts_numpy_integers(args):
    # was: ValueError "must be a positive integer" for np.int64 (e.g. D from
    # np.logspace(...).astype(int)), and for numpy-integer or 0-D tensor length scales
    W, b = ridge.rff_weights(*args, generator=torch.Generator().manual_seed(0))
    assert W.shape == (3, 8) and b.shape == (8,)


# --- GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    X, y = problem(rng, 50, 12, 2)
    K = sk_rbf_kernel(X, gamma=0.2)
    for dtype in (torch.float32, torch.float64):
        cpu = _all_calls(torch.as_tensor(X).to(dtype), torch.as_tensor(y).to(dtype),
                         torch.as_tensor(K).to(dtype))
        gpu = _all_calls(torch.as_tensor(X).to(dtype).cuda(), torch.as_tensor(y).to(dtype).cuda(),
                         torch.as_tensor(K).to(dtype).cuda())
        for name in cpu:  # random_features: the same CPU weights, moved to X's device
            c, g = cpu[name](), gpu[name]()
            assert g.device.type == "cuda" and g.dtype == dtype, name
            assert rel_err(g.cpu().double().numpy(), c.double().numpy()) < 1e3 * eps(dtype), \
                name
        W, info = ridge.ridge_path(torch.as_tensor(X).cuda(), torch.as_tensor(y).cuda(),
                                   [0.0, 1.0], return_info=True)
        assert W.is_cuda and info.certificate < 1e-10 and info.converged
    # random features: drawn on the CPU, so the same seed gives the same weights on CUDA
    Wc, bc = ridge.rff_weights(4, 9, 0.7, generator=torch.Generator().manual_seed(3))
    Wg, bg = ridge.rff_weights(4, 9, 0.7, generator=torch.Generator().manual_seed(3),
                               device="cuda")
    assert Wg.is_cuda and torch.equal(Wg.cpu(), Wc) and torch.equal(bg.cpu(), bc)
