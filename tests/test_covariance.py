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

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import load_kernel
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
    """Primal minus the dual value at W = inv(T) clipped into the box around S; inf where
    that clipped point is not positive definite (far from the optimum, e.g. after one step)."""
    W = np.linalg.inv(T)
    U = np.clip(W - S, -lam, lam)
    np.fill_diagonal(U, 0)
    sign, logdet = np.linalg.slogdet(S + U)
    return np_objective(S, T, lam) - logdet - len(S) if sign > 0 else np.inf


def np_gap_weighted(S, T, Lam, nonpos=False):
    """Duality gap with an off-diagonal weight matrix; ``nonpos``: the M-matrix problem,
    whose penalty is linear (sum Lam * (-T)) and whose dual box is one-sided."""
    p = len(S)
    off = 1 - np.eye(p)
    sign, logdet = np.linalg.slogdet(T)
    assert sign > 0
    pen = np.sum(Lam * off * (-T if nonpos else np.abs(T)))
    primal = -logdet + np.sum(S * T) + pen
    W = np.linalg.inv(T)
    U = np.clip(W - S, -Lam, np.inf if nonpos else Lam) * off
    sign, logdet_d = np.linalg.slogdet(S + U)
    return primal - logdet_d - p if sign > 0 else np.inf


def theta_bound(S, T, lam, gap):
    """||T - T*||_F bound from strong convexity on {eigenvalues <= M} (module docstring)."""
    M = 1.5 * np.linalg.eigvalsh(T).max()
    return M * np.sqrt(2 * max(gap, 0.0)) + 1e-10 * np.abs(T).max()


def assert_matches_oracle(S, T, T_cvx, Lam, nonpos=False):
    """T (ours) and T_cvx (an interior-point oracle at its tightest tolerances) agree as far
    as the oracle's own accuracy allows: our objective is not above the oracle's, and both
    are within the strong-convexity radius (theta_bound) of the optimum, computed from our
    certified gap and the oracle's excess objective over ours."""
    p = len(S)
    off = 1 - np.eye(p)

    def objective(A):
        pen = np.sum(Lam * off * (-A if nonpos else np.abs(A)))
        return -np.linalg.slogdet(A)[1] + np.sum(S * A) + pen

    gap = np_gap_weighted(S, T, Lam * off, nonpos=nonpos)
    excess = objective(T_cvx) - objective(T)
    assert excess >= -gap - 1e-12 * abs(objective(T))  # the oracle does not beat us
    radius = theta_bound(S, T, 1.0, gap) + theta_bound(S, T_cvx, 1.0, gap + max(excess, 0))
    assert np.linalg.norm(T - T_cvx) <= radius


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
    assert info.certificate == pytest.approx(gap / p, rel=1e-6, abs=1e-14)
    assert np.abs(T - T_sk).max() <= 1e-9 * np.abs(T_sk).max()  # measured <= 5.3e-12


@pytest.mark.parametrize("lam", [0.05, 0.1, 0.2, 0.4])
def test_matches_sklearn_on_the_benchmark_grid(rng, lam):
    """The benchmark's strengths on standardized data with n = 2p, at the benchmark's
    tolerance (relative gap 1e-4 / p) and at the default: the certified gap holds in numpy,
    the objectives agree within both gaps, and Theta within the strong-convexity radius."""
    p = 20
    S, _ = sample_cov(rng, p, 2 * p)
    _, T_sk = sk_graphical_lasso(S, lam, **SK)
    T_sk = (T_sk + T_sk.T) / 2
    gap_sk = np_gap(S, T_sk, lam)
    for tol in (1e-4 / p, 1e-12):
        T, info = covariance.graphical_lasso(S, lam, tol=tol, return_info=True)
        T = T.numpy()
        gap = np_gap(S, T, lam)
        assert info.converged and gap <= tol * p + 1e-13
        assert abs(np_objective(S, T, lam) - np_objective(S, T_sk, lam)) <= gap + gap_sk + 1e-12
        bound = theta_bound(S, T, lam, gap) + theta_bound(S, T_sk, lam, gap_sk)
        assert np.linalg.norm(T - T_sk) <= bound


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
        assert info.certificate == pytest.approx(gap / 10, rel=1e-6, abs=1e-14)
        assert float(covariance.duality_gap(S, T, 0.1)) == pytest.approx(gap, rel=1e-6,
                                                                          abs=1e-12)
        assert float(covariance.objective(S, T, 0.1)) == pytest.approx(
            np_objective(S, T.numpy(), 0.1), rel=1e-12)


