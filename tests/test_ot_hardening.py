"""The package-wide conventions for regref.ot: true certificates, warnings attributed to the
caller, the copyable kernels, empty batches, the optional SciPy extra and one table of bad
inputs (``(call, exception, match)`` rows, ``match`` naming the argument).

Certificates are recomputed here in numpy from the returned point only: the relative l1
row error of a Sinkhorn plan (its column sums hold to rounding after the last half-step),
and the relative l1 error of both marginals for the quadratic and sparse plans.
"""

from __future__ import annotations

import ast
import inspect
import math
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from conftest import load_kernel

from regref import ConvergenceWarning, Info, ot

F64 = torch.float64


def problem(seed=0, B=None, n=9, m=7, shift=0.4):
    g = np.random.default_rng(seed)
    shape = () if B is None else (B,)
    x, y = g.standard_normal(shape + (n, 2)), g.standard_normal(shape + (m, 2)) + shift
    a, b = g.random(shape + (n,)) + 0.1, g.random(shape + (m,)) + 0.1
    a, b = a / a.sum(-1, keepdims=True), b / b.sum(-1, keepdims=True)
    C = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    return [torch.as_tensor(v) for v in (a, b, C, x, y)]


def np64(t):
    return t.detach().cpu().double().numpy()


def gibbs(f, g, C, eps):
    return np.exp((np64(f)[..., :, None] + np64(g)[..., None, :] - np64(C)) / eps)


def row_error(P, a):
    """max over the batch of ||P 1 - a||_1 / ||a||_1 (P, a numpy)."""
    P, a = np.atleast_3d(P.T).T if P.ndim == 2 else P, np.atleast_2d(a)
    return float((np.abs(P.sum(-1) - a).sum(-1) / a.sum(-1)).max())


def both_errors(P, a, b):
    P, a, b = np.asarray(P), np.atleast_2d(a), np.atleast_2d(b)
    P = P[None] if P.ndim == 2 else P
    err = np.abs(P.sum(-1) - a).sum(-1) + np.abs(P.sum(-2) - b).sum(-1)
    return float((err / a.sum(-1)).max())


# --- 1. certificates recomputed from the returned point -------------------------------------

EPS = 0.05


def _cert_sinkhorn(tol, max_iter):
    a, b, C, _, _ = problem(1, B=3)
    P, info = ot.sinkhorn(a, b, C, EPS, tol=tol, max_iter=max_iter, return_info=True)
    return row_error(np64(P), np64(a)), info


def _cert_potentials(tol, max_iter):
    a, b, C, _, _ = problem(2, B=2)
    f, g, info = ot.sinkhorn_potentials(a, b, C, EPS, tol=tol, max_iter=max_iter,
                                        return_info=True)
    return row_error(gibbs(f, g, C, EPS), np64(a)), info


def _cert_cost(tol, max_iter):
    a, b, C, _, _ = problem(3)
    _, info = ot.sinkhorn_cost(a, b, C, EPS, tol=tol, max_iter=max_iter, return_info=True)
    # the same deterministic solve gives the potentials the value was evaluated at
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f, g = ot.sinkhorn_potentials(a, b, C, EPS, tol=tol, max_iter=max_iter)
    return row_error(gibbs(f, g, C, EPS), np64(a)), info


def _cert_points(tol, max_iter):
    a, b, _, x, y = problem(4)
    f, g, info = ot.sinkhorn_points(x, y, EPS, a, b, chunk=4, tol=tol, max_iter=max_iter,
                                    return_info=True)
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    return row_error(gibbs(f, g, C, EPS), np64(a)), info


def _cert_quadratic(tol, max_iter):
    a, b, C, _, _ = problem(5, B=2)
    P, info = ot.quadratic_ot(a, b, C, 0.05, tol=tol, max_iter=max_iter, return_info=True)
    return both_errors(np64(P), np64(a), np64(b)), info


def _cert_sparse(tol, max_iter):
    a, b, C, _, _ = problem(6, n=8, m=8)
    P, info = ot.sparse_ot(a, b, C, 0.05, 4, tol=tol, max_iter=max_iter, return_info=True)
    return both_errors(np64(P), np64(a), np64(b)), info


CERTIFIED = {"sinkhorn": _cert_sinkhorn, "sinkhorn_potentials": _cert_potentials,
             "sinkhorn_cost": _cert_cost, "sinkhorn_points": _cert_points,
             "quadratic_ot": _cert_quadratic, "sparse_ot": _cert_sparse}


