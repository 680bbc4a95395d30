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
    try:
        P = prox.project_l1_ball(torch.ones(3, 0), 1.0)
    except ValueError as err:
        assert "x" in str(err)
    else:
        assert P.shape == (3, 0)


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
    }
    for name, f in calls.items():
        cpu, gpu = f(x, radius), f(x.cuda(), radius.cuda())
        assert gpu.device.type == "cuda" and gpu.dtype == dtype_, name
        torch.testing.assert_close(gpu.cpu(), cpu, msg=name)
