"""Oracle, property and bad-input tests of regref.sparse.

Oracles: scikit-learn (``Lasso``, ``lasso_path``, ``ElasticNet`` at ``tol=1e-12``) for the
lasso and the elastic net, cvxpy (a conic solver) for the group lasso. Certificates are
checked against an independent numpy computation of the primal, the dual and the
optimality conditions, never against regref's own formulas.

Two facts turn a certificate into a coefficient bound (used for the derived tolerances).
With ``f(w) = ||y - Xw||^2 / 2n`` and ``P = f + penalty`` convex, for every ``w``

    P(w) - P(w*) >= ||X(w - w*)||^2 / 2n            (quadratic growth),
    P(w) - P(w*) <= gap(w) = P(w) - D(theta(w))     (weak duality),

so ``||X(w - w*)|| <= sqrt(2n gap(w))``; on the columns ``S`` that carry ``w - w*`` this
gives ``||w - w*|| <= sqrt(2n gap(w)) / sigma_min(X_S)``.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import eps, tol
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.linear_model import ElasticNet, Lasso
from sklearn.linear_model import lasso_path as sk_lasso_path

import regref
from regref import Info, sparse

# name: (n, p, correlation between columns)
PROBLEMS = {"tall": (60, 25, 0.0), "wide": (30, 90, 0.0),
            "tall-corr": (60, 25, 0.8), "wide-corr": (30, 90, 0.8)}
FRACS = [0.1, 0.5, 0.02]  # strengths as fractions of lambda_max, deliberately unsorted
SK = dict(fit_intercept=False, tol=1e-12, max_iter=10**6)  # the peer at its tightest
# Documented default tolerances (relative duality gap, gap <= tol * P(0)); see lasso_path.
DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def problem(rng, n, p, corr=0.0, k=None):
    """Gaussian design with equicorrelated columns, a sparse truth and noise."""
    X = np.sqrt(1 - corr) * rng.standard_normal((n, p)) \
        + np.sqrt(corr) * rng.standard_normal((n, 1))
    tail = () if k is None else (k,)
    w = np.zeros((p,) + tail)
    support = rng.choice(p, min(8, p), replace=False)
    w[support] = 2 * rng.standard_normal((len(support),) + tail)
    y = X @ w + 0.5 * rng.standard_normal((n,) + tail)
    return X, y


def as_dtype(X, y, dtype):
    """regref's inputs in ``dtype``, and the same (rounded) numbers in float64 for oracles."""
    Xt, yt = torch.as_tensor(X).to(dtype), torch.as_tensor(y).to(dtype)
    return Xt, yt, Xt.double().numpy(), yt.double().numpy()


def in_dtype(lam, dtype) -> float:
    """``lam`` rounded to ``dtype`` (what regref solves for), as a Python float."""
    return float(torch.tensor(float(lam), dtype=dtype))


def f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def rel_err(a, b) -> float:
    a, b = f64(a), f64(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(np.float64).tiny))


# --- independent numpy references (float64) --------------------------------------------


def lam_max_np(X, y, rho=1.0):
    return np.abs(X.T @ y).max(axis=0) / (X.shape[0] * rho)


def P0_np(y):
    """The objective at w = 0, the scale every relative tolerance refers to."""
    return (f64(y) ** 2).sum(axis=0) / (2 * len(y))


def primal_np(X, y, w, lam, rho=1.0):
    """(1/2n)||y - Xw||^2 + lam rho ||w||_1 + lam (1 - rho)/2 ||w||^2, per target."""
    X, y, w = f64(X), f64(y), f64(w)
    r = y - X @ w
    return ((r**2).sum(0) / (2 * len(y)) + lam * rho * np.abs(w).sum(0)
            + lam * (1 - rho) / 2 * (w**2).sum(0))


def gap_np(X, y, w, lam, rho=1.0):
    """Duality gap at the rescaled residual (the elastic net as a lasso on [X; sqrt(n l2) I]).

    theta = [r; -sqrt(n l2) w] / s with s = max(n l1, ||X^T r - n l2 w||_inf) is feasible,
    ||[X; sqrt(n l2) I]^T theta||_inf <= 1, and D = (||y~||^2 - ||y~ - n l1 theta||^2) / 2n.
    """
    X, y, w = f64(X), f64(y), f64(w)
    n = len(y)
    l1, l2 = lam * rho, lam * (1 - rho)
    r = y - X @ w
    s = np.maximum(n * l1, np.abs(X.T @ r - n * l2 * w).max(axis=0))
    a = n * l1 / s
    dual = ((y**2).sum(0) - ((y - a * r) ** 2).sum(0) - a**2 * n * l2 * (w**2).sum(0)) / (2 * n)
    return primal_np(X, y, w, lam, rho) - dual


def kkt_np(X, y, w, lam, rho=1.0):
    """max_j dist(g_j, lam rho d|w_j|) with g = X^T(y - Xw)/n - lam (1 - rho) w."""
    X, y, w = f64(X), f64(y), f64(w)
    l1, l2 = lam * rho, lam * (1 - rho)
    g = X.T @ (y - X @ w) / len(y) - l2 * w
    v = np.where(w != 0, np.abs(g - l1 * np.sign(w)), np.maximum(np.abs(g) - l1, 0))
    return v.max(axis=0)


def sk_enet(X, y, lam, rho=1.0):
    """scikit-learn's coefficients at its tightest tolerance, shaped like regref's."""
    model = Lasso(alpha=lam, **SK) if rho == 1.0 else ElasticNet(alpha=lam, l1_ratio=rho, **SK)
    return model.fit(f64(X), f64(y)).coef_.T


def coef_bound(X, w, w_ref, gap_w, gap_ref):
    """Bound on ||w - w*|| + ||w_ref - w*|| from the two gaps (module docstring).

    Both solutions have exact zeros, so w - w_ref lives on the union of their supports S;
    the bound is infinite when X_S has more columns than rows.
    """
    X, w, w_ref = f64(X), f64(w), f64(w_ref)
    S = (w != 0) | (w_ref != 0)
    if S.sum() >= X.shape[0]:
        return np.inf
    smin = np.linalg.svd(X[:, S], compute_uv=False).min()
    n = X.shape[0]
    return (np.sqrt(2 * n * max(gap_w, 0)) + np.sqrt(2 * n * max(gap_ref, 0))) / smin


# --- group lasso references ------------------------------------------------------------


def partition(rng, p, sizes=(1, 2, 3, 4, 5)):
    """A random partition of range(p) into groups of unequal sizes, in random order."""
    perm = rng.permutation(p)
    groups, start, i = [], 0, 0
    while start < p:
        size = min(sizes[i % len(sizes)], p - start)
        groups.append(sorted(perm[start:start + size].tolist(), reverse=bool(i % 2)))
        start, i = start + size, i + 1
    order = rng.permutation(len(groups))
    return [groups[j] for j in order]


def default_weights(groups):
    return np.sqrt([len(g) for g in groups])


def group_lam_max_np(X, y, groups, weights):
    return max(np.linalg.norm(X[:, g].T @ y) / (len(y) * wt)
               for g, wt in zip(groups, weights, strict=True))


def group_primal_np(X, y, w, lam, groups, weights):
    X, y, w = f64(X), f64(y), f64(w)
    pen = sum(wt * np.linalg.norm(w[g]) for g, wt in zip(groups, weights, strict=True))
    return ((y - X @ w) ** 2).sum() / (2 * len(y)) + lam * pen


def group_gap_np(X, y, w, lam, groups, weights):
    """Gap at theta = r / max(n lam, max_g ||X_g^T r|| / weight_g).

    The dual constraint of the group lasso is ||X_g^T theta|| <= weight_g for every group.
    """
    X, y, w = f64(X), f64(y), f64(w)
    n = len(y)
    r = y - X @ w
    s = max(n * lam, max(np.linalg.norm(X[:, g].T @ r) / wt
                         for g, wt in zip(groups, weights, strict=True)))
    dual = ((y**2).sum() - ((y - n * lam * r / s) ** 2).sum()) / (2 * n)
    return group_primal_np(X, y, w, lam, groups, weights) - dual


