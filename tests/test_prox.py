"""Property and oracle tests of regref.prox.

Every operator is checked against its optimality condition (not against its own
formula), for firm non-expansiveness where the penalty is convex, and through Moreau's
decomposition where the conjugate's prox is known in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tol
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from regref import prox

DTYPES = [torch.float32, torch.float64]
BOUND = 100.0

# --- strategies ------------------------------------------------------------------------

dtypes = st.sampled_from(DTYPES)
values = st.floats(-BOUND, BOUND, allow_nan=False, allow_infinity=False, allow_subnormal=False)
taus = st.floats(0.0, 50.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def tensors(shape=None, min_dims=1, max_dims=3, max_side=6):
    """Arrays of bounded floats (shape given, or drawn), as float64 numpy."""
    shape = shape if shape is not None else array_shapes(min_dims=min_dims, max_dims=max_dims,
                                                         min_side=1, max_side=max_side)
    return arrays(np.float64, shape, elements=values)


@st.composite
def pairs(draw, min_dims=1, max_dims=3):
    """Two arrays of the same shape."""
    shape = draw(array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=6))
    return draw(tensors(shape)), draw(tensors(shape))


def T(a, dtype):
    return torch.as_tensor(a).to(dtype)


def scale_of(*arrays_) -> float:
    return max(float(np.abs(a).max()) if np.size(a) else 0.0 for a in arrays_)


def assert_firmly_nonexpansive(px, py, x, y, atol):
    """||P(x) - P(y)||^2 <= <P(x) - P(y), x - y> (whole tensor as one vector)."""
    d = (px - py).double()
    lhs = float((d * d).sum())
    rhs = float((d * (x - y).double()).sum())
    assert lhs <= rhs + atol, (lhs, rhs)


# --- soft thresholding -----------------------------------------------------------------


@given(x=tensors(), tau=taus, dtype=dtypes)
def test_soft_threshold_optimality(x, tau, dtype):
    # (x - p)/tau is in the subdifferential of |.| at p: = sign(p) where p != 0, in [-1, 1] at 0
    xt = T(x, dtype)
    p = prox.soft_threshold(xt, tau)
    assert p.dtype == dtype and p.shape == xt.shape
    atol = tol(dtype, scale_of(x) + tau)
    g = (xt - p).double()
    nz = p != 0
    assert torch.all((g[nz] - tau * torch.sign(p[nz]).double()).abs() <= atol)
    assert torch.all(g[~nz].abs() <= tau + atol)


@given(x=tensors(shape=(3, 4)), tau=tensors(shape=(4,)), dtype=dtypes)
def test_soft_threshold_optimality_with_tensor_tau(x, tau, dtype):
    tau = np.abs(tau) / 2
    xt, taut = T(x, dtype), T(tau, dtype)
    p = prox.soft_threshold(xt, taut)
    atol = tol(dtype, scale_of(x, tau))
    g = (xt - p).double()
    tb = taut.double().expand_as(g)
    nz = p != 0
    assert torch.all((g[nz] - tb[nz] * torch.sign(p[nz]).double()).abs() <= atol)
    assert torch.all(g[~nz].abs() <= tb[~nz] + atol)


@given(xy=pairs(), tau=taus, dtype=dtypes)
def test_soft_threshold_firmly_nonexpansive(xy, tau, dtype):
    x, y = (T(a, dtype) for a in xy)
    px, py = prox.soft_threshold(x, tau), prox.soft_threshold(y, tau)
    assert_firmly_nonexpansive(px, py, x, y, tol(dtype, scale_of(*xy) ** 2 * x.numel()))


# --- hard thresholding -----------------------------------------------------------------


@given(x=tensors(), tau=taus, dtype=dtypes)
def test_hard_threshold_minimizes_l0_penalized_distance(x, tau, dtype):
    # minimizer of 0.5 (v - x)^2 + tau^2/2 [v != 0], elementwise: the best nonzero v is x,
    # so brute force over the two candidates {0, x} is exhaustive.
    xt = T(x, dtype)
    h = prox.hard_threshold(xt, tau)
    assert h.dtype == dtype and h.shape == xt.shape
    assert torch.all((h == 0) | (h == xt))  # output is one of the candidates

    def cost(v):
        v, xd = v.double(), xt.double()
        return 0.5 * (v - xd) ** 2 + 0.5 * tau**2 * (v != 0).double()

    best = torch.minimum(cost(torch.zeros_like(xt)), cost(xt))
    assert torch.all(cost(h) <= best + tol(dtype, scale_of(x) ** 2 + tau**2))


def test_hard_threshold_tie_and_strict():
    x = torch.tensor([-2.0, -1.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    h = prox.hard_threshold(x, 1.0)
    # at |x| = tau both candidates are minimizers; the docstring promises 0
    assert h.tolist() == [-2.0, 0.0, 0.0, 0.0, 3.0]


# --- block soft thresholding (prox of tau ||.||_2) -------------------------------------


@given(x=tensors(min_dims=1, max_dims=3), tau=taus, dtype=dtypes, last=st.booleans())
def test_prox_l2_optimality(x, tau, dtype, last):
    # x - p = tau p/||p|| where p != 0, and ||x|| <= tau where p = 0 (per slice along dim)
    dim = -1 if last else 0
    xt = T(x, dtype)
    p = prox.prox_l2(xt, tau, dim=dim)
    assert p.dtype == dtype and p.shape == xt.shape
    xd, pd = xt.double(), p.double()
    n = x.shape[dim]
    atol = tol(dtype, scale_of(x) * np.sqrt(n) + tau, factor=64 * n)
    pn = torch.linalg.vector_norm(pd, dim=dim, keepdim=True)
    xn = torch.linalg.vector_norm(xd, dim=dim, keepdim=True)
    zero = (pn == 0).expand_as(pd)
    resid = (xd - pd) - tau * pd / pn.clamp(min=1e-300)
    assert torch.all(resid[~zero].abs() <= atol)
    assert torch.all(xn[pn == 0] <= tau + atol)


@given(xy=pairs(min_dims=2, max_dims=2), tau=taus, dtype=dtypes)
def test_prox_l2_firmly_nonexpansive(xy, tau, dtype):
    x, y = (T(a, dtype) for a in xy)
    px, py = prox.prox_l2(x, tau), prox.prox_l2(y, tau)
    assert_firmly_nonexpansive(px, py, x, y, tol(dtype, scale_of(*xy) ** 2 * x.numel()))


@given(x=tensors(shape=(4, 5)), dtype=dtypes)
def test_prox_l2_batched_equals_looped(x, dtype):
    xt = T(x, dtype)
    taus_ = T(np.linspace(0.0, 60.0, 4).reshape(4, 1), dtype)
    batched = prox.prox_l2(xt, taus_)
    looped = torch.stack([prox.prox_l2(xt[i], float(taus_[i, 0])) for i in range(4)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=tol(dtype, scale_of(x)))
    # along dim=0: each column is a group
    cols = prox.prox_l2(xt, 7.0, dim=0)
    looped = torch.stack([prox.prox_l2(xt[:, j], 7.0) for j in range(5)], dim=1)
    torch.testing.assert_close(cols, looped, rtol=0, atol=tol(dtype, scale_of(x)))


# --- elastic net -----------------------------------------------------------------------


@given(x=tensors(), l1=taus, l2=taus, dtype=dtypes)
def test_prox_elastic_net_optimality(x, l1, l2, dtype):
    # x - p - l2 p is in l1 * d|.|(p)
    xt = T(x, dtype)
    p = prox.prox_elastic_net(xt, l1, l2)
    assert p.dtype == dtype and p.shape == xt.shape
    g = (xt - p).double() - l2 * p.double()
    atol = tol(dtype, scale_of(x) * (1 + l2) + l1)
    nz = p != 0
    assert torch.all((g[nz] - l1 * torch.sign(p[nz]).double()).abs() <= atol)
    assert torch.all(g[~nz].abs() <= l1 + atol)


@given(xy=pairs(), l1=taus, l2=taus, dtype=dtypes)
def test_prox_elastic_net_firmly_nonexpansive(xy, l1, l2, dtype):
    x, y = (T(a, dtype) for a in xy)
    px, py = prox.prox_elastic_net(x, l1, l2), prox.prox_elastic_net(y, l1, l2)
    assert_firmly_nonexpansive(px, py, x, y, tol(dtype, scale_of(*xy) ** 2 * x.numel()))


# --- projection onto the l1 ball -------------------------------------------------------


@st.composite
def vectors_and_radius(draw, max_p=12):
    p = draw(st.integers(1, max_p))
    x = draw(tensors(shape=(p,)))
    # radii below, near and above ||x||_1, and 0
    r = draw(st.one_of(st.just(0.0), taus, st.floats(0.0, 1.5).map(
        lambda f: f * float(np.abs(x).sum()))))
    return x, r


def _l1_optimality(x, P, r, atol):
    """P in the ball, and <x - P, v - P> <= 0 for every v in the ball.

    The left side is linear in v, so its maximum over the ball is attained at a vertex
    ±r e_i: the condition for all v is r ||x - P||_inf <= <x - P, P>.
    """
    xd, Pd = x.double(), P.double()
    assert float(Pd.abs().sum(-1).max()) <= r + atol
    g = xd - Pd
    lhs = r * g.abs().amax(-1)
    rhs = (g * Pd).sum(-1)
    assert torch.all(lhs <= rhs + atol), (lhs, rhs)


@given(xr=vectors_and_radius(), dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_project_l1_ball_variational_inequality(xr, dtype, seed):
    x, r = xr
    xt = T(x, dtype)
    P = prox.project_l1_ball(xt, r)
    assert P.dtype == dtype and P.shape == xt.shape
    p = x.shape[-1]
    atol = tol(dtype, (scale_of(x) + r) ** 2, factor=64 * p)
    _l1_optimality(xt, P, r, atol)
    # and at random points of the ball (directions scaled into the ball)
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((16, p))
    V = r * rng.uniform(0, 1, (16, 1)) * V / np.abs(V).sum(1, keepdims=True)
    g = (xt - P).double()
    ip = ((torch.as_tensor(V) - P.double()) * g).sum(-1)
    assert torch.all(ip <= atol)


@given(xy=pairs(min_dims=1, max_dims=2), r=taus, dtype=dtypes)
def test_project_l1_ball_firmly_nonexpansive(xy, r, dtype):
    x, y = (T(a, dtype) for a in xy)
    px, py = prox.project_l1_ball(x, r), prox.project_l1_ball(y, r)
    assert_firmly_nonexpansive(px, py, x, y, tol(dtype, (scale_of(*xy) + r) ** 2 * x.numel()))


@given(x=tensors(shape=(5, 7)), r=taus, dtype=dtypes)
def test_project_l1_ball_batched_equals_looped(x, r, dtype):
    xt = T(x, dtype)
    radii = T(np.linspace(0.0, r, 5), dtype)
    batched = prox.project_l1_ball(xt, radii)
    looped = torch.stack([prox.project_l1_ball(xt[i], float(radii[i])) for i in range(5)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=tol(dtype, scale_of(x)))
    # a scalar radius broadcasts over the batch, and a 3-D batch is one call too
    torch.testing.assert_close(prox.project_l1_ball(xt, r),
                               torch.stack([prox.project_l1_ball(v, r) for v in xt]),
                               rtol=0, atol=tol(dtype, scale_of(x)))
    x3 = xt.reshape(5, 1, 7).expand(5, 2, 7)
    torch.testing.assert_close(prox.project_l1_ball(x3, r)[:, 1], prox.project_l1_ball(xt, r),
                               rtol=0, atol=tol(dtype, scale_of(x)))


@given(x=tensors(max_dims=2), dtype=dtypes)
def test_project_l1_ball_radius_zero_gives_zero(x, dtype):
    P = prox.project_l1_ball(T(x, dtype), 0.0)
    assert P.dtype == dtype
    assert torch.all(P == 0)


@given(x=tensors(max_dims=2), slack=st.floats(1.0, 10.0), dtype=dtypes)
def test_project_l1_ball_leaves_points_inside_unchanged(x, slack, dtype):
    xt = T(x, dtype)
    r = slack * float(xt.double().abs().sum(-1).max())
    r = r * (1 + 8 * torch.finfo(dtype).eps) + torch.finfo(dtype).tiny
    assert torch.equal(prox.project_l1_ball(xt, r), xt)


def test_project_l1_ball_matches_cvxpy(rng):
    cp = pytest.importorskip("cvxpy")
    for p, r in [(5, 1.0), (10, 0.3), (20, 4.0), (20, 100.0), (50, 2.5)]:
        x = rng.standard_normal(p) * 3
        v = cp.Variable(p)
        problem = cp.Problem(cp.Minimize(cp.sum_squares(v - x)), [cp.norm1(v) <= r])
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                      tol_feas=1e-12)
        assert problem.status == cp.OPTIMAL
        for dtype in DTYPES:
            P = prox.project_l1_ball(T(x, dtype), r).double().numpy()
            atol = max(1e-6, 1e3 * torch.finfo(dtype).eps) * max(np.abs(x).max(), 1)
            np.testing.assert_allclose(P, v.value, rtol=0, atol=atol)


def test_project_l1_ball_exact_small_case():
    # x = (3, 1, -0.5), r = 2: theta = 1 is the root of sum max(|x_i| - theta, 0) = 2
    x = torch.tensor([3.0, 1.0, -0.5], dtype=torch.float64)
    P = prox.project_l1_ball(x, 2.0)
    assert P.tolist() == [2.0, 0.0, -0.0]
    # ties among the largest entries
    P = prox.project_l1_ball(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64), 1.5)
    torch.testing.assert_close(P, torch.tensor([0.5, 0.5, -0.5], dtype=torch.float64))


# --- Moreau decomposition --------------------------------------------------------------


@given(x=tensors(), tau=st.floats(1e-3, 50.0), dtype=dtypes)
def test_moreau_soft_threshold_conjugate_is_clip(x, tau, dtype):
    # (tau ||.||_1)^* is the indicator of the l_inf ball: prox of tau f^* clips to [-1, 1]
    xt = T(x, dtype)
    c = prox.prox_conjugate(prox.soft_threshold, xt, tau)
    assert c.dtype == dtype
    atol = tol(dtype, scale_of(x) + tau)
    torch.testing.assert_close(c, xt.clamp(-1, 1), rtol=0, atol=atol)
    # Moreau with tau = 1 from two independent pieces: x = prox_f(x) + prox_{f*}(x)
    torch.testing.assert_close(prox.soft_threshold(xt, 1.0) + xt.clamp(-1, 1), xt,
                               rtol=0, atol=tol(dtype, scale_of(x)))


@given(x=tensors(min_dims=1, max_dims=2), tau=st.floats(1e-3, 50.0), dtype=dtypes)
def test_moreau_prox_l2_conjugate_is_unit_ball_projection(x, tau, dtype):
    xt = T(x, dtype)
    c = prox.prox_conjugate(prox.prox_l2, xt, tau)
    norm = torch.linalg.vector_norm(xt.double(), dim=-1, keepdim=True)
    expected = (xt.double() / norm.clamp(min=1.0)).to(dtype)
    atol = tol(dtype, scale_of(x) + tau, factor=64 * x.shape[-1])
    torch.testing.assert_close(c, expected, rtol=0, atol=atol)
    assert float(torch.linalg.vector_norm(c.double(), dim=-1).max()) <= 1 + atol


# --- dtypes, array-likes ---------------------------------------------------------------

OPS = {
    "soft_threshold": lambda x: prox.soft_threshold(x, 0.5),
    "hard_threshold": lambda x: prox.hard_threshold(x, 0.5),
    "prox_l2": lambda x: prox.prox_l2(x, 0.5),
    "prox_elastic_net": lambda x: prox.prox_elastic_net(x, 0.5, 0.5),
    "project_l1_ball": lambda x: prox.project_l1_ball(x, 0.5),
    "prox_conjugate": lambda x: prox.prox_conjugate(prox.soft_threshold, x, 0.5),
    "mcp_penalty": lambda x: prox.mcp_penalty(x, 0.5, 3.0),
    "prox_mcp": lambda x: prox.prox_mcp(x, 0.5, 3.0, step=0.8),
    "scad_penalty": lambda x: prox.scad_penalty(x, 0.5, 3.7),
    "prox_scad": lambda x: prox.prox_scad(x, 0.5, 3.7, step=0.8),
    "prox_l0": lambda x: prox.prox_l0(x, 0.125, step=1.0),
}


@pytest.mark.parametrize("name", OPS)
def test_dtype_preserved_and_array_likes_accepted(name, dtype):
    f = OPS[name]
    x = torch.tensor([[1.5, -0.2, 0.0], [-3.0, 0.7, 2.0]], dtype=dtype)
    out = f(x)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == x.shape
    out_np = f(x.numpy())
    assert isinstance(out_np, torch.Tensor) and out_np.dtype == dtype
    out_list = f(x.tolist())
    assert out_list.dtype == torch.float64  # Python floats are float64
    torch.testing.assert_close(out_list.to(dtype), out, rtol=0, atol=tol(dtype, 3.0))


@pytest.mark.parametrize("name", OPS)
def test_float32_agrees_with_float64(name):
    f = OPS[name]
    x = torch.as_tensor(np.random.default_rng(1).standard_normal((4, 6)))
    torch.testing.assert_close(f(x.float()).double(), f(x), rtol=0,
                               atol=tol(torch.float32, 4.0))


# --- bad input -------------------------------------------------------------------------

NAN_X = torch.tensor([1.0, float("nan"), 2.0])
INF_X = torch.tensor([1.0, float("inf"), 2.0])
X34 = torch.ones(3, 4)

BAD = [
    # (call, argument the message must name)
    (lambda: prox.soft_threshold(NAN_X, 1.0), r"^x\b"),
    (lambda: prox.soft_threshold(INF_X, 1.0), r"^x\b"),
    (lambda: prox.soft_threshold(X34, -1.0), "tau"),
    (lambda: prox.soft_threshold(X34, float("nan")), "tau"),
    (lambda: prox.soft_threshold(X34, torch.ones(3)), "tau"),
    (lambda: prox.soft_threshold(torch.ones(3), torch.ones(2, 1)), "tau"),  # would grow x
    (lambda: prox.hard_threshold(NAN_X, 1.0), r"^x\b"),
    (lambda: prox.hard_threshold(X34, -0.1), "tau"),
    (lambda: prox.hard_threshold(X34, torch.tensor([1.0, float("inf"), 1.0, 1.0])), "tau"),
    (lambda: prox.prox_l2(NAN_X, 1.0), r"^x\b"),
    (lambda: prox.prox_l2(X34, -1.0), "tau"),
    (lambda: prox.prox_l2(X34, float("nan")), "tau"),
    (lambda: prox.prox_l2(X34, torch.ones(2, 1)), "tau"),
    (lambda: prox.prox_elastic_net(NAN_X, 1.0, 1.0), r"^x\b"),
    (lambda: prox.prox_elastic_net(X34, 1.0, -1.0), "l2"),
    (lambda: prox.prox_elastic_net(X34, 1.0, float("nan")), "l2"),
    (lambda: prox.project_l1_ball(NAN_X, 1.0), r"^x\b"),
    (lambda: prox.project_l1_ball(X34, -1.0), "radius"),
    (lambda: prox.project_l1_ball(X34, float("nan")), "radius"),
    (lambda: prox.project_l1_ball(X34, torch.ones(2)), "radius"),
    (lambda: prox.project_l1_ball(X34, torch.tensor([1.0, -1.0, 1.0])), "radius"),
    (lambda: prox.project_l1_ball(torch.tensor(1.0), 1.0), r"^x\b"),
    (lambda: prox.prox_conjugate(prox.soft_threshold, NAN_X, 1.0), r"^x\b"),
    (lambda: prox.prox_conjugate(prox.soft_threshold, X34, 0.0), "tau"),
    (lambda: prox.prox_conjugate(prox.soft_threshold, X34, -1.0), "tau"),
    (lambda: prox.prox_conjugate(prox.soft_threshold, X34, float("nan")), "tau"),
    (lambda: prox.mcp_penalty(NAN_X, 1.0, 3.0), r"^x\b"),
    (lambda: prox.mcp_penalty(INF_X, 1.0, 3.0), r"^x\b"),
    (lambda: prox.mcp_penalty(X34, -1.0, 3.0), "lam"),
    (lambda: prox.mcp_penalty(X34, float("inf"), 3.0), "lam"),
    (lambda: prox.mcp_penalty(X34, torch.ones(3), 3.0), "lam"),
    (lambda: prox.mcp_penalty(X34, 1.0, 0.0), "gamma"),
    (lambda: prox.mcp_penalty(X34, 1.0, float("nan")), "gamma"),
    (lambda: prox.mcp_penalty(X34, 1.0, float("inf")), "gamma"),
    (lambda: prox.mcp_penalty(X34, 1.0, torch.ones(2, 1, 1)), "gamma"),
    (lambda: prox.prox_mcp(NAN_X, 1.0, 3.0), r"^x\b"),
    (lambda: prox.prox_mcp(INF_X, 1.0, 3.0), r"^x\b"),
    (lambda: prox.prox_mcp(X34, -1.0, 3.0), "lam"),
    (lambda: prox.prox_mcp(X34, float("nan"), 3.0), "lam"),
    (lambda: prox.prox_mcp(X34, 1.0, -3.0), "gamma"),
    (lambda: prox.prox_mcp(X34, 1.0, 1.0), "gamma"),  # gamma = step: not strongly convex
    (lambda: prox.prox_mcp(X34, 1.0, 2.0, step=3.0), "gamma"),
    (lambda: prox.prox_mcp(X34, 1.0, torch.tensor([3.0, 3.0, 0.5, 3.0])), "gamma"),
    (lambda: prox.prox_mcp(X34, 1.0, torch.ones(3)), "gamma"),
    (lambda: prox.prox_mcp(X34, 1.0, 3.0, step=0.0), "step"),
    (lambda: prox.prox_mcp(X34, 1.0, 3.0, step=-1.0), "step"),
    (lambda: prox.prox_mcp(X34, 1.0, 3.0, step=float("nan")), "step"),
    (lambda: prox.prox_mcp(X34, 1.0, 3.0, step=torch.ones(2)), "step"),
    (lambda: prox.scad_penalty(NAN_X, 1.0), r"^x\b"),
    (lambda: prox.scad_penalty(X34, -1.0), "lam"),
    (lambda: prox.scad_penalty(X34, float("nan")), "lam"),
    (lambda: prox.scad_penalty(X34, 1.0, a=2.0), r"^a\b"),
    (lambda: prox.scad_penalty(X34, 1.0, a=float("inf")), r"^a\b"),
    (lambda: prox.scad_penalty(X34, 1.0, a=torch.full((3,), 3.7)), r"^a\b"),
    (lambda: prox.prox_scad(INF_X, 1.0), r"^x\b"),
    (lambda: prox.prox_scad(X34, -1.0), "lam"),
    (lambda: prox.prox_scad(X34, float("inf")), "lam"),
    (lambda: prox.prox_scad(X34, 1.0, a=1.5, step=0.1), r"^a\b"),  # a <= 2
    (lambda: prox.prox_scad(X34, 1.0, a=3.0, step=2.0), r"^a\b"),  # a = 1 + step
    (lambda: prox.prox_scad(X34, 1.0, a=float("nan")), r"^a\b"),
    (lambda: prox.prox_scad(X34, 1.0, step=0.0), "step"),
    (lambda: prox.prox_scad(X34, 1.0, step=float("inf")), "step"),
    (lambda: prox.prox_scad(X34, 1.0, step=torch.tensor([0.5, 0.5, 0.5, 3.0])), r"^a\b"),
    (lambda: prox.prox_l0(NAN_X, 1.0), r"^x\b"),
    (lambda: prox.prox_l0(INF_X, 1.0), r"^x\b"),
    (lambda: prox.prox_l0(X34, -1.0), "lam"),
    (lambda: prox.prox_l0(X34, float("nan")), "lam"),
    (lambda: prox.prox_l0(X34, torch.ones(3)), "lam"),
    (lambda: prox.prox_l0(X34, 1.0, step=0.0), "step"),
    (lambda: prox.prox_l0(X34, 1.0, step=float("inf")), "step"),
    (lambda: prox.prox_l2(X34, 0.1, dim=5), r"^dim\b"),  # was: IndexError
    (lambda: prox.prox_l2(X34, 0.1, dim=-3), r"^dim\b"),
    (lambda: prox.prox_l2(X34, 0.1, dim=1.0), r"^dim\b"),
    (lambda: prox.prox_l2(X34, 0.1, dim=True), r"^dim\b"),
]


@pytest.mark.parametrize("call, match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("value", ["abc", 1j])
def test_bad_types_raise_type_error(value):
    with pytest.raises(TypeError, match="x"):
        prox.soft_threshold(value, 1.0)
    with pytest.raises(TypeError, match="tau"):
        prox.soft_threshold(torch.ones(3), value)


# --- the fast path: validate=False computes the same thing ------------------------------

FAST = {
    "soft_threshold": (lambda v, **k: prox.soft_threshold(v, 0.7, **k)),
    "hard_threshold": (lambda v, **k: prox.hard_threshold(v, 0.7, **k)),
    "prox_l2": (lambda v, **k: prox.prox_l2(v, 0.7, dim=0, **k)),
    "prox_elastic_net": (lambda v, **k: prox.prox_elastic_net(v, 0.7, 0.3, **k)),
    "project_l1_ball": (lambda v, **k: prox.project_l1_ball(
        v, torch.full(v.shape[:-1], 1.5, dtype=v.dtype), **k)),
    "prox_conjugate": (lambda v, **k: prox.prox_conjugate(prox.soft_threshold, v, 0.7, **k)),
    "mcp_penalty": (lambda v, **k: prox.mcp_penalty(v, 0.7, 3.0, **k)),
    "prox_mcp": (lambda v, **k: prox.prox_mcp(v, 0.7, 3.0, 0.5, **k)),
    "scad_penalty": (lambda v, **k: prox.scad_penalty(v, 0.7, 3.7, **k)),
    "prox_scad": (lambda v, **k: prox.prox_scad(v, 0.7, 3.7, 0.5, **k)),
    "prox_l0": (lambda v, **k: prox.prox_l0(v, torch.tensor(0.7, dtype=v.dtype),
                                            torch.tensor(0.5, dtype=v.dtype), **k)),
}


@pytest.mark.parametrize("name", FAST)
def test_fast_path_equals_validated(name, dtype):
    v = torch.linspace(-4, 4, 24, dtype=dtype).reshape(4, 6)
    slow, fast = FAST[name](v), FAST[name](v, validate=False)
    assert fast.dtype == dtype
    # the same formula; only a Python-float strength rounds differently (a few eps)
    torch.testing.assert_close(fast, slow, rtol=8 * torch.finfo(dtype).eps,
                               atol=8 * torch.finfo(dtype).eps)
    assert not torch.equal(slow, v)  # the operator did something on this input


def test_fast_path_skips_the_nan_scan():
    # the validated call rejects NaN; the fast path propagates it (no check, no host sync)
    v = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"^x\b"):
        prox.soft_threshold(v, 0.5)
    assert torch.isnan(prox.soft_threshold(v, 0.5, validate=False)[1])


# --- regressions: validation bugs these tests found, fixed since ---------------------------


@pytest.mark.parametrize("l1", [-1.0, float("nan"), torch.ones(2)])
def test_prox_elastic_net_bad_l1_names_l1(l1):
    # was: l1 forwarded to soft_threshold unchecked, so the message named "tau"
    with pytest.raises(ValueError, match="l1"):
        prox.prox_elastic_net(torch.ones(3), l1, 0.5)


def test_prox_l2_tau_shape_mismatch_is_value_error():
    # was: tau checked against the reduced norm shape (3, 1) only; (2,) broadcast with it
    # to (3, 2) and the final product with x raised RuntimeError
    with pytest.raises(ValueError, match="tau"):
        prox.prox_l2(torch.ones(3, 4), torch.ones(2))


def test_project_l1_ball_radius_with_extra_dim_is_value_error():
    # was: RuntimeError from expand (radius (3, 1) broadcasts against x[..., 0] of shape (3,))
    with pytest.raises(ValueError, match="radius"):
        prox.project_l1_ball(torch.ones(3, 4), torch.ones(3, 1))


def test_project_l1_ball_empty_vector():
    # was: IndexError; the projection of an empty vector is the empty vector
    P = prox.project_l1_ball(torch.ones(3, 0), 1.0)
    assert P.shape == (3, 0) and P.dtype == torch.float32


@pytest.mark.parametrize("radius", [-1.0, float("nan"), torch.ones(2)])
def test_project_l1_ball_empty_vector_still_validates_radius(radius):
    with pytest.raises(ValueError, match="radius"):
        prox.project_l1_ball(torch.ones(3, 0), radius)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_cuda_matches_cpu(dtype_):
    """Every prox gives the same answer on the GPU as on the CPU, on the GPU's device."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 33, generator=g, dtype=dtype_)
    radius = torch.rand(64, generator=g, dtype=dtype_) * 5
    calls = {
        "soft_threshold": lambda v, r: prox.soft_threshold(v, 0.3),
        "hard_threshold": lambda v, r: prox.hard_threshold(v, 0.3),
        "prox_l2": lambda v, r: prox.prox_l2(v, 2.0),
        "prox_elastic_net": lambda v, r: prox.prox_elastic_net(v, 0.3, 0.5),
        "project_l1_ball": lambda v, r: prox.project_l1_ball(v, r),
        "prox_conjugate": lambda v, r: prox.prox_conjugate(prox.soft_threshold, v, 0.7),
        "mcp_penalty": lambda v, r: prox.mcp_penalty(v, r[:, None] / 5, 3.0),
        "prox_mcp": lambda v, r: prox.prox_mcp(v, r[:, None] / 5, 3.0, step=0.8),
        "scad_penalty": lambda v, r: prox.scad_penalty(v, r[:, None] / 5),
        "prox_scad": lambda v, r: prox.prox_scad(v, r[:, None] / 5, 3.7, step=0.8),
        "prox_l0": lambda v, r: prox.prox_l0(v, r[:, None] / 5, step=0.5),
    }
    for name, f in calls.items():
        cpu, gpu = f(x, radius), f(x.cuda(), radius.cuda())
        assert gpu.device.type == "cuda" and gpu.dtype == dtype_, name
        torch.testing.assert_close(gpu.cpu(), cpu, msg=name)


