"""Tests of regref.selection: brute-force refits, scikit-learn, Monte Carlo, finite differences."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import eps, load_kernel
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from sklearn.linear_model import BayesianRidge, Lasso, Ridge
from sklearn.model_selection import KFold, PredefinedSplit, cross_val_score

import regref
from regref import prox, ridge, selection, sparse

LAMS = [3.0, 0.05, 40.0, 1.0]  # deliberately unsorted


def problem(rng, n, p, k=None, noise=0.5):
    X = rng.standard_normal((n, p))
    w = rng.standard_normal((p,) if k is None else (p, k))
    y = X @ w + noise * rng.standard_normal((n,) if k is None else (n, k))
    return X, y


def t(a, dtype=torch.float64):
    return torch.as_tensor(np.array(a), dtype=dtype)


# --- K-fold -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 2], ids=["y1d", "y2d"])
def test_kfold_matches_sklearn_cross_val_score(rng, k):
    X, y = problem(rng, 53, 7, k)
    folds = rng.integers(0, 4, size=53)
    E = selection.kfold_path_score(ridge.ridge_path, X, y, LAMS, folds=folds)
    assert E.shape == (4, len(LAMS)) and E.dtype == torch.float64
    for j, lam in enumerate(LAMS):
        sk = -cross_val_score(Ridge(alpha=lam, fit_intercept=False), X, y,
                              cv=PredefinedSplit(folds), scoring="neg_mean_squared_error")
        np.testing.assert_allclose(E[:, j].numpy(), sk, rtol=1e-9)


def test_kfold_with_lasso_path_and_shuffled_folds(rng):
    X, y = problem(rng, 60, 12)
    lams = sparse.lambda_max(t(X), t(y)) * torch.tensor([0.5, 0.1, 0.02])
    gen = torch.Generator().manual_seed(3)
    E = selection.kfold_path_score(sparse.lasso_path, X, y, lams, k=5, generator=gen)
    ids = torch.empty(60, dtype=torch.long)  # the same partition, rebuilt from the generator
    ids[torch.randperm(60, generator=torch.Generator().manual_seed(3))] = \
        torch.arange(5).repeat_interleave(12)
    for j, lam in enumerate(lams.tolist()):
        sk = -cross_val_score(Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=100_000),
                              X, y, cv=PredefinedSplit(ids.numpy()),
                              scoring="neg_mean_squared_error")
        np.testing.assert_allclose(E[:, j].numpy(), sk, rtol=1e-7)


def _kfold_loop(X, y, lams, folds):
    """The same K-fold errors through the generic loop (a wrapper is not lasso_path)."""
    return selection.kfold_path_score(lambda a, b, c: sparse.lasso_path(a, b, c), X, y, lams,
                                      folds=folds)


@pytest.mark.parametrize("fold_nested", [None, 0], ids=["padded", "fold_by_fold"])
def test_kfold_lasso_batched_over_folds_equals_the_loop(rng, monkeypatch, fold_nested):
    if fold_nested is not None:  # the exact solves fold by fold (nested supports), as for
        monkeypatch.setattr(sparse, "_FOLD_NESTED", fold_nested)  # large supports
    X, y = problem(rng, 90, 20)
    X[:, 1] += 0.9 * X[:, 0]  # some correlation
    lams = sparse.lambda_max(t(X), t(y)) * torch.logspace(0, -2.5, 14, dtype=torch.float64)
    folds = rng.permutation(90) % 5
    calls = []
    real = selection._fold_paths
    monkeypatch.setattr(selection, "_fold_paths",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    E = selection.kfold_path_score(sparse.lasso_path, X, y, lams, folds=folds)
    assert calls == [1]  # one batched solve for all folds
    E_loop = _kfold_loop(X, y, lams, folds)
    assert len(calls) == 1  # the wrapper took the loop
    # Both certify a relative gap <= 1e-10 (lasso_path's default). Quadratic growth gives
    # ||X_tr (w - w*)|| <= sqrt(2 n_tr gap), so ||X_v d|| <= 2 s_max(X_v)/s_min(X_tr) *
    # sqrt(2 n_tr 1e-10 P0) for the difference d of the two answers, and the validation
    # error moves by at most (2 ||r_v|| ||X_v d|| + ||X_v d||^2) / n_v.
    for f in range(5):
        tr, va = folds != f, folds == f
        P0 = (y[tr] ** 2).sum() / (2 * tr.sum())
        lever = np.linalg.norm(X[va], 2) / np.linalg.svd(X[tr], compute_uv=False)[-1]
        xd = 2 * lever * np.sqrt(2 * tr.sum() * 1e-10 * P0)
        r_v = np.sqrt(E_loop[f].numpy() * va.sum())
        bound = (2 * r_v * xd + xd**2) / va.sum()
        np.testing.assert_array_less(np.abs(E[f].numpy() - E_loop[f].numpy()), bound)
    assert not torch.allclose(E[:, 0], E[:, -1])  # the errors vary along the path


def test_kfold_lasso_refits_a_fold_the_batch_does_not_certify(rng, monkeypatch):
    X, y = problem(rng, 40, 6)
    lams = sparse.lambda_max(t(X), t(y)) * torch.tensor([0.5, 0.05], dtype=torch.float64)
    folds = np.arange(40) % 4
    real = selection._fold_paths

    def broken(*a, **kw):  # fold 2: garbage, and honestly reported as uncertified
        W, rel = real(*a, **kw)
        W[2], rel[2] = 1e3, torch.inf
        return W, rel

    monkeypatch.setattr(selection, "_fold_paths", broken)
    E = selection.kfold_path_score(sparse.lasso_path, X, y, lams, folds=folds)
    torch.testing.assert_close(E, _kfold_loop(X, y, lams, folds), rtol=1e-6, atol=0)


def test_kfold_lasso_keeps_the_loop_when_a_training_set_is_wide(rng, monkeypatch):
    X, y = problem(rng, 30, 25)  # training sets of 24 rows < 25 features
    monkeypatch.setattr(selection, "_fold_paths", None)  # would fail if called
    lams = sparse.lambda_max(t(X), t(y)) * torch.tensor([0.3, 0.1], dtype=torch.float64)
    E = selection.kfold_path_score(sparse.lasso_path, X, y, lams, k=5,
                                   generator=torch.Generator().manual_seed(0))
    assert E.shape == (5, 2) and bool(torch.isfinite(E).all())


def test_kfold_fold_sizes_like_sklearn(rng):
    X, y = problem(rng, 23, 3)
    E = selection.kfold_path_score(ridge.ridge_path, X, y, [1.0], k=5,
                                   generator=torch.Generator().manual_seed(0))
    assert E.shape == (5, 1)
    sizes = sorted(len(te) for _, te in KFold(5).split(X))
    ids = selection._fold_ids(23, 5, None, torch.Generator().manual_seed(0))
    assert sorted(torch.bincount(ids).tolist()) == sizes


def test_one_standard_error_rule():
    # columns from most to least regularized; fold errors with known means and spreads
    errors = torch.tensor([[5.0, 2.0, 1.6, 1.0, 1.6],
                           [5.0, 2.0, 1.8, 2.0, 1.6],
                           [5.0, 2.0, 1.7, 1.5, 1.6]])
    best, one_se = selection.one_standard_error(errors)
    mean, se = errors.mean(0), errors.std(0) / math.sqrt(3)
    assert best == int(mean.argmin()) == 3
    assert mean[2] <= mean[3] + se[3] and mean[1] > mean[3] + se[3] and one_se == 2


# --- LOO and GCV: brute force on four smoothers -----------------------------------------


def loo_ridge_brute(X, y, lam):
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w = Ridge(alpha=lam, fit_intercept=False, solver="svd").fit(X[keep], y[keep]).coef_
        errs.append(y[i] - X[i] @ w)
    return np.mean(np.square(errs))


@pytest.mark.parametrize("n, p", [(30, 6), (12, 20)], ids=["n>p", "n<p"])
def test_loo_ridge_equals_refits_and_ridge_loo(rng, n, p):
    X, y = problem(rng, n, p)
    X_t, y_t, lams = t(X), t(y), t(LAMS)
    resid, lev, _ = ridge._fits(X_t, y_t, lams)
    ours = selection.loo(resid[..., 0], lev[..., 0])
    brute = [loo_ridge_brute(X, y, lam) for lam in LAMS]
    np.testing.assert_allclose(ours.numpy(), brute, rtol=1e-9)
    torch.testing.assert_close(ours, ridge.ridge_loo(X_t, y_t, lams), rtol=1e-12, atol=0)


def test_loo_kernel_ridge_and_smoothing_spline(rng):
    n = 25
    x = np.sort(rng.uniform(0, 1, n))
    y = np.sin(6 * x) + 0.3 * rng.standard_normal(n)
    # kernel ridge: H = K (K + lam I)^-1
    K = ridge.rbf_kernel(t(x[:, None]), length_scale=6 ** -0.5)  # gamma = 3
    lam = 0.1
    H = torch.linalg.solve(K + lam * torch.eye(n, dtype=torch.float64), K)  # symmetric
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        a = ridge.kernel_ridge(K[keep][:, keep], t(y[keep]), lam)
        errs.append(y[i] - float(K[i, keep] @ a))
    resid = t(y) - H @ t(y)
    brute = np.mean(np.square(errs))
    assert abs(float(selection.loo(resid, torch.diagonal(H))) - brute) < 1e-9 * brute
    # discrete smoothing spline (Whittaker): min ||y - f||^2 + lam ||D2 f||^2, H = (I + lam D'D)^-1
    D = np.diff(np.eye(n), 2, axis=0)
    P = 5.0 * D.T @ D
    H = np.linalg.inv(np.eye(n) + P)
    errs = [y[i] - np.linalg.solve(np.diag(np.arange(n) != i) + P, (np.arange(n) != i) * y)[i]
            for i in range(n)]
    ours = selection.loo(t(y - H @ y), t(np.diag(H)))
    assert abs(float(ours) - np.mean(np.square(errs))) < 1e-10


def test_loo_knn_smoother(rng):
    # the k-NN smoother that counts the point itself: its LOO residual is that of (k-1)-NN
    n, k = 40, 5
    x = rng.uniform(0, 1, n)
    y = np.cos(5 * x) + 0.2 * rng.standard_normal(n)
    order = np.argsort(np.abs(x[:, None] - x[None, :]), axis=1)
    H = np.zeros((n, n))
    H[np.arange(n)[:, None], order[:, :k]] = 1 / k
    brute = np.mean([(y[i] - y[order[i, 1:k]].mean()) ** 2 for i in range(n)])
    assert abs(float(selection.loo(t(y - H @ y), t(np.diag(H)))) - brute) < 1e-12


def test_gcv_equals_ridge_gcv_and_loo_for_equal_leverages(rng):
    X, y = problem(rng, 30, 6)
    resid, _, df = ridge._fits(t(X), t(y), t(LAMS))
    torch.testing.assert_close(selection.gcv(resid[..., 0], df), ridge.ridge_gcv(X, y, LAMS),
                               rtol=1e-12, atol=0)
    # a circulant smoother has equal leverages, so GCV == LOO exactly
    n = 16
    c = np.zeros(n)
    c[[0, 1, -1]] = [0.5, 0.25, 0.25]
    H = np.stack([np.roll(c, i) for i in range(n)])
    z = rng.standard_normal(n)
    r = t(z - H @ z)
    torch.testing.assert_close(selection.gcv(r, float(np.trace(H))),
                               selection.loo(r, t(np.diag(H))), rtol=1e-13, atol=0)


def test_ridge_loo_per_target_batched_equals_looped(rng):
    X, Y = problem(rng, 20, 30, k=6)
    per = selection.ridge_loo_per_target(X, Y, LAMS)
    assert per.shape == (len(LAMS), 6)
    looped = torch.stack([ridge.ridge_loo(X, Y[:, j], LAMS) for j in range(6)], dim=1)
    torch.testing.assert_close(per, looped, rtol=1e-11, atol=0)
    torch.testing.assert_close(per.mean(1), ridge.ridge_loo(X, Y, LAMS), rtol=1e-11, atol=0)


@given(n=st.integers(3, 12), p=st.integers(1, 8), lam=st.floats(1e-3, 1e3),
       seed=st.integers(0, 2**16))
def test_loo_identity_property(n, p, lam, seed):
    """Exact LOO of ridge == n refits, for arbitrary shapes and strengths."""
    rng = np.random.default_rng(seed)
    X, y = problem(rng, n, p)
    ours = float(selection.ridge_loo_per_target(X, y[:, None], [lam])[0, 0])
    brute = loo_ridge_brute(X, y, lam)
    assert abs(ours - brute) <= 1e-8 * max(brute, 1.0)


def test_loo_gcv_float32_and_shapes(rng):
    X, y = problem(rng, 30, 6)
    resid, lev, df = ridge._fits(t(X), t(y), t(LAMS))
    r32, h32 = resid[..., 0].float(), lev[..., 0].float()
    out = selection.loo(r32, h32)
    assert out.dtype == torch.float32 and out.shape == (4,)
    torch.testing.assert_close(out.double(), selection.loo(resid[..., 0], lev[..., 0]),
                               rtol=1e3 * eps(torch.float32), atol=0)
    assert selection.gcv(r32, df.float()).dtype == torch.float32


# --- SURE -------------------------------------------------------------------------------


def test_sure_soft_threshold_formula_and_batching(rng):
    y = t(rng.standard_normal((3, 20)) * 2)
    taus = t([0.0, 0.5, 1.5, 10.0])
    S = selection.sure_soft_threshold(y, taus, 0.7)
    assert S.shape == (4, 3)
    for i, tau in enumerate(taus):
        for b in range(3):
            fit = prox.soft_threshold(y[b], tau)
            generic = selection.sure(y[b] - fit, float((fit != 0).sum()), 0.7)
            torch.testing.assert_close(S[i, b], generic, rtol=1e-13, atol=1e-12)
    # tau = 0 is the identity: SURE = n sigma^2, the exact risk
    torch.testing.assert_close(S[0], torch.full((3,), 20 * 0.49, dtype=torch.float64))


def _monte_carlo_check(sure_vals, risk_vals, wrong_vals):
    """SURE is unbiased: |mean(SURE - risk)| <= 4 standard errors of that mean (a two-sided
    test whose false-alarm rate is below 1e-4 under the CLT); with the divergence term
    halved, the same test must fail."""
    B = len(sure_vals)
    d = sure_vals - risk_vals
    se = d.std() / math.sqrt(B)
    assert abs(float(d.mean())) <= 4 * float(se)
    d_wrong = wrong_vals - risk_vals
    assert abs(float(d_wrong.mean())) > 4 * float(d_wrong.std() / math.sqrt(B))


def test_sure_soft_threshold_unbiased_monte_carlo():
    gen = torch.Generator().manual_seed(7)
    n, B, sigma, tau = 50, 4000, 1.0, 1.2
    mu = torch.cat([torch.full((10,), 3.0), torch.zeros(40)])
    Y = mu + sigma * torch.randn(B, n, generator=gen, dtype=torch.float64)
    S = selection.sure_soft_threshold(Y, tau, sigma)
    fit = prox.soft_threshold(Y, tau)
    risk = ((fit - mu) ** 2).sum(1)
    wrong = S - sigma**2 * (Y.abs() > tau).sum(1)  # 2 sigma^2 df replaced by sigma^2 df
    _monte_carlo_check(S, risk, wrong)


def test_sure_ridge_unbiased_monte_carlo(rng):
    gen = torch.Generator().manual_seed(8)
    n, p, B, sigma, lam = 40, 15, 4000, 0.8, 5.0
    X = t(rng.standard_normal((n, p)))
    mu = X @ t(rng.standard_normal(p))
    Y = mu[:, None] + sigma * torch.randn(n, B, generator=gen, dtype=torch.float64)
    H = X @ torch.linalg.solve(X.T @ X + lam * torch.eye(p, dtype=torch.float64), X.T)
    df = torch.trace(H)
    resid = Y - H @ Y
    per_draw = selection.sure(resid.T, df, sigma)
    # sure_ridge sums the per-target SUREs
    torch.testing.assert_close(selection.sure_ridge(X, Y, [lam], sigma)[0], per_draw.sum(),
                               rtol=1e-10, atol=0)
    torch.testing.assert_close(selection.sure_ridge(X, Y[:, 0], [lam], sigma)[0], per_draw[0],
                               rtol=1e-10, atol=0)
    risk = ((H @ Y - mu[:, None]) ** 2).sum(0)
    _monte_carlo_check(per_draw, risk, per_draw - sigma**2 * df)


# --- evidence ---------------------------------------------------------------------------


@pytest.mark.parametrize("n, p", [(30, 6), (8, 15)], ids=["n>p", "n<p"])
def test_log_evidence_matches_gaussian_density(rng, n, p):
    X, y = problem(rng, n, p)
    for tau2, sig2 in [(2.0, 0.5), (1 / 3, 10.0), (1e3, 0.02)]:
        C = sig2 * np.eye(n) + tau2 * X @ X.T
        ref = multivariate_normal(np.zeros(n), C).logpdf(y)
        ours = float(selection.log_evidence_ridge(X, y, tau2, sig2))
        assert abs(ours - ref) <= 1e-10 * abs(ref)
    grid = selection.log_evidence_ridge(X, y, t([[0.5], [3.0]]), t([2.0, 0.1, 50.0]))
    assert grid.shape == (2, 3)


def evidence_residual_np(X, y, tau2, sig2):
    """MacKay's fixed-point residual recomputed in numpy from the normal equations."""
    n, p = X.shape
    lam = sig2 / tau2
    A = X.T @ X + lam * np.eye(p)
    m = np.linalg.solve(A, X.T @ y)
    df = np.trace(np.linalg.solve(A, X.T @ X))
    return max(abs(m @ m / (df * tau2) - 1), abs(np.sum((y - X @ m) ** 2) / ((n - df) * sig2) - 1))


