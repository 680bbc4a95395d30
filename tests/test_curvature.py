"""regref.curvature: Hessian-vector products, the top Hessian eigenvalue and per-sample
gradients against the exact Hessian (``torch.func.hessian``) and a Python loop; trace and
row-norm estimators against exact values with tolerances from their variances; gradient
penalties, SAM and Jacobian penalties against hand computations; Gram-iteration bounds
against SVDs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import load_kernel
from hypothesis import given, settings
from hypothesis import strategies as st

from regref import ConvergenceWarning, curvature, lowrank

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


def _flat_loss(loss, params):
    """The loss as a function of one flat vector, and that vector."""
    flat = torch.cat([params["W"].reshape(-1), params["v"]])
    nW = params["W"].numel()

    def f(z):
        return loss({"W": z[:nW].view_as(params["W"]), "v": z[nW:]})

    return f, flat


def _psd(D=40, decay=1.0, seed=0):
    """A PSD matrix with eigenvalues i^(-decay) in a random basis."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64)).Q
    return (Q * torch.arange(1, D + 1, dtype=F64) ** -decay) @ Q.T


# ------------------------------------------------------------------ trace estimators


def test_hutchinson_against_exact_trace_within_five_standard_deviations():
    loss, params, _, _ = _mlp_loss(seed=6)
    H, _ = _flat_hessian(loss, params)
    m = 400
    for probe in ("rademacher", "gaussian"):
        est, se = curvature.hutchinson_trace(loss, params, m, probe=probe,
                                             generator=torch.Generator().manual_seed(1))
        off = (H**2).sum() - (torch.diag(H) ** 2).sum() * (probe == "rademacher")
        sd = math.sqrt(2 * float(off) / m)  # the theorem's variance
        assert abs(float(est - torch.trace(H))) <= 5 * sd
        assert 0.7 < float(se) / sd < 1.3  # the reported error estimates it


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_kernel_unbiased_with_the_predicted_variance(probe):
    A = torch.randn(12, 12, generator=torch.Generator().manual_seed(2), dtype=F64)
    A = A + A.T
    reps, m = 4000, 3
    G = curvature._probes((reps, m, 12), probe, torch.Generator().manual_seed(3), A)
    est, _ = curvature._hutchpp_kernel(lambda V: V @ A, G[:, :0], G)
    var = 2 * float((A**2).sum() - (torch.diag(A) ** 2).sum() * (probe == "rademacher")) / m
    assert abs(float(est.mean() - torch.trace(A))) <= 5 * math.sqrt(var / reps)
    # the sample variance of 4000 draws is within 15% of the exact one (its own sd is ~5%
    # for Gaussian-like draws; heavier tails allowed)
    assert abs(float(est.var()) / var - 1) < 0.15