# --- nonconvex penalties: MCP, SCAD, l0 --------------------------------------------------
#
# Oracles: the penalties against numerical integration of the derivatives that define them
# (scipy.integrate.quad); each prox against the brute-force minimum of its scalar objective
# over a fine grid. The prox objectives are strongly convex (modulus mu = 1 - step/gamma for
# MCP, 1 - step/(a - 1) for SCAD) when the parameters pass validation, so grid resolution
# translates into a bound on the distance to the true minimizer (see _brute_force).

GRID = 20001
steps = st.floats(0.05, 5.0)
# strengths that survive a cast to float32 (a tiny lam would flush to 0 there, not in x)
lams = st.one_of(st.just(0.0), st.floats(1e-6, 30.0))
slacks = st.floats(0.1, 10.0)  # gamma = step (1 + slack), a = max(2, 1 + step)(1 + slack)


def _mcp_gamma(step, slack):
    return step * (1 + slack)


def _scad_a(step, slack):
    return max(2.0, 1 + step) * (1 + slack)


def _brute_force(objective, x):
    """Grid minimizer of objective(v, x) per entry of the float64 vector ``x``.

    The grid is x * linspace(-0.5, 1.5, GRID) plus the points 0 and x, spacing
    h = 2|x| / (GRID - 1). For penalties that are concave on each side of 0 (MCP, SCAD),
    the objective has curvature <= 1 off 0, so some grid point on the minimizer's side
    of 0 is within h of it and costs at most h^2/2 more; with mu-strong convexity the grid
    minimizer is then within sqrt((h^2 + 2 dF) / mu) of the true one (dF: rounding in F).
    Returns (grid minimizer, minimal objective value, h, largest |objective| on the grid).
    """
    t = torch.linspace(-0.5, 1.5, GRID, dtype=torch.float64)
    xc = x[:, None]
    V = torch.cat([xc * t, torch.zeros_like(xc), xc], dim=1)
    F = objective(V, xc)
    best = F.argmin(dim=1, keepdim=True)
    h = 2 * x.abs() / (GRID - 1)
    return V.gather(1, best)[:, 0], F.gather(1, best)[:, 0], h, F.abs().amax(dim=1)