def test_evidence_maximizer_matches_sklearn_and_grid(rng):
    X, y = problem(rng, 50, 8, noise=0.7)
    tau2, sig2, info = selection.evidence_ridge(X, y, return_info=True)
    assert info.converged and info.certificate <= 1e-10
    # the certificate, recomputed independently at the returned pair
    cert = evidence_residual_np(X, y, float(tau2), float(sig2))
    assert abs(cert - info.certificate) <= 1e-12 and info.converged == (cert <= 1e-10)
    br = BayesianRidge(fit_intercept=False, alpha_1=0, alpha_2=0, lambda_1=0, lambda_2=0,
                       tol=1e-15, max_iter=100_000).fit(X, y)
    assert abs(float(tau2) * br.lambda_ - 1) < 1e-8 and abs(float(sig2) * br.alpha_ - 1) < 1e-8
    # a 2-D grid around the maximizer never does better, and its best point is adjacent
    a_grid = float(tau2) * torch.logspace(-1, 1, 41, dtype=torch.float64)
    b_grid = float(sig2) * torch.logspace(-1, 1, 41, dtype=torch.float64)
    G = selection.log_evidence_ridge(X, y, a_grid[:, None], b_grid[None, :])
    best = float(selection.log_evidence_ridge(X, y, tau2, sig2))
    assert float(G.max()) <= best + 1e-12
    i, j = divmod(int(G.argmax()), 41)
    assert abs(i - 20) <= 1 and abs(j - 20) <= 1
    # and the gradient in (log tau2, log sigma2) vanishes there
    la = torch.log(tau2).clone().requires_grad_(True)
    lb = torch.log(sig2).clone().requires_grad_(True)
    g = torch.autograd.grad(selection.log_evidence_ridge(X, y, la.exp(), lb.exp()), (la, lb))
    assert max(abs(float(v)) for v in g) < 1e-8