def test_duality_gap_matches_numpy_and_bounds_the_excess_objective(rng):
    S, _ = sample_cov(rng, 8, 20)
    T_opt = covariance.graphical_lasso(S, 0.2).numpy()
    P_opt = np_objective(S, T_opt, 0.2)
    for _ in range(5):
        A = rng.standard_normal((8, 8))
        T = T_opt + 0.02 * (A + A.T)
        gap = float(covariance.duality_gap(S, T, 0.2))
        assert gap == pytest.approx(np_gap(S, T, 0.2), rel=1e-9)
        assert gap >= np_objective(S, T, 0.2) - P_opt - 1e-12 > 0  # weak duality


def test_duality_gap_is_inf_at_a_singular_or_indefinite_theta(rng):
    S, _ = sample_cov(rng, 5, 20)
    for T in (np.zeros((5, 5)), np.diag([1.0, 1, 1, 1, -1])):
        assert math.isinf(float(covariance.duality_gap(S, T, 0.1)))
        assert math.isinf(float(covariance.objective(S, T, 0.1)))


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
    eigenvector). The default tol is overshot (the gap bounds the error of the entries only by
    its square root), so the entries match the closed form to rounding, not just to the
    strong-convexity radius of the certificate (about 3e-6 here)."""
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


def test_batched_path_equals_looped_paths(rng):
    """A batched S (B, p, p) gives (L, B, p, p): every problem's path, as looped calls give
    it, within the strong-convexity radius of the two certified gaps; the Info is the worst
    case over problems and strengths."""
    S = np.stack([sample_cov(rng, 10, n)[0] for n in (6, 20, 40)])  # one singular
    lams = [0.3, 0.05, 0.15]
    path, info = covariance.graphical_lasso_path(S, lams, return_info=True)
    assert path.shape == (3, 3, 10, 10) and info.converged
    worst = 0.0
    for b in range(3):
        loop = covariance.graphical_lasso_path(S[b], lams)
        for k, lam in enumerate(lams):
            T, T_loop = path[k, b].numpy(), loop[k].numpy()
            gap = np_gap(S[b], T, lam)
            worst = max(worst, gap / 10)
            assert np.linalg.norm(T - T_loop) <= 2 * theta_bound(
                S[b], T, lam, gap + np_gap(S[b], T_loop, lam))
    assert info.certificate == pytest.approx(worst, rel=1e-6, abs=1e-14)
    empty, i0 = covariance.graphical_lasso_path(np.zeros((0, 4, 4)), lams, return_info=True)
    assert empty.shape == (3, 0, 4, 4) and i0.converged


def test_path_rows_in_callers_order_and_warm_start(rng):
    S, _ = sample_cov(rng, 15, 30)
    lams = [0.1, 0.4, 0.02, 0.2]
    path, info = covariance.graphical_lasso_path(S, lams, return_info=True)
    assert path.shape == (4, 15, 15) and isinstance(info, Info) and info.converged
    worst = max(np_gap(S, path[k].numpy(), lam) for k, lam in enumerate(lams)) / 15
    assert info.certificate == pytest.approx(worst, rel=1e-6, abs=1e-14)
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
    assert info.converged and float(torch.linalg.eigvalsh(T).min()) > 0
    gap = np_gap(S, T.numpy(), 0.05)  # the certificate, recomputed in numpy
    assert 0 <= gap <= 1e-12 * 10 and info.certificate == pytest.approx(gap / 10, abs=1e-13)


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


def _S(p=5):
    """A fixed well-conditioned covariance for the bad-input table."""
    r = np.random.default_rng(0)
    X = r.standard_normal((30, p))
    return X.T @ X / 30


def _non_psd():
    S = _S()
    S[0, 1] = S[1, 0] = 5 * np.sqrt(S[0, 0] * S[1, 1])
    return S


gl, path, mtp2 = covariance.graphical_lasso, covariance.graphical_lasso_path, \
    covariance.mtp2_precision
# (call, exception, match): match names the argument, as a whole word
BAD = [
    (lambda: gl(_S() + np.triu(np.full((5, 5), 0.1), 1), 0.1), ValueError, r"\bS\b.*symmetric"),
    (lambda: gl(_non_psd(), 0.1), ValueError, r"\bS\b.*positive semi-definite"),
    (lambda: gl(np.where(np.eye(5) > 0, np.nan, _S()), 0.1), ValueError, r"\bS\b.*NaN"),
    (lambda: gl(np.where(np.eye(5) > 0, np.inf, _S()), 0.1), ValueError, r"\bS\b.*NaN"),
    (lambda: gl(np.diag([0.0, 1, 1, 1, 1]), 0.1), ValueError, r"\bS\b.*positive diagonal"),
    (lambda: gl(_S()[0], 0.1), ValueError, r"\bS\b must be 2-D or 3-D"),
    (lambda: gl(_S()[:, :-1], 0.1), ValueError, r"\bS\b must be a square"),
    (lambda: gl(np.zeros((0, 0)), 0.1), ValueError, r"\bS\b must have at least one"),
    (lambda: gl(_S() + 0j, 0.1), TypeError, r"\bS\b must be real"),
    (lambda: gl("S", 0.1), TypeError, r"\bS\b must be a tensor"),
    (lambda: gl(_S(), -0.1), ValueError, r"\blam\b must be >= 0"),
    (lambda: gl(_S(), float("nan")), ValueError, r"\blam\b contains NaN"),
    (lambda: gl(_S(), float("inf")), ValueError, r"\blam\b contains NaN"),
    (lambda: gl(_S(), [[0.1]]), ValueError, r"\blam\b must be 0-D or 1-D"),
    (lambda: gl(np.stack([_S()] * 2), [0.1, 0.2, 0.3]), ValueError, r"\blam\b .*2 entries"),
    (lambda: gl(_S()[:3, :3] @ np.diag([1, 1, 0.0]) @ _S()[:3, :3] + np.diag([0, 0, 1e-300]),
                0.0), ValueError, r"lam = 0 needs a positive definite \bS\b"),
    (lambda: gl(_S(), 0.1, tol=0), ValueError, r"\btol\b"),
    (lambda: gl(_S(), 0.1, tol=float("nan")), ValueError, r"\btol\b"),
    (lambda: gl(_S(), 0.1, max_iter=0), ValueError, r"\bmax_iter\b"),
    (lambda: gl(_S(), 0.1, max_iter=math.inf), ValueError, r"\bmax_iter\b"),
    (lambda: gl(_S(), 0.1, max_iter=1.5), ValueError, r"\bmax_iter\b"),
    (lambda: gl(_S(), 0.1, max_iter=True), ValueError, r"\bmax_iter\b"),
    (lambda: gl(_S(), 0.1, Theta0=-np.eye(5)), ValueError, r"\bTheta0\b.*positive definite"),
    (lambda: gl(_S(), 0.1, Theta0=np.eye(4)), ValueError, r"\bTheta0\b must have the shape"),
    (lambda: gl(_S(), 0.1, Theta0=np.triu(np.ones((5, 5)))), ValueError, r"\bTheta0\b.*symm"),
    (lambda: path(_S(), []), ValueError, r"\blams\b must not be empty"),
    (lambda: path(_S(), [0.1, -0.1]), ValueError, r"\blams\b must be >= 0"),
    (lambda: path(_S()[0], [0.1]), ValueError, r"\bS\b must be 2-D or 3-D"),
    (lambda: path(_S(), [0.1], max_iter=math.inf), ValueError, r"\bmax_iter\b"),
    (lambda: mtp2(_S(), 0.1, penalty="l0"), ValueError, r"\bpenalty\b"),
    (lambda: mtp2(_S(), 0.1, penalty="scad", a=1.5), ValueError, r"\ba\b \(SCAD's shape\)"),
    (lambda: mtp2(_S(), 0.1, gamma=0.0), ValueError, r"\bgamma\b"),
    (lambda: mtp2(_S(), 0.1, gamma=-1.0), ValueError, r"\bgamma\b"),
    (lambda: mtp2(_S(), 0.1, n_stages=0), ValueError, r"\bn_stages\b"),
    (lambda: mtp2(_S(), 0.1, n_stages=2.0), ValueError, r"\bn_stages\b"),
    (lambda: mtp2(_S(), 0.1, max_iter=math.inf), ValueError, r"\bmax_iter\b"),
    (lambda: mtp2(_S(), -1.0), ValueError, r"\blam\b must be >= 0"),
    (lambda: covariance.objective(_S(), np.eye(4), 0.1), ValueError, r"\bTheta\b must have"),
    (lambda: covariance.objective(_S(), np.full((5, 5), np.nan), 0.1), ValueError,
     r"\bTheta\b contains NaN"),
    (lambda: covariance.duality_gap(_S(), np.eye(4), 0.1), ValueError, r"\bTheta\b must have"),
    (lambda: covariance.duality_gap(_S(), np.eye(5), -0.1), ValueError, r"\blam\b must be"),
    (lambda: covariance.components(np.ones((3, 4)), 0.1), ValueError, r"\bS\b must be a square"),
    (lambda: covariance.components(np.triu(np.ones((3, 3))), 0.1), ValueError,
     r"\bS\b must be symmetric"),
    (lambda: covariance.components(np.full((3, 3), np.nan), 0.1), ValueError,
     r"\bS\b contains NaN"),
    (lambda: covariance.components(np.ones(3), 0.1), ValueError, r"\bS\b must be 2-D"),
    (lambda: covariance.components(np.eye(3), -1.0), ValueError, r"\blam\b must be >= 0"),
    (lambda: covariance.edge_recovery(np.eye(3), np.eye(4)), ValueError, r"\bTheta_true\b"),
    (lambda: covariance.edge_recovery(np.triu(np.ones((3, 3))), np.eye(3)), ValueError,
     r"\bTheta_hat\b must be symmetric"),
    (lambda: covariance.edge_recovery(np.eye(3), np.eye(3), threshold=-1), ValueError,
     r"\bthreshold\b"),
    (lambda: covariance.edge_recovery(np.eye(3), np.eye(3), threshold=np.nan), ValueError,
     r"\bthreshold\b"),
]


@pytest.mark.parametrize("call, exc, match", BAD, ids=[b[2] for b in BAD])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_zero_size_batch_gives_empty_results():
    S = torch.zeros(0, 4, 4, dtype=torch.float64)
    T, info = covariance.graphical_lasso(S, 0.1, return_info=True)
    assert T.shape == (0, 4, 4) and info == Info(0, True, 0.0)
    T, info = covariance.mtp2_precision(S, 0.1, return_info=True)
    assert T.shape == (0, 4, 4) and info.converged
    assert covariance.components(S, 0.1).shape == (0, 4)
    assert covariance.objective(S, S, 0.1).shape == (0,)
    assert covariance.duality_gap(S, S, 0.1).shape == (0,)


# --- conventions -------------------------------------------------------------------------

def test_default_tol_is_pinned(rng):
    """The documented defaults: 1e-12 in float64, 1e-5 in float32 (relative gap)."""
    S, _ = sample_cov(rng, 10, 30)
    T, info = covariance.graphical_lasso(S, 0.1, return_info=True)
    T12, info12 = covariance.graphical_lasso(S, 0.1, tol=1e-12, return_info=True)
    assert torch.equal(T, T12) and info == info12 and info.certificate <= 1e-12
    T11 = covariance.graphical_lasso(S, 0.1, tol=1e-11)  # a different default would differ
    S32 = torch.as_tensor(S, dtype=torch.float32)
    T32, i32 = covariance.graphical_lasso(S32, 0.1, return_info=True)
    T32b, i32b = covariance.graphical_lasso(S32, 0.1, tol=1e-5, return_info=True)
    assert torch.equal(T32, T32b) and i32 == i32b and i32.certificate <= 1e-5
    assert covariance.mtp2_precision(S, 0.1, return_info=True)[1] == \
        covariance.mtp2_precision(S, 0.1, tol=1e-12, return_info=True)[1]
    assert T11.shape == T.shape


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-12])
def test_certificate_recomputed_independently(rng, tol):
    """For every solver: certificate = numpy duality gap / p at the returned point, and
    converged == (certificate <= tol), including when a tiny max_iter stops it early."""
    S, _ = sample_cov(rng, 12, 30)
    Sb = np.stack([S, sample_cov(rng, 12, 8)[0]])
    lams = [0.1, 0.2]
    for max_iter in (1, 10_000):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", regref.ConvergenceWarning)
            lam_t = torch.tensor(lams, dtype=torch.float64)
            T, info = covariance.graphical_lasso(Sb, lam_t, tol=tol, max_iter=max_iter,
                                                 return_info=True)
            P, pinfo = covariance.graphical_lasso_path(S, lams, tol=tol, max_iter=max_iter,
                                                       return_info=True)
            M, minfo = covariance.mtp2_precision(S, 0.1, tol=tol, max_iter=max_iter,
                                                 return_info=True)
        cert = max(np_gap(Sb[b], T[b].numpy(), lams[b]) for b in range(2)) / 12
        pcert = max(np_gap(S, P[k].numpy(), lam) for k, lam in enumerate(lams)) / 12
        mcert = np_gap_weighted(S, M.numpy(), 0.1 * np.ones((12, 12)), nonpos=True) / 12
        for i, c in ((info, cert), (pinfo, pcert), (minfo, mcert)):
            assert i.certificate == pytest.approx(c, rel=1e-6, abs=1e-14)
            assert i.converged == (i.certificate <= tol)
        assert torch.equal(T, T.mT) and torch.equal(M, M.mT)  # returned as certified


def test_warning_points_at_the_caller(rng):
    S, _ = sample_cov(rng, 12, 40)
    calls = [lambda: covariance.graphical_lasso(S, 0.05, max_iter=1),
             lambda: covariance.graphical_lasso_path(S, [0.05], max_iter=1),
             lambda: covariance.mtp2_precision(S, 0.01, max_iter=1)]
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        conv = [w for w in caught if issubclass(w.category, regref.ConvergenceWarning)]
        assert len(conv) == 1 and conv[0].filename == __file__
        assert "max_iter=1" in str(conv[0].message)


def _prox_newton_loop():
    from regref._core import fista, soft

    step = load_kernel(covariance._prox_newton_step, fista, soft)

    def loop(St, Lam, Theta):
        for _ in range(40):
            Theta, value = step(St, Lam, Theta, max_inner=2000, inner_rtol=1e-6)
        return Theta, value, None
    return loop


def _newton_cg_loop():
    step = load_kernel(covariance._newton_cg_step, covariance._conjugate_gradients)

    def loop(St, Lam, Theta):
        W = torch.linalg.inv(Theta)
        for _ in range(40):
            Theta, value, W = step(St, Lam, Theta, W, cg_iter=200, cg_rtol=1e-10)
        return Theta, value, W
    return loop


@pytest.mark.parametrize("make_loop, max_gap", [
    (_prox_newton_loop, 1e-9),  # proximal Newton with inexact steps (the fallback)
    (_newton_cg_loop, 1e-12 * 10),  # the default tol, reached by the bare loop
], ids=["prox_newton", "newton_cg"])
def test_kernel_is_copyable_and_matches_the_public_function(rng, make_loop, max_gap):
    """Each Newton kernel runs from its own source with only torch, math and the shared
    kernels it names (FISTA and soft thresholding for the proximal Newton step); a plain
    loop of it from the diagonal reaches graphical_lasso's answer, and the objective (and
    for Newton-CG the inverse) it returns are those of the point it returns."""
    S, _ = sample_cov(rng, 10, 30)
    lam = 0.1
    St = torch.as_tensor(S)[None]
    Lam = lam * (1 - torch.eye(10, dtype=torch.float64))[None]
    Theta, value, W = make_loop()(St, Lam, torch.diag_embed(1 / St.diagonal(dim1=-2, dim2=-1)))
    T_ref = covariance.graphical_lasso(S, lam)
    gap = np_gap(S, Theta[0].numpy(), lam)
    assert gap <= max_gap
    assert float(value[0]) == pytest.approx(np_objective(S, Theta[0].numpy(), lam), rel=1e-13)
    if W is not None:
        np.testing.assert_allclose(W[0], np.linalg.inv(Theta[0].numpy()), rtol=0, atol=1e-10)
    assert np.linalg.norm(Theta[0] - T_ref) <= theta_bound(S, T_ref.numpy(), lam, gap + 1e-12)


def test_newton_cg_step_never_increases_the_objective_and_stays_positive_definite(rng):
    """Every accepted step decreases P (Armijo, up to the line search's rounding slack of
    1e-13 |P|) and keeps Theta positive definite, from a start far from the optimum, on a
    batch with one strength per problem."""
    step = load_kernel(covariance._newton_cg_step, covariance._conjugate_gradients)
    S = torch.as_tensor(np.stack([sample_cov(rng, 15, 10)[0], sample_cov(rng, 15, 60)[0]]))
    Lam = torch.tensor([0.05, 0.3], dtype=torch.float64)[:, None, None] * (
        1 - torch.eye(15, dtype=torch.float64))
    Theta = torch.eye(15, dtype=torch.float64).expand(2, 15, 15).clone()
    W = Theta.clone()
    previous = torch.full((2,), math.inf, dtype=torch.float64)
    for _ in range(10):
        Theta, value, W = step(S, Lam, Theta, W, cg_iter=5, cg_rtol=0.3)
        assert (value <= previous + 1e-13 * previous.abs()).all()
        assert (torch.linalg.eigvalsh(Theta)[:, 0] > 0).all()
        torch.testing.assert_close(W, torch.linalg.inv(Theta), rtol=0, atol=1e-10)
        previous = value


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
    assert_matches_oracle(S, T, T_cvx, 0.05 * np.ones_like(S), nonpos=True)


@pytest.mark.parametrize("penalty", ["mcp", "scad"])
def test_mtp2_weighted_stage_matches_cvxpy(rng, penalty):
    """gamma is MCP's concavity, a SCAD's shape: each is used only for its penalty."""
    S, _ = mtp2_problem(rng)
    lam, gamma, a = 0.1, 2.0, 3.0
    T1 = covariance.mtp2_precision(S, lam).numpy()
    T2, info = covariance.mtp2_precision(S, lam, n_stages=2, penalty=penalty, gamma=gamma,
                                         a=a, return_info=True)
    x = np.abs(T1)
    if penalty == "mcp":
        Lam = np.clip(lam - x / gamma, 0, None)  # MCP derivative at stage 1
    else:
        Lam = np.where(x <= lam, lam, np.clip(a * lam - x, 0, None) / (a - 1))
    T_cvx = cvx_glasso(S, Lam, nonpos=True)
    assert_matches_oracle(S, T2.numpy(), T_cvx, Lam, nonpos=True)
    gap = np_gap_weighted(S, T2.numpy(), Lam * (1 - np.eye(len(S))), nonpos=True)
    assert info.converged and info.certificate == pytest.approx(gap / len(S), abs=1e-13)
    other = dict(gamma=5.0) if penalty == "scad" else dict(a=10.0)  # the unused parameter
    T3 = covariance.mtp2_precision(S, lam, n_stages=2, penalty=penalty, gamma=gamma, a=a)
    assert torch.equal(T3, covariance.mtp2_precision(S, lam, n_stages=2, penalty=penalty,
                                                      **{"gamma": gamma, "a": a, **other}))


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


@pytest.mark.gpu
def test_cuda_mtp2_and_path_match_cpu(rng):
    S, _ = mtp2_problem(rng)
    St = torch.as_tensor(S)
    cpu = covariance.mtp2_precision(St, 0.05, n_stages=2)
    gpu = covariance.mtp2_precision(St.cuda(), 0.05, n_stages=2)
    assert gpu.is_cuda and float((gpu.cpu() - cpu).abs().max()) <= 1e-7 * float(cpu.abs().max())
    cpu_p = covariance.graphical_lasso_path(St, [0.05, 0.2])
    gpu_p = covariance.graphical_lasso_path(St.cuda(), [0.05, 0.2])
    assert float((gpu_p.cpu() - cpu_p).abs().max()) <= 1e-7 * float(cpu_p.abs().max())


def test_non_monotone_gap_far_from_the_optimum_is_not_a_stall():
    """A ring with strong edges: the gap rises from 4.3 to 14 after the first step, then
    falls; it once tripped the rounding-floor rule and stopped at a relative gap of 0.29."""
    p, w = 15, 0.45
    Theta = torch.eye(p, dtype=torch.float64)
    for i in range(p):
        Theta[i, (i + 1) % p] = Theta[(i + 1) % p, i] = -w
    L = torch.linalg.cholesky(Theta)
    gen = torch.Generator().manual_seed(6)
    for b in range(16):
        n = 200 if b < 8 else 400
        Z = torch.randn(n, p, generator=gen, dtype=torch.float64)
        X = torch.linalg.solve_triangular(L.mT, Z.mT, upper=True).mT
    S = (X.mT @ X / n).numpy()
    lam = 4.0 * math.sqrt(math.log(p) / n)
    T, info = covariance.graphical_lasso(S, lam, return_info=True)
    gap = np_gap(S, T.numpy(), lam)
    assert info.converged and gap <= 1e-12 * p and info.n_iter > 5


def test_hard_singular_case_falls_back_to_proximal_newton(rng, monkeypatch):
    """Rank 3 with p = 25: Newton-CG's supports keep changing and its steps stay short
    (measured: relative gap 3e-2 after 30 steps alone), so after _FALLBACK steps the
    proximal Newton step takes over far from the optimum; the certificate still holds at
    the returned point and Newton-CG finishes near it."""
    calls = {"prox": 0, "cg": 0}
    prox, cg = covariance._prox_newton_step, covariance._newton_cg_step

    def count(name, f):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return f(*args, **kwargs)
        return wrapped
    monkeypatch.setattr(covariance, "_prox_newton_step", count("prox", prox))
    monkeypatch.setattr(covariance, "_newton_cg_step", count("cg", cg))
    S, _ = sample_cov(rng, 25, 3)
    T, info = covariance.graphical_lasso(S, 0.1, return_info=True)
    assert calls["prox"] > 0 and calls["cg"] > covariance._FALLBACK
    assert info.converged and info.n_iter == calls["prox"] + calls["cg"]
    gap = np_gap(S, T.numpy(), 0.1)
    # rank 3, Theta badly conditioned: numpy and torch round the log-determinants of the
    # gap differently by up to 3e-13 (relative); both certify the tolerance
    assert gap <= 1e-12 * 25 and info.certificate == pytest.approx(gap / 25, abs=1e-12)


def test_newton_reuses_the_line_search_objective_for_the_gap(rng, monkeypatch):
    """_newton hands _gap the objective its last step's line search computed (the
    homotopy's scaled weights mapped back to the unscaled ones) instead of a second
    Cholesky of Theta: at every step it is the objective recomputed from scratch."""
    gap, seen = covariance._gap, []

    def checked(S, Lam, hi, Theta, W, nonpos, primal=None):
        assert primal is not None
        given = gap(S, Lam, hi, Theta, W, nonpos, primal)
        seen.append((primal, gap(S, Lam, hi, Theta, W, nonpos), given))
        return given
    monkeypatch.setattr(covariance, "_gap", checked)
    S, _ = sample_cov(rng, 30, 60)
    covariance.graphical_lasso(S, 0.05, screen=False)  # a cold start: homotopy stages
    covariance.mtp2_precision(S, 0.05, n_stages=2)
    assert len(seen) > 5
    for primal, fresh, given in seen:  # equal (inf where the clipped dual point is not PD)
        assert torch.isclose(given, fresh, rtol=0, atol=1e-10 * (1 + primal.abs().max())).all()