def test_hutchpp_is_exact_when_the_sketch_spans_everything():
    loss, params, _, _ = _mlp_loss(seed=7)  # D = 16 parameters
    H, _ = _flat_hessian(loss, params)
    est, se = curvature.hutchpp_trace(loss, params, 51,
                                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(est, torch.trace(H), rtol=1e-10, atol=1e-12)
    assert float(se) < 1e-10


def test_hutchpp_unbiased_and_better_than_hutchinson_on_a_decaying_spectrum():
    A = _psd(60, decay=1.5)
    reps, N = 3000, 30
    k = N // 3
    Z = curvature._probes((reps, N, 60), "rademacher", torch.Generator().manual_seed(4), A)
    pp, _ = curvature._hutchpp_kernel(lambda V: V @ A, Z[:, :k], Z[:, k:N - k])
    hu, _ = curvature._hutchpp_kernel(lambda V: V @ A, Z[:, :0], Z)
    tr = float(torch.trace(A))
    for est in (pp, hu):
        assert abs(float(est.mean()) - tr) <= 5 * float(est.std()) / math.sqrt(reps)
    assert float(pp.std()) < float(hu.std()) / 3


def test_hutchpp_public_matches_its_kernel_on_a_quadratic():
    A = _psd(20, decay=1.0, seed=5)
    est, se = curvature.hutchpp_trace(lambda w: 0.5 * w @ A @ w, torch.zeros(20, dtype=F64),
                                      12, generator=torch.Generator().manual_seed(9))
    Z = curvature._probes((8, 20), "rademacher", torch.Generator().manual_seed(9), A)
    ref, ref_se = curvature._hutchpp_kernel(lambda V: V @ A, Z[:4], Z[4:])
    torch.testing.assert_close((est, se), (ref, ref_se), rtol=1e-12, atol=1e-12)


def test_trace_kernels_paste_alone():
    A = _psd(10)
    kernel = load_kernel(curvature._hutchpp_kernel)
    Z = torch.randn(2, 9, 10, generator=torch.Generator().manual_seed(0), dtype=F64)
    got = kernel(lambda V: V @ A, Z[:, :3], Z[:, 3:])
    ref = curvature._hutchpp_kernel(lambda V: V @ A, Z[:, :3], Z[:, 3:])
    torch.testing.assert_close(got, ref)
    rows = load_kernel(curvature._row_norms_kernel)
    B = torch.randn(7, 10, generator=torch.Generator().manual_seed(1), dtype=F64)
    S, G = Z[0, :3, :7], Z[0, 3:]
    got = rows(lambda V: V @ B.T, lambda U: U @ B, S, G)
    torch.testing.assert_close(got, curvature._row_norms_kernel(lambda V: V @ B.T,
                                                                lambda U: U @ B, S, G))


# ------------------------------------------------------------------ gradient penalty


def test_gradient_penalty_double_backprop_equals_g_plus_lam_H_g():
    loss, params, _, _ = _mlp_loss(seed=8)
    f, flat = _flat_loss(loss, params)
    H = torch.func.hessian(f)(flat)
    g = torch.func.grad(f)(flat)
    out = curvature.gradient_penalty_grad(loss, params, 0.3, method="double_backprop")
    got = torch.cat([out["W"].reshape(-1), out["v"]])
    torch.testing.assert_close(got, g + 0.3 * H @ g, rtol=1e-12, atol=1e-13)


def test_gradient_penalty_finite_difference_error_is_first_order_in_h():
    loss, params, _, _ = _mlp_loss(seed=9)
    exact = curvature.gradient_penalty_grad(loss, params, 0.5, method="double_backprop")

    def err(h):
        fd = curvature.gradient_penalty_grad(loss, params, 0.5, h=h)
        return math.sqrt(sum(float(((fd[k] - exact[k]) ** 2).sum()) for k in fd))

    errors = [err(h) for h in (1e-2, 5e-3, 2.5e-3)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(1.8 < r < 2.2 for r in ratios), ratios  # O(h), not O(h^2)
    # the theorem's bound lam * h * M3 * ||g||^2 / 2 is not needed: the ratio pins the order


def test_gradient_penalty_with_lam_zero_is_the_gradient():
    loss, params, _, _ = _mlp_loss(seed=10)
    g = torch.func.grad(loss)(params)
    for method in ("finite_difference", "double_backprop"):
        out = curvature.gradient_penalty_grad(loss, params, 0.0, method=method)
        for k in g:
            torch.testing.assert_close(out[k], g[k], rtol=1e-12, atol=0)


# ------------------------------------------------------------------ SAM and perturbations


def test_sam_step_equals_a_hand_computation():
    A = _psd(5, seed=11)
    w = torch.arange(1.0, 6.0, dtype=F64)
    lr, rho = 0.1, 0.3
    g = A @ w
    delta = rho * g / g.norm()
    expected = w - lr * A @ (w + delta)
    new, value = curvature.sam_step(lambda u: 0.5 * u @ A @ u, w, lr, rho)
    torch.testing.assert_close(new, expected, rtol=1e-13, atol=1e-14)
    assert float(value) == pytest.approx(float(0.5 * w @ A @ w), rel=1e-14)
    plain, _ = curvature.sam_step(lambda u: 0.5 * u @ A @ u, w, lr, 0.0)
    torch.testing.assert_close(plain, w - lr * g)


def test_perturbation_respects_its_balls():
    loss, params, _, _ = _mlp_loss(seed=12)
    d = curvature.adversarial_weight_perturbation(loss, params, 0.2, n_steps=4)
    total = math.sqrt(sum(float((t**2).sum()) for t in d.values()))
    assert total <= 0.2 * (1 + 1e-12)
    d = curvature.adversarial_weight_perturbation(loss, params, 0.1, n_steps=3, relative=True)
    for k in params:
        assert float(d[k].norm()) <= 0.1 * float(params[k].norm()) * (1 + 1e-12)
    # a linear loss: every ascent step points along the gradient, so n steps = one step
    a = torch.tensor([1.0, -2.0, 2.0], dtype=F64)
    d = curvature.adversarial_weight_perturbation(lambda u: a @ u, torch.zeros(3, dtype=F64),
                                                  0.6, n_steps=5)
    torch.testing.assert_close(d, 0.6 * a / 3)


def test_sam_is_the_finite_difference_penalty_to_first_order():
    loss, params, _, _ = _mlp_loss(seed=13)
    g = torch.func.grad(loss)(params)
    gnorm = math.sqrt(sum(float((t**2).sum()) for t in g.values()))
    errs = []
    for rho in (1e-3, 5e-4):
        lr = 1.0
        new, _ = curvature.sam_step(loss, params, lr, rho)
        sam_grad = {k: params[k] - new[k] for k in params}
        h = rho / gnorm
        fd = curvature.gradient_penalty_grad(loss, params, h, h=h)  # lam / h = 1
        errs.append(math.sqrt(sum(float(((sam_grad[k] - fd[k]) ** 2).sum()) for k in g)))
    assert errs[0] < 1e-12 and errs[1] < 1e-12  # identical: the same two gradients


# ------------------------------------------------------------------ Jacobian penalties


def _jac_model(seed=14):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(4, 3, generator=g, dtype=F64)
    x = torch.randn(6, 3, generator=g, dtype=F64)
    return W, x


def test_jacobian_penalty_unbiased_within_five_standard_deviations():
    W, x = _jac_model()
    f = lambda z: torch.tanh(z @ W.T)  # noqa: E731
    J = torch.func.vmap(torch.func.jacrev(f))(x)  # (6, 4, 3), block diagonal overall
    fro2 = float((J**2).sum())
    var1 = 2 * sum(float((Ji @ Ji.T).pow(2).sum()) for Ji in J)  # 2 ||J J^T||_F^2
    n = 4000
    est = curvature.jacobian_penalty(f, x, n, generator=torch.Generator().manual_seed(0))
    assert abs(float(est) - fro2) <= 5 * math.sqrt(var1 / n)


def test_jacobian_penalty_gradcheck_in_the_weights():
    W, x = _jac_model(15)

    def pen(W):
        return curvature.jacobian_penalty(lambda z: torch.tanh(z @ W.T), x, 3,
                                          generator=torch.Generator().manual_seed(1))

    assert torch.autograd.gradcheck(pen, (W.clone().requires_grad_(),))


def test_two_to_inf_exact_when_the_sketch_spans_the_row_space():
    B = torch.randn(8, 3, generator=torch.Generator().manual_seed(16), dtype=F64)
    norm, sq, se = curvature.jacobian_two_to_inf(lambda z: B @ z, torch.zeros(3, dtype=F64),
                                                 12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sq, (B**2).sum(1), rtol=1e-10, atol=1e-12)
    assert abs(float(norm) - float(B.norm(dim=1).max())) < 1e-10
    assert float(se.max()) < 1e-10


@pytest.mark.parametrize("k", [0, 4])
def test_row_norms_kernel_unbiased(k):
    g = torch.Generator().manual_seed(17)
    B = torch.randn(10, 30, generator=g, dtype=F64) * torch.arange(1, 31, dtype=F64) ** -1.0
    reps = 3000
    S = torch.randn(reps, k, 10, generator=g, dtype=F64)
    G = torch.randn(reps, 6, 30, generator=g, dtype=F64)
    est, _ = curvature._row_norms_kernel(lambda V: V @ B.T, lambda U: U @ B, S, G)
    exact = (B**2).sum(1)
    bound = 5 * est.std(0) / math.sqrt(reps)
    assert bool(((est.mean(0) - exact).abs() <= bound).all())


def test_two_to_inf_of_a_network_against_the_full_jacobian():
    W, x = _jac_model(18)
    f = lambda z: torch.tanh(z @ W.T)  # noqa: E731
    J = torch.func.jacrev(f)(x).reshape(24, 18)
    norm, sq, se = curvature.jacobian_two_to_inf(f, x, 3000, sketch=False,
                                                 generator=torch.Generator().manual_seed(0))
    exact = (J**2).sum(1)
    assert bool(((sq.reshape(-1) - exact).abs() <= 5 * se.reshape(-1) + 1e-12).all())
    # the returned norm is the exact norm of the chosen row: a certified lower bound,
    # equal to the true norm when the largest estimate is on the largest row
    row = int(sq.reshape(-1).argmax())
    assert abs(float(norm) - float(exact[row].sqrt())) < 1e-12
    assert float(norm) <= float(exact.max().sqrt()) * (1 + 1e-12)


# ------------------------------------------------------------------ Gram iteration


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 7), n=st.integers(1, 7), seed=st.integers(0, 10_000),
       t=st.integers(1, 6))