def cvx_group_lasso(X, y, lam, groups, weights):
    """The group lasso by an interior-point conic solver (float64), certified independently.

    Clarabel sometimes labels its answer "optimal_inaccurate" at these tolerances; what
    counts is the duality gap of the answer, checked here with the numpy dual point.
    """
    n, p = X.shape
    w = cp.Variable(p)
    pen = sum(wt * cp.norm(w[g], 2) for g, wt in zip(groups, weights, strict=True))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(y - X @ w) / (2 * n) + lam * pen))
    with warnings.catch_warnings():  # "solution may be inaccurate": judged by the gap below
        warnings.simplefilter("ignore", UserWarning)
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), prob.status
    ref = np.asarray(w.value)
    assert group_gap_np(X, y, ref, lam, groups, weights) <= 1e-9 * P0_np(y), "oracle"
    return ref


# --- 1. lasso, lasso_path and elastic net vs scikit-learn -------------------------------


def slack(dtype, P0):
    """How far above the optimum a default solve may end: the documented relative gap,
    plus the rounding of the solver's own gap evaluation in ``dtype`` (terms of size P(0))."""
    return DEFAULT_TOL[dtype] * P0 + tol(dtype, P0)


def check_against_sklearn(X, y, w, lam, rho, dtype):
    """Coefficients and objective of regref's ``w`` vs scikit-learn on the same numbers.

    float64: the documented promise, 1e-8 relative. float32: the default stops at a relative gap
    of 1e-5, which bounds the coefficient error only through quadratic growth (module
    docstring), about sqrt(1e-5) ||y|| / sigma_min: 2 to 4 digits, not a fixed number.
    """
    assert w.dtype == dtype and w.shape == (X.shape[1],) + y.shape[1:]
    ref = sk_enet(X, y, lam, rho)
    P0 = P0_np(y)
    gap_ref = gap_np(X, y, ref, lam, rho)
    # scikit-learn stops at gap <= tol ||y||^2 / n = 2 tol P(0); check that it did
    assert gap_ref <= 2e-12 * P0 * (1 + 1e-6), "the oracle itself is not converged"
    # regref's objective is no worse than the peer's, up to its documented tolerance
    assert primal_np(X, y, w, lam, rho) <= primal_np(X, y, ref, lam, rho) + slack(dtype, P0)
    if dtype == torch.float64:
        assert rel_err(w, ref) < 1e-8
    else:
        bound = coef_bound(X, w, ref, gap_np(X, y, w, lam, rho), gap_ref)
        assert np.linalg.norm(f64(w) - ref) <= bound * (1 + 1e-6)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("frac", FRACS)
def test_lasso_matches_sklearn(rng, name, frac, dtype):
    X, y, Xd, yd = as_dtype(*problem(rng, *PROBLEMS[name]), dtype)
    lam = in_dtype(frac * lam_max_np(Xd, yd), dtype)
    check_against_sklearn(Xd, yd, sparse.lasso(X, y, lam), lam, 1.0, dtype)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("rho", [0.5, 0.2])  # 1.0: test_path_and_single_solves_agree
@pytest.mark.parametrize("frac", [0.3, 0.03])
def test_elastic_net_matches_sklearn(rng, name, rho, frac, dtype):
    X, y, Xd, yd = as_dtype(*problem(rng, *PROBLEMS[name]), dtype)
    lam = in_dtype(frac * lam_max_np(Xd, yd, rho), dtype)
    check_against_sklearn(Xd, yd, sparse.elastic_net(X, y, lam, rho), lam, rho, dtype)


@pytest.mark.parametrize("name", PROBLEMS)
def test_lasso_path_matches_sklearn_in_callers_order(rng, name, dtype):
    X, y, Xd, yd = as_dtype(*problem(rng, *PROBLEMS[name]), dtype)
    lmax = lam_max_np(Xd, yd)
    fracs = [0.05, 1.2, 0.3, 0.01, 0.6, 0.1, 0.02]  # not monotone; 1.2: above lambda_max
    lams = torch.tensor(fracs, dtype=torch.float64) * lmax
    W = sparse.lasso_path(X, y, lams.to(dtype))
    assert W.dtype == dtype and W.shape == (len(fracs), X.shape[1])
    lams_d = f64(lams.to(dtype))
    # scikit-learn's lasso_path returns its columns sorted by decreasing alpha (it sorts
    # the alphas it is given), so match each column to its alpha
    alphas, coefs, _ = sk_lasso_path(Xd, yd, alphas=lams_d, tol=1e-12, max_iter=10**6)
    for lam, row in zip(lams_d, W, strict=True):
        ref = coefs[:, np.flatnonzero(alphas == lam)[0]]
        if lam >= lmax:
            assert torch.count_nonzero(row) == 0
            continue
        assert rel_err(ref, sk_enet(Xd, yd, lam)) < 1e-10  # the two peers agree
        check_against_sklearn(Xd, yd, row, lam, 1.0, dtype)


def test_lasso_path_rows_follow_any_permutation(rng):
    X, y = problem(rng, 40, 15)
    lams = torch.tensor(FRACS + [0.2], dtype=torch.float64) * lam_max_np(X, y)
    W = sparse.lasso_path(X, y, lams)
    for perm in ([3, 1, 0, 2], [2, 0, 1, 3]):
        Wp = sparse.lasso_path(X, y, lams[perm])
        for row, ref in zip(Wp, W[perm], strict=True):
            assert rel_err(row, ref) < 2e-8  # each within 1e-8 of the optimum
    # rows differ, so the check above has teeth: ||w_lam||_1 decreases strictly with lam
    l1 = W.abs().sum(1)[torch.argsort(lams)]
    assert torch.all(l1[1:] < l1[:-1])


def test_path_and_single_solves_agree(rng):
    X, y = problem(rng, 50, 20, 0.5)
    lams = torch.tensor(FRACS, dtype=torch.float64) * lam_max_np(X, y)
    W = sparse.lasso_path(X, y, lams)
    for lam, row in zip(lams, W, strict=True):
        assert rel_err(row, sparse.lasso(X, y, lam)) < 2e-8  # each within 1e-8 of sklearn
        assert rel_err(row, sparse.elastic_net(X, y, lam, 1.0)) < 2e-8


@pytest.mark.parametrize("corr", [0.0, 0.95])
def test_tall_path_when_newton_steps_do_not_certify(rng, corr):
    # n barely above p and strongly correlated columns: a badly conditioned Gram matrix, where
    # support predictions go wrong and the working-set loop has to finish; the answer must
    # still be scikit-learn's. Also a path long enough for several warm-started batches.
    X, y = problem(rng, 70, 64, corr)
    lams = torch.tensor(np.geomspace(1, 1e-3, 23), dtype=torch.float64) * lam_max_np(X, y)
    W, info = sparse.lasso_path(X, y, lams, return_info=True)
    assert info.converged and info.certificate <= DEFAULT_TOL[torch.float64]
    for lam, row in zip(f64(lams)[::4], W[::4], strict=True):
        check_against_sklearn(X, y, row, lam, 1.0, torch.float64)


@given(seed=st.integers(0, 2**31 - 1), frac=st.sampled_from([0.02, 0.3, 2.0]),
       rho=st.sampled_from([1.0, 0.4]), shift=st.sampled_from([0.0, 3.0]))