def _knot_points(*knots):
    """x values in every piece of a prox with these (increasing) knots, and on both sides
    of each knot, with both signs."""
    k = np.asarray(knots, dtype=np.float64)
    pos = np.concatenate([[0.5 * k[0], 1.5 * k[-1]], 0.999 * k, 1.001 * k, (k[1:] + k[:-1]) / 2])
    return np.concatenate([-pos, pos])


def _check_against_brute_force(p, xt, objective, mu, lip):
    """p (any dtype) minimizes objective elementwise, to grid resolution and rounding.

    ``lip`` bounds the growth of the prox formula's rounding error: a per-entry scale.
    """
    dtype = p.dtype
    xd, pd = xt.double(), p.double()
    v, fmin, h, fscale = _brute_force(objective, xd)
    d_f = tol(torch.float64, 1.0) * fscale  # rounding in F(v), float64
    atol = 64 * torch.finfo(dtype).eps * lip.clamp(min=1.0)  # rounding in p
    bound = torch.sqrt((h**2 + 2 * d_f) / mu) + atol
    assert torch.all((pd - v).abs() <= bound), (pd, v, bound)
    # and no grid point beats p (p is a global minimizer, up to its own rounding)
    fp = objective(pd[:, None], xd[:, None])[:, 0]
    assert torch.all(fp <= fmin + d_f + (xd.abs() + lip) * atol), (fp, fmin)