@pytest.mark.parametrize("name", CERTIFIED)
@pytest.mark.parametrize("tol, max_iter", [(1e-4, 10_000), (1e-10, 10_000), (1e-12, 2)],
                         ids=["loose", "tight", "budget"])
def test_certificate_is_recomputed_from_the_returned_point(name, tol, max_iter):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        cert, info = CERTIFIED[name](tol, max_iter)
    assert isinstance(info, Info)
    assert info.converged == (info.certificate <= tol)
    # the reported certificate is the error of what was returned, to rounding
    assert abs(cert - info.certificate) <= 1e-12 + 1e-9 * cert
    assert info.converged == (cert <= tol)
    warned = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert bool(warned) == (not info.converged)
    if max_iter == 2:
        assert not info.converged and info.n_iter <= 2


def test_divergence_returns_one_info_of_its_three_solves():
    _, _, _, x, y = problem(7)
    value, info = ot.sinkhorn_divergence(x, y, 0.2, tol=1e-10, return_info=True)
    assert isinstance(info, Info) and info.converged and info.certificate <= 1e-10
    a = torch.full((9,), 1 / 9, dtype=F64)
    b = torch.full((7,), 1 / 7, dtype=F64)
    Cxy = ((x[:, None] - y[None]) ** 2).sum(-1)
    cross, info_xy = ot.sinkhorn_cost(a, b, Cxy, 0.2, tol=1e-10, return_info=True)
    # b is rescaled to a's mass inside, so the cross solve differs by rounding only
    assert info.certificate >= info_xy.certificate * (1 - 1e-3)
    assert info.n_iter >= info_xy.n_iter
    assert float(value) == pytest.approx(float(ot.sinkhorn_divergence(x, y, 0.2, tol=1e-10)))
    with pytest.warns(ConvergenceWarning):
        _, info = ot.sinkhorn_divergence(x, y, 0.01, max_iter=2, return_info=True)
    assert not info.converged and info.certificate > 1e-9


# --- 2. warnings point at the caller --------------------------------------------------------

def _budget_calls():
    a, b, C, x, y = problem(8)
    kw = dict(max_iter=2, check_every=1)
    return {
        "sinkhorn": lambda: ot.sinkhorn(a, b, C, 1e-3, **kw),
        "sinkhorn_potentials": lambda: ot.sinkhorn_potentials(a, b, C, 1e-3, **kw),
        "sinkhorn_cost": lambda: ot.sinkhorn_cost(a, b, C, 1e-3, **kw),
        "sinkhorn_divergence": lambda: ot.sinkhorn_divergence(x, y, 1e-3, **kw),
        "sinkhorn_points": lambda: ot.sinkhorn_points(x, y, 1e-3, chunk=4, **kw),
        "sinkhorn-schedule": lambda: ot.sinkhorn(a, b, C, 1e-3, eps_schedule=[1, 0.1], **kw),
        "quadratic_ot": lambda: ot.quadratic_ot(a, b, C, 1e-3, max_iter=1),
        "sparse_ot": lambda: ot.sparse_ot(a, b, C, 1e-3, 2, max_iter=1),
        "monge_gap": lambda: ot.monge_gap(x, 0.5 * x.flip(0) + 0.3, eps=0.5, **kw),
    }