def test_gram_form_gap_equals_the_direct_gap(seed, frac, rho, shift):
    # The Gram-form gap (what lasso_path computes in Gram mode, from H = X^T X / n,
    # c = X^T y / n and ||y||^2 / 2n only) against the direct form from residuals
    # (numpy, independent). They are the same number up to rounding: the Gram form
    # cancels ||r||^2 = ||y||^2 - 2 c^T w + w^T H w, so its error is a few eps times
    # the terms it adds, ||y||^2/2n + |c^T w| + w^T H w / 2.
    r = np.random.default_rng(seed)
    X, y = problem(r, 40, 12, 0.5, k=3)
    W = r.standard_normal((12, 3)) * (r.random((12, 3)) < 0.5) + shift
    lam = frac * float(lam_max_np(X, y, rho).max())
    n = X.shape[0]
    Xt, Yt, Wt = (torch.as_tensor(a) for a in (X, y, W))
    H, C = Xt.mT @ Xt / n, Xt.mT @ Yt / n
    yy = (Yt * Yt).sum(0) / (2 * n)
    lam_t = torch.tensor(lam, dtype=torch.float64)
    gram = sparse._gram_gap_from(H @ Wt, C, yy, Wt, lam_t * rho, lam_t * (1 - rho))[0]
    direct = gap_np(X, y, W, lam, rho)
    scale = f64(yy) + np.abs((f64(C) * W).sum(0)) + (W * (f64(H) @ W)).sum(0) / 2
    np.testing.assert_array_less(np.abs(f64(gram) - direct), 50 * eps(torch.float64) * scale)


