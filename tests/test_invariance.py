"""regref.invariance: each penalty against a direct formula written here (DomainBed's
definitions, re-derived with loops over environments), gradient checks, the two-half IRM
estimator's unbiasedness by Monte Carlo, the erasers against a fitted probe, data
parallelism with 2 gloo processes, and a table of bad inputs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import load_kernel, run_distributed

from regref import ConvergenceWarning, invariance

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _classification(seed=0, n=30, k=3, d=4, n_envs=3):
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randint(k, (n,), generator=g)
    env = torch.arange(n) % n_envs
    W = torch.randn(d, k, generator=g, dtype=F64)
    return X, y, env, W


def _bce_head(p, X, y):
    return torch.nn.functional.binary_cross_entropy_with_logits(X @ p["w"] + p["b"], y)


def _binary(seed=0, n=24, d=3):
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = (torch.rand(n, generator=g) < 0.5).to(F64)
    env = torch.arange(n) % 2
    params = {"w": torch.randn(d, generator=g, dtype=F64), "b": torch.tensor(0.3, dtype=F64)}
    return X, y, env, params


# ----------------------------------------------------------------------------- direct formulas
def _direct_risks(losses, env, n_envs):
    return torch.stack([losses[env == e].mean() for e in range(n_envs)])


def _direct_irm(logits, y, env, n_envs, unbiased):
    """DomainBed's IRM penalty: a dummy scale, one autograd call per environment (and
    per half), averaged over environments."""
    total = 0.0
    for e in range(n_envs):
        z, t = logits[env == e], y[env == e]
        scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)

        def grad(zz, tt, scale=scale):
            loss = torch.nn.functional.cross_entropy(zz * scale, tt)
            return torch.autograd.grad(loss, scale, create_graph=True)[0]

        total = total + (grad(z[::2], t[::2]) * grad(z[1::2], t[1::2]) if unbiased
                         else grad(z, t) ** 2)
    return total / n_envs


def _direct_coral(f, env, n_envs):
    """DomainBed's CORAL: mean squared differences of means and covariances, averaged
    over pairs of environments."""
    total, pairs = 0.0, 0
    for i in range(n_envs):
        for j in range(i + 1, n_envs):
            a, b = f[env == i], f[env == j]
            total = total + ((a.mean(0) - b.mean(0)) ** 2).mean() + \
                ((torch.cov(a.T) - torch.cov(b.T)) ** 2).mean()
            pairs += 1
    return total / pairs


def _direct_fishr(params, X, y, env, n_envs):
    """Per-sample gradients by a loop; per-environment centered variances."""
    variances = []
    for e in range(n_envs):
        rows = []
        for i in (env == e).nonzero().flatten().tolist():
            g = torch.func.grad(_bce_head)(params, X[i:i + 1], y[i:i + 1])
            rows.append(torch.cat([g["w"], g["b"][None]]))
        G = torch.stack(rows)
        variances.append(((G - G.mean(0)) ** 2).mean(0))
    V = torch.stack(variances)
    return torch.stack([((v - V.mean(0)) ** 2).mean() for v in V]).mean()


def _direct_hgp(params, X, y, env, n_envs):
    """Explicit per-environment Hessians (torch.func.hessian) and gradients."""
    flat = torch.cat([params["w"], params["b"][None]])

    def risk(z, e):
        return _bce_head({"w": z[:-1], "b": z[-1]}, X[env == e], y[env == e])

    g = torch.stack([torch.func.grad(risk)(flat, e) for e in range(n_envs)])
    hg = torch.stack([torch.func.hessian(risk)(flat, e) @ g[e] for e in range(n_envs)])
    return (((g - g.mean(0)) ** 2).sum(1) + ((hg - hg.mean(0)) ** 2).sum(1)).mean()


# ----------------------------------------------------------------------------- penalties
def test_env_risks_and_vrex_equal_direct_formulas():
    g = _gen(0)
    losses = torch.rand(23, generator=g, dtype=F64)
    env = torch.randint(4, (23,), generator=g)
    env[:4] = torch.arange(4)
    risks = _direct_risks(losses, env, 4)
    torch.testing.assert_close(invariance.env_risks(losses, env), risks, rtol=1e-14, atol=0)
    expected = ((risks - risks.mean()) ** 2).mean()
    torch.testing.assert_close(invariance.vrex_penalty(losses, env), expected, rtol=1e-13,
                               atol=0)


@pytest.mark.parametrize("unbiased", [False, True])
def test_irm_equals_domainbed_dummy_scale(unbiased):
    X, y, env, W = _classification(seed=1)
    env = torch.arange(30) // 10  # contiguous environments, so [::2] alternates within each
    logits = X @ W
    ours = invariance.irm_penalty(logits, y, env, unbiased=unbiased)
    torch.testing.assert_close(ours, _direct_irm(logits, y, env, 3, unbiased), rtol=1e-12,
                               atol=1e-15)


def test_irm_two_half_estimator_is_unbiased_and_the_plugin_is_not():
    """Squared loss on 1-D outputs: d/ds 1/2 (s z - y)^2 at s = 1 is (z - y) z. With
    z ~ N(mu_e, 1) and y = z/2 + N(0, 1), D_e = E[(z - y) z] = E[z^2]/2 = (1 + mu_e^2)/2.
    Each call holds 200 independent small environments (100 replicates of each of two),
    so its penalty is a mean of 200 estimates; 40 calls give a standard error."""
    g = _gen(2)
    mus = torch.tensor([1.0, 0.5], dtype=F64)
    truth = float((((1 + mus ** 2) / 2) ** 2).mean())
    reps, n_e = 100, 6
    env = torch.arange(2 * reps).repeat_interleave(n_e)
    mu = mus.repeat(reps).repeat_interleave(n_e)

    def sq(z, t):
        return 0.5 * (z - t) ** 2

    unb, plug = [], []
    for _ in range(40):
        z = mu + torch.randn(env.shape[0], generator=g, dtype=F64)
        y = z / 2 + torch.randn(env.shape[0], generator=g, dtype=F64)
        unb.append(float(invariance.irm_penalty(z, y, env, loss_fn=sq)))
        plug.append(float(invariance.irm_penalty(z, y, env, loss_fn=sq, unbiased=False)))
    unb, plug = torch.tensor(unb), torch.tensor(plug)
    se = float(unb.std() / math.sqrt(len(unb)))
    assert abs(float(unb.mean()) - truth) < 5 * se
    se_p = float(plug.std() / math.sqrt(len(plug)))
    assert float(plug.mean()) - truth > 5 * se_p  # the plug-in overestimates


def test_coral_equals_domainbed_pairs():
    g = _gen(3)
    f = torch.randn(40, 3, generator=g, dtype=F64) * torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    env = torch.arange(40) % 4
    torch.testing.assert_close(invariance.coral_penalty(f, env), _direct_coral(f, env, 4),
                               rtol=1e-12, atol=1e-15)


def test_fishr_equals_loop_over_samples():
    X, y, env, params = _binary(seed=4)
    env = torch.arange(24) % 3
    ours = invariance.fishr_penalty(_bce_head, params, env, X, y)
    torch.testing.assert_close(ours, _direct_fishr(params, X, y, env, 3), rtol=1e-11,
                               atol=1e-16)


def test_hessian_alignment_equals_explicit_hessians():
    X, y, env, params = _binary(seed=5)
    ours = invariance.hessian_alignment_penalty(_bce_head, params, env, X, y)
    torch.testing.assert_close(ours, _direct_hgp(params, X, y, env, 2), rtol=1e-11,
                               atol=1e-15)


def test_penalties_vanish_on_identical_environments():
    X, y, _, W = _classification(seed=6, n=20)
    Xd, yd = torch.cat([X, X]), torch.cat([y, y])
    env = torch.arange(40) // 20
    logits = Xd @ W
    losses = torch.nn.functional.cross_entropy(logits, yd, reduction="none")
    assert float(invariance.vrex_penalty(losses, env)) < 1e-28
    assert float(invariance.coral_penalty(Xd, env)) < 1e-26
    Xb, yb, _, params = _binary(seed=6, n=20)
    Xb, yb = torch.cat([Xb, Xb]), torch.cat([yb, yb])
    assert float(invariance.fishr_penalty(_bce_head, params, env, Xb, yb)) < 1e-26
    assert float(invariance.hessian_alignment_penalty(_bce_head, params, env, Xb, yb)) < 1e-26


def test_gradchecks():
    X, y, env, W = _classification(seed=7, n=12)
    assert torch.autograd.gradcheck(
        lambda Z: invariance.irm_penalty(Z, y, env), (X @ W).requires_grad_())
    assert torch.autograd.gradcheck(
        lambda Z: invariance.irm_penalty(Z, y, env, unbiased=False), (X @ W).requires_grad_())
    assert torch.autograd.gradcheck(lambda F: invariance.coral_penalty(F, env),
                                    X.clone().requires_grad_())
    assert torch.autograd.gradcheck(
        lambda L: invariance.vrex_penalty(L, env), X[:, 0].exp().requires_grad_())
    Xb, yb, envb, params = _binary(seed=7, n=12)
    w = params["w"].clone().requires_grad_()
    b = params["b"].clone().requires_grad_()
    for pen in (invariance.fishr_penalty, invariance.hessian_alignment_penalty):
        assert torch.autograd.gradcheck(
            lambda w, b, pen=pen: pen(_bce_head, {"w": w, "b": b}, envb, Xb, yb), (w, b))


def test_fishr_and_hgp_kernels_paste_alone():
    X, y, env, params = _binary(seed=8)
    onehot = torch.nn.functional.one_hot(env, 2).to(F64)
    grads = torch.func.vmap(torch.func.grad(lambda p, x, t: _bce_head(p, x[None], t[None])),
                            in_dims=(None, 0, 0))(params, X, y)
    flat = torch.cat([grads["w"], grads["b"][:, None]], 1)
    pen, _ = load_kernel(invariance._fishr_kernel)(flat, onehot)
    torch.testing.assert_close(pen, invariance.fishr_penalty(_bce_head, params, env, X, y))
    weights = onehot.T / onehot.sum(0)[:, None]
    g, hg = load_kernel(invariance._hgp_kernel)(_bce_head, params, weights, (X, y))
    ours = (((g - g.mean(0)) ** 2).sum(1) + ((hg - hg.mean(0)) ** 2).sum(1)).mean()
    torch.testing.assert_close(
        ours, invariance.hessian_alignment_penalty(_bce_head, params, env, X, y))


# ----------------------------------------------------------------------------- erasure
def _concept_data(seed=9, n=300, p=6):
    g = _gen(seed)
    z = torch.randint(3, (n,), generator=g)
    means = torch.randn(3, p, generator=g, dtype=F64) * 2
    A = torch.randn(p, p, generator=g, dtype=F64)
    X = means[z] + torch.randn(n, p, generator=g, dtype=F64) @ A
    return X, z


def _probe_accuracy(X, z):
    """A fitted multinomial logistic probe (sklearn, weak regularization) on the data."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=1e4, max_iter=5000).fit(X.numpy(), z.numpy())
    return float(probe.score(X.numpy(), z.numpy()))


