"""regref.transfer: per-sample gradients against a loop and opacus, the three Fisher
estimates against their closed forms on logistic regression, the Fisher as the expected
Hessian, EWC on quadratic tasks against the joint solution (exact), the KL-regularized
policy against numerical optimization, merging, the init-space penalties, the data-parallel
Fisher (2 gloo processes) and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import load_kernel, run_distributed

from regref import curvature, transfer

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _logistic(seed=0, n=40, p=3):
    """Logistic regression written as a 2-class softmax with logits (0, x w)."""
    g = _gen(seed)
    X = torch.randn(n, p, generator=g, dtype=F64)
    w = 0.7 * torch.randn(p, generator=g, dtype=F64)
    y = (torch.rand(n, generator=g, dtype=F64) < 0.5).long()

    def logits(w, X):
        return torch.stack([torch.zeros_like(X[:, 0]), X @ w], dim=1)

    return logits, w, X, y


def _mlp(seed=0, n=24, d=4, h=5, C=3):
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randint(0, C, (n,), generator=g)
    params = {"W1": 0.5 * torch.randn(h, d, generator=g, dtype=F64),
              "b1": 0.1 * torch.randn(h, generator=g, dtype=F64),
              "W2": 0.5 * torch.randn(C, h, generator=g, dtype=F64)}

    def logits(p, X):
        return torch.tanh(X @ p["W1"].T + p["b1"]) @ p["W2"].T

    return logits, params, X, y


def _flat(tree):
    if isinstance(tree, torch.Tensor):
        return tree.reshape(-1)
    return torch.cat([tree[k].reshape(-1) for k in sorted(tree)]) if isinstance(tree, dict) \
        else torch.cat([t.reshape(-1) for t in tree])


# ----------------------------------------------------------------------------- per-sample

@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_empirical_fisher_equals_loop_and_opacus():
    from opacus import GradSampleModule

    g = _gen(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    net = net.double()
    X = torch.randn(16, 4, generator=g, dtype=F64)
    y = torch.randint(0, 3, (16,), generator=g)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}

    def logits(p, X):
        return torch.func.functional_call(net, p, (X,))

    fisher = transfer.fisher_diagonal(logits, params, X, y, kind="empirical")
    # a Python loop over samples
    loop = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(16):
        gi = torch.func.grad(lambda p, i=i: torch.nn.functional.cross_entropy(
            logits(p, X[i:i + 1]), y[i:i + 1]))(params)
        for k in loop:
            loop[k] += gi[k] ** 2 / 16
    psg = curvature.per_sample_grads(
        lambda p, X, y: torch.nn.functional.cross_entropy(logits(p, X), y), params, X, y)
    # opacus computes per-sample gradients with module hooks
    gsm = GradSampleModule(net, loss_reduction="sum")
    torch.nn.functional.cross_entropy(gsm(X), y, reduction="sum").backward()
    for k, prm in net.named_parameters():
        torch.testing.assert_close(fisher[k], loop[k], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(fisher[k], (prm.grad_sample ** 2).mean(0), rtol=1e-10,
                                   atol=1e-14)
        torch.testing.assert_close(psg[k], prm.grad_sample, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- Fisher kinds

def test_fisher_kinds_closed_forms_on_logistic_regression():
    logits, w, X, y = _logistic()
    prob = torch.sigmoid(X @ w)
    true = (prob * (1 - prob))[:, None] * X ** 2
    torch.testing.assert_close(transfer.fisher_diagonal(logits, w, X, n_samples=None),
                               true.mean(0), rtol=1e-12, atol=1e-15)
    emp = transfer.fisher_diagonal(logits, w, X, y, kind="empirical")
    torch.testing.assert_close(emp, (((prob - y) ** 2)[:, None] * X ** 2).mean(0),
                               rtol=1e-12, atol=1e-15)
    for B in (1, 4, 8):
        mb, stats = transfer.fisher_diagonal(logits, w, X, y, kind="minibatch_squared",
                                             batch_size=B, return_stderr=True)
        G = ((prob - y)[:, None] * X).reshape(40 // B, B, 3).mean(1)
        torch.testing.assert_close(mb, (G ** 2).mean(0), rtol=1e-12, atol=1e-15)
        assert stats["n"] == 40 // B
    torch.testing.assert_close(
        transfer.fisher_diagonal(logits, w, X, y, kind="minibatch_squared", batch_size=1),
        emp, rtol=1e-12, atol=1e-15)


def test_true_fisher_monte_carlo_within_five_standard_errors():
    logits, w, X, _ = _logistic(seed=2, n=200)
    exact = transfer.fisher_diagonal(logits, w, X, n_samples=None)
    for S in (1, 8):
        est, stats = transfer.fisher_diagonal(logits, w, X, n_samples=S, generator=_gen(S),
                                              return_stderr=True)
        assert stats["n"] == 200
        assert bool(((est - exact).abs() <= 5 * stats["stderr"]).all())
        assert bool((stats["stderr"] > 0).all())
    # the standard error is that of the mean over units: std / sqrt(n)
    prob = torch.sigmoid(X @ w)
    units = (prob * (1 - prob))[:, None] * X ** 2
    _, st = transfer.fisher_diagonal(logits, w, X, n_samples=None, return_stderr=True)
    torch.testing.assert_close(st["stderr"], units.std(0) / 200 ** 0.5, rtol=1e-10,
                               atol=1e-15)


def test_true_fisher_is_the_expected_hessian_of_the_nll():
    logits, params, X, _ = _mlp(seed=3)
    names = sorted(params)
    sizes = [params[k].numel() for k in names]
    flat0 = _flat(params)

    def unflat(z):
        return {k: c.view_as(params[k]) for k, c in zip(names, torch.split(z, sizes),
                                                         strict=True)}

    probs = torch.softmax(logits(params, X), 1)
    diag = torch.zeros_like(flat0)
    for c in range(3):   # E_{y ~ p} of the Hessian of -log p(y | x), averaged over x
        def nll(z, c=c):
            lp = torch.log_softmax(logits(unflat(z), X), 1)[:, c]
            return -(probs[:, c].detach() * lp).sum() / X.shape[0]

        diag += torch.diagonal(torch.func.hessian(nll)(flat0))
    fisher = transfer.fisher_diagonal(logits, params, X, n_samples=None)
    torch.testing.assert_close(_flat(fisher), diag, rtol=1e-10, atol=1e-13)


def test_fisher_kernel_pastes_alone():
    logits, w, X, y = _logistic(seed=4)
    kernel = load_kernel(transfer._fisher_kernel)

    def grad_fn(Xr, yr):
        return torch.func.vmap(torch.func.grad(lambda w, x, t: torch.nn.functional
                                               .cross_entropy(logits(w, x[None]), t[None])),
                               in_dims=(None, 0, 0))(w, Xr, yr)

    s, ss, m = kernel(grad_fn, X, y[:, None], torch.ones(40, 1, dtype=F64), 1)
    torch.testing.assert_close(s / m, transfer.fisher_diagonal(logits, w, X, y,
                                                               kind="empirical"))
    assert m == 40 and bool((ss >= 0).all())


def test_fisher_keeps_float32():
    logits, w, X, y = _logistic(seed=5)
    f = transfer.fisher_diagonal(logits, w.float(), X.float(), y, kind="empirical")
    assert f.dtype == torch.float32


# ----------------------------------------------------------------------------- EWC

def test_ewc_on_quadratic_tasks_equals_joint_minimizer_exactly():
    g = _gen(6)
    p, nA, nB = 5, 30, 20
    XA, XB = torch.randn(nA, p, generator=g, dtype=F64), torch.randn(nB, p, generator=g,
                                                                        dtype=F64)
    yA, yB = torch.randn(nA, generator=g, dtype=F64), torch.randn(nB, generator=g, dtype=F64)

    def loss_a(w):
        return 0.5 * ((XA @ w - yA) ** 2).mean()

    def loss_b(w):
        return 0.5 * ((XB @ w - yB) ** 2).mean()

    w_a = torch.linalg.lstsq(XA, yA[:, None]).solution[:, 0]
    H_a = torch.func.hessian(loss_a)(w_a)            # exact: XA^T XA / nA

    def ewc_objective(w):
        return loss_b(w) + transfer.ewc_penalty(w, w_a, H_a, lam=nA / nB)

    # a quadratic: one Newton step from anywhere lands on its minimizer
    w0 = torch.zeros(p, dtype=F64)
    step = torch.linalg.solve(torch.func.hessian(ewc_objective)(w0),
                              torch.func.grad(ewc_objective)(w0))
    w_ewc = w0 - step
    X, Y = torch.cat([XA, XB]), torch.cat([yA, yB])
    w_joint = torch.linalg.lstsq(X, Y[:, None]).solution[:, 0]
    torch.testing.assert_close(w_ewc, w_joint, rtol=1e-12, atol=1e-12)


def test_ewc_with_unit_fisher_is_l2_sp_and_gradcheck():
    logits, params, _, _ = _mlp(seed=7)
    ref = {k: v + 0.1 for k, v in params.items()}
    ones = {k: torch.ones_like(v) for k, v in params.items()}
    torch.testing.assert_close(transfer.ewc_penalty(params, ref, ones, lam=0.3),
                               transfer.l2_sp_penalty(params, ref, lam=0.3))
    w = torch.randn(4, dtype=F64, generator=_gen(8), requires_grad=True)
    r, f = torch.zeros(4, dtype=F64), torch.rand(4, dtype=F64, generator=_gen(9))
    assert torch.autograd.gradcheck(lambda w: transfer.ewc_penalty(w, r, f, 2.0), (w,))
    assert torch.autograd.gradcheck(lambda w: transfer.l2_sp_penalty(w, r, 2.0), (w,))
    assert torch.autograd.gradcheck(lambda w: transfer.wasserstein_to_init(w, r + 0.5), (w,))


def test_l2_sp_new_parameters_are_decayed():
    theta = {"body": torch.tensor([1.0, 2.0], dtype=F64), "head": torch.tensor([3.0],
                                                                              dtype=F64)}
    val = transfer.l2_sp_penalty(theta, {"body": torch.zeros(2, dtype=F64)}, 2.0, lam_new=4.0)
    assert float(val) == pytest.approx(0.5 * 2 * 5 + 0.5 * 4 * 9)
    # no reference at all: pure weight decay with lam_new
    assert float(transfer.l2_sp_penalty(theta, {}, 1.0, lam_new=2.0)) == pytest.approx(14.0)


# ----------------------------------------------------------------------------- merging

def test_fisher_merge_minimizes_the_weighted_quadratics():
    g = _gen(10)
    models = [{"a": torch.randn(3, 2, generator=g, dtype=F64)} for _ in range(3)]
    fishers = [{"a": torch.rand(3, 2, generator=g, dtype=F64)} for _ in range(3)]
    weights = [1.0, 2.0, 0.5]
    merged = transfer.fisher_merge(models, fishers, weights=weights)["a"].requires_grad_()
    obj = sum(w * (f["a"] * (merged - m["a"]) ** 2).sum()
              for w, f, m in zip(weights, fishers, models, strict=True))
    (grad,) = torch.autograd.grad(obj, merged)
    assert float(grad.abs().max()) < 1e-12
    same = transfer.fisher_merge(models, [{"a": torch.ones(3, 2, dtype=F64)}] * 3)
    torch.testing.assert_close(same["a"], torch.stack([m["a"] for m in models]).mean(0))
    zero = transfer.fisher_merge(models, [{"a": torch.zeros(3, 2, dtype=F64)}] * 3)
    torch.testing.assert_close(zero["a"], same["a"])


# ----------------------------------------------------------------------------- init space

def test_spectral_penalty_formula_and_gradient():
    g = _gen(11)
    W = torch.randn(4, 6, 5, generator=g, dtype=F64)
    s = torch.linalg.svdvals(W)
    t = torch.rand(4, 5, generator=g, dtype=F64)
    assert float(transfer.spectral_penalty(W, t, 2.0, which="all")) == pytest.approx(
        float(((s - t) ** 2).sum()))
    assert float(transfer.spectral_penalty(W, 1.0, 0.5)) == pytest.approx(
        float(0.25 * ((s[:, 0] - 1) ** 2).sum()))
    # d s_1 / dW = u_1 v_1^T, so the gradient of (s_1 - 1)^2 / 2 is (s_1 - 1) u_1 v_1^T
    W0 = W[0].clone().requires_grad_()
    (grad,) = torch.autograd.grad(transfer.spectral_penalty(W0, 1.0), W0)
    U, S, Vh = torch.linalg.svd(W[0])
    torch.testing.assert_close(grad, (S[0] - 1) * torch.outer(U[:, 0], Vh[0]))
    Wg = W[1].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda A: transfer.spectral_penalty(
        A, t[1], which="all"), (Wg,))


def test_wasserstein_to_init_is_the_optimal_assignment_and_permutation_invariant():
    from scipy.optimize import linear_sum_assignment

    g = _gen(12)
    theta, init = torch.randn(7, generator=g, dtype=F64), torch.randn(7, generator=g,
                                                                        dtype=F64)
    cost = (theta[:, None] - init[None, :]) ** 2
    r, c = linear_sum_assignment(cost.numpy())
    assert float(transfer.wasserstein_to_init(theta, init, lam=2.0)) == pytest.approx(
        float(cost[r, c].sum()), rel=1e-12)
    perm = torch.randperm(7, generator=g)
    assert float(transfer.wasserstein_to_init(init[perm], init)) == 0.0
    assert float(transfer.wasserstein_to_init(theta, init)) <= float(
        transfer.l2_sp_penalty(theta, init))


# ----------------------------------------------------------------------------- policies

def test_kl_policy_closed_form_beats_numerical_optimization():
    from scipy.optimize import minimize

    g = _gen(13)
    ref = torch.randn(6, generator=g, dtype=F64)
    r = torch.randn(6, generator=g, dtype=F64)
    beta = 0.7
    star = transfer.kl_regularized_policy(ref, r, beta)
    J_star = float(transfer.kl_regularized_objective(star, ref, r, beta))
    assert J_star == pytest.approx(beta * float(torch.logsumexp(
        torch.log_softmax(ref, 0) + r / beta, 0)), rel=1e-12)

    def neg_J(z):
        pi = torch.softmax(torch.as_tensor(z), 0)
        return -float(transfer.kl_regularized_objective(pi, ref, r, beta))

    res = minimize(neg_J, torch.zeros(6, dtype=F64).numpy(), method="BFGS",
                   options={"gtol": 1e-10})
    pi_num = torch.softmax(torch.as_tensor(res.x), 0)
    assert -res.fun <= J_star + 1e-12
    torch.testing.assert_close(pi_num, star, rtol=0, atol=1e-5)
    # J(pi) = J(pi*) - beta KL(pi || pi*) for any pi
    pi = torch.softmax(torch.randn(6, generator=g, dtype=F64), 0)
    kl = float((pi * (pi.log() - star.log())).sum())
    assert float(transfer.kl_regularized_objective(pi, ref, r, beta)) == pytest.approx(
        J_star - beta * kl, rel=1e-12)


def test_kl_policy_limits_batching_and_support():
    ref = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]], dtype=F64)).expand(2, 4)
    r = torch.tensor([[0.0, 1.0, 2.0, 9.0], [3.0, 1.0, 0.0, 9.0]], dtype=F64)
    betas = torch.tensor([1e-3, 1.0, 1e4], dtype=F64)
    pol = transfer.kl_regularized_policy(ref, r, betas)          # (3, 2, 4)
    assert pol.shape == (3, 2, 4)
    assert bool((pol[..., 3] == 0).all())          # never leaves the reference's support
    torch.testing.assert_close(pol[0, 0], torch.tensor([0, 0, 1.0, 0], dtype=F64))
    torch.testing.assert_close(pol[0, 1], torch.tensor([1.0, 0, 0, 0], dtype=F64))
    torch.testing.assert_close(pol[2], ref.exp(), rtol=0, atol=1e-3)
    for k, b in enumerate(betas):
        torch.testing.assert_close(pol[k], transfer.kl_regularized_policy(ref, r, float(b)))
    J = transfer.kl_regularized_objective(pol, ref, r, betas)
    assert J.shape == (3, 2)
    out = transfer.kl_regularized_objective(torch.tensor([0, 0, 0, 1.0], dtype=F64),
                                            ref[0], r[0], 1.0)
    assert float(out) == -float("inf")


# ----------------------------------------------------------------------------- distributed

def _fisher_worker(rank, world_size, X, y):
    logits, w, _, _ = _logistic(seed=14)
    n = X.shape[0] // world_size
    Xs, ys = X[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
    out = {}
    for kind, kw in [("true", {"n_samples": None}), ("empirical", {}),
                     ("minibatch_squared", {"batch_size": 4})]:
        f, st = transfer.fisher_diagonal(logits, w, Xs, None if kind == "true" else ys,
                                         kind=kind, return_stderr=True, distributed=True,
                                         **kw)
        out[kind] = (f, st["stderr"], torch.tensor(st["n"]))
    return out


def test_distributed_fisher_equals_full_data():
    logits, w, X, y = _logistic(seed=14, n=40)
    results = run_distributed(_fisher_worker, X, y, world_size=2)
    for kind, kw in [("true", {"n_samples": None}), ("empirical", {}),
                     ("minibatch_squared", {"batch_size": 4})]:
        f, st = transfer.fisher_diagonal(logits, w, X, None if kind == "true" else y,
                                         kind=kind, return_stderr=True, **kw)
        for res in results:
            torch.testing.assert_close(res[kind][0], f, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(res[kind][1], st["stderr"], rtol=1e-9, atol=1e-15)
            assert int(res[kind][2]) == st["n"]


# ----------------------------------------------------------------------------- bad input

_L, _W, _X, _Y = _logistic(seed=15, n=8)
_Z = torch.zeros(3, dtype=F64)
BAD = [
    (lambda: transfer.fisher_diagonal(None, _W, _X), TypeError, "logits_fn"),
    (lambda: transfer.fisher_diagonal(_L, "w", _X), TypeError, "params"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, kind="hessian"), ValueError, "kind"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X[:0]), ValueError, "X"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X * float("nan")), ValueError, "X"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, kind="empirical"), ValueError, "y"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, _Y[:3], kind="empirical"), ValueError, "y"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, _Y + 5, kind="empirical"), ValueError, "y"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, _Y.double(), kind="empirical"),
     ValueError, "y"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, _Y, kind="minibatch_squared"),
     ValueError, "batch_size"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, _Y, kind="minibatch_squared",
                                      batch_size=3), ValueError, "batch_size"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, n_samples=0), ValueError, "n_samples"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, n_samples=2.5), ValueError, "n_samples"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, generator=3), TypeError, "generator"),
    (lambda: transfer.fisher_diagonal(lambda w, X: X @ w, _W, _X), ValueError, "logits_fn"),
    (lambda: transfer.fisher_diagonal(_L, _W, _X, distributed=True), ValueError,
     "distributed"),
    (lambda: transfer.l2_sp_penalty(_Z, torch.zeros(4)), ValueError, "ref"),
    (lambda: transfer.l2_sp_penalty(_Z, _Z, lam=-1.0), ValueError, "lam"),
    (lambda: transfer.l2_sp_penalty({"a": _Z}, {"b": _Z}), ValueError, "ref"),
    (lambda: transfer.l2_sp_penalty(_Z, _Z, lam_new=float("inf")), ValueError, "lam_new"),
    (lambda: transfer.ewc_penalty(_Z, _Z, -torch.ones(3)), ValueError, "fisher"),
    (lambda: transfer.ewc_penalty(_Z, _Z, torch.ones(3, 4)), ValueError, "fisher"),
    (lambda: transfer.ewc_penalty(_Z, _Z, torch.tensor([[1.0, 2, 0], [0, 1, 0], [0, 0, 1]])),
     ValueError, "fisher"),
    (lambda: transfer.ewc_penalty(_Z, _Z * float("nan"), torch.ones(3)), ValueError, "ref"),
    (lambda: transfer.fisher_merge([], []), ValueError, "models"),
    (lambda: transfer.fisher_merge([_Z], [_Z, _Z]), ValueError, "fishers"),
    (lambda: transfer.fisher_merge([_Z, torch.zeros(4)], [_Z, _Z]), ValueError, "models"),
    (lambda: transfer.fisher_merge([_Z], [-torch.ones(3)]), ValueError, "fishers"),
    (lambda: transfer.fisher_merge([_Z, _Z], [_Z, _Z], weights=[0.0, 0.0]), ValueError,
     "weights"),
    (lambda: transfer.spectral_penalty(_Z, 1.0), ValueError, "W"),
    (lambda: transfer.spectral_penalty(torch.ones(2, 2), 1.0, which="min"), ValueError,
     "which"),
    (lambda: transfer.spectral_penalty(torch.ones(2, 2), torch.ones(3), which="all"),
     ValueError, "target"),
    (lambda: transfer.wasserstein_to_init(_Z, torch.zeros(2)), ValueError, "init"),
    (lambda: transfer.kl_regularized_policy(_Z, _Z, 0.0), ValueError, "beta"),
    (lambda: transfer.kl_regularized_policy(_Z, torch.zeros(4), 1.0), ValueError, "reward"),
    (lambda: transfer.kl_regularized_policy(torch.full((3,), -float("inf")), _Z, 1.0),
     ValueError, "ref_logits"),
    (lambda: transfer.kl_regularized_policy(_Z * float("nan"), _Z, 1.0), ValueError,
     "ref_logits"),
    (lambda: transfer.kl_regularized_objective(torch.tensor([0.5, 0.6, -0.1]), _Z, _Z, 1.0),
     ValueError, "policy"),
    (lambda: transfer.kl_regularized_objective(torch.ones(2) / 2, _Z, _Z, 1.0), ValueError,
     "policy"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_all_kinds_listed():
    assert set(transfer.KINDS) == {"true", "empirical", "minibatch_squared"}
    assert list(itertools.chain(transfer.__all__))


@pytest.mark.gpu
def test_gpu_matches_cpu():
    logits, params, X, y = _mlp(seed=16)
    cpu = transfer.fisher_diagonal(logits, params, X, n_samples=4, generator=_gen(0))
    gpu = transfer.fisher_diagonal(logits, {k: v.cuda() for k, v in params.items()},
                                   X.cuda(), n_samples=4, generator=_gen(0))
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], rtol=1e-10, atol=1e-13)
    ref = torch.randn(5, 7, dtype=F64, generator=_gen(1))
    pol = transfer.kl_regularized_policy(ref.cuda(), ref.cuda().flip(-1), 0.3)
    torch.testing.assert_close(pol.cpu(), transfer.kl_regularized_policy(ref, ref.flip(-1),
                                                                         0.3))