def test_evidence_default_tol_is_pinned(rng):
    X, y = problem(rng, 40, 6)
    _, _, info = selection.evidence_ridge(X, y, return_info=True)
    _, _, info64 = selection.evidence_ridge(X, y, tol=1e-10, return_info=True)
    assert info == info64
    _, _, info32 = selection.evidence_ridge(t(X, torch.float32), t(y, torch.float32),
                                            return_info=True)
    _, _, ref32 = selection.evidence_ridge(t(X, torch.float32), t(y, torch.float32),
                                           tol=1e-5, return_info=True)
    assert info32 == ref32


def test_evidence_kernel_is_copyable(rng):
    X, y = problem(rng, 30, 5)
    kernel = load_kernel(selection._evidence_fixed_point)
    s2, z2, rest = selection._spectral_data(t(X), t(y))
    tau2, sig2, n_iter, res = kernel(s2, z2, rest, 30, 1e-10, 10_000, 10)
    ref2, refs, info = selection.evidence_ridge(X, y, return_info=True)
    assert (float(tau2), float(sig2), n_iter, res) == (float(ref2), float(refs), info.n_iter,
                                                       info.certificate)


def test_evidence_n_less_than_p(rng):
    X, y = problem(rng, 20, 30, noise=3.0)
    tau2, sig2 = selection.evidence_ridge(X, y)
    la = torch.log(tau2).clone().requires_grad_(True)
    lb = torch.log(sig2).clone().requires_grad_(True)
    g = torch.autograd.grad(selection.log_evidence_ridge(X, y, la.exp(), lb.exp()), (la, lb))
    assert max(abs(float(v)) for v in g) < 1e-7


