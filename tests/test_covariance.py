"""Oracle, certificate and bad-input tests of regref.covariance.

Oracles: scikit-learn ``graphical_lasso`` (mode "cd" at ``tol = enet_tol = 1e-12``) and
cvxpy (``log_det``, a conic solver) on small problems, scipy's connected components for
the screening graph, scikit-learn's precision/recall for the edge scorer. Objectives and
duality gaps are recomputed here in numpy, never with regref's own formulas.

The tolerances on :math:`\\Theta` follow from strong convexity: on matrices with
eigenvalues at most :math:`M`, :math:`-\\log\\det` has curvature at least :math:`1/M^2`, so
for both regref's and the oracle's answer :math:`\\|\\Theta - \\Theta^\\star\\|_F \\le
M\\sqrt{2\\,\\text{gap}}` (gap = their certified excess objective).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.covariance import graphical_lasso as sk_graphical_lasso
from sklearn.metrics import f1_score, precision_score, recall_score

import regref
from regref import Info, covariance

SK = dict(mode="cd", tol=1e-12, enet_tol=1e-12, max_iter=2000)


def sample_cov(rng, p, n, density=0.15, standardize=True):
    """Sample covariance of n draws from a Gaussian with a sparse random precision."""
    A = np.triu(rng.standard_normal((p, p)) * (rng.random((p, p)) < density), 1)
    P = A + A.T
    P += (np.abs(np.linalg.eigvalsh(P)).max() + 0.5) * np.eye(p)
    X = rng.multivariate_normal(np.zeros(p), np.linalg.inv(P), size=n)
    if standardize:
        X /= X.std(0)
    return X.T @ X / n, P


def block_cov(rng, sizes, lam, n=60):
    """A covariance whose |entries| across the given blocks are at most lam / 2."""
    p = sum(sizes)
    S = np.zeros((p, p))
    start = 0
    for m in sizes:
        X = rng.standard_normal((n, m)) + rng.standard_normal((n, 1))  # correlated block
        S[start:start + m, start:start + m] = X.T @ X / n
        start += m
    off = S == 0
    noise = rng.uniform(-lam / 2, lam / 2, (p, p))
    S[off] = ((noise + noise.T) / 2)[off]
    S += max(0.0, 1e-3 - np.linalg.eigvalsh(S).min()) * np.eye(p)  # PSD, off-block unchanged
    return S


def np_objective(S, T, lam):
    sign, logdet = np.linalg.slogdet(T)
    assert sign > 0
    return -logdet + np.sum(S * T) + lam * (np.abs(T).sum() - np.abs(np.diag(T)).sum())


def np_gap(S, T, lam):
    """Primal minus the dual value at W = inv(T) clipped into the box around S."""
    W = np.linalg.inv(T)
    U = np.clip(W - S, -lam, lam)
    np.fill_diagonal(U, 0)
    sign, logdet = np.linalg.slogdet(S + U)
    assert sign > 0
    return np_objective(S, T, lam) - logdet - len(S)


def theta_bound(S, T, lam, gap):
    """||T - T*||_F bound from strong convexity on {eigenvalues <= M} (module docstring)."""
    M = 1.5 * np.linalg.eigvalsh(T).max()
    return M * np.sqrt(2 * max(gap, 0.0)) + 1e-10 * np.abs(T).max()


def cvx_glasso(S, Lam, nonpos=False):
    p = len(S)
    T = cp.Variable((p, p), symmetric=True)
    off = 1 - np.eye(p)
    obj = -cp.log_det(T) + cp.trace(S @ T) + cp.sum(cp.multiply(Lam * off, cp.abs(T)))
    cons = [cp.multiply(off, T) <= 0] if nonpos else []
    cp.Problem(cp.Minimize(obj), cons).solve(solver=cp.CLARABEL, tol_gap_abs=1e-11,
                                             tol_gap_rel=1e-11, tol_feas=1e-11)
    return T.value


# --- oracles -----------------------------------------------------------------------------

@pytest.mark.parametrize("p, n, lam", [(12, 40, 0.1), (15, 8, 0.2), (20, 30, 0.05)])
def test_matches_sklearn(rng, p, n, lam):
    S, _ = sample_cov(rng, p, n)
    T, info = covariance.graphical_lasso(S, lam, return_info=True)
    T = T.numpy()
    _, T_sk = sk_graphical_lasso(S, lam, **SK)
    T_sk = (T_sk + T_sk.T) / 2
    gap, gap_sk = np_gap(S, T, lam), np_gap(S, T_sk, lam)
    assert info.converged and gap <= 1e-12 * p + 1e-13
    assert abs(np_objective(S, T, lam) - np_objective(S, T_sk, lam)) <= gap + gap_sk + 1e-12
    bound = theta_bound(S, T, lam, gap) + theta_bound(S, T_sk, lam, gap_sk)
    assert np.linalg.norm(T - T_sk) <= bound
    assert np.abs(T - T_sk).max() <= 1e-6 * np.abs(T_sk).max()


@pytest.mark.parametrize("lam", [0.05, 0.3])
def test_matches_cvxpy(rng, lam):
    S, _ = sample_cov(rng, 6, 20)
    T = covariance.graphical_lasso(S, lam).numpy()
    T_cvx = cvx_glasso(S, lam * np.ones((6, 6)))
    assert np_objective(S, T, lam) <= np_objective(S, T_cvx, lam) + 1e-9
    assert np.abs(T - T_cvx).max() <= 1e-5 * np.abs(T_cvx).max()


def test_certificate_is_the_numpy_duality_gap(rng):
    S, _ = sample_cov(rng, 10, 30)
    for tol in (1e-4, 1e-8):
        T, info = covariance.graphical_lasso(S, 0.1, tol=tol, return_info=True)
        gap = np_gap(S, T.numpy(), 0.1)
        assert info.converged and 0 <= gap <= tol * 10
        assert info.certificate == pytest.approx(gap, rel=1e-6, abs=1e-12)
        assert float(covariance.duality_gap(S, T, 0.1)) == pytest.approx(gap, rel=1e-6,
                                                                          abs=1e-12)
        assert float(covariance.objective(S, T, 0.1)) == pytest.approx(
            np_objective(S, T.numpy(), 0.1), rel=1e-12)


def test_duality_gap_nonnegative_at_any_pd_point(rng):
    S, _ = sample_cov(rng, 8, 20)
    for _ in range(5):
        A = rng.standard_normal((8, 8))
        T = A @ A.T + 0.5 * np.eye(8)
        gap = float(covariance.duality_gap(S, T, 0.2))
        assert gap >= 0 or np.isinf(gap)


# --- closed forms ------------------------------------------------------------------------

def test_large_lambda_gives_the_diagonal(rng):
    S, _ = sample_cov(rng, 9, 30, standardize=False)
    lam = np.abs(S - np.diag(np.diag(S))).max()
    T = covariance.graphical_lasso(S, lam * 1.01).numpy()
    np.testing.assert_allclose(T, np.diag(1 / np.diag(S)), rtol=1e-14, atol=0)


@pytest.mark.parametrize("s12", [0.1, 0.7, -0.9])
def test_two_variables_closed_form(s12):
    """p = 2: W_12 = S_12 - lam sign(S_12) if |S_12| > lam, else 0 (chapter 06, exercise).
    S_12 = -0.9 once broke the step size (the start vector was orthogonal to the top
    eigenvector)."""
    S, lam = np.array([[1.0, s12], [s12, 1.5]]), 0.3
    w12 = 0.0 if abs(s12) <= lam else s12 - lam * np.sign(s12)
    T, info = covariance.graphical_lasso(S, lam, return_info=True)
    assert info.converged
    np.testing.assert_allclose(T, np.linalg.inv([[1.0, w12], [w12, 1.5]]), rtol=1e-10)


def test_lambda_zero_is_the_inverse(rng):
    S, _ = sample_cov(rng, 8, 50)
    T = covariance.graphical_lasso(S, 0.0, screen=False).numpy()
    assert np.linalg.norm(T - np.linalg.inv(S)) <= theta_bound(S, T, 0.0, np_gap(S, T, 0.0))


# --- screening ---------------------------------------------------------------------------

def test_components_match_scipy(rng):
    S, _ = sample_cov(rng, 40, 30)
    for lam in (0.1, 0.3, 0.5):
        labels = covariance.components(S, lam).numpy()
        _, ref = connected_components(np.abs(S) > lam, directed=False)
        # same partition: labels determine ref and vice versa
        pairs = set(zip(labels.tolist(), ref.tolist(), strict=True))
        assert len(pairs) == len(set(labels)) == len(set(ref))
        assert all(labels[i] == min(np.flatnonzero(labels == labels[i])) for i in range(40))


def test_screened_equals_unscreened(rng):
    lam = 0.2
    S = block_cov(rng, [3, 5, 3, 1, 5, 2], lam)
    perm = rng.permutation(len(S))
    S = S[np.ix_(perm, perm)]  # blocks interleaved
    T1, i1 = covariance.graphical_lasso(S, lam, return_info=True)
    T2, i2 = covariance.graphical_lasso(S, lam, screen=False, return_info=True)
    assert i1.converged and i2.converged
    labels = covariance.components(S, lam).numpy()
    across = labels[:, None] != labels[None, :]
    assert (T1.numpy()[across] == 0).all() and (T2.numpy()[across] == 0).all()  # the theorem
    gap = np_gap(S, T1.numpy(), lam) + np_gap(S, T2.numpy(), lam)
    assert np.linalg.norm(T1 - T2) <= 2 * theta_bound(S, T1.numpy(), lam, gap)


def test_batched_equals_looped(rng):
    S = np.stack([block_cov(rng, [4, 3, 4, 1], 0.2), block_cov(rng, [2, 4, 3, 3], 0.2),
                  sample_cov(rng, 12, 30)[0]])
    lams = torch.tensor([0.2, 0.25, 0.1], dtype=torch.float64)
    T = covariance.graphical_lasso(S, lams)
    for b in range(3):
        Tb = covariance.graphical_lasso(S[b], float(lams[b]))
        np.testing.assert_allclose(T[b], Tb, rtol=0, atol=1e-7 * float(Tb.abs().max()))


def test_path_rows_in_callers_order_and_warm_start(rng):
    S, _ = sample_cov(rng, 15, 30)
    lams = [0.1, 0.4, 0.02, 0.2]
    path, infos = covariance.graphical_lasso_path(S, lams, return_info=True)
    assert path.shape == (4, 15, 15) and all(i.converged for i in infos)
    for k, lam in enumerate(lams):
        T = covariance.graphical_lasso(S, lam).numpy()
        assert np.linalg.norm(path[k].numpy() - T) <= 2 * theta_bound(
            S, T, lam, np_gap(S, T, lam) + np_gap(S, path[k].numpy(), lam))


# --- reliability -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 10])
def test_singular_covariance_gives_positive_definite_theta(rng, n):
    S, _ = sample_cov(rng, 25, n)  # rank n < p
    assert np.linalg.matrix_rank(S) < 25
    T, info = covariance.graphical_lasso(S, 0.1, return_info=True)
    assert info.converged and torch.isfinite(T).all()
    assert float(torch.linalg.eigvalsh(T).min()) > 0
    assert np_gap(S, T.numpy(), 0.1) <= 1e-12 * 25 + 1e-13


def test_ill_conditioned_covariance(rng):
    X = rng.standard_normal((40, 10))
    X[:, 1] = X[:, 0] + 1e-7 * rng.standard_normal(40)  # two nearly identical variables
    S = X.T @ X / 40
    T, info = covariance.graphical_lasso(S, 0.05, return_info=True)
    assert info.converged and torch.isfinite(T).all()
    assert float(torch.linalg.eigvalsh(T).min()) > 0


def test_lambda_zero_with_singular_covariance_is_a_clear_error(rng):
    S, _ = sample_cov(rng, 10, 4)
    with pytest.raises(ValueError, match="lam = 0 needs a positive definite S"):
        covariance.graphical_lasso(S, 0.0)


def test_float32_keeps_dtype_and_agrees(rng):
    S, _ = sample_cov(rng, 12, 40)
    T64 = covariance.graphical_lasso(S, 0.1)
    T32, info = covariance.graphical_lasso(torch.as_tensor(S, dtype=torch.float32), 0.1,
                                           return_info=True)
    assert T32.dtype == torch.float32 and info.converged
    assert float((T32.double() - T64).abs().max()) <= 1e-3 * float(T64.abs().max())


def test_tiny_max_iter_warns(rng):
    S, _ = sample_cov(rng, 12, 40)
    with pytest.warns(regref.ConvergenceWarning, match="max_iter"):
        T, info = covariance.graphical_lasso(S, 0.05, max_iter=1, return_info=True)
    assert isinstance(info, Info) and not info.converged and info.n_iter == 1
    assert float(torch.linalg.eigvalsh(T).min()) > 0


def test_inputs_not_modified_and_array_likes(rng):
    S, _ = sample_cov(rng, 8, 30)
    St = torch.as_tensor(S).clone()
    T = covariance.graphical_lasso(St, 0.1)
    assert torch.equal(St, torch.as_tensor(S))
    np.testing.assert_array_equal(covariance.graphical_lasso(S.tolist(), 0.1), T)


BAD = {
    "non-symmetric": (lambda S: S + np.triu(np.ones_like(S), 1) * 0.1, 0.1, "S"),
    "non-PSD": (lambda S: S - 2 * np.linalg.eigvalsh(S).max() * np.outer(*[np.eye(len(S))[0]] * 2)
                + np.eye(len(S)) * 0, 0.1, "S"),
    "NaN in S": (lambda S: np.where(np.eye(len(S)) > 0, np.nan, S), 0.1, "S"),
    "zero variance": (lambda S: S * (1 - np.outer(np.eye(len(S))[0], np.eye(len(S))[0])), 0.1,
                      "S"),
    "1-D S": (lambda S: S[0], 0.1, "S"),
    "non-square S": (lambda S: S[:, :-1], 0.1, "S"),
    "negative lam": (lambda S: S, -0.1, "lam"),
    "NaN lam": (lambda S: S, float("nan"), "lam"),
    "inf lam": (lambda S: S, float("inf"), "lam"),
    "lam per problem, wrong length": (lambda S: S[None].repeat(2, 0), [0.1, 0.2, 0.3], "lam"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_value_error_naming_the_argument(rng, name):
    S, _ = sample_cov(rng, 6, 30)
    make, lam, arg = BAD[name]
    with pytest.raises(ValueError, match=arg):
        covariance.graphical_lasso(make(S), lam)


@pytest.mark.parametrize("kwargs, arg", [({"tol": 0}, "tol"), ({"max_iter": 0}, "max_iter"),
                                         ({"Theta0": -np.eye(6)}, "Theta0")])
def test_bad_options(rng, kwargs, arg):
    S, _ = sample_cov(rng, 6, 30)
    with pytest.raises(ValueError, match=arg):
        covariance.graphical_lasso(S, 0.1, **kwargs)


# --- total positivity ----------------------------------------------------------------------

def mtp2_problem(rng, p=8, n=40):
    """A covariance of an MTP2 Gaussian: its precision is an M-matrix (a path graph)."""
    P = 2 * np.eye(p) - 0.9 * (np.eye(p, k=1) + np.eye(p, k=-1))
    X = rng.multivariate_normal(np.zeros(p), np.linalg.inv(P), size=n)
    return X.T @ X / n, P


def test_mtp2_matches_cvxpy(rng):
    S, _ = mtp2_problem(rng)
    T = covariance.mtp2_precision(S, 0.05).numpy()
    T_cvx = cvx_glasso(S, 0.05 * np.ones_like(S), nonpos=True)
    off = ~np.eye(len(S), dtype=bool)
    assert (T[off] <= 0).all()
    assert np.abs(T - T_cvx).max() <= 1e-5 * np.abs(T_cvx).max()


def test_mtp2_weighted_stage_matches_cvxpy(rng):
    S, _ = mtp2_problem(rng)
    lam, gamma = 0.1, 2.0
    T1 = covariance.mtp2_precision(S, lam).numpy()
    T2 = covariance.mtp2_precision(S, lam, n_stages=2, gamma=gamma).numpy()
    Lam = np.clip(lam - np.abs(T1) / gamma, 0, None)  # MCP derivative at stage 1
    T_cvx = cvx_glasso(S, Lam, nonpos=True)
    assert np.abs(T2 - T_cvx).max() <= 1e-5 * np.abs(T_cvx).max()


def test_mtp2_mle_exists_with_two_observations(rng):
    """Slawski & Hein; Lauritzen, Uhler & Zwiernik: n = 2 suffices under MTP2."""
    S, _ = mtp2_problem(rng, p=6, n=2)
    assert np.linalg.matrix_rank(S) == 2
    T, info = covariance.mtp2_precision(S, 0.0, return_info=True)
    assert info.converged and torch.isfinite(T).all()
    T = T.numpy()
    assert np.linalg.eigvalsh(T).min() > 0
    # KKT of the constrained MLE: W = inv(T) matches S on the diagonal and on the edges,
    # and W_ij >= S_ij off the edges
    W = np.linalg.inv(T)
    scale = np.abs(W).max()
    np.testing.assert_allclose(np.diag(W), np.diag(S), atol=1e-5 * scale)
    edges = (T < 0)
    np.testing.assert_allclose(W[edges], S[edges], atol=1e-5 * scale)
    assert (W - S >= -1e-5 * scale).all()


def test_mtp2_bad_options(rng):
    S, _ = mtp2_problem(rng)
    for kwargs, arg in [({"penalty": "l0"}, "penalty"), ({"penalty": "scad", "gamma": 1.5},
                                                         "gamma"), ({"n_stages": 0}, "n_stages")]:
        with pytest.raises(ValueError, match=arg):
            covariance.mtp2_precision(S, 0.1, **kwargs)


# --- edge recovery -------------------------------------------------------------------------

def test_edge_recovery_matches_sklearn_metrics(rng):
    S, P = sample_cov(rng, 20, 60)
    T = covariance.graphical_lasso(S, 0.15).numpy()
    iu = np.triu_indices(20, 1)
    truth, found = P[iu] != 0, T[iu] != 0
    score = covariance.edge_recovery(T, P)
    assert score["precision"] == pytest.approx(precision_score(truth, found))
    assert score["recall"] == pytest.approx(recall_score(truth, found))
    assert score["f1"] == pytest.approx(f1_score(truth, found))
    assert score["tp"] + score["fn"] == truth.sum() and score["tp"] + score["fp"] == found.sum()


def test_edge_recovery_bad_input():
    with pytest.raises(ValueError, match="Theta_true"):
        covariance.edge_recovery(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="threshold"):
        covariance.edge_recovery(np.eye(3), np.eye(3), threshold=-1)


# --- GPU ---------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    S = np.stack([block_cov(rng, [4, 3, 4, 1], 0.2), sample_cov(rng, 12, 30)[0]])
    for dtype, rtol in ((torch.float64, 1e-7), (torch.float32, 1e-3)):
        St = torch.as_tensor(S, dtype=dtype)
        cpu = covariance.graphical_lasso(St, 0.2)
        gpu = covariance.graphical_lasso(St.cuda(), 0.2)
        assert gpu.is_cuda and gpu.dtype == dtype
        assert float((gpu.cpu() - cpu).abs().max()) <= rtol * float(cpu.abs().max())