@given(x=tensors(shape=st.integers(1, 8)), lam=lams, step=steps, slack=slacks, dtype=dtypes)
def test_prox_mcp_matches_brute_force(x, lam, step, slack, dtype):
    gamma = _mcp_gamma(step, slack)
    xt = T(np.concatenate([x, _knot_points(step * lam, gamma * lam)]), dtype)
    p = prox.prox_mcp(xt, lam, gamma, step=step)
    assert p.dtype == dtype and p.shape == xt.shape

    def objective(v, x_):
        return 0.5 * (v - x_) ** 2 + step * prox.mcp_penalty(v, lam, gamma)

    lip = (xt.double().abs() + step * lam) * gamma / (gamma - step)
    _check_against_brute_force(p, xt, objective, 1 - step / gamma, lip)


@given(x=tensors(shape=st.integers(1, 8)), lam=lams, step=steps, slack=slacks, dtype=dtypes)
def test_prox_scad_matches_brute_force(x, lam, step, slack, dtype):
    a = _scad_a(step, slack)
    xt = T(np.concatenate([x, _knot_points(step * lam, (1 + step) * lam, a * lam)]), dtype)
    p = prox.prox_scad(xt, lam, a, step=step)
    assert p.dtype == dtype and p.shape == xt.shape

    def objective(v, x_):
        return 0.5 * (v - x_) ** 2 + step * prox.scad_penalty(v, lam, a)

    lip = (xt.double().abs() * a + step * a * lam) / (a - 1 - step)
    _check_against_brute_force(p, xt, objective, 1 - step / (a - 1), lip)