def _warned_here(call):
    """The ConvergenceWarnings a call emits, checked to point at this test file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = call()
    conv = [w for w in caught if issubclass(w.category, regref.ConvergenceWarning)]
    assert conv and all(w.filename == __file__ for w in conv), [w.filename for w in conv]
    return out


def test_evidence_convergence_warning(rng):
    X, y = problem(rng, 30, 6)
    _, _, info = _warned_here(lambda: selection.evidence_ridge(X, y, max_iter=1,
                                                               return_info=True))
    assert not info.converged and info.n_iter == 1 and info.certificate > 1e-10


# --- hypergradients ---------------------------------------------------------------------


def test_ridge_hypergradient_finite_differences(rng):
    X, y = problem(rng, 40, 10)
    Xv, yv = problem(rng, 25, 10)
    lams = t([0.01, 0.3, 4.0, 80.0])
    V, dV = selection.ridge_hypergradient(X, y, Xv, yv, lams)
    for lam, v, d in zip(lams, V, dV, strict=True):
        w = ridge.ridge(X, y, lam)
        assert abs(float(v) - float(((t(yv) - t(Xv) @ w) ** 2).mean())) < 1e-12
        h = 1e-5 * float(lam)
        Vp = selection.ridge_hypergradient(X, y, Xv, yv, [float(lam) + h])[0]
        Vm = selection.ridge_hypergradient(X, y, Xv, yv, [float(lam) - h])[0]
        fd = float(Vp - Vm) / (2 * h)
        assert abs(float(d) - fd) <= 1e-6 * abs(fd) + 1e-12


def ridge_bilevel(rng, n_val, noise=0.5, scale=1.0):
    """Ridge as a bilevel problem: L(w, h) = ||y - Xw||^2 / scale + e^h ||w||^2, V = val MSE."""
    X, y = (t(a) for a in problem(rng, 40, 10, noise=noise))
    Xv, yv = (t(a) for a in problem(rng, n_val, 10))

    def train(w, h):
        return ((y - X @ w) ** 2).sum() / scale + torch.exp(h) * (w @ w)

    def val(w):
        return ((yv - Xv @ w) ** 2).mean()

    return X, y, Xv, yv, train, val


def test_implicit_equals_closed_form_on_ridge(rng):
    X, y, Xv, yv, train, val = ridge_bilevel(rng, 25)
    for lam in (0.01, 1.0, 50.0):
        _, dV = selection.ridge_hypergradient(X, y, Xv, yv, [lam])
        hg, info = selection.implicit_hypergradient(train, val, ridge.ridge(X, y, lam),
                                                    math.log(lam), return_info=True)
        assert info.converged and info.certificate <= 1e-10 and hg.shape == ()
        # default tol pinned at 1e-10 in float64: the same run as tol=1e-10
        hg2, info2 = selection.implicit_hypergradient(train, val, ridge.ridge(X, y, lam),
                                                      math.log(lam), tol=1e-10,
                                                      return_info=True)
        assert info2 == info and torch.equal(hg2, hg)
        assert abs(float(hg) - lam * float(dV[0])) <= 1e-8 * abs(lam * float(dV[0]))


def test_implicit_vector_hyper_generalized_ridge(rng):
    # per-feature strengths: w(h) = (X^T X + diag(e^h))^-1 X^T y, exact inner solution
    X, y = problem(rng, 30, 5)
    Xv, yv = problem(rng, 20, 5)
    X, y, Xv, yv = t(X), t(y), t(Xv), t(yv)

    def solve(h):
        return torch.linalg.solve(X.T @ X + torch.diag(h.exp()), X.T @ y)

    def train(w, h):
        return ((y - X @ w) ** 2).sum() + (h.exp() * w**2).sum()

    def val(w):
        return ((yv - Xv @ w) ** 2).mean()

    h0 = t([-1.0, 0.0, 1.0, 2.0, 0.5])
    hg = selection.implicit_hypergradient(train, val, solve(h0), h0)
    fd = torch.stack([(val(solve(h0 + 1e-6 * e)) - val(solve(h0 - 1e-6 * e))) / 2e-6
                      for e in torch.eye(5, dtype=torch.float64)])
    torch.testing.assert_close(hg, fd, rtol=1e-6, atol=1e-10)


def logistic_problem(rng, n=80, p=6):
    X = t(rng.standard_normal((n, p)))
    y = torch.sign(X @ t(rng.standard_normal(p)) + t(rng.standard_normal(n)))
    Xv = t(rng.standard_normal((40, p)))
    yv = torch.sign(Xv @ t(rng.standard_normal(p)))

    def train(w, h):
        return torch.nn.functional.softplus(-y * (X @ w)).mean() + 0.5 * torch.exp(h) * (w @ w)

    def val(w):
        return torch.nn.functional.softplus(-yv * (Xv @ w)).mean()

    def newton(h):  # the exact inner solution (quadratic convergence to rounding)
        w = torch.zeros(p, dtype=torch.float64)
        for _ in range(15):
            s = torch.sigmoid(-y * (X @ w))  # d/dm softplus(-m) = -s, second derivative s(1-s)
            g = -X.T @ (y * s) / n + h.exp() * w
            H = (X.T * (s * (1 - s))) @ X / n + h.exp() * torch.eye(p, dtype=torch.float64)
            w = w - torch.linalg.solve(H, g)
        return w

    return train, val, newton


def test_implicit_hypergradient_logistic_finite_differences(rng):
    train, val, newton = logistic_problem(rng)
    for h in (-3.0, 0.0):
        h_t = torch.tensor(h, dtype=torch.float64)
        hg = selection.implicit_hypergradient(train, val, newton(h_t), h_t)
        fd = (val(newton(h_t + 1e-5)) - val(newton(h_t - 1e-5))) / 2e-5
        assert abs(float(hg) - float(fd)) <= 1e-7 * abs(float(fd)) + 1e-12


def test_implicit_hypergradient_certificate_bounds_the_error(rng):
    # ridge with h = log lam: exact answer lam V'(lam); the CG residual r = dV - H q bounds
    # the error by ||d_wh F|| ||H^-1|| ||r|| = 2 lam ||w|| / (2 s_min^2 + 2 lam) * cert ||dV||
    X, y, Xv, yv, train, val = ridge_bilevel(rng, 25)
    lam = 0.5
    w = ridge.ridge(X, y, lam)
    _, dV = selection.ridge_hypergradient(X, y, Xv, yv, [lam])
    dv_w = -2 / 25 * Xv.T @ (yv - Xv @ w)
    s_min2 = float(torch.linalg.eigvalsh(X.T @ X)[0])
    for max_iter in (2, 4, 100):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", regref.ConvergenceWarning)
            hg, info = selection.implicit_hypergradient(train, val, w, math.log(lam),
                                                        max_iter=max_iter, return_info=True)
        assert info.converged == (info.certificate <= 1e-10)
        bound = (2 * lam * float(w.norm()) / (2 * s_min2 + 2 * lam) * info.certificate
                 * float(dv_w.norm()))
        assert abs(float(hg) - lam * float(dV[0])) <= bound * (1 + 1e-6) + 1e-13
    assert info.converged and info.n_iter <= 100


def test_implicit_hypergradient_convergence_warning_and_non_convex(rng):
    train, val, newton = logistic_problem(rng)
    w = newton(torch.tensor(-3.0, dtype=torch.float64))
    _, info = _warned_here(lambda: selection.implicit_hypergradient(
        train, val, w, -3.0, max_iter=1, return_info=True))
    assert not info.converged and info.n_iter == 1
    with pytest.raises(ValueError, match="positive definite"):
        selection.implicit_hypergradient(lambda w, h: -h.exp() * (w @ w), val, w, 0.0)
    with pytest.raises(ValueError, match=r"\bhyper\b"):
        selection.implicit_hypergradient(lambda w, h: (w @ w), val, w, 0.0)


def test_lbfgs_minimizes_a_quadratic_with_a_true_certificate(rng):
    A = t(rng.standard_normal((8, 8)))
    A = A @ A.T + torch.eye(8, dtype=torch.float64)
    b = t(rng.standard_normal(8))

    def f(w):
        return 0.5 * w @ A @ w - b @ w

    w0 = torch.zeros(8, dtype=torch.float64)
    w, info = selection.lbfgs(f, w0, return_info=True)
    cert = float((A @ w - b).abs().max()) / max(1.0, float(b.abs().max()))
    assert abs(cert - info.certificate) <= 1e-14 and info.converged == (cert <= 1e-8)
    assert info.converged and info.n_iter >= 1
    # the error is bounded by the gradient: ||w - w*|| <= ||grad|| / lambda_min(A)
    err = float(torch.linalg.norm(w - torch.linalg.solve(A, b)))
    assert err <= math.sqrt(8) * float((A @ w - b).abs().max()) / float(
        torch.linalg.eigvalsh(A)[0])
    # default tol pinned: 1e-8 in float64 (identical run), 1e-3 in float32
    assert torch.equal(selection.lbfgs(f, w0), selection.lbfgs(f, w0, tol=1e-8))
    _, info32 = selection.lbfgs(lambda v: 0.5 * v @ A.float() @ v - b.float() @ v,
                                w0.float(), return_info=True)
    assert info32.converged and info32.certificate <= 1e-3
    # stopping at max_iter warns, at the caller's line, and says so in Info
    w1, info1 = _warned_here(lambda: selection.lbfgs(f, w0, max_iter=1, return_info=True))
    assert not info1.converged and info1.n_iter == 1 and info1.certificate > 1e-8
    assert w0.abs().max() == 0  # the start is not modified


def test_hoag_finds_the_minimizer_of_the_validation_loss(rng):
    X, y, Xv, yv, train, val = ridge_bilevel(rng, 40, noise=2.0, scale=40)
    history = []
    h, w, info = selection.hoag(train, val, torch.zeros(10, dtype=torch.float64), 0.0,
                                max_iter=200, history=history, return_info=True)
    assert info.converged and info.n_iter == len(history) and info.certificate <= 1e-5
    # the certificate, recomputed: the hypergradient at the returned (w, h) relative to
    # the first one, both from the inexact inner iterates HOAG used
    assert torch.equal(history[-1]["hyper"], h)
    g_last = selection.implicit_hypergradient(train, val, w, h)
    g_first = float(history[0]["hypergrad"].norm())
    assert abs(float(g_last.norm()) / g_first - info.certificate) <= 1e-8 / g_first
    # stationarity of the exact validation loss (ridge with lam = n e^h), by the closed form
    lam = 40 * float(h.exp())
    _, dV = selection.ridge_hypergradient(X, y, Xv, yv, [lam])
    assert abs(lam * float(dV[0])) <= 1e-5 * g_first + 1e-7
    assert [d["inner_iter"] for d in history] == sorted(d["inner_iter"] for d in history)
    # default tol pinned at 1e-5 in float64: the same run as tol=1e-5
    h2, _ = selection.hoag(train, val, torch.zeros(10, dtype=torch.float64), 0.0,
                           max_iter=200, tol=1e-5)
    assert torch.equal(h, h2)
    _, _, info2 = _warned_here(lambda: selection.hoag(
        train, val, torch.zeros(10, dtype=torch.float64), 0.0, max_iter=2, return_info=True))
    assert not info2.converged and info2.n_iter == 2


# --- bad input --------------------------------------------------------------------------

_X = np.ones((6, 2)) + np.arange(12).reshape(6, 2) ** 1.5
_y = np.arange(6.0)


def _train(w, h):
    return (w @ w) * torch.exp(h) + w.sum()


def _kfold(**kw):
    return selection.kfold_path_score(ridge.ridge_path, _X, _y, [1.0], **kw)


def _kfold_y(y):
    return selection.kfold_path_score(ridge.ridge_path, _X, y, [1.0], k=2)


V = ValueError
BAD = [
    (lambda: selection.kfold_path_score(ridge.ridge_path, _X, _y, [-1.0]), V, "lams"),
    (lambda: _kfold(k=1), V, "k"),
    (lambda: _kfold(k=7), V, "k"),
    (lambda: _kfold(k=2.5), V, "k"),
    (lambda: _kfold(k=True), V, "k"),
    (lambda: _kfold(folds=[0, 1]), V, "folds"),
    (lambda: _kfold(folds=np.zeros(6, int)), V, "folds"),
    (lambda: _kfold(folds=np.arange(6.0)), V, "folds"),
    (lambda: _kfold(generator=3), TypeError, "generator"),
    (lambda: selection.kfold_path_score(lambda X, y, lams: X[:1], _X, _y, [1.0, 2.0]), V, "path"),
    (lambda: selection.kfold_path_score(ridge.ridge_path, _X, _y[:4], [1.0]), V, "y"),
    (lambda: selection.kfold_path_score(ridge.ridge_path, np.ones((6, 0)), _y, [1.0]), V, "X"),
    (lambda: selection.one_standard_error(np.ones(3)), V, "errors"),
    (lambda: selection.one_standard_error(np.ones((1, 3))), V, "errors"),
    (lambda: selection.one_standard_error(np.ones((3, 0))), V, "errors"),
    (lambda: _kfold_y(np.ones((6, 0))), V, "y"),
    (lambda: selection.loo([np.nan, 1.0], [0.1, 0.1]), V, "residuals"),
    (lambda: selection.loo(np.ones(0), np.ones(0)), V, "residuals"),
    (lambda: selection.loo([1.0, 1.0], [1.0, 0.1]), V, "hat_diag"),
    (lambda: selection.loo(np.ones(3), np.ones(2) * 0.1), V, "hat_diag"),
    (lambda: selection.gcv(np.ones(3), 3.0), V, "trace"),
    (lambda: selection.gcv(1.0, 0.1), V, "residuals"),
    (lambda: selection.ridge_loo_per_target(_X, _y[:3, None], [1.0]), V, "Y"),
    (lambda: selection.sure(np.ones(3), 1.0, 0.0), V, "sigma"),
    (lambda: selection.sure(np.ones((2, 3)), [1.0, 2.0, 3.0], 1.0), V, "divergence"),
    (lambda: selection.sure_soft_threshold(_y, -1.0, 1.0), V, "tau"),
    (lambda: selection.sure_soft_threshold(np.ones((2, 2, 2)), 1.0, 1.0), V, "y"),
    (lambda: selection.sure_ridge(_X, _y + np.inf, [1.0], 1.0), V, "y"),
    (lambda: selection.sure_ridge(_X, _y, [1.0], -1.0), V, "sigma"),
    (lambda: selection.log_evidence_ridge(_X, _y, 0.0, 1.0), V, "prior_var"),
    (lambda: selection.log_evidence_ridge(_X, _y, 1.0, np.nan), V, "noise_var"),
    (lambda: selection.log_evidence_ridge(_X, _y, [1.0, 2.0], [1.0, 2.0, 3.0]), V,
     "noise_var"),
    (lambda: selection.evidence_ridge(_X, np.ones((6, 2))), V, "y"),
    (lambda: selection.evidence_ridge(_X, np.zeros(6)), V, "y"),
    (lambda: selection.evidence_ridge(_X, _y, tol=-1), V, "tol"),
    (lambda: selection.evidence_ridge(_X, _y, max_iter=math.inf), V, "max_iter"),
    (lambda: selection.evidence_ridge(_X, _y, max_iter=1.5), V, "max_iter"),
    (lambda: selection.evidence_ridge(_X, _y, max_iter=True), V, "max_iter"),
    (lambda: selection.evidence_ridge(_X, _y, check_every=0), V, "check_every"),
    (lambda: selection.ridge_hypergradient(_X, _y, _X, _y, [0.0]), V, "lams"),
    (lambda: selection.ridge_hypergradient(_X, _y, _X[:, :1], _y, [1.0]), V, "X_val"),
    (lambda: selection.ridge_hypergradient(_X, _y, _X, _y[:3], [1.0]), V, "y_val"),
    (lambda: selection.ridge_hypergradient(_X, _y[:, None], _X, _y, [1.0]), V, "y"),
    (lambda: selection.implicit_hypergradient(_train, torch.sum, [np.nan], 0.0), V, "w"),
    (lambda: selection.implicit_hypergradient(_train, torch.sum, [1.0], math.inf), V, "hyper"),
    (lambda: selection.implicit_hypergradient(_train, torch.sum, [1.0], 0.0, tol=0), V, "tol"),
    (lambda: selection.implicit_hypergradient(_train, torch.sum, [1.0], 0.0, max_iter=1.5), V,
     "max_iter"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, decrease=1.0), V, "decrease"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, step=-1.0), V, "step"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, growth=0.5), V, "growth"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, tol=math.nan), V, "tol"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, eps_min=0.0), V, "eps_min"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, eps0=-1.0), V, "eps0"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, max_iter=math.inf), V, "max_iter"),
    (lambda: selection.hoag(_train, torch.sum, [1.0], 0.0, inner_max_iter=True), V,
     "inner_max_iter"),
    (lambda: selection.hoag(_train, torch.sum, [np.inf], 0.0), V, "w0"),
    (lambda: selection.lbfgs(torch.sum, [1.0], max_iter=0), V, "max_iter"),
    (lambda: selection.lbfgs(torch.sum, [1.0], max_iter=1.5), V, "max_iter"),
    (lambda: selection.lbfgs(torch.sum, [1.0], tol=-1.0), V, "tol"),
    (lambda: selection.lbfgs(torch.sum, [np.nan]), V, "w0"),
    (lambda: selection.lbfgs(torch.sum, "abc"), TypeError, "w0"),
    (lambda: selection.lbfgs(torch.sum, np.ones(0)), V, "w0"),
    (lambda: selection.hoag(_train, torch.sum, np.ones(0), 0.0), V, "w0"),
    (lambda: selection.implicit_hypergradient(_train, torch.sum, np.ones(0), 0.0), V, "w"),
]


@pytest.mark.parametrize("call, exc, name", BAD, ids=[f"{i}-{n}" for i, (_, _, n) in
                                                      enumerate(BAD)])
def test_bad_input_raises_a_clear_error_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=rf"(?<![\w.]){name}\b"):
        call()


def test_empty_batches_give_empty_results(rng):
    X, _ = problem(rng, 6, 2)
    assert selection.loo(np.ones((0, 3)), 0.1).shape == (0,)
    assert selection.gcv(np.ones((0, 3)), 0.1).shape == (0,)
    assert selection.sure(np.ones((0, 3)), 1.0, 1.0).shape == (0,)
    assert selection.sure_soft_threshold(np.ones((0, 4)), [1.0, 2.0], 1.0).shape == (2, 0)
    assert selection.ridge_loo_per_target(X, np.ones((6, 0)), [1.0, 2.0]).shape == (2, 0)
    assert torch.equal(selection.sure_ridge(X, np.ones((6, 0)), [1.0, 2.0], 1.0),
                       torch.zeros(2, dtype=torch.float64))


# --- dtype and device -------------------------------------------------------------------


def test_float32_preserved(rng):
    X, y = problem(rng, 30, 6)
    X32, y32 = t(X, torch.float32), t(y, torch.float32)
    assert selection.ridge_loo_per_target(X32, y32[:, None], LAMS).dtype == torch.float32
    assert selection.sure_ridge(X32, y32, LAMS, 0.5).dtype == torch.float32
    V, dV = selection.ridge_hypergradient(X32, y32, X32, y32, LAMS)
    assert V.dtype == dV.dtype == torch.float32
    torch.testing.assert_close(dV.double(), selection.ridge_hypergradient(X, y, X, y, LAMS)[1],
                               rtol=1e-3, atol=1e-5)
    assert selection.log_evidence_ridge(X32, y32, 1.0, 1.0).dtype == torch.float32
    # iterative routines converge at their float32 default tolerance, close to float64
    a32, b32 = selection.evidence_ridge(X32, y32)
    a64, b64 = selection.evidence_ridge(X, y)
    assert a32.dtype == torch.float32
    assert abs(float(a32 / a64) - 1) < 1e-3 and abs(float(b32 / b64) - 1) < 1e-3

    def train(w, h):
        return ((y32 - X32 @ w) ** 2).sum() + torch.exp(h) * (w @ w)

    hg = selection.implicit_hypergradient(train, lambda w: ((y32 - X32 @ w) ** 2).mean(),
                                          ridge.ridge(X32, y32, 3.0), math.log(3.0))
    assert hg.dtype == torch.float32
    ref = 3.0 * selection.ridge_hypergradient(X, y, X, y, [3.0])[1]
    assert abs(float(hg) - float(ref)) <= 1e-3 * abs(float(ref))


@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    X, Y = problem(rng, 60, 20, k=8)
    Xv, yv = problem(rng, 30, 20)
    for dtype in (torch.float32, torch.float64):
        calls = {
            "loo_targets": lambda d, dt=dtype: selection.ridge_loo_per_target(
                t(X, dt).to(d), t(Y, dt).to(d), LAMS),
            "sure_ridge": lambda d, dt=dtype: selection.sure_ridge(
                t(X, dt).to(d), t(Y, dt).to(d), LAMS, 0.5),
            "sure_soft": lambda d, dt=dtype: selection.sure_soft_threshold(
                t(Y.T, dt).to(d), t([0.1, 1.0], dt), 0.5),
            "hypergrad": lambda d, dt=dtype: selection.ridge_hypergradient(
                t(X, dt).to(d), t(Y[:, 0], dt).to(d), t(Xv, dt).to(d), t(yv, dt).to(d),
                LAMS)[1],
            "evidence": lambda d, dt=dtype: selection.log_evidence_ridge(
                t(X, dt).to(d), t(Y[:, 0], dt).to(d), t([0.5, 2.0], dt), 1.0),
            "kfold": lambda d, dt=dtype: selection.kfold_path_score(
                ridge.ridge_path, t(X, dt).to(d), t(Y, dt).to(d), LAMS,
                folds=np.arange(60) % 3),
        }
        for name, call in calls.items():
            c, g = call("cpu"), call("cuda")
            assert g.is_cuda and g.dtype == dtype, name
            torch.testing.assert_close(g.cpu(), c, rtol=1e3 * eps(dtype), atol=1e3 * eps(dtype),
                                       msg=name)


@pytest.mark.gpu
def test_cuda_iterative_solvers_match_cpu(rng):
    X, y = problem(rng, 50, 8, noise=0.7)
    ref = selection.evidence_ridge(X, y)
    gpu = selection.evidence_ridge(t(X).cuda(), t(y).cuda())
    for a, b in zip(gpu, ref, strict=True):
        assert a.is_cuda and abs(float(a) / float(b) - 1) <= 1e-8
    X_, y_, Xv, yv, train, val = ridge_bilevel(rng, 40, noise=2.0, scale=40)
    tensors = [X_, y_, Xv, yv]

    def on(device):
        Xd, yd, Xvd, yvd = (a.to(device) for a in tensors)

        def train_d(w, h):
            return ((yd - Xd @ w) ** 2).sum() / 40 + torch.exp(h) * (w @ w)

        def val_d(w):
            return ((yvd - Xvd @ w) ** 2).mean()

        w = ridge.ridge(Xd, yd, 1.0)
        hg = selection.implicit_hypergradient(train_d, val_d, w, 0.0)
        h, _ = selection.hoag(train_d, val_d, torch.zeros(10, dtype=torch.float64,
                                                          device=device), 0.0, max_iter=200)
        return hg, h

    (hg_c, h_c), (hg_g, h_g) = on("cpu"), on("cuda")
    assert hg_g.is_cuda and h_g.is_cuda
    assert abs(float(hg_g) - float(hg_c)) <= 1e-8 * abs(float(hg_c))
    assert abs(float(h_g) - float(h_c)) <= 1e-4 * (1 + abs(float(h_c)))