@pytest.mark.parametrize("name", list(_budget_calls()))
def test_convergence_warning_points_at_the_caller(name):
    call = _budget_calls()[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        call()
    warned = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert warned, "a budget of one or two iterations must warn"
    assert all(w.filename == __file__ for w in warned), [w.filename for w in warned]


# --- 3. the copyable kernels ----------------------------------------------------------------

@pytest.mark.parametrize("kernel", [ot._sinkhorn_kernel, ot._sinkhorn_points_kernel],
                         ids=["dense", "points"])
def test_kernels_are_short_and_say_what_to_copy(kernel):
    # a kernel to copy is at most about 40 lines of code (the iteration), the docstring apart
    tree = ast.parse(textwrap.dedent(inspect.getsource(kernel))).body[0]
    code = tree.end_lineno - tree.body[1].lineno + 2  # the def line, then the body
    assert ast.get_docstring(tree) and code <= 40, code
    assert "The part to copy" in kernel.__doc__


def test_dense_kernel_runs_from_its_own_source():
    kernel = load_kernel(ot._sinkhorn_kernel)
    a, b, C, _, _ = problem(9, B=3)
    f, g, n_iter, err = kernel(a, b, C, 0.1, torch.zeros_like(b), 1e-11, 10_000, 10)
    f_ref, g_ref, info = ot.sinkhorn_potentials(a, b, C, 0.1, tol=1e-11, return_info=True)
    assert n_iter == info.n_iter and float(err.max()) == pytest.approx(info.certificate)
    torch.testing.assert_close(f, f_ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-13)
    assert row_error(gibbs(f, g, C, 0.1), np64(a)) <= 1e-11


def test_points_kernel_runs_from_its_own_source():
    kernel = load_kernel(ot._sinkhorn_points_kernel)
    a, b, _, x, y = problem(10, n=11, m=6)
    f, g, n_iter, err = kernel(x, y, a, b, 0.1, torch.zeros_like(b), 1e-11, 10_000, 10, 4)
    f_ref, g_ref = ot.sinkhorn_points(x, y, 0.1, a, b, chunk=4, tol=1e-11)
    torch.testing.assert_close(f, f_ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-13)
    # and the streamed kernel solves the dense problem
    f_d, g_d = ot.sinkhorn_potentials(a, b, ((x[:, None] - y[None]) ** 2).sum(-1), 0.1,
                                      tol=1e-11)
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    assert np.abs(gibbs(f, g, C, 0.1) - gibbs(f_d, g_d, C, 0.1)).sum() <= 1e-9


# --- 4. defaults, empty batches, per-problem strengths --------------------------------------

def test_default_tolerances_are_pinned():
    a, b, C, x, y = problem(11, B=2)
    for dtype, default in ((F64, 1e-9), (torch.float32, 1e-5)):
        at, bt, Ct = a.to(dtype), b.to(dtype), C.to(dtype)
        P, info = ot.sinkhorn(at, bt, Ct, 0.1, return_info=True)
        P2, info2 = ot.sinkhorn(at, bt, Ct, 0.1, tol=default, return_info=True)
        assert torch.equal(P, P2) and info == info2 and info.certificate <= default
        Q, qinfo = ot.quadratic_ot(at, bt, Ct, 0.1, return_info=True)
        Q2, qinfo2 = ot.quadratic_ot(at, bt, Ct, 0.1, tol=default, return_info=True)
        assert torch.equal(Q, Q2) and qinfo == qinfo2
    # the float64 default is tighter than 1e-8: a run at 1e-8 stops earlier here
    _, loose = ot.sinkhorn(a, b, C, 0.1, tol=1e-8, check_every=1, return_info=True)
    _, tight = ot.sinkhorn(a, b, C, 0.1, check_every=1, return_info=True)
    assert loose.n_iter < tight.n_iter


@pytest.mark.parametrize("name, call, shape", [
    ("sinkhorn", lambda a, b, C: ot.sinkhorn(a, b, C, 0.1), (0, 4, 3)),
    ("cost", lambda a, b, C: ot.sinkhorn_cost(a, b, C, 0.1), (0,)),
    ("potentials", lambda a, b, C: ot.sinkhorn_potentials(a, b, C, 0.1)[0], (0, 4)),
    ("exact_ot", lambda a, b, C: ot.exact_ot(a, b, C), (0, 4, 3)),
    ("quadratic_ot", lambda a, b, C: ot.quadratic_ot(a, b, C, 0.1), (0, 4, 3)),
    ("sparse_ot", lambda a, b, C: ot.sparse_ot(a, b, C, 0.1, 2), (0, 4, 3)),
])
def test_zero_size_batch_gives_an_empty_result(name, call, shape):
    C = torch.zeros(0, 4, 3, dtype=F64)
    for a, b in ((torch.full((4,), 0.25, dtype=F64), torch.full((3,), 1 / 3, dtype=F64)),
                 (torch.zeros(0, 4, dtype=F64), torch.zeros(0, 3, dtype=F64))):
        out = call(a, b, C)
        assert out.shape == shape and out.dtype == F64
    _, info = ot.sinkhorn(a, b, C, 0.1, return_info=True)
    assert info == Info(n_iter=0, converged=True, certificate=0.0)


def test_mixed_dtypes_are_converted_to_the_cost():
    a, b, C, _, _ = problem(12)
    P = ot.sinkhorn(a.float(), b.float(), C, 0.1)
    assert P.dtype == F64
    torch.testing.assert_close(P, ot.sinkhorn(a.float().double(), b.float().double(), C, 0.1))


# --- 5. the optional SciPy extra ------------------------------------------------------------

def test_without_scipy_exact_ot_names_the_extra(monkeypatch):
    for mod in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
        monkeypatch.delitem(sys.modules, mod)
    for mod in ("scipy", "scipy.optimize", "scipy.sparse"):
        monkeypatch.setitem(sys.modules, mod, None)  # import scipy -> ImportError
    a, b, C, x, _ = problem(13, n=5, m=5)
    with pytest.raises(ImportError, match=r'pip install "regref\[lp\]"'):
        ot.exact_ot(a, b, C)
    with pytest.raises(ImportError, match=r"regref\[lp\]"):
        ot.monge_gap(x, x.flip(0))
    # everything else runs without SciPy
    assert ot.monge_gap(x, x.flip(0), eps=0.5) > -0.5 * math.log(5)
    assert ot.sinkhorn(a, b, C, 0.1).shape == (5, 5)
    assert ot.quadratic_ot(a, b, C, 0.1).shape == (5, 5)


def test_the_extra_is_declared():
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "scipy" not in " ".join(meta["project"]["dependencies"])
    assert any(r.startswith("scipy") for r in meta["project"]["optional-dependencies"]["lp"])


# --- 6. gradients of the Monge gap ------------------------------------------------------------

@pytest.mark.parametrize("eps", [None, 2.0])
def test_monge_gap_gradient_matches_finite_differences(eps):
    g = np.random.default_rng(14)
    x = torch.as_tensor(g.standard_normal((8, 2)))
    T = (x.flip(0) + 0.1 + 0.05 * torch.as_tensor(g.standard_normal((8, 2)))).requires_grad_()
    kw = {} if eps is None else dict(eps=eps, tol=1e-12)
    ot.monge_gap(x, T, **kw).backward()
    E = torch.as_tensor(g.standard_normal((8, 2)))
    h = 1e-6  # the exact plan is locally constant (a unique assignment), so FD is exact-ish
    fd = (ot.monge_gap(x, T.detach() + h * E, **kw)
          - ot.monge_gap(x, T.detach() - h * E, **kw)) / (2 * h)
    assert abs(float(fd) - float((T.grad * E).sum())) <= 1e-7 * max(1.0, abs(float(fd)))


# --- 7. one table of bad inputs -------------------------------------------------------------

_a, _b, _C, _x, _y = problem(15, n=4, m=3)
_aB, _bB, _CB = (torch.stack([v, v]) for v in (_a, _b, _C))
BAD = [  # (id, call, exception, match)
    ("eps None", lambda: ot.sinkhorn(_a, _b, _C, None), ValueError, r"\beps\b"),
    ("eps str", lambda: ot.sinkhorn(_a, _b, _C, "big"), TypeError, r"\beps\b"),
    ("eps per problem", lambda: ot.sinkhorn(_aB, _bB, _CB, torch.tensor([0.1, 0.2])),
     ValueError, r"\beps\b.*whole batch"),
    ("eps per problem, cost", lambda: ot.sinkhorn_cost(_aB, _bB, _CB, np.array([0.1, 0.2])),
     ValueError, r"\beps\b.*whole batch"),
    ("eps None, points", lambda: ot.sinkhorn_points(_x, _y, None), ValueError, r"\beps\b"),
    ("eps None, divergence", lambda: ot.sinkhorn_divergence(_x, _y, None), ValueError,
     r"\beps\b"),
    ("eps 0, monge_gap", lambda: ot.monge_gap(_x, _x, eps=0.0), ValueError, r"\beps\b"),
    ("max_iter inf", lambda: ot.sinkhorn(_a, _b, _C, 0.1, max_iter=math.inf), ValueError,
     r"\bmax_iter\b"),
    ("max_iter 1.5", lambda: ot.sinkhorn(_a, _b, _C, 0.1, max_iter=1.5), ValueError,
     r"\bmax_iter\b"),
    ("max_iter True", lambda: ot.sinkhorn(_a, _b, _C, 0.1, max_iter=True), ValueError,
     r"\bmax_iter\b"),
    ("max_iter None", lambda: ot.sinkhorn_cost(_a, _b, _C, 0.1, max_iter=None), ValueError,
     r"\bmax_iter\b"),
    ("check_every 0", lambda: ot.sinkhorn(_a, _b, _C, 0.1, check_every=0), ValueError,
     r"\bcheck_every\b"),
    ("check_every 2.0, points", lambda: ot.sinkhorn_points(_x, _y, 0.1, check_every=2.0),
     ValueError, r"\bcheck_every\b"),
    ("max_iter inf, divergence", lambda: ot.sinkhorn_divergence(_x, _y, 0.1, max_iter=math.inf),
     ValueError, r"\bmax_iter\b"),
    ("chunk inf", lambda: ot.sinkhorn_points(_x, _y, 0.1, chunk=math.inf), ValueError,
     r"\bchunk\b"),
    ("chunk 2.5", lambda: ot.sinkhorn_points(_x, _y, 0.1, chunk=2.5), ValueError, r"\bchunk\b"),
    ("unknown option", lambda: ot.sinkhorn_cost(_a, _b, _C, 0.1, bogus=1), TypeError, "bogus"),
    ("C transposed", lambda: ot.sinkhorn(_a, _b, _C.T, 0.1), ValueError, r"\bC\b.*transposed"),
    ("C transposed, lists", lambda: ot.quadratic_ot(_a.tolist(), _b.tolist(), _C.T, 1.0),
     ValueError, r"\bC\b.*transposed"),
    ("C (0, 0)", lambda: ot.sinkhorn(_a[:0], _b[:0], _C[:0, :0], 0.1), ValueError, r"\bC\b"),
    ("lam None", lambda: ot.quadratic_ot(_a, _b, _C, None), ValueError, r"\blam\b"),
    ("lam per problem", lambda: ot.quadratic_ot(_aB, _bB, _CB, torch.tensor([1.0, 2.0])),
     ValueError, r"\blam\b.*whole batch"),
    ("lam -1", lambda: ot.sparse_ot(_a, _b, _C, -1.0, 2), ValueError, r"\blam\b"),
    ("lam nan", lambda: ot.quadratic_ot(_a, _b, _C, math.nan), ValueError, r"\blam\b"),
    ("gamma keyword", lambda: ot.quadratic_ot(_a, _b, _C, gamma=1.0), TypeError, "gamma"),
    ("max_iter inf, quadratic", lambda: ot.quadratic_ot(_a, _b, _C, 1.0, max_iter=math.inf),
     ValueError, r"\bmax_iter\b"),
    ("max_iter True, sparse", lambda: ot.sparse_ot(_a, _b, _C, 1.0, 2, max_iter=True),
     ValueError, r"\bmax_iter\b"),
    ("k inf", lambda: ot.sparse_ot(_a, _b, _C, 1.0, math.inf), ValueError, r"\bk\b"),
    ("k True", lambda: ot.sparse_ot(_a, _b, _C, 1.0, True), ValueError, r"\bk\b"),
    ("k str", lambda: ot.sparse_ot(_a, _b, _C, 1.0, "2"), ValueError, r"\bk\b"),
    ("tol nan, quadratic", lambda: ot.quadratic_ot(_a, _b, _C, 1.0, tol=math.nan), ValueError,
     r"\btol\b"),
    ("mass, exact_ot", lambda: ot.exact_ot(_a * 2, _b, _C), ValueError, "mass"),
    ("T_x shape, monge_gap", lambda: ot.monge_gap(_x, _x[:2]), ValueError, r"\bT_x\b"),
]


@pytest.mark.parametrize("call, exception, match", [row[1:] for row in BAD],
                         ids=[row[0] for row in BAD])
def test_bad_input_table(call, exception, match):
    with pytest.raises(exception, match=match):
        call()


# --- 8. GPU -----------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_matches_cpu_regularized_and_divergence():
    a, b, C, x, y = problem(16, B=3, n=20, m=15)
    for fn in (lambda *t: ot.quadratic_ot(*t, 0.05), lambda *t: ot.sparse_ot(*t, 0.05, 8)):
        cpu = fn(a, b, C)
        gpu = fn(a.cuda(), b.cuda(), C.cuda())
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-8)
    s_cpu = ot.sinkhorn_divergence(x[0], y[0], 0.1, tol=1e-11)
    s_gpu = ot.sinkhorn_divergence(x[0].cuda(), y[0].cuda(), 0.1, tol=1e-11)
    assert abs(float(s_gpu) - float(s_cpu)) <= 1e-9
    f, g, n_iter, err = ot._sinkhorn_kernel(a.cuda(), b.cuda(), C.cuda(), 0.1,
                                            torch.zeros_like(b.cuda()), 1e-11, 10_000, 10)
    f_ref, g_ref = ot.sinkhorn_potentials(a, b, C, 0.1, tol=1e-11)
    torch.testing.assert_close(f.cpu(), f_ref, rtol=0, atol=1e-9)