@given(x=tensors(shape=st.integers(1, 8)), lam=lams, step=steps, dtype=dtypes)
def test_prox_l0_matches_brute_force(x, lam, step, dtype):
    xt = T(np.concatenate([x, _knot_points(np.sqrt(2 * step * lam))]), dtype)
    p = prox.prox_l0(xt, lam, step=step)
    assert p.dtype == dtype and p.shape == xt.shape
    assert torch.all((p == 0) | (p == xt))  # keeps or kills, never shrinks

    def objective(v, x_):
        return 0.5 * (v - x_) ** 2 + step * lam * (v != 0).double()

    xd = xt.double()
    v, fmin, _, _ = _brute_force(objective, xd)
    fp = objective(p.double()[:, None], xd[:, None])[:, 0]
    # a near-tie may go either way in rounding
    atol = 64 * torch.finfo(dtype).eps * (xd**2 + step * lam).clamp(min=1.0)
    assert torch.all(fp <= fmin + atol)
    clear = (0.5 * xd**2 - step * lam).abs() > atol
    assert torch.equal(p.double()[clear], v[clear])


def test_prox_l0_tie_returns_zero():
    # step * lam = 8: the threshold sqrt(2 * 8) = 4 is exact; at |x| = 4 both 0 and x cost 8
    x = torch.tensor([-5.0, -4.0, 3.0, 4.0, np.nextafter(4.0, 5.0)], dtype=torch.float64)
    p = prox.prox_l0(x, 4.0, step=2.0)
    assert p.tolist() == [-5.0, 0.0, 0.0, 0.0, np.nextafter(4.0, 5.0)]
    assert torch.equal(p, prox.hard_threshold(x, 4.0))


