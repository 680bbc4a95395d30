"""regref.curvature: Hessian-vector products, the top Hessian eigenvalue and per-sample
gradients against the exact Hessian (``torch.func.hessian``) and a Python loop."""

from __future__ import annotations

import pytest
import torch
from conftest import load_kernel

from regref import ConvergenceWarning, curvature

F64 = torch.float64


def _mlp_loss(seed=0, n=20, d=3, h=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randn(n, generator=g, dtype=F64)
    params = {"W": torch.randn(h, d, generator=g, dtype=F64),
              "v": torch.randn(h, generator=g, dtype=F64)}

    def loss(p, X=X, y=y):
        return 0.5 * ((torch.tanh(X @ p["W"].T) @ p["v"] - y) ** 2).mean()

    return loss, params, X, y


def _flat_hessian(loss, params):
    flat = torch.cat([params["W"].reshape(-1), params["v"]])
    nW = params["W"].numel()

    def f(z):
        return loss({"W": z[:nW].view_as(params["W"]), "v": z[nW:]})

    return torch.func.hessian(f)(flat), flat


def test_hvp_equals_exact_hessian_times_v():
    loss, params, _, _ = _mlp_loss()
    H, _ = _flat_hessian(loss, params)
    g = torch.Generator().manual_seed(1)
    v = {"W": torch.randn(4, 3, generator=g, dtype=F64),
         "v": torch.randn(4, generator=g, dtype=F64)}
    Hv = curvature.hvp(loss, params, v)
    flat = torch.cat([Hv["W"].reshape(-1), Hv["v"]])
    expected = H @ torch.cat([v["W"].reshape(-1), v["v"]])
    torch.testing.assert_close(flat, expected, rtol=1e-12, atol=1e-13)


def test_top_eig_equals_largest_magnitude_eigenvalue():
    loss, params, _, _ = _mlp_loss(seed=2)
    H, _ = _flat_hessian(loss, params)
    evals = torch.linalg.eigvalsh(H)
    top = evals[evals.abs().argmax()]
    lam, vec, info = curvature.hessian_top_eig(loss, params, tol=1e-10, max_iter=5000,
                                              generator=torch.Generator().manual_seed(0),
                                              return_info=True)
    assert info.converged and info.certificate <= 1e-10
    # the residual bound: some eigenvalue is within tol*|lam| of lam, and it is the top one
    assert abs(float(lam - top)) <= 1e-9 * abs(float(top))
    flat = torch.cat([vec["W"].reshape(-1), vec["v"]])
    assert abs(float(torch.linalg.vector_norm(flat)) - 1) < 1e-12


def test_top_eig_kernel_pastes_alone():
    A = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=F64))
    kernel = load_kernel(curvature._top_eig_kernel)
    v = torch.ones(3, dtype=F64) / 3 ** 0.5
    theta, _, res, _ = kernel(lambda x: A @ x, v, 1e-10, 1000)
    assert abs(float(theta) - 3.0) < 1e-9 and res <= 1e-10


def test_top_eig_warns_at_max_iter():
    loss, params, _, _ = _mlp_loss(seed=3)
    with pytest.warns(ConvergenceWarning) as record:
        curvature.hessian_top_eig(loss, params, tol=1e-14, max_iter=2,
                                  generator=torch.Generator().manual_seed(0))
    assert record[0].filename == __file__


def test_per_sample_grads_equal_a_loop():
    loss, params, X, y = _mlp_loss(seed=4)
    grads = curvature.per_sample_grads(lambda p, X, y: loss(p, X, y), params, X, y)
    for i in range(X.shape[0]):
        gi = torch.func.grad(loss)(params, X[i:i + 1], y[i:i + 1])
        for k in params:
            torch.testing.assert_close(grads[k][i], gi[k], rtol=1e-12, atol=1e-14)


BAD = [
    (lambda: curvature.hvp(None, torch.zeros(2), torch.zeros(2)), TypeError, "loss_fn"),
    (lambda: curvature.hvp(lambda w: w.sum(), torch.zeros(2), torch.zeros(3)), ValueError, "v"),
    (lambda: curvature.hvp(lambda w: w.sum(), "x", "x"), TypeError, "params"),
    (lambda: curvature.hessian_top_eig(lambda w: w.sum(), torch.zeros(2), max_iter=0),
     ValueError, "max_iter"),
    (lambda: curvature.hessian_top_eig(lambda w: w.sum(), torch.zeros(2), max_iter=1.5),
     (ValueError, TypeError), "max_iter"),
    (lambda: curvature.hessian_top_eig(lambda w: w.sum(), torch.zeros(2), generator=1),
     TypeError, "generator"),
    (lambda: curvature.hessian_top_eig(lambda w: w.sum(), torch.zeros(2, dtype=torch.long)),
     TypeError, "params"),
    (lambda: curvature.per_sample_grads(lambda w, x: w.sum(), torch.zeros(2)), ValueError, "batch"),
    (lambda: curvature.per_sample_grads(lambda w, x, y: w.sum(), torch.zeros(2),
                                        torch.zeros(3, 2), torch.zeros(4)), ValueError, "batch"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.gpu
def test_gpu_matches_cpu():
    loss, params, X, y = _mlp_loss(seed=5)
    lam_cpu, _ = curvature.hessian_top_eig(loss, params, generator=torch.Generator().manual_seed(0))
    pc = {k: t.cuda() for k, t in params.items()}
    Xc, yc = X.cuda(), y.cuda()
    lam_gpu, _ = curvature.hessian_top_eig(lambda p: loss(p, Xc, yc), pc,
                                           generator=torch.Generator().manual_seed(0))
    assert abs(float(lam_gpu.cpu() - lam_cpu)) <= 1e-6 * abs(float(lam_cpu))
