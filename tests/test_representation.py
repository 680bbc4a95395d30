"""regref.representation: each loss against a direct formula written here, lightly's
VICReg and Barlow Twins losses, gradient checks, invariances, Monte Carlo checks, and the
2-process gloo test (value and gradients equal to the full batch on one process)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import lightly_loss, load_kernel, run_distributed

from regref import representation as R

F64 = torch.float64


def _views(n=24, p=6, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(*batch, n, p, generator=g, dtype=F64) @ torch.randn(p, p, generator=g,
                                                                         dtype=F64)
    z2 = z1 + 0.3 * torch.randn(*batch, n, p, generator=g, dtype=F64)
    return z1, z2


def _unit(z):
    return z / z.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------- formulas

def _vicreg_direct(z1, z2, gamma=1.0, eps=1e-4):
    n, p = z1.shape
    inv = ((z1 - z2) ** 2).mean()
    var, cov = 0.0, 0.0
    for z in (z1, z2):
        C = torch.cov(z.T)  # unbiased
        var = var + torch.relu(gamma - torch.sqrt(torch.diag(C) + eps)).mean() / 2
        cov = cov + sum(C[j, k] ** 2 for j in range(p) for k in range(p) if j != k) / p
    return inv, var, cov


def test_vicreg_terms_equal_the_formula_and_lightly():
    z1, z2 = _views()
    loss, terms = R.vicreg_loss(z1, z2, return_terms=True)
    for got, want in zip(terms, _vicreg_direct(z1, z2), strict=True):
        torch.testing.assert_close(got, torch.as_tensor(want, dtype=F64), rtol=1e-12, atol=0)
    oracle = lightly_loss("VICRegLoss")()  # lambda=mu=25, nu=1, eps=1e-4, gamma=1
    torch.testing.assert_close(loss, oracle(z1, z2), rtol=1e-12, atol=0)
    custom = R.vicreg_loss(z1, z2, inv_weight=2.0, var_weight=3.0, cov_weight=0.5,
                           std_eps=1e-3)
    oracle = lightly_loss("VICRegLoss")(lambda_param=2.0, mu_param=3.0, nu_param=0.5,
                                        eps=1e-3)
    torch.testing.assert_close(custom, oracle(z1, z2), rtol=1e-12, atol=0)


def test_vicreg_special_values():
    g = torch.Generator().manual_seed(1)
    white = torch.linalg.qr(torch.randn(50, 4, generator=g, dtype=F64))[0]
    white = (white - white.mean(0)) * 20.0
    _, (inv, var, cov) = R.vicreg_loss(white, white, std_eps=0.0, return_terms=True)
    assert float(inv) == 0.0 and float(var) == 0.0  # stds >= 1: hinge inactive
    z = torch.randn(50, 4, generator=g, dtype=F64)
    C = torch.cov(z.T)
    w = (z - z.mean(0)) @ torch.linalg.cholesky(torch.linalg.inv(C))  # exactly whitened
    _, (_, _, cov) = R.vicreg_loss(w, w, return_terms=True)
    assert float(cov) < 1e-24


def test_barlow_twins_equals_formula_and_lightly():
    z1, z2 = _views(seed=2)
    n = z1.shape[0]
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    c = a.T @ b / n
    off = c - torch.diag(torch.diag(c))
    want = ((1 - torch.diag(c)) ** 2).sum() + 5e-3 * (off ** 2).sum()
    got = R.barlow_twins_loss(z1, z2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(got, lightly_loss("BarlowTwinsLoss")()(z1, z2), rtol=1e-12,
                               atol=0)
    lam_oracle = lightly_loss("BarlowTwinsLoss")(lambda_param=0.1)(z1, z2)
    torch.testing.assert_close(R.barlow_twins_loss(z1, z2, 0.1), lam_oracle, rtol=1e-12,
                               atol=0)
    raw = R.barlow_twins_loss(z1, z2, 1.0, normalize=False)
    torch.testing.assert_close(raw, ((z1.T @ z2 / n - torch.eye(6, dtype=F64)) ** 2).sum())


def test_batched_equals_loop():
    z1, z2 = _views(batch=(3,), seed=3)
    for fn in (R.vicreg_loss, R.barlow_twins_loss, R.alignment, R.mmd2):
        out = fn(z1, z2)
        assert out.shape == (3,)
        for b in range(3):
            torch.testing.assert_close(out[b], fn(z1[b], z2[b]), rtol=1e-12, atol=1e-14)
    for fn in (R.uniformity, R.vne, R.effective_rank, R.flops_regularizer, R.least_volume):
        out = fn(z1)
        for b in range(3):
            torch.testing.assert_close(out[b], fn(z1[b]), rtol=1e-12, atol=1e-14)


def test_alignment_and_uniformity_equal_wang_isola_code():
    z1, z2 = _views(seed=4)
    x, y = _unit(z1), _unit(z2)
    torch.testing.assert_close(R.alignment(x, y), (x - y).norm(dim=1).pow(2).mean())
    torch.testing.assert_close(R.alignment(x, y, 1.5), (x - y).norm(dim=1).pow(1.5).mean())
    want = torch.pdist(x, p=2).pow(2).mul(-2).exp().mean().log()
    torch.testing.assert_close(R.uniformity(x), want, rtol=1e-12, atol=0)


def test_uniformity_invariant_to_rotations_and_permutations():
    z, _ = _views(seed=5)
    x = _unit(z)
    g = torch.Generator().manual_seed(5)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))[0]
    perm = torch.randperm(x.shape[0], generator=g)
    torch.testing.assert_close(R.uniformity(x @ Q), R.uniformity(x), rtol=1e-12, atol=0)
    for fn in (R.uniformity, R.vne, R.effective_rank, R.least_volume, R.flops_regularizer):
        torch.testing.assert_close(fn(x[perm]), fn(x), rtol=1e-12, atol=1e-14)
    z1, z2 = _views(seed=6)
    for fn in (R.vicreg_loss, R.barlow_twins_loss, R.alignment, R.mmd2):
        torch.testing.assert_close(fn(z1[perm], z2[perm]), fn(z1, z2), rtol=1e-12, atol=1e-14)


def test_vne_and_effective_rank_against_eigenvalues():
    z, _ = _views(seed=7)
    x = _unit(z)
    lam = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    torch.testing.assert_close(R.vne(z), -(lam * lam.log()).sum(), rtol=1e-12, atol=0)
    s = torch.linalg.svdvals(z - z.mean(0))
    q = s / s.sum()
    torch.testing.assert_close(R.effective_rank(z), torch.exp(-(q * q.log()).sum()),
                               rtol=1e-10, atol=0)
    one_line = torch.outer(torch.arange(1.0, 9.0, dtype=F64), torch.ones(4, dtype=F64))
    assert abs(float(R.vne(one_line))) < 1e-12
    assert abs(float(R.effective_rank(one_line)) - 1) < 1e-6
    assert abs(float(R.vne(torch.eye(5, dtype=F64))) - math.log(5)) < 1e-12
    assert 1 <= float(R.effective_rank(z)) <= 6


def test_flops_kl_and_least_volume_formulas():
    g = torch.Generator().manual_seed(8)
    a = torch.relu(torch.randn(30, 7, generator=g, dtype=F64))
    torch.testing.assert_close(R.flops_regularizer(a), (a.abs().mean(0) ** 2).sum())
    mu, logvar = torch.randn(2, 30, 7, generator=g, dtype=F64)
    direct = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(logvar / 2)),
        torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1).mean()
    torch.testing.assert_close(R.gaussian_kl(mu, logvar), direct, rtol=1e-12, atol=0)
    std = a.std(0, unbiased=False)
    torch.testing.assert_close(R.least_volume(a, 0.5), torch.prod(std + 0.5) ** (1 / 7))


def test_gaussian_kl_monte_carlo():
    g = torch.Generator().manual_seed(9)
    mu = torch.tensor([[0.5, -1.0]], dtype=F64)
    logvar = torch.tensor([[0.3, -0.7]], dtype=F64)
    q = torch.distributions.Normal(mu, torch.exp(logvar / 2))
    zs = mu + torch.exp(logvar / 2) * torch.randn(20000, 2, generator=g, dtype=F64)
    log_ratio = (q.log_prob(zs) - torch.distributions.Normal(0.0, 1.0).log_prob(zs)).sum(1)
    se = float(log_ratio.std() / math.sqrt(len(log_ratio)))
    assert abs(float(log_ratio.mean() - R.gaussian_kl(mu, logvar))) < 5 * se


def _mmd_direct(x, y, k):
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd_equals_double_loop_and_is_unbiased():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(9, 3, generator=g, dtype=F64)
    y = torch.randn(7, 3, generator=g, dtype=F64) + 0.5
    torch.testing.assert_close(
        R.mmd2(x, y, scale=2.0),
        _mmd_direct(x, y, lambda u, v: 2.0 / (2.0 + ((u - v) ** 2).sum())))
    torch.testing.assert_close(
        R.mmd2(x, y, kernel="gauss", scale=2.0),
        _mmd_direct(x, y, lambda u, v: torch.exp(-((u - v) ** 2).sum() / 2.0)))
    # same distribution: the U-statistic has mean exactly 0
    X = torch.randn(400, 20, 2, generator=g, dtype=F64)
    Y = torch.randn(400, 20, 2, generator=g, dtype=F64)
    vals = R.mmd2(X, Y, scale=4.0)
    assert abs(float(vals.mean())) < 5 * float(vals.std()) / math.sqrt(len(vals))


def test_sparsemax_is_the_simplex_projection_and_its_jacobian():
    cp = pytest.importorskip("cvxpy")
    g = torch.Generator().manual_seed(11)
    z = 2 * torch.randn(5, 8, generator=g, dtype=F64)
    out = R.sparsemax(z)
    for row, zr in zip(out, z, strict=True):
        q = cp.Variable(8)
        cp.Problem(cp.Minimize(cp.sum_squares(q - zr.numpy())), [q >= 0, cp.sum(q) == 1]).solve()
        np.testing.assert_allclose(row.numpy(), q.value, atol=1e-6)
    torch.testing.assert_close(out.sum(-1), torch.ones(5, dtype=F64))
    assert (out == 0).any()
    torch.testing.assert_close(R.sparsemax(z.T, dim=0), out.T)
    J = R.sparsemax_jacobian(z)
    for b in range(5):
        torch.testing.assert_close(J[b], torch.func.jacrev(R.sparsemax)(z[b]), atol=1e-12,
                                   rtol=0)
    two = R.sparsemax(torch.tensor([[0.3, -0.1]], dtype=F64))  # p1 = clip((t + 1)/2)
    torch.testing.assert_close(two[0, 0], torch.tensor(0.7, dtype=F64))


def test_topk_keeps_largest_and_routes_gradients():
    g = torch.Generator().manual_seed(12)
    h = torch.randn(4, 10, generator=g, dtype=F64, requires_grad=True)
    out = R.topk_activation(h, 3)
    assert ((out != 0).sum(-1) == 3).all()
    kept = out != 0
    assert (out[kept] == h[kept]).all()
    thresh = torch.sort(h.detach(), -1, descending=True).values[:, 2:3]
    assert torch.equal(kept, h.detach() >= thresh)
    out.sum().backward()
    assert torch.equal(h.grad, kept.to(F64))


def test_neural_collapse_metrics():
    C, p = 4, 6
    g = torch.Generator().manual_seed(13)
    basis = torch.linalg.qr(torch.randn(p, C, generator=g, dtype=F64))[0]
    etf = (torch.eye(C, dtype=F64) - 1 / C) @ basis.T  # a simplex ETF in R^p
    y = torch.arange(C).repeat(5)
    nc = R.neural_collapse(etf[y] + 3.0, y, w=etf, b=-3.0 * etf.sum(1))
    assert all(float(v) < 1e-10 for v in nc.values())
    h = etf[y] + 0.3 * torch.randn(len(y), p, generator=g, dtype=F64)
    nc = R.neural_collapse(h, y, w=torch.randn(C, p, generator=g, dtype=F64))
    assert all(float(v) > 0 for v in nc.values())
    means = torch.stack([h[y == c].mean(0) for c in range(C)])
    sw = sum(torch.outer(h[i] - means[y[i]], h[i] - means[y[i]]) for i in range(len(y)))
    mc = means - h.mean(0)
    want = torch.trace(sw / len(y) @ torch.linalg.pinv(mc.T @ mc / C)) / C
    torch.testing.assert_close(nc["nc1"], want, rtol=1e-8, atol=0)


def test_local_intrinsic_dimension_of_a_cube():
    g = torch.Generator().manual_seed(14)
    cube = torch.rand(3000, 3, generator=g, dtype=F64)
    z = cube @ torch.randn(3, 8, generator=g, dtype=F64)  # a 3-D set in R^8
    lid = R.local_intrinsic_dimension(z, k=20)
    assert 2.6 < float(torch.exp(torch.log(lid).mean())) < 3.4
    ref = R.local_intrinsic_dimension(z[:10], k=20, reference=z[10:])
    assert ref.shape == (10,) and bool((ref > 0).all())


GRADCHECK = [
    ("vicreg", lambda a, b: R.vicreg_loss(a, b)),
    ("barlow", lambda a, b: R.barlow_twins_loss(a, b, 0.1)),
    ("alignment", lambda a, b: R.alignment(a, b)),
    ("uniformity", lambda a, b: R.uniformity(a)),
    ("vne", lambda a, b: R.vne(a)),
    ("effective_rank", lambda a, b: R.effective_rank(a)),
    ("flops", lambda a, b: R.flops_regularizer(a)),
    ("kl", lambda a, b: R.gaussian_kl(a, b)),
    ("mmd", lambda a, b: R.mmd2(a, b, scale=2.0)),
    ("least_volume", lambda a, b: R.least_volume(a, 0.5)),
    ("sparsemax", lambda a, b: R.sparsemax(a)),
]


@pytest.mark.parametrize("fn", [f for _, f in GRADCHECK], ids=[n for n, _ in GRADCHECK])
def test_gradcheck(fn):
    z1, z2 = _views(n=7, p=4, seed=15)
    assert torch.autograd.gradcheck(fn, (z1.requires_grad_(), z2.requires_grad_()))


def test_dtype_and_numpy_input():
    z1, z2 = _views(seed=16)
    for fn in (R.vicreg_loss, R.barlow_twins_loss, R.mmd2):
        assert fn(z1.float(), z2.float()).dtype == torch.float32
        torch.testing.assert_close(fn(z1.numpy(), z2.numpy()), fn(z1, z2))
    assert R.sparsemax(z1.float()).dtype == torch.float32


def test_kernels_paste_alone():
    z1, z2 = _views(seed=17)
    vic = load_kernel(R._vicreg_kernel)(z1, z2, 1.0, 1e-4)
    loss = 25 * vic[0] + 25 * vic[1] + vic[2]
    torch.testing.assert_close(loss, R.vicreg_loss(z1, z2))
    bt = load_kernel(R._barlow_twins_kernel)(z1, z2, 5e-3, 1e-5, True)
    torch.testing.assert_close(bt, R.barlow_twins_loss(z1, z2))
    torch.testing.assert_close(load_kernel(R._sparsemax_kernel)(z1), R.sparsemax(z1))
    x = _unit(z1)
    pair = load_kernel(R._pair_kernel)(x, x, "gauss", 0.5, True)
    torch.testing.assert_close(torch.log(pair), R.uniformity(x))


# ----------------------------------------------------------------------------- distributed

def _losses(z1, z2, group=None):
    u1, u2 = _unit(z1), _unit(z2)
    return {
        "vicreg": R.vicreg_loss(z1, z2, group=group),
        "barlow": R.barlow_twins_loss(z1, z2, group=group),
        "alignment": R.alignment(u1, u2, group=group),
        "uniformity": R.uniformity(u1, group=group),
        "vne": R.vne(z1, group=group),
        "effective_rank": R.effective_rank(z1, group=group),
        "flops": R.flops_regularizer(torch.relu(z1), group=group),
        "kl": R.gaussian_kl(z1, 0.1 * z2, group=group),
        "mmd": R.mmd2(z1, z2, group=group),
        "least_volume": R.least_volume(z1, group=group),
    }


def _dist_worker(rank, world_size, n, p):
    import torch.distributed as dist

    z1, z2 = _views(n=n, p=p, seed=18)
    rows = slice(rank * n // world_size, (rank + 1) * n // world_size)
    out = {}
    for name in _losses(z1[:2], z2[:2]):
        a = z1[rows].clone().requires_grad_()
        b = z2[rows].clone().requires_grad_()
        value = _losses(a, b, group=dist.group.WORLD)[name]
        g1, g2 = torch.autograd.grad(value, (a, b), allow_unused=True)
        out[name] = (value.detach(), g1, g2)
    # sufficient statistics also handle unequal shards (rank 0: 5 rows, rank 1: 11)
    rows = slice(0, 5) if rank == 0 else slice(5, n)
    a, b = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
    value = R.vicreg_loss(a, b, group=dist.group.WORLD)
    out["uneven"] = (value.detach(), *torch.autograd.grad(value, (a, b)))
    try:  # a pairwise loss needs equal shards, and says so
        R.uniformity(a, group=dist.group.WORLD)
        out["uneven_error"] = ""
    except ValueError as err:
        out["uneven_error"] = str(err)
    return out


def test_two_processes_equal_the_full_batch():
    n, p, world = 16, 5, 2
    results = run_distributed(_dist_worker, n, p, world_size=world)
    z1, z2 = _views(n=n, p=p, seed=18)
    for rank, res in enumerate(results):
        assert "same number of rows" in res.pop("uneven_error")
        value, g1, g2 = res.pop("uneven")
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        full = R.vicreg_loss(a, b)
        h1, h2 = torch.autograd.grad(full, (a, b))
        rows = slice(0, 5) if rank == 0 else slice(5, n)
        torch.testing.assert_close(value, full.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(g1, world * h1[rows], rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(g2, world * h2[rows], rtol=1e-10, atol=1e-13)
    for name in results[0]:
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        value = _losses(a, b)[name]
        g1, g2 = torch.autograd.grad(value, (a, b), allow_unused=True)
        for rank, res in enumerate(results):
            rows = slice(rank * n // world, (rank + 1) * n // world)
            torch.testing.assert_close(res[name][0], value.detach(), rtol=1e-12, atol=1e-14,
                                       msg=f"{name}: value on rank {rank}")
            for got, want in zip(res[name][1:], (g1, g2), strict=True):
                if want is None:
                    assert got is None or float(got.abs().max()) == 0
                    continue
                # DistributedDataParallel averages over ranks: world x the full gradient
                torch.testing.assert_close(got, world * want[rows], rtol=1e-10, atol=1e-13,
                                           msg=f"{name}: gradient on rank {rank}")


# ----------------------------------------------------------------------------- bad input

_Z = torch.zeros(4, 3)
BAD = [
    (lambda: R.vicreg_loss(torch.zeros(4, 3), torch.zeros(4, 2)), ValueError, "z2"),
    (lambda: R.vicreg_loss(torch.zeros(1, 3), torch.zeros(1, 3)), ValueError, "z1"),
    (lambda: R.vicreg_loss(torch.zeros(4), torch.zeros(4)), ValueError, "z1"),
    (lambda: R.vicreg_loss(_Z, _Z, var_weight=-1.0), ValueError, "var_weight"),
    (lambda: R.vicreg_loss(_Z, _Z, target_std=0.0), ValueError, "target_std"),
    (lambda: R.vicreg_loss(_Z, _Z, std_eps=math.nan), ValueError, "std_eps"),
    (lambda: R.vicreg_loss(_Z, _Z, group=object()), ValueError, "group"),
    (lambda: R.vicreg_loss(torch.full((4, 3), math.nan), _Z), ValueError, "z1"),
    (lambda: R.vicreg_loss("a", _Z), TypeError, "z1"),
    (lambda: R.barlow_twins_loss(_Z, _Z, lam=-1.0), ValueError, "lam"),
    (lambda: R.barlow_twins_loss(_Z, torch.zeros(5, 3)), ValueError, "z2"),
    (lambda: R.alignment(_Z, _Z, alpha=0.0), ValueError, "alpha"),
    (lambda: R.uniformity(_Z, t=-2.0), ValueError, "t"),
    (lambda: R.vne(_Z), ValueError, "z"),
    (lambda: R.effective_rank(torch.ones(4, 3)), ValueError, "z"),
    (lambda: R.neural_collapse(_Z, torch.tensor([0, 0, 1, 1.0])), ValueError, "y"),
    (lambda: R.neural_collapse(_Z, torch.tensor([0, 0, 2, 2])), ValueError, "y"),
    (lambda: R.neural_collapse(_Z, torch.tensor([0, 0, 1, 1]), w=torch.zeros(3, 3)),
     ValueError, "w"),
    (lambda: R.local_intrinsic_dimension(torch.rand(10, 2), k=10), ValueError, "k"),
    (lambda: R.local_intrinsic_dimension(torch.rand(10, 2), k=2.0), ValueError, "k"),
    (lambda: R.local_intrinsic_dimension(torch.rand(10, 2), reference=torch.rand(20, 3)),
     ValueError, "reference"),
    (lambda: R.topk_activation(torch.zeros(3, 4), 5), ValueError, "k"),
    (lambda: R.topk_activation(torch.zeros(3, 4), 0), ValueError, "k"),
    (lambda: R.sparsemax(torch.tensor(1.0)), ValueError, "z"),
    (lambda: R.sparsemax_jacobian(torch.tensor([math.inf, 0.0])), ValueError, "z"),
    (lambda: R.gaussian_kl(_Z, torch.zeros(4, 2)), ValueError, "logvar"),
    (lambda: R.mmd2(_Z, torch.zeros(4, 2)), ValueError, "y"),
    (lambda: R.mmd2(_Z, _Z, kernel="rbf"), ValueError, "kernel"),
    (lambda: R.mmd2(_Z, _Z, scale=0), ValueError, "scale"),
    (lambda: R.least_volume(_Z, delta=0.0), ValueError, "delta"),
    (lambda: R.flops_regularizer(torch.zeros(0, 3)), ValueError, "a"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.gpu
def test_gpu_matches_cpu():
    z1, z2 = _views(n=64, p=16, seed=19)
    for fn in (R.vicreg_loss, R.barlow_twins_loss, R.mmd2):
        got = fn(z1.cuda(), z2.cuda())
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), fn(z1, z2), rtol=1e-10, atol=1e-12)
    for fn in (R.uniformity, R.vne, R.effective_rank, R.least_volume):
        torch.testing.assert_close(fn(z1.cuda()).cpu(), fn(z1), rtol=1e-10, atol=1e-12)