NONCONVEX = {
    # name: (prox(x, lam, step, slack), knot below which it is 0, knot above which it is x)
    "prox_mcp": (lambda x, lam, step, slack: prox.prox_mcp(x, lam, _mcp_gamma(step, slack), step),
                 lambda lam, step, slack: step * lam,
                 lambda lam, step, slack: _mcp_gamma(step, slack) * lam),
    "prox_scad": (lambda x, lam, step, slack: prox.prox_scad(x, lam, _scad_a(step, slack), step),
                  lambda lam, step, slack: step * lam,
                  lambda lam, step, slack: _scad_a(step, slack) * lam),
    "prox_l0": (lambda x, lam, step, slack: prox.prox_l0(x, lam, step),
                lambda lam, step, slack: np.sqrt(2 * step * lam),
                lambda lam, step, slack: np.sqrt(2 * step * lam)),
}


@pytest.mark.parametrize("name", NONCONVEX)
@given(x=tensors(max_dims=2), lam=lams, step=steps, slack=slacks, dtype=dtypes)
def test_nonconvex_prox_odd_and_monotone(name, x, lam, step, slack, dtype):
    f, low, high = NONCONVEX[name]
    xt = T(x, dtype)
    p = f(xt, lam, step, slack)
    assert p.dtype == dtype and p.shape == xt.shape
    assert torch.equal(f(-xt, lam, step, slack), -p)  # odd, exactly
    # non-decreasing in x: sort all entries (and points around the knots) into one line
    knots = _knot_points(low(lam, step, slack), high(lam, step, slack))
    line = torch.sort(torch.cat([xt.flatten(), T(knots, dtype)])).values
    q = f(line, lam, step, slack).double()
    scale = float(line.abs().max()) * (1 + 1 / slack)
    assert torch.all(q[1:] - q[:-1] >= -tol(dtype, scale)), name