def test_leace_leaves_no_linear_information():
    X, z = _concept_data()
    P, mean = invariance.leace(X, z)
    Xe = X - (X - mean) @ P.T
    torch.testing.assert_close(P @ P, P, rtol=0, atol=1e-10)  # a projection
    Z = torch.nn.functional.one_hot(z).to(F64)
    cross = (Xe - Xe.mean(0)).T @ (Z - Z.mean(0)) / len(z)
    assert float(cross.abs().max()) < 1e-12
    majority = float(torch.bincount(z).max()) / len(z)
    assert _probe_accuracy(X, z) > majority + 0.3
    # the fitted probe is at chance: with zero cross-covariance the class means coincide and
    # the constant predictor is optimal for any convex loss (chapter 13), so the probe can
    # only differ from the majority vote by a few ties; tolerance 2% of the samples
    assert _probe_accuracy(Xe, z) <= majority + 0.02
    assert int(torch.linalg.matrix_rank(P)) == 2  # k - 1 directions for k = 3 classes


def test_leace_kernel_pastes_alone_and_is_the_least_change():
    X, z = _concept_data(seed=10)
    Z = torch.nn.functional.one_hot(z).to(F64)
    P, mean = load_kernel(invariance._leace_kernel)(X, Z, 1e-12)
    P2, _ = invariance.leace(X, z)
    torch.testing.assert_close(P, P2)
    # among erasers x - Q(x - mean) with Q a projection onto span(Sigma_xz)... LEACE moves
    # the data least in the whitened norm: compare with the orthogonal projection eraser
    Xc = X - mean
    S = Xc.T @ Xc / len(X)
    U = torch.linalg.svd(Xc.T @ (Z - Z.mean(0)), full_matrices=False)[0][:, :2]
    ortho = U @ U.T
    Sinv = torch.linalg.inv(S)

    def whitened_change(Q):
        D = Xc @ Q.T
        return float((D @ Sinv * D).sum(1).mean())

    assert whitened_change(P) <= whitened_change(ortho) + 1e-12