def test_gram_iterates_are_upper_bounds_within_the_theorem(m, n, seed, t):
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    s = torch.linalg.svdvals(W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bound = float(curvature.gram_spectral_norm(W, tol=1e-300, max_iter=t))
    r = int((s > 1e-12 * s[0]).sum())
    assert float(s[0]) * (1 - 1e-12) <= bound <= float(s[0]) * r ** (1 / 2 ** (t + 1)) * (
        1 + 1e-12)


def test_gram_converges_to_the_spectral_norm_batched_and_complex():
    g = torch.Generator().manual_seed(19)
    W = torch.randn(6, 9, 5, generator=g, dtype=F64)
    bound, info = curvature.gram_spectral_norm(W, tol=1e-12, return_info=True)
    assert info.converged and info.certificate <= 1e-12
    torch.testing.assert_close(bound, torch.linalg.matrix_norm(W, 2), rtol=1e-11, atol=0)
    Wc = torch.complex(W, torch.randn(6, 9, 5, generator=g, dtype=F64))
    torch.testing.assert_close(curvature.gram_spectral_norm(Wc, tol=1e-12),
                               torch.linalg.matrix_norm(Wc, 2), rtol=1e-11, atol=0)


def test_conv_bound_matches_lowrank_and_pastes_alone():
    K = torch.randn(3, 6, 4, 3, 3, generator=torch.Generator().manual_seed(20), dtype=F64)
    exact = lowrank.conv_spectral_norm(K, 12)
    bound, info = curvature.conv_spectral_bound(K, 12, tol=1e-12, return_info=True)
    assert info.converged and bool((bound >= exact * (1 - 1e-12)).all())
    torch.testing.assert_close(bound, exact, rtol=1e-11, atol=0)
    kernel = load_kernel(curvature._gram_kernel)
    Khat = torch.fft.fft2(K, s=(12, 12)).movedim((-4, -3), (-2, -1))
    upper, lower, gap, _ = kernel(Khat, 1e-12, 30)
    torch.testing.assert_close(upper.amax((-2, -1)), exact, rtol=1e-11, atol=0)
    assert bool((lower.amax((-2, -1)) <= exact * (1 + 1e-12)).all()) and gap <= 1e-12


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
    (lambda: curvature.hutchinson_trace(lambda w: w.sum(), torch.zeros(2), 1),
     ValueError, "n_probes"),
    (lambda: curvature.hutchinson_trace(lambda w: w.sum(), torch.zeros(2), 2.0),
     ValueError, "n_probes"),
    (lambda: curvature.hutchinson_trace(lambda w: w.sum(), torch.zeros(2), probe="normal"),
     ValueError, "probe"),
    (lambda: curvature.hutchinson_trace(None, torch.zeros(2)), TypeError, "loss_fn"),
    (lambda: curvature.hutchpp_trace(lambda w: w.sum(), torch.zeros(2), 3),
     ValueError, "n_matvecs"),
    (lambda: curvature.hutchpp_trace(lambda w: w.sum(), torch.zeros(2), generator=0),
     TypeError, "generator"),
    (lambda: curvature.hutchpp_trace(lambda w: w.sum(), torch.zeros(2, dtype=torch.long)),
     TypeError, "params"),
    (lambda: curvature.gradient_penalty_grad(lambda w: w.sum(), torch.zeros(2), -1.0),
     ValueError, "lam"),
    (lambda: curvature.gradient_penalty_grad(lambda w: w.sum(), torch.zeros(2), 1.0, h=0.0),
     ValueError, "h"),
    (lambda: curvature.gradient_penalty_grad(lambda w: w.sum(), torch.zeros(2), 1.0,
                                             method="exact"), ValueError, "method"),
    (lambda: curvature.sam_step(lambda w: w.sum(), torch.zeros(2), 0.0, 0.1), ValueError, "lr"),
    (lambda: curvature.sam_step(lambda w: w.sum(), torch.zeros(2), 0.1, math.nan),
     ValueError, "rho"),
    (lambda: curvature.adversarial_weight_perturbation(lambda w: w.sum(), torch.zeros(2), 0.1,
                                                       n_steps=0), ValueError, "n_steps"),
    (lambda: curvature.jacobian_penalty(None, torch.zeros(2)), TypeError, "f"),
    (lambda: curvature.jacobian_penalty(lambda x: x, torch.zeros(2), 0), ValueError, "n_proj"),
    (lambda: curvature.jacobian_penalty(lambda x: x, "a"), TypeError, "x"),
    (lambda: curvature.jacobian_two_to_inf(lambda x: x, torch.zeros(2), 3),
     ValueError, "n_matvecs"),
    (lambda: curvature.jacobian_two_to_inf(lambda x: x, torch.zeros(2), 1, sketch=False),
     ValueError, "n_matvecs"),
    (lambda: curvature.gram_spectral_norm(torch.zeros(3)), ValueError, "W"),
    (lambda: curvature.gram_spectral_norm(torch.tensor([[1.0, math.inf]])), ValueError, "W"),
    (lambda: curvature.gram_spectral_norm(torch.eye(2), max_iter=0), ValueError, "max_iter"),
    (lambda: curvature.gram_spectral_norm(torch.eye(2), tol=-1.0), ValueError, "tol"),
    (lambda: curvature.conv_spectral_bound(torch.zeros(2, 3, 3), 8), ValueError, "kernel"),
    (lambda: curvature.conv_spectral_bound(torch.zeros(1, 1, 5, 5), 4), ValueError, "kernel"),
    (lambda: curvature.conv_spectral_bound(torch.zeros(1, 1, 3, 3), 0), ValueError, "n"),
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


@pytest.mark.gpu
def test_gpu_trace_and_conv_bound_match_cpu():
    loss, params, X, y = _mlp_loss(seed=21)
    cpu = curvature.hutchpp_trace(loss, params, 12, generator=torch.Generator().manual_seed(0))
    pc = {k: t.cuda() for k, t in params.items()}
    Xc, yc = X.cuda(), y.cuda()
    gpu = curvature.hutchpp_trace(lambda p: loss(p, Xc, yc), pc, 12,
                                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-10, atol=1e-12)
    K = torch.randn(2, 8, 8, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(curvature.conv_spectral_bound(K.cuda(), 16).cpu(),
                               curvature.conv_spectral_bound(K, 16), rtol=1e-10, atol=0)