@pytest.mark.parametrize("name", NONCONVEX)
@given(r=arrays(np.float64, 12, elements=st.floats(-1.0, 1.0)), lam=lams, step=steps,
       slack=slacks, far=arrays(np.float64, 12, elements=st.floats(1.0, 1e3)), dtype=dtypes)
def test_nonconvex_prox_zero_below_and_identity_above(name, r, lam, step, slack, far, dtype):
    f, low, high = NONCONVEX[name]
    small = T((1 - 1e-3) * r * low(lam, step, slack), dtype)
    assert torch.all(f(small, lam, step, slack) == 0)
    big = T(np.sign(r + 0.5) * (high(lam, step, slack) * (1 + 1e-3) + 1e-3) * far, dtype)
    assert torch.equal(f(big, lam, step, slack), big)


@given(x=tensors(), lam=st.floats(1e-3, 30.0), step=steps, dtype=dtypes)
def test_prox_mcp_tends_to_soft_threshold(x, lam, step, dtype):
    # once gamma lam > max|x| only the middle piece is used, where the two differ by
    # soft(x) * step / (gamma - step) <= max|x| step / (gamma - step) -> 0
    xt = T(x, dtype)
    soft = prox.soft_threshold(xt, step * lam).double()
    m = scale_of(x)
    previous = np.inf
    for k in range(1, 7):
        gamma = max(2 * step, m / lam) * 10.0**k
        err = float((prox.prox_mcp(xt, lam, gamma, step=step).double() - soft).abs().max())
        assert err <= m * step / (gamma - step) + tol(dtype, m + step * lam), (k, err)
        assert err <= previous + tol(dtype, m + step * lam)
        previous = err


@given(x=tensors(), lam=lams, step=steps, dtype=dtypes)
def test_huge_gamma_or_a_gives_soft_threshold_without_overflow(x, lam, step, dtype):
    # gamma, a -> inf turn MCP and SCAD into lam |.|; 1e30 fits float32, gamma * x may not
    xt = T(x, dtype)
    soft = prox.soft_threshold(xt, torch.tensor(step, dtype=dtype) * lam)
    atol = tol(dtype, scale_of(x) + step * lam)
    torch.testing.assert_close(prox.prox_mcp(xt, lam, 1e30, step), soft, rtol=0, atol=atol)
    torch.testing.assert_close(prox.prox_scad(xt, lam, 1e30, step), soft, rtol=0, atol=atol)
    for pen in (prox.mcp_penalty(xt, lam, 1e30), prox.scad_penalty(xt, lam, 1e30)):
        torch.testing.assert_close(pen, lam * xt.abs(), rtol=0, atol=tol(dtype, lam * scale_of(x)))


def _integrate(slope, u, knots):
    integrate = pytest.importorskip("scipy.integrate")
    inner = [k for k in knots if 0 < k < u]
    return integrate.quad(slope, 0.0, u, points=inner or None, epsabs=1e-13, epsrel=1e-13)[0]