def test_inlp_converges_to_no_linear_information():
    X, z = _concept_data(seed=11)
    Q, info = invariance.inlp(X, z, return_info=True)
    assert info.converged and info.certificate <= 1e-10
    torch.testing.assert_close(Q, Q.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(Q @ Q, Q, rtol=0, atol=1e-10)
    Xe = (X - X.mean(0)) @ Q
    majority = float(torch.bincount(z).max()) / len(z)
    assert _probe_accuracy(Xe, z) <= majority + 0.02
    # one projection is not enough: after it a probe still beats chance
    with pytest.warns(ConvergenceWarning):
        Q1 = invariance.inlp(X, z, max_iter=1)
    assert _probe_accuracy((X - X.mean(0)) @ Q1, z) > majority + 0.05


def test_inlp_kernel_pastes_alone():
    X, z = _concept_data(seed=12)
    Z = torch.nn.functional.one_hot(z).to(F64)
    Q, res, n_iter = load_kernel(invariance._inlp_kernel)(X, Z, 1e-3, 1e-10, 50)
    torch.testing.assert_close(Q, invariance.inlp(X, z, max_iter=50), rtol=0, atol=1e-12)
    assert res <= 1e-10 and n_iter >= 2


# ----------------------------------------------------------------------------- distributed
def _all_penalties(X, y, env, W, params, halves, distributed):
    W = W.clone().requires_grad_()
    F = X.clone().requires_grad_()
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    logits = X @ W
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    yb = (y == 0).to(F64)
    out = {
        "vrex": invariance.vrex_penalty(losses, env, 3, distributed=distributed),
        "irm": invariance.irm_penalty(logits, y, env, 3, halves=halves,
                                      distributed=distributed),
        "irm_plugin": invariance.irm_penalty(logits, y, env, 3, unbiased=False,
                                             distributed=distributed),
        "coral": invariance.coral_penalty(F, env, 3, distributed=distributed),
        "fishr": invariance.fishr_penalty(_bce_head, p, env, X[:, :3], yb, n_envs=3,
                                          distributed=distributed),
        "hgp": invariance.hessian_alignment_penalty(_bce_head, p, env, X[:, :3], yb,
                                                    n_envs=3, distributed=distributed),
    }
    result = {}
    for name, value in out.items():
        wrt = {"vrex": [W], "irm": [W], "irm_plugin": [W], "coral": [F],
               "fishr": [p["w"], p["b"]], "hgp": [p["w"], p["b"]]}[name]
        grads = torch.autograd.grad(value, wrt, retain_graph=True)
        result[name] = (value.detach(), [g.detach() for g in grads])
    return result


def _shard(rank, world, *tensors):
    n = tensors[0].shape[0]
    rows = slice(rank * n // world, (rank + 1) * n // world)
    return [t[rows] for t in tensors]


def _distributed_worker(rank, world, X, y, env, W, params, halves):
    Xs, ys, envs, hs = _shard(rank, world, X, y, env, halves)
    return _all_penalties(Xs, ys, envs, W, params, hs, True)


def test_penalties_under_data_parallelism_equal_the_full_batch():
    X, y, env, W = _classification(seed=13, n=36, d=4)
    env = torch.tensor([0, 1, 2, 2, 1, 0] * 6)
    _, _, _, params = _binary(seed=13)
    halves = torch.rand(36, generator=_gen(14)) < 0.5
    full = _all_penalties(X, y, env, W, params, halves, False)
    ranks = run_distributed(_distributed_worker, X, y, env, W, params, halves)
    for name, (value, grads) in full.items():
        for r in ranks:
            torch.testing.assert_close(r[name][0], value, rtol=1e-12, atol=1e-15)
        if name == "coral":  # local rows: concatenated, times the world size (DDP averages)
            got = torch.cat([r[name][1][0] for r in ranks]) / len(ranks)
            torch.testing.assert_close(got, grads[0], rtol=1e-10, atol=1e-14)
            continue
        for i, g in enumerate(grads):  # shared parameters: DDP's average over ranks
            got = sum(r[name][1][i] for r in ranks) / len(ranks)
            torch.testing.assert_close(got, g, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- bad input
_L = torch.rand(6, dtype=F64)
_E = torch.tensor([0, 0, 1, 1, 2, 2])
_Z = torch.randn(6, 2, dtype=F64)
_Y = torch.tensor([0, 1, 0, 1, 0, 1])
_Xb, _yb, _, _P = _binary(seed=15, n=6)


BAD = [
    (lambda: invariance.vrex_penalty(_L, torch.zeros(6, dtype=torch.long)), ValueError,
     "n_envs"),  # one environment
    (lambda: invariance.vrex_penalty(_L, _E, n_envs=4), ValueError, "env"),  # an empty one
    (lambda: invariance.env_risks(_L, _E.double()), TypeError, "env"),
    (lambda: invariance.env_risks(_L, _E[:5]), ValueError, "env"),
    (lambda: invariance.env_risks(_L, -_E), ValueError, "env"),
    (lambda: invariance.env_risks(_L, _E, n_envs=2), ValueError, "env"),
    (lambda: invariance.env_risks(_L, _E, n_envs=0), ValueError, "n_envs"),
    (lambda: invariance.env_risks(_L[:, None], _E), ValueError, "losses"),
    (lambda: invariance.env_risks(_L * float("nan"), _E), ValueError, "losses"),
    (lambda: invariance.env_risks(_L, _E, distributed=True), ValueError, "distributed"),
    (lambda: invariance.irm_penalty(_Z, _Y[:5], _E), ValueError, "y"),
    (lambda: invariance.irm_penalty(_Z, _Y, torch.tensor([0, 0, 0, 0, 0, 1])), ValueError,
     "env"),  # environment 1 has one sample: a half is empty
    (lambda: invariance.irm_penalty(_Z, _Y, _E, halves=torch.ones(6)), ValueError, "halves"),
    (lambda: invariance.irm_penalty(_Z, _Y, _E, loss_fn=3), TypeError, "loss_fn"),
    (lambda: invariance.irm_penalty(_Z, _Y, _E,
                                    loss_fn=lambda z, t: z.sum()), ValueError, "loss_fn"),
    (lambda: invariance.irm_penalty(torch.zeros(6, 2, 2), _Y, _E), ValueError, "logits"),
    (lambda: invariance.coral_penalty(_Z[:, 0], _E), ValueError, "features"),
    (lambda: invariance.coral_penalty(_Z, torch.tensor([0, 1, 1, 1, 1, 1])), ValueError,
     "env"),  # one sample: no covariance
    (lambda: invariance.coral_penalty(torch.zeros(6, 0), _E), ValueError, "features"),
    (lambda: invariance.fishr_penalty(None, _P, _E, _Xb, _yb), TypeError, "loss_fn"),
    (lambda: invariance.fishr_penalty(_bce_head, "w", _E, _Xb, _yb), TypeError, "params"),
    (lambda: invariance.fishr_penalty(_bce_head, _P, _E), ValueError, "batch"),
    (lambda: invariance.fishr_penalty(_bce_head, _P, _E, _Xb, _yb[:5]), ValueError, "batch"),
    (lambda: invariance.fishr_penalty(_bce_head, _P, _E[:5], _Xb, _yb), ValueError, "env"),
    (lambda: invariance.hessian_alignment_penalty(_bce_head, _P, torch.zeros(6,
                                                  dtype=torch.long), _Xb, _yb),
     ValueError, "n_envs"),
    (lambda: invariance.hessian_alignment_penalty(_bce_head, _P, _E, _Xb, _yb, n_envs=5),
     ValueError, "env"),
    (lambda: invariance.leace(_Z, _Y[:5]), ValueError, "z"),
    (lambda: invariance.leace(_Z[:, 0], _Y), ValueError, "X"),
    (lambda: invariance.leace(_Z, -_Y), ValueError, "z"),
    (lambda: invariance.leace(_Z, _Y, rtol=-1.0), ValueError, "tol"),
    (lambda: invariance.inlp(_Z, _Y, lam=0.0), ValueError, "lam"),
    (lambda: invariance.inlp(_Z, _Y, max_iter=0), ValueError, "max_iter"),
    (lambda: invariance.inlp(_Z, _Y, tol=-1.0), ValueError, "tol"),
    (lambda: invariance.inlp(_Z * float("inf"), _Y), ValueError, "X"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=name):
            call()


def test_dtype_and_numpy_input():
    losses = torch.rand(6, dtype=torch.float32)
    assert invariance.vrex_penalty(losses, _E).dtype == torch.float32
    assert invariance.coral_penalty(_Z.numpy(), _E.numpy()).dtype == F64
    P, mean = invariance.leace(_Z.float(), _Y)
    assert P.dtype == torch.float32 and mean.dtype == torch.float32


@pytest.mark.gpu
def test_gpu_matches_cpu():
    X, y, env, params = _binary(seed=16, n=40)
    cpu = invariance.fishr_penalty(_bce_head, params, env, X, y)
    pc = {k: v.cuda() for k, v in params.items()}
    gpu = invariance.fishr_penalty(_bce_head, pc, env.cuda(), X.cuda(), y.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-14)
    hg = invariance.hessian_alignment_penalty(_bce_head, pc, env.cuda(), X.cuda(), y.cuda())
    torch.testing.assert_close(
        hg.cpu(), invariance.hessian_alignment_penalty(_bce_head, params, env, X, y),
        rtol=1e-10, atol=1e-14)
    Xc, z = _concept_data(seed=17)
    P, _ = invariance.leace(Xc.cuda(), z.cuda())
    torch.testing.assert_close(P.cpu(), invariance.leace(Xc, z)[0], rtol=1e-8, atol=1e-10)
