"""Oracle tests of regref.ridge against scikit-learn and explicit numpy formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import eps
from sklearn.kernel_approximation import RBFSampler
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import rbf_kernel as sk_rbf_kernel

from regref import Info, ridge

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


@pytest.mark.parametrize("gamma", [None, 0.05, 2.0])
@pytest.mark.parametrize("with_z", [False, True])
def test_rbf_kernel_matches_sklearn(rng, gamma, with_z):
    X = rng.standard_normal((12, 5))
    Z = rng.standard_normal((7, 5)) if with_z else None
    K = ridge.rbf_kernel(torch.as_tensor(X), None if Z is None else torch.as_tensor(Z), gamma)
    expected = sk_rbf_kernel(X, Z, gamma=gamma)
    assert K.shape == expected.shape and K.dtype == torch.float64
    np.testing.assert_allclose(K.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_random_features_match_sklearn_rbf_sampler(rng, gen):
    X = rng.standard_normal((20, 6))
    gamma, D = 0.4, 64
    W, b = ridge.rff_weights(6, D, gamma, generator=gen)
    assert W.shape == (6, D) and b.shape == (D,) and W.dtype == torch.float64
    sampler = RBFSampler(gamma=gamma, n_components=D, random_state=0).fit(X)
    sampler.random_weights_ = W.numpy()
    sampler.random_offset_ = b.numpy()
    Phi = ridge.random_features(torch.as_tensor(X), W, b)
    np.testing.assert_allclose(Phi.numpy(), sampler.transform(X), rtol=1e-12, atol=1e-14)


def test_rff_weights_are_reproducible_and_distributed_as_documented():
    gamma = 0.7
    W1, b1 = ridge.rff_weights(3, 20000, gamma, generator=torch.Generator().manual_seed(5))
    W2, b2 = ridge.rff_weights(3, 20000, gamma, generator=torch.Generator().manual_seed(5))
    assert torch.equal(W1, W2) and torch.equal(b1, b2)
    # W ~ N(0, 2 gamma), b ~ U[0, 2 pi): 60000 and 20000 draws; 6 standard errors
    m = W1.numel()
    assert abs(float(W1.mean())) < 6 * np.sqrt(2 * gamma / m)
    assert abs(float(W1.var()) - 2 * gamma) < 6 * 2 * gamma * np.sqrt(2 / m)
    assert float(b1.min()) >= 0 and float(b1.max()) < 2 * np.pi
    assert abs(float(b1.mean()) - np.pi) < 6 * (2 * np.pi / np.sqrt(12)) / np.sqrt(b1.numel())


def test_random_features_kernel_error_shrinks_with_d(rng):
    X = torch.as_tensor(rng.standard_normal((25, 4)))
    gamma = 0.25
    K = ridge.rbf_kernel(X, gamma=gamma)
    errs = []
    for D in (16, 256, 4096):
        W, b = ridge.rff_weights(4, D, gamma, generator=torch.Generator().manual_seed(D))
        Phi = ridge.random_features(X, W, b)
        errs.append(float((Phi @ Phi.T - K).abs().max()))
    # O(D^-1/2): a factor 16 in D is a factor 4 in error; demand at least 2 each step
    assert errs[1] < errs[0] / 2 and errs[2] < errs[1] / 2
    assert errs[2] < 6 / np.sqrt(4096)  # entries have variance <= 1/D


# --- Info, dtypes, array-likes ---------------------------------------------------------


@pytest.mark.parametrize("n, p", SHAPES, ids=SHAPE_IDS)
def test_return_info_certifies_optimality(rng, n, p, dtype):
    X, y = problem(rng, n, p, 2)
    Xt, yt = torch.as_tensor(X).to(dtype), torch.as_tensor(y).to(dtype)
    bound = 100 * eps(dtype) * np.linalg.cond(X) ** 2
    w, info = ridge.ridge(Xt, yt, 0.7, return_info=True)
    assert isinstance(info, Info) and info.converged and info.n_iter >= 1
    assert 0 <= info.certificate < bound
    torch.testing.assert_close(w, ridge.ridge(Xt, yt, 0.7))
    W, info = ridge.ridge_path(Xt, yt, [0.0, 0.7, 5.0], return_info=True)
    assert isinstance(info, Info) and info.converged
    assert 0 <= info.certificate < bound
    # the certificate is the gradient it claims to be: recompute it in float64
    Wd = W.double().numpy()
    for Wl, lam in zip(Wd, [0.0, 0.7, 5.0], strict=True):
        g = X.T @ (X @ Wl - y) + lam * Wl
        assert np.linalg.norm(g) / np.linalg.norm(X.T @ y) < bound
    w0, info0 = ridge.ridge(Xt, yt, 0.0, return_info=True)
    assert isinstance(info0, Info) and w0.shape == (p, 2) and info0.certificate < bound


def _all_calls(X, y, K):
    n, p = X.shape
    # float64 weights from a fixed seed; random_features converts them to X's dtype
    W, b = ridge.rff_weights(p, 16, 0.5, generator=torch.Generator().manual_seed(0))
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

BAD = {
    # data
    "ridge-X-1d": (lambda: ridge.ridge(y0, y0, 1.0), "X"),
    "ridge-X-3d": (lambda: ridge.ridge(X0[None], y0, 1.0), "X"),
    "ridge-y-rows": (lambda: ridge.ridge(X0, y0[:5], 1.0), "y"),
    "ridge-y-3d": (lambda: ridge.ridge(X0, y0[:, None, None], 1.0), "y"),
    "ridge-X-nan": (lambda: ridge.ridge(NAN_X, y0, 1.0), "X"),
    "ridge-y-inf": (lambda: ridge.ridge(X0, INF_Y, 1.0), "y"),
    "ridge-X-empty": (lambda: ridge.ridge(X0[:, :0], y0, 1.0), "X"),
    "ridge-lam-neg": (lambda: ridge.ridge(X0, y0, -1.0), "lam"),
    "ridge-lam-nan": (lambda: ridge.ridge(X0, y0, NAN), "lam"),
    "ridge-lam-inf": (lambda: ridge.ridge(X0, y0, INF), "lam"),
    "ridge-lam-vector": (lambda: ridge.ridge(X0, y0, [1.0, 2.0]), "lam"),
    "path-X-nan": (lambda: ridge.ridge_path(NAN_X, y0, [1.0]), "X"),
    "path-y-rows": (lambda: ridge.ridge_path(X0, y0[:4], [1.0]), "y"),
    "path-y-inf": (lambda: ridge.ridge_path(X0, INF_Y, [1.0]), "y"),
    "path-lams-empty": (lambda: ridge.ridge_path(X0, y0, []), "lams"),
    "path-lams-neg": (lambda: ridge.ridge_path(X0, y0, [1.0, -0.1]), "lams"),
    "path-lams-nan": (lambda: ridge.ridge_path(X0, y0, [NAN]), "lams"),
    "path-lams-2d": (lambda: ridge.ridge_path(X0, y0, [[1.0]]), "lams"),
    "path-lams-scalar": (lambda: ridge.ridge_path(X0, y0, 1.0), "lams"),
    "df-X-1d": (lambda: ridge.ridge_df(y0, [1.0]), "X"),
    "df-X-nan": (lambda: ridge.ridge_df(NAN_X, [1.0]), "X"),
    "df-lams-neg": (lambda: ridge.ridge_df(X0, [-1.0]), "lams"),
    "df-lams-empty": (lambda: ridge.ridge_df(X0, []), "lams"),
    "loo-X-nan": (lambda: ridge.ridge_loo(NAN_X, y0, [1.0]), "X"),
    "loo-y-rows": (lambda: ridge.ridge_loo(X0, y0[:5], [1.0]), "y"),
    "loo-lams-neg": (lambda: ridge.ridge_loo(X0, y0, [-1.0]), "lams"),
    "loo-lams-nan": (lambda: ridge.ridge_loo(X0, y0, [NAN]), "lams"),
    "loo-lams-empty": (lambda: ridge.ridge_loo(X0, y0, []), "lams"),
    "loo-leverage-1": (lambda: ridge.ridge_loo(Xw, yw, [1.0, 0.0]), "leverage"),
    "gcv-y-inf": (lambda: ridge.ridge_gcv(X0, INF_Y, [1.0]), "y"),
    "gcv-y-rows": (lambda: ridge.ridge_gcv(X0, y0[:5], [1.0]), "y"),
    "gcv-lams-neg": (lambda: ridge.ridge_gcv(X0, y0, [-1.0]), "lams"),
    "gcv-lams-empty": (lambda: ridge.ridge_gcv(X0, y0, []), "lams"),
    "gcv-trH-n": (lambda: ridge.ridge_gcv(Xw, yw, [0.0]), "lams"),
    "kr-K-nonsym": (lambda: ridge.kernel_ridge(ASYM, y0, 1.0), "K"),
    "kr-K-nonsquare": (lambda: ridge.kernel_ridge(K0[:, :5], y0, 1.0), "K"),
    "kr-K-nan": (lambda: ridge.kernel_ridge(NAN_X @ NAN_X.T, y0, 1.0), "K"),
    "kr-y-rows": (lambda: ridge.kernel_ridge(K0, y0[:5], 1.0), "y"),
    "kr-y-inf": (lambda: ridge.kernel_ridge(K0, INF_Y, 1.0), "y"),
    "kr-lam-zero": (lambda: ridge.kernel_ridge(K0, y0, 0.0), "lam"),
    "kr-lam-neg": (lambda: ridge.kernel_ridge(K0, y0, -1.0), "lam"),
    "kr-lam-nan": (lambda: ridge.kernel_ridge(K0, y0, NAN), "lam"),
    "kr-lams-empty": (lambda: ridge.kernel_ridge(K0, y0, []), "lam"),
    "kr-lams-2d": (lambda: ridge.kernel_ridge(K0, y0, [[1.0]]), "lam"),
    "rbf-X-1d": (lambda: ridge.rbf_kernel(y0), "X"),
    "rbf-X-nan": (lambda: ridge.rbf_kernel(NAN_X), "X"),
    "rbf-Z-cols": (lambda: ridge.rbf_kernel(X0, Xw), "Z"),
    "rbf-Z-nan": (lambda: ridge.rbf_kernel(X0, NAN_X), "Z"),
    "rbf-gamma-zero": (lambda: ridge.rbf_kernel(X0, gamma=0.0), "gamma"),
    "rbf-gamma-neg": (lambda: ridge.rbf_kernel(X0, gamma=-1.0), "gamma"),
    "rbf-gamma-nan": (lambda: ridge.rbf_kernel(X0, gamma=NAN), "gamma"),
    "rff-n_inputs": (lambda: ridge.rff_weights(0, 5, 1.0), "n_inputs"),
    "rff-n_inputs-float": (lambda: ridge.rff_weights(3.0, 5, 1.0), "n_inputs"),
    "rff-n_features": (lambda: ridge.rff_weights(3, -2, 1.0), "n_features"),
    "rff-gamma-zero": (lambda: ridge.rff_weights(3, 5, 0.0), "gamma"),
    "rff-gamma-nan": (lambda: ridge.rff_weights(3, 5, NAN), "gamma"),
    "rff-gamma-inf": (lambda: ridge.rff_weights(3, 5, INF), "gamma"),
    "rf-X-nan": (lambda: ridge.random_features(NAN_X, W0, b0), "X"),
    "rf-X-1d": (lambda: ridge.random_features(y0, W0, b0), "X"),
    "rf-W-rows": (lambda: ridge.random_features(X0, W0[:2], b0), "W"),
    "rf-W-nan": (lambda: ridge.random_features(X0, W0 * NAN, b0), "W"),
    "rf-b-len": (lambda: ridge.random_features(X0, W0, b0[:4]), "b shape"),
    "rf-b-2d": (lambda: ridge.random_features(X0, W0, b0[None]), "b"),
    "rf-b-inf": (lambda: ridge.random_features(X0, W0, b0 * INF), "b"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_value_error_naming_the_argument(name):
    call, arg = BAD[name]
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        call()


def test_loo_at_lam_zero_is_fine_when_n_exceeds_p(rng):
    X, y = problem(rng, 10, 3)
    assert torch.isfinite(ridge.ridge_loo(X, y, [0.0])).all()


@pytest.mark.parametrize("bad", ["abc", [1j, 2.0]])
def test_bad_types_raise_type_error(bad):
    with pytest.raises(TypeError, match="lam"):
        ridge.ridge(X0, y0, bad)
    with pytest.raises(TypeError, match="y"):
        ridge.ridge(X0, ["a"] * 6, 1.0)


def test_no_warnings_on_clean_input(rng):
    X, y = problem(rng, 10, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ridge.ridge(X, y, 1.0)
        ridge.ridge_path(X, y, [0.0, 1.0])
        ridge.ridge_loo(X, y, [0.0, 1.0])


# --- regressions: validation bugs these tests found, fixed since ---------------------------

NOT_PSD = -torch.eye(4, dtype=torch.float64)  # symmetric, negative definite


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
                         ids=["np-n_inputs", "np-n_features", "np-int-gamma", "tensor-gamma"])
def test_rff_weights_accepts_numpy_integers(args):
    # was: ValueError "must be a positive integer" for np.int64 (e.g. D from
    # np.logspace(...).astype(int)), and for numpy-integer or 0-D tensor gammas
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
        assert W.is_cuda and info.certificate < 1e-10