@pytest.mark.parametrize("lam, gamma", [(1.0, 3.0), (0.3, 1.5), (2.5, 0.4), (4.0, 25.0)])
def test_mcp_penalty_is_integral_of_its_slope(lam, gamma):
    # Zhang (2010) defines MCP by its derivative (lam - t/gamma)_+ on t >= 0
    xs = np.concatenate([np.linspace(-2.5, 2.5, 21) * gamma * lam, [gamma * lam]])
    expected = [_integrate(lambda t: max(lam - t / gamma, 0.0), abs(x), [gamma * lam])
                for x in xs]
    got = prox.mcp_penalty(torch.as_tensor(xs), lam, gamma)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lam, a", [(1.0, 3.7), (0.3, 2.5), (2.5, 2.01), (4.0, 12.0)])
def test_scad_penalty_is_integral_of_its_slope(lam, a):
    # Fan and Li (2001) define SCAD by its derivative min(lam, (a lam - t)_+ / (a - 1))
    xs = np.concatenate([np.linspace(-1.5, 1.5, 31) * a * lam, [lam, a * lam]])
    expected = [_integrate(lambda t: min(lam, max(a * lam - t, 0.0) / (a - 1)), abs(x),
                           [lam, a * lam]) for x in xs]
    got = prox.scad_penalty(torch.as_tensor(xs), lam, a)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


PENALTIES = {
    # name: (penalty(x, lam, slack), its knots, its maximum)
    # knots computed in the dtype as the function computes them, so the floats on either
    # side of a knot fall in different pieces
    "mcp_penalty": (lambda x, lam, s: prox.mcp_penalty(x, lam, 1 + s),
                    lambda lam, s, dt: [torch.tensor(1 + s, dtype=dt) * lam],
                    lambda lam, s: (1 + s) * lam**2 / 2),
    "scad_penalty": (lambda x, lam, s: prox.scad_penalty(x, lam, 2 * (1 + s)),
                     lambda lam, s, dt: [lam,
                                         torch.tensor(2 * (1 + s), dtype=dt) * lam],
                     lambda lam, s: (2 * (1 + s) + 1) * lam**2 / 2),
}


@pytest.mark.parametrize("name", PENALTIES)
@given(xy=pairs(), lam=lams, slack=slacks, dtype=dtypes)
def test_penalty_shape_bounds_and_lipschitz(name, xy, lam, slack, dtype):
    f, _, top = PENALTIES[name]
    x, y = (T(a, dtype) for a in xy)
    px, py = f(x, lam, slack), f(y, lam, slack)
    assert px.dtype == dtype and px.shape == x.shape
    atol = tol(dtype, lam * scale_of(*xy) + top(lam, slack))
    assert torch.equal(f(-x, lam, slack), px)  # even
    assert float(f(torch.zeros(3, dtype=dtype), lam, slack).abs().max()) == 0.0
    assert torch.all(px >= -atol)
    assert torch.all(px <= lam * x.double().abs() + atol)  # below the l1 penalty
    assert torch.all(px <= top(lam, slack) + atol)  # and below its plateau
    # lam-Lipschitz (its slope is in [0, lam] on t >= 0)
    assert torch.all((px - py).double().abs() <= lam * (x - y).double().abs() + atol)


@pytest.mark.parametrize("name", PENALTIES)
@given(lam=lams, slack=slacks, dtype=dtypes)
def test_penalty_continuous_at_knots(name, lam, slack, dtype):
    # the two pieces meeting at a knot k agree there: the values at the floats on either
    # side of k differ by no more than lam times their distance, up to rounding
    f, knots, top = PENALTIES[name]
    for k in knots(torch.tensor(lam, dtype=dtype), slack, dtype):
        lo, hi = torch.nextafter(k, k.new_tensor(0.0)), torch.nextafter(k, k.new_tensor(np.inf))
        v = f(torch.stack([lo, hi]), lam, slack).double()
        jump = float((v[1] - v[0]).abs())
        assert jump <= lam * float(hi - lo) + tol(dtype, lam * float(k) + top(lam, slack))


def test_nonconvex_prox_batched_equals_elementwise(dtype):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 5, generator=g, dtype=torch.float64) * 4).to(dtype)
    lam = torch.tensor([[0.0], [0.5], [1.0], [2.0]], dtype=dtype)
    step = torch.tensor([0.2, 0.5, 1.0, 1.5, 2.0], dtype=dtype)
    gamma = torch.tensor([1.1, 3.0, 5.0, 2.5, 7.0], dtype=dtype) * 2
    a = torch.tensor([3.7, 2.5, 4.0, 3.0, 10.0], dtype=dtype)
    calls = {
        "prox_mcp": (lambda v, i, j: prox.prox_mcp(v, lam[i, 0], gamma[j], step[j]),
                     prox.prox_mcp(x, lam, gamma, step)),
        "prox_scad": (lambda v, i, j: prox.prox_scad(v, lam[i, 0], a[j], step[j]),
                      prox.prox_scad(x, lam, a, step)),
        "prox_l0": (lambda v, i, j: prox.prox_l0(v, lam[i, 0], step[j]),
                    prox.prox_l0(x, lam, step)),
        "mcp_penalty": (lambda v, i, j: prox.mcp_penalty(v, lam[i, 0], gamma[j]),
                        prox.mcp_penalty(x, lam, gamma)),
        "scad_penalty": (lambda v, i, j: prox.scad_penalty(v, lam[i, 0], a[j]),
                         prox.scad_penalty(x, lam, a)),
    }
    for name, (one, batched) in calls.items():
        assert batched.shape == x.shape and batched.dtype == dtype, name
        looped = torch.stack([torch.stack([one(x[i, j], i, j) for j in range(5)])
                              for i in range(4)])
        torch.testing.assert_close(batched, looped, rtol=0, atol=tol(dtype, 16.0), msg=name)
    # a 3-D batch is one call too
    x3 = x.reshape(4, 1, 5).expand(4, 3, 5)
    torch.testing.assert_close(prox.prox_scad(x3, lam[:, None], a, step)[:, 2],
                               prox.prox_scad(x, lam, a, step), rtol=0, atol=0)