def test_active_set_solve_is_the_kkt_solution_on_its_support(rng):
    # Given the optimal support and signs, the Newton step's exact solve is the solution
    # (to rounding); with one problem per column (a batch of Gram matrices) as well.
    X, y = problem(rng, 50, 10, 0.3)
    n = X.shape[0]
    lams = np.array([0.3, 0.05]) * lam_max_np(X, y)
    ref = np.stack([sk_enet(X, y, lam) for lam in lams], axis=1)  # (p, 2)
    H, C = torch.as_tensor(X.T @ X / n), torch.as_tensor(X.T @ y / n)[:, None].repeat(1, 2)
    A, S = torch.as_tensor(ref != 0), torch.as_tensor(np.sign(ref))
    lam_t = torch.as_tensor(lams)
    w = sparse._active_set_solve(H, C, A, S, lam_t, torch.zeros(2, dtype=torch.float64))
    np.testing.assert_allclose(f64(w), ref, atol=1e-9 * np.abs(ref).max())
    Hb = torch.stack([H, 2 * H])[:, None]  # problem 1: the design scaled by sqrt(2)
    wb = sparse._active_set_solve(Hb, torch.stack([C, 2 * C], 1), torch.stack([A, A], 1),
                                  torch.stack([S, S], 1), torch.stack([lam_t, 2 * lam_t]),
                                  torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(wb[:, 0], w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(wb[:, 1], w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("small_gram", [0, 2**24])
def test_tall_path_with_a_lazy_gram_cache(rng, monkeypatch, small_gram):
    # Gram mode builds rows of H as features enter unless n p^2 is small; force the lazy
    # cache on a small problem: same answers as scikit-learn, certificate at the point.
    monkeypatch.setattr(sparse, "_SMALL_GRAM", small_gram)
    X, y = problem(rng, 300, 80, 0.5)
    lams = torch.tensor(np.geomspace(1, 1e-2, 20), dtype=torch.float64) * lam_max_np(X, y)
    W, info = sparse.lasso_path(X, y, lams, return_info=True)
    assert info.converged
    for lam, row in zip(f64(lams)[::4], W[::4], strict=True):
        check_against_sklearn(X, y, row, lam, 1.0, torch.float64)
    W6, info6 = sparse.lasso_path(X, y, lams, tol=1e-6, return_info=True)
    rel = max(float(sparse.duality_gap(X, y, w, lam)) for w, lam in zip(W6, lams,
                                                                      strict=True)) / P0_np(y)
    assert info6.converged and abs(rel - info6.certificate) <= 1e-12


def test_nested_supports_share_one_factorization(rng):
    # Supports nested as along a path (each column's support a leading block of one
    # ordering): _solve_on_support takes the one-factorization route and must agree with
    # the padded batched Cholesky (forced here by giving H a batch dimension); a support
    # that is not nested must fall back.
    X = torch.as_tensor(rng.standard_normal((80, 12)))
    H = X.mT @ X / 80
    order = torch.as_tensor(rng.permutation(12))
    sizes = torch.tensor([0, 3, 3, 7, 12])
    A = torch.zeros(12, 5, dtype=torch.bool)
    for b, k in enumerate(sizes.tolist()):
        A[order[:k], b] = True
    C = torch.as_tensor(rng.standard_normal((12, 5)))
    S = torch.as_tensor(np.sign(rng.standard_normal((12, 5))))
    l1, l2 = torch.linspace(0.1, 0.5, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    assert sparse._solve_nested(H, C, A, S, l1, l2) is not None
    Z, ok = sparse._solve_on_support(H, C, A, S, l1, l2)
    Zp, okp = sparse._solve_on_support(H[None], C, A, S, l1, l2)
    assert ok.all() and okp.all()
    torch.testing.assert_close(Z, Zp, rtol=1e-12, atol=1e-12)
    assert not Z[~A].any()
    A[order[11], 1] = True  # column 1 now holds a feature column 3 lacks: not nested
    assert sparse._solve_nested(H, C, A, S, l1, l2) is None
    assert sparse._solve_nested(H, C, A, S, l1, l2 + torch.arange(5)) is None


def test_predicted_support_admits_at_most_nnz_plus_10_new_features(rng):
    # Newton's support prediction: current features are kept where their score exceeds 1;
    # of the features
    # entering a column, only the nnz + 10 of largest score |u| d / lam (those above 1);
    # a column not todo predicts nothing.
    p, B = 60, 3
    W = torch.zeros(p, B, dtype=torch.float64)
    W[:5, 1] = 1.0  # column 1: 5 nonzeros, so up to 15 new features
    G = torch.as_tensor(rng.standard_normal((p, B)))
    d, l1 = torch.ones(p, 1, dtype=torch.float64), torch.full((B,), 0.01, dtype=torch.float64)
    todo = torch.tensor([True, True, False])
    U, A, score = sparse._predict_support(W, G, d, l1, todo)
    torch.testing.assert_close(U, W + G)
    assert int(A[:, 0].sum()) == 10 and int(A[5:, 1].sum()) == 15 and not A[:, 2].any()
    assert torch.equal(A[:5, 1], score[:5, 1] > 1)  # current features: no cap
    for b, old in ((0, 0), (1, 5)):
        entering = score[old:, b]
        kept = A[old:, b]
        assert entering[kept].min() >= entering[~kept & (entering > 1)].max()


def test_tall_path_certified_by_newton_alone(rng):
    # A loose tol (no final polish): when the Newton steps certify every column, the path
    # returns their points and their gaps; the certificate must still be the relative
    # duality gap of the returned coefficients (recomputed here from X, not from H), and
    # the objectives scikit-learn's at that precision.
    X, y = problem(rng, 400, 60, 0.5)
    lams = torch.tensor(np.geomspace(1, 1e-2, 30), dtype=torch.float64) * lam_max_np(X, y)
    W, info = sparse.lasso_path(X, y, lams, tol=1e-6, return_info=True)
    gaps = torch.stack([sparse.duality_gap(X, y, w, lam) for w, lam in zip(W, lams,
                                                                          strict=True)])
    rel = float(gaps.max()) / P0_np(y)
    assert info.converged and rel <= 1e-6
    assert abs(rel - info.certificate) <= 1e-12
    for lam, row in zip(f64(lams)[::5], W[::5], strict=True):
        ref = sk_enet(X, y, lam)
        p_reg, p_ref = primal_np(X, y, f64(row), lam), primal_np(X, y, ref, lam)
        assert abs(p_reg - p_ref) <= 2e-6 * P0_np(y)


# --- 2. group lasso vs cvxpy ------------------------------------------------------------


def check_against_cvxpy(X, y, w, lam, groups, weights, dtype):
    """Objective, group support and coefficients of regref's ``w`` vs the conic solver."""
    assert w.dtype == dtype and w.shape == (X.shape[1],)
    ref = cvx_group_lasso(X, y, lam, groups, weights)
    P0 = P0_np(y)
    P, Pref = (group_primal_np(X, y, v, lam, groups, weights) for v in (w, ref))
    if dtype == torch.float64:
        assert abs(P - Pref) <= 1e-7 * Pref
    assert P <= Pref + slack(dtype, P0)  # no worse than the conic solver
    gap = group_gap_np(X, y, w, lam, groups, weights)
    assert -tol(torch.float64, P0) <= gap <= slack(dtype, P0)
    # whole groups are zero or not; the conic solver's zeros are only approximate, so
    # compare supports through its group norms
    norms = np.array([np.linalg.norm(f64(w)[g]) for g in groups])
    ref_norms = np.array([np.linalg.norm(ref[g]) for g in groups])
    for g, nrm in zip(groups, norms, strict=True):
        assert nrm > 0 or torch.count_nonzero(w[g]) == 0
    assert 0 < (norms > 0).sum() < len(groups)
    assert np.all((norms > 0) == (ref_norms > 1e-6 * ref_norms.max()))
    # coefficients: within the quadratic-growth bound from both gaps (cvxpy's approximate
    # zeros enter as an extra perturbation d_out off the support S)
    S = np.zeros(X.shape[1], dtype=bool)
    for g, nrm in zip(groups, norms, strict=True):
        S[g] = nrm > 0
    d_out = np.linalg.norm(ref[~S])
    gap_ref = group_gap_np(X, y, ref, lam, groups, weights)
    n = X.shape[0]
    Xd_bound = np.sqrt(2 * n * max(gap, 0)) + np.sqrt(2 * n * max(gap_ref, 0))
    assert S.sum() < n  # X_S injective (true for these strengths), so the bound is finite
    smin = np.linalg.svd(X[:, S], compute_uv=False).min()
    bound = (Xd_bound + np.linalg.norm(X, 2) * d_out) / smin + d_out
    assert np.linalg.norm(f64(w) - ref) <= bound * (1 + 1e-6)


GROUP_PROBLEMS = {"tall": (60, 25, 0.0), "wide": (30, 90, 0.0), "tall-corr": (60, 25, 0.8)}


@pytest.mark.parametrize("name", GROUP_PROBLEMS)
@pytest.mark.parametrize("custom_weights", [False, True], ids=["sqrt-size", "custom"])
@pytest.mark.parametrize("frac", [0.4, 0.2])
def test_group_lasso_matches_cvxpy(rng, name, custom_weights, frac):
    X, y = problem(rng, *GROUP_PROBLEMS[name])
    groups = partition(rng, X.shape[1])
    weights = rng.uniform(0.5, 2.0, len(groups)) if custom_weights else default_weights(groups)
    lam = frac * group_lam_max_np(X, y, groups, weights)
    kw = {"weights": torch.as_tensor(weights)} if custom_weights else {}
    w = sparse.group_lasso(torch.as_tensor(X), torch.as_tensor(y), lam, groups, **kw)
    check_against_cvxpy(X, y, w, lam, groups, weights, torch.float64)


def test_group_lasso_groups_in_any_order(rng):
    X, y = problem(rng, 50, 30, 0.3)
    groups = partition(rng, 30)
    weights = rng.uniform(0.5, 2.0, len(groups))
    lam = 0.15 * group_lam_max_np(X, y, groups, weights)
    w = sparse.group_lasso(X, y, lam, groups, weights=weights)
    # reorder the groups (and their weights with them) and the indices inside each group
    order = rng.permutation(len(groups))
    groups2 = [[int(j) for j in rng.permutation(groups[i])] for i in order]
    w2 = sparse.group_lasso(X, y, lam, groups2, weights=weights[order])
    gaps = [group_gap_np(X, y, v, lam, groups, weights) for v in (w, w2)]
    assert np.linalg.norm(f64(w) - f64(w2)) <= coef_bound(X, w, w2, *gaps) * (1 + 1e-6)
    assert rel_err(w2, w) < 1e-7
    # the default weights follow the groups too
    u = sparse.group_lasso(X, y, lam, groups)
    u2 = sparse.group_lasso(X, y, lam, groups2)
    assert rel_err(u2, u) < 1e-7


def test_group_lasso_singletons_is_the_lasso(rng):
    X, y = problem(rng, 40, 12)
    groups = [[j] for j in rng.permutation(12).tolist()]
    lam = 0.2 * lam_max_np(X, y)
    w = sparse.group_lasso(X, y, lam, groups)  # default weights sqrt(1) = 1
    assert rel_err(w, sk_enet(X, y, lam)) < 1e-8


def test_group_lasso_float32(rng):
    X, y, Xd, yd = as_dtype(*problem(rng, 60, 25), torch.float32)
    groups = partition(rng, 25)
    weights = default_weights(groups)
    lam = in_dtype(0.2 * group_lam_max_np(Xd, yd, groups, weights), torch.float32)
    w, info = sparse.group_lasso(X, y, lam, groups, return_info=True)
    assert info.converged
    check_against_cvxpy(Xd, yd, w, lam, groups, weights, torch.float32)


def test_group_lasso_zero_above_its_lambda_max(rng):
    X, y = problem(rng, 40, 20)
    groups = partition(rng, 20)
    weights = rng.uniform(0.5, 2.0, len(groups))
    lmax = group_lam_max_np(X, y, groups, weights)
    assert torch.count_nonzero(sparse.group_lasso(X, y, lmax, groups, weights=weights)) == 0
    assert torch.count_nonzero(sparse.group_lasso(X, y, 0.99 * lmax, groups,
                                                  weights=weights)) > 0


def test_group_lasso_info_certificate_is_honest(rng):
    X, y = problem(rng, 30, 90, 0.5)
    groups = partition(rng, 90)
    weights = default_weights(groups)
    lam = 0.1 * group_lam_max_np(X, y, groups, weights)
    w, info = sparse.group_lasso(X, y, lam, groups, tol=1e-9, return_info=True)
    assert isinstance(info, Info) and info.converged and info.n_iter >= 1
    assert 0 <= info.certificate <= 1e-9
    P0 = P0_np(y)
    assert group_gap_np(X, y, w, lam, groups, weights) / P0 \
        <= info.certificate + tol(torch.float64, 10)


# --- 3. certificates --------------------------------------------------------------------


def _solve(X, y, lam, rho, **kw):
    if rho == 1.0:
        return sparse.lasso(X, y, lam, **kw)
    return sparse.elastic_net(X, y, lam, rho, **kw)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("rho", [1.0, 0.5])
def test_certificates_vanish_at_the_solution(rng, name, rho):
    X, y = problem(rng, *PROBLEMS[name])
    lam = 0.1 * lam_max_np(X, y, rho)
    w, info = _solve(X, y, lam, rho, return_info=True)
    P0 = P0_np(y)
    assert isinstance(info, Info) and info.converged and info.n_iter >= 1
    assert 0 <= info.certificate <= DEFAULT_TOL[torch.float64]
    gap = gap_np(X, y, w, lam, rho)  # independent of regref
    assert -tol(torch.float64, P0) <= gap <= 1e-10 * P0
    assert gap / P0 <= info.certificate + tol(torch.float64)  # the certificate is honest
    g = float(sparse.duality_gap(X, y, w, lam, rho))
    assert abs(g - gap) <= tol(torch.float64, P0) and g >= -tol(torch.float64, P0)
    # KKT: ||grad f(w) - grad f(w*)||_inf <= sigma_max(X~) sqrt(2 gap / n) on the augmented
    # design X~ = [X; sqrt(n l2) I]; that bounds the violation once the support is right
    n = X.shape[0]
    smax = np.sqrt(np.linalg.norm(X, 2) ** 2 + n * lam * (1 - rho))
    kkt = float(sparse.kkt_violation(X, y, w, lam, rho))
    assert kkt <= smax * np.sqrt(2 * max(gap, 0) / n) + tol(torch.float64, lam)
    assert abs(kkt - kkt_np(X, y, w, lam, rho)) <= tol(torch.float64, lam)
    # a perturbed point: move one active coordinate by delta, keeping its sign. Its KKT
    # residual moves by c |delta|, c = ||x_j||^2/n + l2, and by quadratic growth its gap is
    # at least c delta^2 / 2.
    j = int(np.flatnonzero(f64(w))[0])
    delta = 1e-3 * float(w.abs().max()) * float(torch.sign(w[j]))
    c = X[:, j] @ X[:, j] / n + lam * (1 - rho)
    w2 = w.clone()
    w2[j] += delta
    kkt2 = float(sparse.kkt_violation(X, y, w2, lam, rho))
    assert kkt2 >= c * abs(delta) - kkt - tol(torch.float64, lam)
    assert abs(kkt2 - kkt_np(X, y, w2, lam, rho)) <= tol(torch.float64, lam)
    assert float(sparse.duality_gap(X, y, w2, lam, rho)) \
        >= c * delta**2 / 2 - tol(torch.float64, P0)


@pytest.mark.parametrize("rho", [1.0, 0.5])
def test_info_certificate_meets_requested_tol(rng, rho):
    X, y = problem(rng, 40, 60, 0.5)
    lmax = lam_max_np(X, y, rho)
    P0 = P0_np(y)
    for tol_ in (1e-4, 1e-8, 1e-12):
        w, info = _solve(X, y, 0.05 * lmax, rho, tol=tol_, return_info=True)
        assert info.converged and 0 <= info.certificate <= tol_
        assert gap_np(X, y, w, 0.05 * lmax, rho) / P0 <= info.certificate + tol(torch.float64)
    lams = torch.tensor(FRACS, dtype=torch.float64) * lmax
    W, info = sparse.lasso_path(X, y, lams, tol=1e-9, return_info=True)
    worst = max(gap_np(X, y, row, lam, 1.0) for row, lam in zip(W, lams.tolist(), strict=True))
    assert info.converged and 0 <= info.certificate <= 1e-9
    assert worst / P0 <= info.certificate + tol(torch.float64)


# hypothesis: arbitrary points, not just solver output
_p = 7
_ws = arrays(np.float64, _p, elements=st.floats(-5, 5, allow_nan=False, allow_subnormal=False))
_rhos = st.sampled_from([1.0, 0.7, 0.2])
_fracs = st.floats(0.01, 1.5)
_dtypes = st.sampled_from([torch.float32, torch.float64])


def _small(seed, dtype):
    X, y = problem(np.random.default_rng(seed), 12, _p, 0.3)
    return as_dtype(X, y, dtype)


@given(seed=st.integers(0, 2**16), w=_ws, frac=_fracs, rho=_rhos, dtype=_dtypes)
def test_duality_gap_is_nonnegative_and_matches_its_formula(seed, w, frac, rho, dtype):
    X, y, Xd, yd = _small(seed, dtype)
    wt = torch.as_tensor(w).to(dtype)
    lam = frac * float(lam_max_np(Xd, yd, rho))
    gap = sparse.duality_gap(X, y, wt, lam, rho)
    assert gap.dtype == dtype and gap.shape == ()
    scale = primal_np(Xd, yd, wt, lam, rho) + P0_np(yd)
    assert float(gap) >= -tol(dtype, scale)
    assert abs(float(gap) - gap_np(Xd, yd, wt, lam, rho)) <= tol(dtype, scale, 256)


@given(seed=st.integers(0, 2**16), w1=_ws, w2=_ws, frac=_fracs, rho=_rhos)
def test_weak_duality(seed, w1, w2, frac, rho):
    # D(theta(w1)) = P(w1) - gap(w1) <= P* <= P(w2), for every pair
    X, y, Xd, yd = _small(seed, torch.float64)
    lam = frac * float(lam_max_np(Xd, yd, rho))
    D = primal_np(Xd, yd, w1, lam, rho) - float(sparse.duality_gap(X, y, w1, lam, rho))
    P2 = primal_np(Xd, yd, w2, lam, rho)
    assert D <= P2 + tol(torch.float64, P2 + P0_np(yd))
    w_star = _solve(X, y, lam, rho)
    assert D <= primal_np(Xd, yd, w_star, lam, rho) + tol(torch.float64, P2 + P0_np(yd))


@given(seed=st.integers(0, 2**16), w=_ws, frac=_fracs, dtype=_dtypes)
def test_dual_point_is_feasible_rescaled_residual(seed, w, frac, dtype):
    X, y, Xd, yd = _small(seed, dtype)
    wt = torch.as_tensor(w).to(dtype)
    lam = frac * float(lam_max_np(Xd, yd))
    theta = sparse.dual_point(X, y, wt, lam)
    assert theta.dtype == dtype and theta.shape == y.shape
    th = f64(theta)
    n = len(yd)
    r = yd - Xd @ f64(wt)
    s = max(n * lam, np.abs(Xd.T @ r).max())
    expected = r / s
    # rounding: r carries errors ~ eps (|y| + |X||w|), theta those divided by s
    err = 256 * eps(dtype) * (np.abs(yd).max() + np.abs(Xd).max() * np.abs(w).sum()) / s
    np.testing.assert_allclose(th, expected, rtol=256 * eps(dtype), atol=err)
    assert np.abs(Xd.T @ th).max() <= 1 + 256 * eps(dtype) + np.abs(Xd).sum(0).max() * err


@given(seed=st.integers(0, 2**16), w=_ws, frac=_fracs, rho=_rhos)
def test_kkt_violation_matches_its_definition(seed, w, frac, rho):
    X, y, Xd, yd = _small(seed, torch.float64)
    w = np.where(np.abs(w) < 1, 0.0, w)  # exact zeros exercise the subdifferential [-1, 1]
    lam = frac * float(lam_max_np(Xd, yd, rho))
    v = sparse.kkt_violation(X, y, w, lam, rho)
    assert v.shape == () and float(v) >= 0
    scale = np.abs(Xd.T @ (yd - Xd @ w)).max() / len(yd) + lam * (1 + np.abs(w).max())
    assert abs(float(v) - kkt_np(Xd, yd, w, lam, rho)) <= tol(torch.float64, scale)


def test_duality_gap_is_zero_at_zero_above_lambda_max(rng):
    X, y = problem(rng, 20, 8)
    for rho in (1.0, 0.4):
        lam = 1.5 * lam_max_np(X, y, rho)
        w0 = np.zeros(8)
        assert abs(float(sparse.duality_gap(X, y, w0, lam, rho))) <= tol(torch.float64, P0_np(y))
        assert float(sparse.kkt_violation(X, y, w0, lam, rho)) == 0


# --- 4. lambda_max ----------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBLEMS)
def test_lambda_max_is_the_smallest_zero_solution(rng, name, dtype):
    X, y, Xd, yd = as_dtype(*problem(rng, *PROBLEMS[name]), dtype)
    lmax = sparse.lambda_max(X, y)
    assert lmax.shape == () and lmax.dtype == dtype
    assert abs(float(lmax) - lam_max_np(Xd, yd)) <= tol(dtype, lam_max_np(Xd, yd))
    assert torch.count_nonzero(sparse.lasso(X, y, lmax)) == 0
    assert torch.count_nonzero(sparse.lasso(X, y, 1.5 * lmax)) == 0
    assert torch.count_nonzero(sparse.lasso(X, y, 0.99 * lmax)) > 0
    for rho in (0.5, 0.1):
        lmax_r = sparse.lambda_max(X, y, rho)
        torch.testing.assert_close(lmax_r, lmax / rho)
        assert torch.count_nonzero(sparse.elastic_net(X, y, lmax_r, rho)) == 0
        assert torch.count_nonzero(sparse.elastic_net(X, y, 0.99 * lmax_r, rho)) > 0
    # Above lambda_max the path gives exact zero rows. Below, w = 0 has the gap
    # (1 - lam/lambda_max)^2 P(0) (theta = y / (n lambda_max)), so at 1 - 10 sqrt(tol) the
    # solver cannot stop at zero; the first feature in is the most correlated one.
    frac = 1 - 10 * DEFAULT_TOL[dtype] ** 0.5
    W = sparse.lasso_path(X, y, torch.stack([1.01 * lmax, lmax, frac * lmax]))
    assert torch.count_nonzero(W[:2]) == 0 and torch.count_nonzero(W[2]) >= 1
    assert W[2, int(np.argmax(np.abs(Xd.T @ yd)))] != 0


def test_lambda_max_multi_target(rng):
    X, y = problem(rng, 30, 10, k=3)
    lmax = sparse.lambda_max(X, y)
    assert lmax.shape == (3,)
    np.testing.assert_allclose(lmax.numpy(), lam_max_np(X, y), rtol=1e-12)
    np.testing.assert_allclose(sparse.lambda_max(X, y, 0.25).numpy(), lam_max_np(X, y, 0.25),
                               rtol=1e-12)


# --- 5. several targets -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 15), (20, 50)], ids=["n>p", "n<p"])
def test_multi_target_equals_separate_solves(rng, shape):
    k = 3
    X, Y = problem(rng, *shape, 0.3, k=k)
    lmax = float(lam_max_np(X, Y).min())
    lam = 0.1 * lmax
    lams = torch.tensor(FRACS, dtype=torch.float64) * lmax
    # each answer is within 1e-8 of scikit-learn, so two answers are within 2e-8
    w = sparse.lasso(X, Y, lam)
    assert w.shape == (shape[1], k)
    e = sparse.elastic_net(X, Y, lam, 0.5)
    assert e.shape == (shape[1], k)
    W, info = sparse.lasso_path(X, Y, lams, return_info=True)
    assert W.shape == (len(FRACS), shape[1], k)
    P0 = P0_np(Y)
    worst = 0.0
    for j in range(k):
        assert rel_err(w[:, j], sparse.lasso(X, Y[:, j], lam)) < 2e-8
        assert rel_err(w[:, j], sk_enet(X, Y[:, j], lam)) < 1e-8
        assert rel_err(e[:, j], sparse.elastic_net(X, Y[:, j], lam, 0.5)) < 2e-8
        for row, lam_ in zip(W[:, :, j], lams.tolist(), strict=True):
            assert rel_err(row, sk_enet(X, Y[:, j], lam_)) < 1e-8
            worst = max(worst, gap_np(X, Y[:, j], row, lam_) / P0[j])
    # independent targets: scikit-learn's Lasso with a 2-D y fits them one by one too
    assert rel_err(w, sk_enet(X, Y, lam)) < 1e-8
    assert worst <= info.certificate + tol(torch.float64)
    # certificates are per target
    gaps = sparse.duality_gap(X, Y, w, lam)
    kkt = sparse.kkt_violation(X, Y, w, lam)
    theta = sparse.dual_point(X, Y, w, lam)
    assert gaps.shape == (k,) and kkt.shape == (k,) and theta.shape == Y.shape
    for j in range(k):
        assert abs(float(gaps[j]) - gap_np(X, Y[:, j], w[:, j], lam)) <= tol(torch.float64, P0[j])
        assert abs(float(kkt[j]) - kkt_np(X, Y[:, j], w[:, j], lam)) <= tol(torch.float64, lam)


def test_group_lasso_multi_target(rng):
    X, Y = problem(rng, 40, 20, k=2)
    groups = partition(rng, 20)
    lam = 0.2 * min(group_lam_max_np(X, Y[:, j], groups, default_weights(groups))
                    for j in range(2))
    W = sparse.group_lasso(X, Y, lam, groups)
    assert W.shape == (20, 2)
    for j in range(2):
        assert rel_err(W[:, j], sparse.group_lasso(X, Y[:, j], lam, groups)) < 2e-8


# --- 6. convergence warning --------------------------------------------------------------


def _hard():
    """Nearly collinear columns and a tiny strength: thousands of steps to converge."""
    X, y = problem(np.random.default_rng(7), 30, 90, 0.99)
    return X, y, 1e-3 * float(lam_max_np(X, y))


SOLVERS = {
    "lasso": lambda X, y, lam, **kw: sparse.lasso(X, y, lam, **kw),
    "lasso_path": lambda X, y, lam, **kw: sparse.lasso_path(X, y, [lam, 2 * lam], **kw),
    "elastic_net": lambda X, y, lam, **kw: sparse.elastic_net(X, y, lam, 0.9, **kw),
    "group_lasso": lambda X, y, lam, **kw: sparse.group_lasso(  # pairs {j, j + p/2}
        X, y, lam, [[j, j + len(X.T) // 2] for j in range(len(X.T) // 2)], **kw),
}


@pytest.mark.parametrize("name", SOLVERS)
def test_max_iter_warns_convergence_warning(name):
    X, y, lam = _hard()
    with pytest.warns(regref.ConvergenceWarning):
        w, info = SOLVERS[name](X, y, lam, max_iter=1, return_info=True)
    assert not info.converged and info.certificate > DEFAULT_TOL[torch.float64]
    assert torch.isfinite(w).all()


def test_no_warnings_on_clean_input(rng):
    X, y = problem(rng, 30, 20)
    lam = 0.1 * float(lam_max_np(X, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in SOLVERS:
            SOLVERS[name](X, y, lam)


# --- 7. array-likes, dtypes, no mutation --------------------------------------------------


def _all_calls(X, y, w, groups):
    lam = 0.1  # below lambda_max of the problems used: nonzero solutions
    return {
        "lambda_max": lambda: sparse.lambda_max(X, y),
        "lasso": lambda: sparse.lasso(X, y, lam),
        "lasso_path": lambda: sparse.lasso_path(X, y, [lam, 2 * lam]),
        "elastic_net": lambda: sparse.elastic_net(X, y, lam, 0.5),
        "group_lasso": lambda: sparse.group_lasso(X, y, lam, groups),
        "dual_point": lambda: sparse.dual_point(X, y, w, lam),
        "duality_gap": lambda: sparse.duality_gap(X, y, w, lam, 0.5),
        "kkt_violation": lambda: sparse.kkt_violation(X, y, w, lam),
    }


CALLS = list(_all_calls(None, None, None, None))
GROUPS6 = [[0, 3], [1], [2, 4, 5]]


@pytest.mark.parametrize("name", CALLS)
def test_numpy_in_tensor_out_and_dtype_kept(rng, name):
    X, y = problem(rng, 15, 6)
    w = rng.standard_normal(6)
    ref = _all_calls(torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(w), GROUPS6)[name]()
    out = _all_calls(X, y, w, GROUPS6)[name]()
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
    out32 = _all_calls(X.astype(np.float32), y.astype(np.float32), w.astype(np.float32),
                       GROUPS6)[name]()
    assert out32.dtype == torch.float32 and out32.device == ref.device
    assert out32.shape == ref.shape
    lists = _all_calls(X.tolist(), y.tolist(), w.tolist(), GROUPS6)[name]()
    assert lists.dtype == torch.float64
    torch.testing.assert_close(lists, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_inputs_not_modified(rng, name, kind):
    X, y = problem(rng, 15, 6)
    w = rng.standard_normal(6)
    w[2] = 0.0
    args = (X, y, w) if kind == "numpy" else tuple(torch.as_tensor(a) for a in (X, y, w))
    copies = [a.copy() if kind == "numpy" else a.clone() for a in args]
    groups = [list(g) for g in GROUPS6]
    _all_calls(*args, groups)[name]()
    for a, c in zip(args, copies, strict=True):
        assert (np.array_equal(a, c) if kind == "numpy" else torch.equal(a, c))
    assert groups == GROUPS6


# --- 8. bad input --------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
_g = np.random.default_rng(0)
X0 = torch.as_tensor(_g.standard_normal((8, 5)))
y0 = torch.as_tensor(_g.standard_normal(8))
w0 = torch.zeros(5, dtype=torch.float64)
G0 = [[0, 2], [4, 1], [3]]


def _with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


BAD = {
    "lasso-lam-neg": (lambda: sparse.lasso(X0, y0, -0.1), "lam"),
    "lasso-lam-nan": (lambda: sparse.lasso(X0, y0, NAN), "lam"),
    "lasso-lam-inf": (lambda: sparse.lasso(X0, y0, INF), "lam"),
    "lasso-lam-vector": (lambda: sparse.lasso(X0, y0, [0.1, 0.2]), "lam"),
    "lasso-X-nan": (lambda: sparse.lasso(_with(X0, (2, 3), NAN), y0, 0.1), "X"),
    "lasso-X-inf": (lambda: sparse.lasso(_with(X0, (0, 0), -INF), y0, 0.1), "X"),
    "lasso-y-nan": (lambda: sparse.lasso(X0, _with(y0, 4, NAN), 0.1), "y"),
    "lasso-y-inf": (lambda: sparse.lasso(X0, _with(y0, 1, INF), 0.1), "y"),
    "lasso-y-rows": (lambda: sparse.lasso(X0, y0[:7], 0.1), "y"),
    "lasso-y-3d": (lambda: sparse.lasso(X0, y0.reshape(8, 1, 1), 0.1), "y"),
    "lasso-X-empty-rows": (lambda: sparse.lasso(X0[:0], y0[:0], 0.1), "X"),
    "lasso-X-empty-cols": (lambda: sparse.lasso(X0[:, :0], y0, 0.1), "X"),
    "lasso-X-3d": (lambda: sparse.lasso(X0[None], y0, 0.1), "X"),
    "lasso-X-1d": (lambda: sparse.lasso(y0, y0, 0.1), "X"),
    "path-lams-empty": (lambda: sparse.lasso_path(X0, y0, []), "lams"),
    "path-lams-neg": (lambda: sparse.lasso_path(X0, y0, [0.1, -0.1]), "lams"),
    "path-lams-nan": (lambda: sparse.lasso_path(X0, y0, [NAN, 0.1]), "lams"),
    "path-lams-2d": (lambda: sparse.lasso_path(X0, y0, [[0.1, 0.2]]), "lams"),
    "path-X-nan": (lambda: sparse.lasso_path(_with(X0, (7, 4), NAN), y0, [0.1]), "X"),
    "path-y-rows": (lambda: sparse.lasso_path(X0, y0[:3], [0.1]), "y"),
    "enet-l1_ratio-0": (lambda: sparse.elastic_net(X0, y0, 0.1, 0.0), "l1_ratio"),
    "enet-l1_ratio-1.5": (lambda: sparse.elastic_net(X0, y0, 0.1, 1.5), "l1_ratio"),
    "enet-l1_ratio-neg": (lambda: sparse.elastic_net(X0, y0, 0.1, -0.5), "l1_ratio"),
    "enet-l1_ratio-nan": (lambda: sparse.elastic_net(X0, y0, 0.1, NAN), "l1_ratio"),
    "enet-lam-neg": (lambda: sparse.elastic_net(X0, y0, -1.0, 0.5), "lam"),
    "enet-y-nan": (lambda: sparse.elastic_net(X0, _with(y0, 0, NAN), 0.1), "y"),
    "lmax-X-nan": (lambda: sparse.lambda_max(_with(X0, (1, 1), NAN), y0), "X"),
    "lmax-y-rows": (lambda: sparse.lambda_max(X0, y0[:5]), "y"),
    "lmax-l1_ratio-0": (lambda: sparse.lambda_max(X0, y0, 0.0), "l1_ratio"),
    "group-overlap": (lambda: sparse.group_lasso(X0, y0, 0.1, [[0, 1], [1, 2], [3, 4]]),
                      "groups"),
    "group-repeated-index": (lambda: sparse.group_lasso(X0, y0, 0.1, [[0, 0, 1], [2, 3, 4]]),
                             "groups"),
    "group-missing": (lambda: sparse.group_lasso(X0, y0, 0.1, [[0, 1], [2, 3]]), "groups"),
    "group-out-of-range": (lambda: sparse.group_lasso(X0, y0, 0.1, [[0, 1], [2, 3, 4, 5]]),
                           "groups"),
    "group-negative-index": (lambda: sparse.group_lasso(X0, y0, 0.1, [[0, 1, -1], [2, 3]]),
                             "groups"),
    "group-empty-group": (lambda: sparse.group_lasso(X0, y0, 0.1, G0 + [[]]), "groups"),
    "group-no-groups": (lambda: sparse.group_lasso(X0, y0, 0.1, []), "groups"),
    "group-weights-neg": (lambda: sparse.group_lasso(X0, y0, 0.1, G0, weights=[1, -1, 1]),
                          "weights"),
    "group-weights-len": (lambda: sparse.group_lasso(X0, y0, 0.1, G0, weights=[1, 1]),
                          "weights"),
    "group-weights-nan": (lambda: sparse.group_lasso(X0, y0, 0.1, G0, weights=[1, NAN, 1]),
                          "weights"),
    "group-lam-neg": (lambda: sparse.group_lasso(X0, y0, -0.1, G0), "lam"),
    "group-lam-nan": (lambda: sparse.group_lasso(X0, y0, NAN, G0), "lam"),
    "group-X-inf": (lambda: sparse.group_lasso(_with(X0, (3, 2), INF), y0, 0.1, G0), "X"),
    "group-y-rows": (lambda: sparse.group_lasso(X0, y0[:6], 0.1, G0), "y"),
    "gap-w-len": (lambda: sparse.duality_gap(X0, y0, w0[:4], 0.1), "w"),
    "gap-w-nan": (lambda: sparse.duality_gap(X0, y0, _with(w0, 0, NAN), 0.1), "w"),
    "gap-lam-neg": (lambda: sparse.duality_gap(X0, y0, w0, -0.1), "lam"),
    "gap-l1_ratio": (lambda: sparse.duality_gap(X0, y0, w0, 0.1, 1.5), "l1_ratio"),
    "gap-y-nan": (lambda: sparse.duality_gap(X0, _with(y0, 2, NAN), w0, 0.1), "y"),
    "kkt-w-len": (lambda: sparse.kkt_violation(X0, y0, w0[:3], 0.1), "w"),
    "kkt-w-2d-for-1d-y": (lambda: sparse.kkt_violation(X0, y0, w0[:, None], 0.1), "w"),
    "kkt-lam-nan": (lambda: sparse.kkt_violation(X0, y0, w0, NAN), "lam"),
    "kkt-l1_ratio": (lambda: sparse.kkt_violation(X0, y0, w0, 0.1, 0.0), "l1_ratio"),
    "dual-w-inf": (lambda: sparse.dual_point(X0, y0, _with(w0, 1, INF), 0.1), "w"),
    "dual-X-3d": (lambda: sparse.dual_point(X0[None], y0, w0, 0.1), "X"),
    "lasso-max_iter-inf": (lambda: sparse.lasso(X0, y0, 0.1, max_iter=INF), "max_iter"),
    "lasso-max_iter-float": (lambda: sparse.lasso(X0, y0, 0.1, max_iter=1.5), "max_iter"),
    "lasso-max_iter-bool": (lambda: sparse.lasso(X0, y0, 0.1, max_iter=True), "max_iter"),
    "lasso-max_iter-zero": (lambda: sparse.lasso(X0, y0, 0.1, max_iter=0), "max_iter"),
    "path-max_iter-nan": (lambda: sparse.lasso_path(X0, y0, [0.1], max_iter=NAN), "max_iter"),
    "group-max_iter-inf": (lambda: sparse.group_lasso(X0, y0, 0.1, G0, max_iter=INF),
                           "max_iter"),
    "enet-max_iter-float": (lambda: sparse.elastic_net(X0, y0, 0.1, max_iter=10.0),
                            "max_iter"),
    "lasso-tol-str": (lambda: sparse.lasso(X0, y0, 0.1, tol="x"), "tol"),
    "lasso-tol-neg": (lambda: sparse.lasso(X0, y0, 0.1, tol=-1e-6), "tol"),
    "path-tol-inf": (lambda: sparse.lasso_path(X0, y0, [0.1], tol=INF), "tol"),
    "group-tol-zero": (lambda: sparse.group_lasso(X0, y0, 0.1, G0, tol=0.0), "tol"),
    "enet-l1_ratio-str": (lambda: sparse.elastic_net(X0, y0, 0.1, "a"), "l1_ratio"),
    "path-batch_size-0": (lambda: sparse.lasso_path(X0, y0, [0.1], batch_size=0),
                          "batch_size"),
    "path-batch_size-float": (lambda: sparse.lasso_path(X0, y0, [0.1], batch_size=2.0),
                              "batch_size"),
    "group-float-index": (lambda: sparse.group_lasso(X0, y0, 0.1, [[0.7, 1], [2, 3, 4]]),
                          "groups"),
    "group-str-index": (lambda: sparse.group_lasso(X0, y0, 0.1, [["a", 1], [2, 3, 4]]),
                        "groups"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_value_error_naming_the_argument(name):
    call, arg = BAD[name]
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        call()


def test_zero_targets_give_empty_results():
    # was: RuntimeError from amax() on an empty tensor
    Y = torch.zeros(8, 0, dtype=torch.float64)
    W, info = sparse.lasso_path(X0, Y, [0.1, 0.2], return_info=True)
    assert W.shape == (2, 5, 0) and info == Info(n_iter=0, converged=True, certificate=0.0)
    assert sparse.lasso(X0, Y, 0.1).shape == (5, 0)
    assert sparse.elastic_net(X0, Y, 0.1, 0.5).shape == (5, 0)
    assert sparse.group_lasso(X0, Y, 0.1, G0).shape == (5, 0)
    assert sparse.lambda_max(X0, Y).shape == (0,)
    assert sparse.duality_gap(X0, Y, torch.zeros(5, 0, dtype=torch.float64), 0.1).shape == (0,)


# --- 9. certificates recomputed: converged == (certificate <= tol), at the returned point ----


def _group_rel_gap(X, y, w, lam):
    return group_gap_np(X, y, w, lam, GROUPS_C, default_weights(GROUPS_C)) / P0_np(y)


GROUPS_C = [[j, j + 15] for j in range(15)]
CERTIFIED = {
    "lasso": (lambda X, y, lam, **kw: sparse.lasso(X, y, lam, **kw),
              lambda X, y, w, lam: gap_np(X, y, w, lam) / P0_np(y)),
    "elastic_net": (lambda X, y, lam, **kw: sparse.elastic_net(X, y, lam, 0.7, **kw),
                    lambda X, y, w, lam: gap_np(X, y, w, lam, 0.7) / P0_np(y)),
    "lasso_path": (lambda X, y, lam, **kw: sparse.lasso_path(X, y, [lam, 3 * lam], **kw),
                   lambda X, y, W, lam: max(gap_np(X, y, W[0], lam),
                                            gap_np(X, y, W[1], 3 * lam)) / P0_np(y)),
    "group_lasso": (lambda X, y, lam, **kw: sparse.group_lasso(X, y, lam, GROUPS_C, **kw),
                    _group_rel_gap),
}


@pytest.mark.parametrize("name", CERTIFIED)
@pytest.mark.parametrize("tol_, max_iter", [(None, 100_000), (1e-6, 100_000), (1e-14, 10)],
                         ids=["default", "loose", "unreachable"])
def test_certificate_is_recomputed_at_the_returned_point(rng, name, tol_, max_iter):
    X, y = problem(rng, 25, 30, 0.6)
    lam = 0.05 * float(lam_max_np(X, y))
    solve, rel_gap = CERTIFIED[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w, info = solve(X, y, lam, tol=tol_, max_iter=max_iter, return_info=True)
    tol_used = DEFAULT_TOL[torch.float64] if tol_ is None else tol_
    assert info.converged == (info.certificate <= tol_used)
    assert bool(caught) == (not info.converged)
    # the certificate is the relative gap of what was returned (numpy, independent)
    assert abs(info.certificate - rel_gap(X, y, w, lam)) <= tol(torch.float64)
    assert info.converged == (tol_ != 1e-14)  # the unreachable one does not converge


@pytest.mark.parametrize("name", SOLVERS)
def test_warning_points_at_the_callers_line(name):
    X, y, lam = _hard()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SOLVERS[name](X, y, lam, max_iter=10)
    msgs = [c for c in caught if issubclass(c.category, regref.ConvergenceWarning)]
    assert len(msgs) == 1 and msgs[0].filename == __file__
    assert "increase max_iter" in str(msgs[0].message)  # it ran out of steps


def test_stall_is_not_reported_as_a_budget_problem():
    # float32 on nearly collinear columns at a relative gap below float32 rounding: the
    # solver stops on a stall long before max_iter, and must not say "increase max_iter"
    X, y, lam = _hard()
    Xf, yf = torch.as_tensor(X).float(), torch.as_tensor(y).float()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = sparse.lasso(Xf, yf, lam, tol=1e-12, return_info=True)
    assert not info.converged and info.n_iter < 100_000
    msg = str(caught[-1].message)
    assert "stalled" in msg and "increase max_iter" not in msg


def test_documented_default_tol_is_pinned():
    # the default is part of the API: 1e-10 (float64) and 1e-5 (float32), relative to P(0).
    # An unreachable budget makes the solver report the tolerance it aimed at.
    X, y, lam = _hard()
    for dtype, text in ((torch.float64, "1e-10"), (torch.float32, "1e-05")):
        Xt, yt = torch.as_tensor(X).to(dtype), torch.as_tensor(y).to(dtype)
        with pytest.warns(regref.ConvergenceWarning, match=f"gap of {text} "):
            sparse.lasso(Xt, yt, lam, max_iter=10)
        with pytest.warns(regref.ConvergenceWarning, match=f"gap of {text} "):
            sparse.group_lasso(Xt, yt, lam, [[j] for j in range(90)], max_iter=10)
    # and at the default, the float64 certificate meets 1e-10 but not 1e-12 on this problem
    X, y = problem(np.random.default_rng(1), 40, 60, 0.5)
    lam = 0.05 * float(lam_max_np(X, y))
    _, info = sparse.lasso(X, y, lam, return_info=True)
    _, tight = sparse.lasso(X, y, lam, tol=1e-14, return_info=True)
    assert info.certificate <= 1e-10 and tight.certificate <= 1e-14


# --- 10. GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_group_lasso_matches_cpu(rng):
    X, y = problem(rng, 60, 40, 0.5)
    groups = partition(rng, 40)
    lam = 0.2 * group_lam_max_np(X, y, groups, default_weights(groups))
    cpu = sparse.group_lasso(torch.as_tensor(X), torch.as_tensor(y), lam, groups)
    gpu, info = sparse.group_lasso(torch.as_tensor(X).cuda(), torch.as_tensor(y).cuda(), lam,
                                   groups, return_info=True)
    assert gpu.is_cuda and info.converged
    assert rel_err(gpu.cpu(), cpu) < 2e-7
    check_against_cvxpy(X, y, gpu.cpu(), lam, groups, default_weights(groups), torch.float64)



@pytest.mark.gpu
def test_cuda_lasso_path_matches_cpu(rng):
    X, y = problem(rng, 80, 120, 0.5, k=2)
    lams = torch.tensor(FRACS + [0.05], dtype=torch.float64) * float(lam_max_np(X, y).min())
    for dtype in (torch.float32, torch.float64):
        Xt, yt = torch.as_tensor(X).to(dtype), torch.as_tensor(y).to(dtype)
        cpu = sparse.lasso_path(Xt, yt, lams.to(dtype))
        gpu, info = sparse.lasso_path(Xt.cuda(), yt.cuda(), lams.to(dtype).cuda(),
                                      return_info=True)
        assert gpu.is_cuda and gpu.dtype == dtype and gpu.shape == cpu.shape
        assert info.converged
        Xd, yd = Xt.double().numpy(), yt.double().numpy()
        for l, lam in enumerate(f64(lams.to(dtype)).tolist()):
            for j in range(2):
                g, c = gpu[l, :, j].cpu(), cpu[l, :, j]
                check_against_sklearn(Xd, yd[:, j], g, lam, 1.0, dtype)
                # two near-optimal points: each within 1e-8 of the optimum (float64), or
                # within the quadratic-growth bound of their gaps (float32)
                if dtype == torch.float64:
                    assert rel_err(g, c) < 2e-8
                else:
                    gaps = [gap_np(Xd, yd[:, j], v, lam) for v in (g, c)]
                    assert np.linalg.norm(f64(g) - f64(c)) <= coef_bound(Xd, g, c, *gaps) * (
                        1 + 1e-6)
