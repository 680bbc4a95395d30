"""regref.noise: dropout as a data-dependent ridge (closed form against Monte Carlo with
variance-based tolerances and against exact enumeration of the masks), the GLM and Gaussian
noise penalties, multi-sample dropout, cutout/mixup/cutmix and quantization noise."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import load_kernel

from regref import noise

F64 = torch.float64
Z = 5.0  # Monte Carlo tolerances: 5 standard errors, computed from the samples


def _problem(seed=0, n=30, p=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=F64)
    w = torch.randn(p, generator=g, dtype=F64)
    y = X @ w + 0.5 * torch.randn(n, generator=g, dtype=F64)
    return X, y, 0.7 * w


def _se(samples):
    return samples.std(0) / math.sqrt(samples.shape[0])


def _exact_dropout_loss(X, y, w, q, family):
    """E over every mask (2^p per row, rows independent) of the summed loss: enumeration."""
    p = X.shape[1]
    masks = torch.tensor(list(itertools.product([0.0, 1.0], repeat=p)), dtype=F64)
    prob = ((1 - q) ** masks.sum(1)) * (q ** (p - masks.sum(1)))  # (2^p,)
    eta = (masks[:, None, :] * X[None] / (1 - q)) @ w  # (2^p, n)
    if family == "logistic":
        loss = torch.nn.functional.softplus(eta) - y * eta
    elif family == "poisson":
        loss = torch.exp(eta) - y * eta
    else:
        loss = (y - eta) ** 2
    return (prob[:, None] * loss).sum()


def _clean_loss(X, y, w, family):
    eta = X @ w
    if family == "logistic":
        return (torch.nn.functional.softplus(eta) - y * eta).sum()
    if family == "poisson":
        return (torch.exp(eta) - y * eta).sum()
    return ((y - eta) ** 2).sum()


# ----------------------------------------------------------------------------- dropout

def test_dropout_is_unbiased_with_the_stated_variance():
    x = torch.linspace(-2, 3, 7, dtype=F64)
    q, K = 0.3, 20000
    draws = noise.dropout(x.expand(K, -1), q, generator=torch.Generator().manual_seed(0))
    assert ((draws.mean(0) - x).abs() <= Z * _se(draws) + 1e-12).all()
    var = draws.var(0)
    # the standard error of a sample variance is about sqrt(Var((x - mu)^2) / K)
    se_var = ((draws - x) ** 2).std(0) / math.sqrt(K)
    assert ((var - q / (1 - q) * x**2).abs() <= Z * se_var + 1e-12).all()
    assert set(torch.unique(draws[:, 1]).tolist()) <= {0.0, float(x[1] / (1 - q))}


def test_dropout_masks_reproducible_and_identity_at_zero():
    x = torch.randn(5, 6, dtype=torch.float32)
    a = noise.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    b = noise.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert torch.equal(noise.dropout(x, 0.0), x)


def test_penalty_and_closed_form_loss():
    X, y, w = _problem()
    q = 0.25
    c = noise.dropout_penalty(X, q)
    torch.testing.assert_close(c, q / (1 - q) * torch.diag(X.T @ X), rtol=1e-13, atol=0)
    rates = torch.tensor([0.0, 0.1, 0.5], dtype=F64)
    C = noise.dropout_penalty(X, rates)
    assert C.shape == (3, 4) and torch.equal(C[0], torch.zeros(4, dtype=F64))
    W = torch.stack([w, 2 * w])
    loss = noise.dropout_expected_loss(X, y, W, q)
    for k in range(2):
        direct = ((y - X @ W[k]) ** 2).sum() + (c * W[k] ** 2).sum()
        torch.testing.assert_close(loss[k], direct, rtol=1e-13, atol=0)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.8])
def test_closed_form_equals_monte_carlo_loss_and_gradient(q):
    X, y, w = _problem(seed=1)
    losses, grads = noise.mc_dropout_loss(X, y, w, q, 20000, return_samples=True,
                                          generator=torch.Generator().manual_seed(0))
    exact = noise.dropout_expected_loss(X, y, w, q)
    assert abs(float(losses.mean() - exact)) <= Z * float(_se(losses))
    c = noise.dropout_penalty(X, q)
    grad_exact = 2 * X.T @ (X @ w - y) + 2 * c * w
    assert ((grads.mean(0) - grad_exact).abs() <= Z * _se(grads)).all()


@pytest.mark.parametrize("family", ["squared", "logistic", "poisson"])
def test_monte_carlo_equals_exact_enumeration(family):
    X, y, w = _problem(seed=2, n=12, p=4)
    if family == "logistic":
        y = (y > 0).to(F64)
    elif family == "poisson":
        X, w = 0.3 * X, 0.5 * w
        y = torch.poisson(torch.exp(X @ w), generator=torch.Generator().manual_seed(0))
    q = 0.3
    exact = _exact_dropout_loss(X, y, w, q, family)
    losses, _ = noise.mc_dropout_loss(X, y, w, q, 20000, family=family, return_samples=True,
                                      generator=torch.Generator().manual_seed(1))
    assert abs(float(losses.mean() - exact)) <= Z * float(_se(losses))
    if family == "squared":
        torch.testing.assert_close(exact, noise.dropout_expected_loss(X, y, w, q),
                                   rtol=1e-12, atol=0)


def test_monte_carlo_gradient_is_the_gradient_of_the_monte_carlo_loss():
    X, y, w = _problem(seed=3)
    y = (y > 0).to(F64)
    wr = w.clone().requires_grad_(True)
    loss, grad = noise.mc_dropout_loss(X, y, wr, 0.4, 50, family="logistic",
                                       generator=torch.Generator().manual_seed(2))
    (auto,) = torch.autograd.grad(loss, wr)
    torch.testing.assert_close(grad, auto, rtol=1e-12, atol=1e-12)


def test_monte_carlo_loss_gradcheck():
    X, y, w = _problem(seed=4, n=6, p=3)

    def f(wv):
        return noise.mc_dropout_loss(X, y, wv, 0.3, 5,
                                     generator=torch.Generator().manual_seed(0))[0]

    assert torch.autograd.gradcheck(f, (w.clone().requires_grad_(True),))


def test_monte_carlo_blocks_do_not_change_the_result():
    X, y, w = _problem(seed=5)
    one = noise.mc_dropout_loss(X, y, w, 0.3, 40, generator=torch.Generator().manual_seed(7))
    blocks = noise.mc_dropout_loss(X, y, w, 0.3, 40, block=7,
                                   generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(one[0], blocks[0], rtol=1e-13, atol=0)
    torch.testing.assert_close(one[1], blocks[1], rtol=1e-13, atol=1e-13)


def test_kernel_pastes_alone():
    X, y, w = _problem(seed=6)
    kernel = load_kernel(noise._mc_dropout_kernel)
    keep = (torch.rand(9, *X.shape, generator=torch.Generator().manual_seed(0),
                       dtype=F64) >= 0.2).to(F64)
    for family in ("squared", "logistic", "poisson"):
        yy = (y > 0).to(F64) if family != "squared" else y
        losses, grads = kernel(0.3 * X, yy, w, keep, 0.2, family)
        ref_l, ref_g = noise.mc_dropout_loss(0.3 * X, yy, w, 0.2, 9, family=family,
                                             return_samples=True,
                                             generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(losses, ref_l, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(grads, ref_g, rtol=1e-13, atol=1e-13)
        # each mask by hand
        Xk = keep[4] * 0.3 * X / 0.8
        by_hand = _clean_loss(Xk, yy, w, family)
        torch.testing.assert_close(losses[4], by_hand, rtol=1e-13, atol=1e-13)


def test_dropout_ridge_minimizes_the_expected_loss():
    X, y, _ = _problem(seed=7, n=40, p=5)
    rates = torch.tensor([0.0, 0.2, 0.6], dtype=F64)
    W = noise.dropout_ridge(X, y, rates)
    assert W.shape == (3, 5)
    for k, q in enumerate(rates.tolist()):
        w = W[k].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(noise.dropout_expected_loss(X, y, w, q), w)
        assert float(g.norm()) < 1e-9 * float((X.T @ y).norm())
        torch.testing.assert_close(noise.dropout_ridge(X, y, q), W[k], rtol=1e-12, atol=1e-13)
    # q = 0 is least squares
    torch.testing.assert_close(W[0], torch.linalg.lstsq(X, y[:, None]).solution[:, 0],
                               rtol=1e-10, atol=1e-12)


def test_dropout_is_ridge_after_standardizing_columns():
    # with unit-norm columns the penalty is q/(1-q) ||w||^2: plain ridge (sklearn's alpha)
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y, _ = _problem(seed=8, n=40, p=5)
    X = X / X.norm(dim=0)
    q = 0.3
    ref = sklearn.Ridge(alpha=q / (1 - q), fit_intercept=False).fit(X.numpy(), y.numpy())
    torch.testing.assert_close(noise.dropout_ridge(X, y, q), torch.as_tensor(ref.coef_),
                               rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- GLMs, noise

def test_glm_penalty_squared_family_is_exact():
    X, y, w = _problem(seed=9)
    q = 0.35
    exact = noise.dropout_expected_loss(X, y, w, q) - ((y - X @ w) ** 2).sum()
    torch.testing.assert_close(noise.dropout_glm_penalty(X, w, q, family="squared"), exact,
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("family", ["logistic", "poisson"])
def test_glm_penalty_is_second_order_accurate(family):
    # Bernoulli noise has all its cumulants of order q, so the expansion is not one in q:
    # it is one in the size of the perturbation x_ij w_j, and its relative error is
    # O(|x w|) (the third-order term over the second-order one). Shrink X: it halves.
    X, y, w = _problem(seed=10, n=10, p=4)
    y = (y > 0).to(F64)
    q, errs = 0.3, []
    for scale in (0.4, 0.2, 0.1):
        Xs = scale * X
        exact = _exact_dropout_loss(Xs, y, w, q, family) - _clean_loss(Xs, y, w, family)
        approx = noise.dropout_glm_penalty(Xs, w, q, family=family)
        errs.append(float((approx - exact).abs() / exact.abs()))
    assert errs[0] < 0.2 and errs[1] < 0.6 * errs[0] and errs[2] < 0.6 * errs[1], errs


def test_gaussian_noise_is_ridge_for_least_squares():
    X, y, w = _problem(seed=11)
    sigma, K = 0.4, 20000
    n = X.shape[0]
    pen = noise.gaussian_noise_penalty(X, w, sigma)
    torch.testing.assert_close(pen, n * sigma**2 * (w @ w), rtol=1e-13, atol=0)
    E = sigma * torch.randn(K, *X.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    losses = ((y - (X + E) @ w) ** 2).sum(-1)
    assert abs(float(losses.mean() - ((y - X @ w) ** 2).sum() - pen)) <= Z * float(_se(losses))


def test_gaussian_noise_poisson_second_order_matches_the_exact_lognormal_term():
    # E exp(eta + sigma z^T w) = exp(eta) exp(sigma^2 |w|^2 / 2): the exact penalty
    X, _, w = _problem(seed=12)
    X = 0.3 * X
    for sigma in (0.1, 0.01):
        exact = torch.exp(X @ w).sum() * math.expm1(sigma**2 * float(w @ w) / 2)
        approx = noise.gaussian_noise_penalty(X, w, sigma, family="poisson")
        assert abs(float(approx / exact) - 1) < sigma**2 * float(w @ w)


def test_penalties_are_batched_over_w():
    X, _, w = _problem(seed=13)
    W = torch.stack([w, -w, 0.5 * w])
    for fn, arg in [(noise.dropout_glm_penalty, 0.3), (noise.gaussian_noise_penalty, 0.2)]:
        batched = fn(X, W, arg, family="logistic")
        for k in range(3):
            torch.testing.assert_close(batched[k], fn(X, W[k], arg, family="logistic"),
                                       rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- multi-sample

def _head():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 3, generator=g, dtype=F64)
    return A, (lambda z: torch.tanh(z) @ A)


def test_multisample_with_one_mask_is_dropout_then_head():
    A, head = _head()
    h = torch.randn(10, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = torch.arange(10) % 3
    ms = noise.multisample_dropout_loss(h, y, head, 0.4, 1,
                                        generator=torch.Generator().manual_seed(5))
    hd = noise.dropout(h, 0.4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ms, torch.nn.functional.cross_entropy(head(hd), y),
                               rtol=1e-13, atol=0)
    plain = torch.nn.functional.cross_entropy(head(h), y)
    torch.testing.assert_close(noise.multisample_dropout_loss(h, y, head, 0.0, 4), plain,
                               rtol=1e-13, atol=0)


def test_multisample_is_the_mean_of_per_mask_losses_and_its_gradient_variance_is_1_over_k():
    A, _ = _head()
    h = torch.randn(10, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = torch.arange(10) % 3
    K = 5
    keep = (torch.rand(K, 10, 6, generator=torch.Generator().manual_seed(9),
                       dtype=F64) >= 0.4).to(F64)
    per_mask = [torch.nn.functional.cross_entropy(torch.tanh(keep[k] * h / 0.6) @ A, y)
                for k in range(K)]
    ms = noise.multisample_dropout_loss(h, y, lambda z: torch.tanh(z) @ A, 0.4, K,
                                        generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ms, torch.stack(per_mask).mean(), rtol=1e-13, atol=0)

    def grad_var(k, reps=300, seed=0):
        Ar = A.clone().requires_grad_(True)
        g = torch.Generator().manual_seed(seed)
        gs = torch.stack([torch.autograd.grad(noise.multisample_dropout_loss(
            h, y, lambda z: torch.tanh(z) @ Ar, 0.4, k, generator=g), Ar)[0].reshape(-1)
            for _ in range(reps)])
        return float(gs.var(0).sum())

    ratio = grad_var(1) / grad_var(8, seed=1)
    # sample variances of 300 draws each: the ratio is 8 within about 20 %
    assert 6.0 < ratio < 10.5, ratio


# ----------------------------------------------------------------------------- augmentation

def _expected_cut(H, s):
    """E |rows covered| for a center uniform on 0..H-1: average of clipped lengths."""
    return np.mean([min(c - s // 2 + s, H) - max(c - s // 2, 0) for c in range(H)])


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_cutout_zeroes_the_expected_number_of_pixels(size):
    B = 4000
    x = torch.ones(B, 2, 8, 6, dtype=F64)
    out = noise.cutout(x, size, generator=torch.Generator().manual_seed(size))
    assert torch.equal(out[:, 0], out[:, 1])  # one square for every channel
    zeros = (out[:, 0] == 0).sum((-2, -1)).to(F64)
    expected = _expected_cut(8, size) * _expected_cut(6, size)  # rows, cols independent
    assert abs(float(zeros.mean()) - expected) <= Z * float(_se(zeros)) + 1e-12
    assert float(zeros.max()) <= size * size
    # the zeroed pixels form a rectangle (a clipped square)
    img = out[0, 0] == 0
    r, c = img.any(1).nonzero(), img.any(0).nonzero()
    assert int(img.sum()) == len(r) * len(c)


def test_beta_sampler_moments():
    for alpha in (0.2, 1.0, 2.0):
        g = torch.Generator().manual_seed(0)
        lam = torch.tensor([noise._beta(alpha, g) for _ in range(4000)], dtype=F64)
        var = 1 / (4 * (2 * alpha + 1))
        assert abs(float(lam.mean()) - 0.5) <= Z * math.sqrt(var / 4000)
        assert abs(float(lam.var()) - var) <= 0.1 * var


@pytest.mark.parametrize("fn", [noise.mixup, noise.cutmix])
def test_mixing_preserves_label_mass_and_is_invariant_to_batch_order(fn):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 5, 5, generator=g, dtype=F64)
    y = torch.nn.functional.one_hot(torch.arange(12) % 4, 4).to(F64)
    for seed in range(10):
        xm, ym = fn(x, y, 1.0, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(ym.sum(1), torch.ones(12, dtype=F64), rtol=0, atol=1e-14)
        torch.testing.assert_close(ym.sum(0), y.sum(0), rtol=0, atol=1e-13)
        torch.testing.assert_close(xm.sum(0), x.sum(0), rtol=0, atol=1e-13)
        # reorder the batch: the mixed batch's class mass and mean image do not change
        order = torch.randperm(12, generator=torch.Generator().manual_seed(100 + seed))
        xo, yo = fn(x[order], y[order], 1.0, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(yo.sum(0), ym.sum(0), rtol=0, atol=1e-13)
        torch.testing.assert_close(xo.mean(0), xm.mean(0), rtol=0, atol=1e-14)
        assert ((ym >= 0) & (ym <= 1)).all()
    a = fn(x, y, 0.4, generator=torch.Generator().manual_seed(3))
    b = fn(x, y, 0.4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cutmix_label_weight_is_the_pixel_share():
    x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]).to(F64)
    y = torch.eye(2, dtype=F64)
    for seed in range(20):
        xm, ym = noise.cutmix(x, y, 1.0, generator=torch.Generator().manual_seed(seed))
        # image 0 is zeros: its mean is the share of pixels pasted from image 1 (if swapped)
        share = float(xm[0].mean())
        assert abs(float(ym[0, 1]) - share) < 1e-14 or abs(float(ym[0, 0]) - 1) < 1e-14


# ----------------------------------------------------------------------------- quantization

def test_quantize_error_levels_idempotence_and_ste():
    w = torch.randn(500, generator=torch.Generator().manual_seed(0), dtype=F64)
    for bits in (1, 2, 4, 8):
        qw = noise.quantize(w, bits)
        delta = (w.max() - w.min()) / (2**bits - 1)
        assert float((qw - w).abs().max()) <= float(delta) / 2 * (1 + 1e-12)
        assert len(torch.unique(qw)) <= 2**bits
        torch.testing.assert_close(noise.quantize(qw, bits), qw, rtol=0, atol=1e-12)
    wr = w.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((noise.quantize(wr, 3, ste=True) * w).sum(), wr)
    torch.testing.assert_close(g, w)  # straight through: d/dw sum(Q(w) * c) = c
    assert torch.equal(noise.quantize(torch.ones(3), 4), torch.ones(3))


def test_quantization_noise_moments_and_penalty():
    X, y, w = _problem(seed=14)
    bits, K = 3, 20000
    g = torch.Generator().manual_seed(0)
    W = noise.quantization_noise(w.expand(K, -1), bits, generator=g)
    # expand shares the range of w, so the step is that of w
    delta = float((w.max() - w.min()) / (2**bits - 1))
    e = W - w
    assert float(e.abs().max()) <= delta / 2
    assert abs(float(e.var()) - delta**2 / 12) <= 0.03 * delta**2 / 12
    losses = ((y - W @ X.T) ** 2).sum(-1)
    pen = noise.quantization_penalty(X, w, bits)
    torch.testing.assert_close(pen, torch.tensor(delta**2 / 12 * float((X * X).sum()),
                                                 dtype=F64), rtol=1e-12, atol=0)
    clean = ((y - X @ w) ** 2).sum()
    assert abs(float(losses.mean() - clean - pen)) <= Z * float(_se(losses))


# ----------------------------------------------------------------------------- bad input

X0, y0, w0 = _problem(seed=20, n=5, p=3)
img0 = torch.zeros(2, 4, 4)
lab0 = torch.eye(2)
NAN_X = X0.clone()
NAN_X[0, 0] = math.nan
BAD = [
    (lambda: noise.dropout(torch.ones(3), 1.0), ValueError, "p"),
    (lambda: noise.dropout(torch.ones(3), -0.1), ValueError, "p"),
    (lambda: noise.dropout(torch.ones(3), math.nan), ValueError, "p"),
    (lambda: noise.dropout(torch.ones(3), "a"), ValueError, "p"),
    (lambda: noise.dropout(torch.ones(3), True), ValueError, "p"),
    (lambda: noise.dropout(torch.tensor([1.0, math.nan]), 0.5), ValueError, "x"),
    (lambda: noise.dropout(torch.ones(3), 0.5, generator=1), TypeError, "generator"),
    (lambda: noise.dropout_penalty(NAN_X, 0.5), ValueError, "X"),
    (lambda: noise.dropout_penalty(torch.ones(3), 0.5), ValueError, "X"),
    (lambda: noise.dropout_penalty(X0, [0.1, 1.0]), ValueError, "p"),
    (lambda: noise.dropout_penalty(X0, [[0.1]]), ValueError, "p"),
    (lambda: noise.dropout_expected_loss(X0, y0[:3], w0, 0.5), ValueError, "y"),
    (lambda: noise.dropout_expected_loss(X0, y0, w0[:2], 0.5), ValueError, "w"),
    (lambda: noise.dropout_expected_loss(X0, y0, w0, 1.5), ValueError, "p"),
    (lambda: noise.dropout_ridge(X0, y0, 1.0), ValueError, "p"),
    (lambda: noise.dropout_ridge(torch.ones(3, 4), torch.ones(3), 0.0), ValueError, "X"),
    (lambda: noise.dropout_glm_penalty(X0, w0, 0.5, family="gamma"), ValueError, "family"),
    (lambda: noise.gaussian_noise_penalty(X0, w0, -1.0), ValueError, "sigma"),
    (lambda: noise.gaussian_noise_penalty(X0, w0, "x"), ValueError, "sigma"),
    (lambda: noise.mc_dropout_loss(X0, y0, w0, 0.5, 0), ValueError, "n_masks"),
    (lambda: noise.mc_dropout_loss(X0, y0, w0, 0.5, 2.0), ValueError, "n_masks"),
    (lambda: noise.mc_dropout_loss(X0, y0, w0, 0.5, 4, block=0), ValueError, "block"),
    (lambda: noise.mc_dropout_loss(X0, y0, w0[None], 0.5, 4), ValueError, "w"),
    (lambda: noise.mc_dropout_loss(X0, y0 + 5, w0, 0.5, 4, family="logistic"),
     ValueError, "y"),
    (lambda: noise.mc_dropout_loss(X0, y0 - 50, w0, 0.5, 4, family="poisson"),
     ValueError, "y"),
    (lambda: noise.mc_dropout_loss(X0, y0, w0, 1.0, 4), ValueError, "p"),
    (lambda: noise.multisample_dropout_loss(torch.ones(3), torch.zeros(3), abs, 0.5, 2),
     ValueError, "h"),
    (lambda: noise.multisample_dropout_loss(torch.ones(3, 2), torch.zeros(4), abs, 0.5, 2),
     ValueError, "y"),
    (lambda: noise.multisample_dropout_loss(torch.ones(3, 2), torch.zeros(3), None, 0.5, 2),
     TypeError, "head"),
    (lambda: noise.multisample_dropout_loss(torch.ones(3, 2), torch.zeros(3), abs, 0.5, 0),
     ValueError, "n_samples"),
    (lambda: noise.cutout(torch.zeros(4, 4), 2), ValueError, "x"),
    (lambda: noise.cutout(img0, 0), ValueError, "size"),
    (lambda: noise.cutout(img0 + math.nan, 2), ValueError, "x"),
    (lambda: noise.mixup(img0, lab0, 0.0), ValueError, "alpha"),
    (lambda: noise.mixup(img0, lab0[:1], 1.0), ValueError, "y"),
    (lambda: noise.mixup(img0, torch.zeros(2), 1.0), ValueError, "y"),
    (lambda: noise.cutmix(img0, lab0, -1.0), ValueError, "alpha"),
    (lambda: noise.cutmix(torch.zeros(2, 4), lab0, 1.0), ValueError, "x"),
    (lambda: noise.quantize(torch.ones(3), 0), ValueError, "bits"),
    (lambda: noise.quantize(torch.ones(3), 2.0), ValueError, "bits"),
    (lambda: noise.quantize(torch.tensor([math.inf]), 2), ValueError, "w"),
    (lambda: noise.quantize(torch.ones(0), 2), ValueError, "w"),
    (lambda: noise.quantization_noise(torch.ones(3), 2, generator="g"), TypeError,
     "generator"),
    (lambda: noise.quantization_penalty(X0, w0[:2], 2), ValueError, "w"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.gpu
def test_gpu_matches_cpu():
    X, y, w = _problem(seed=21)
    cpu = noise.mc_dropout_loss(X, y, w, 0.3, 64, generator=torch.Generator().manual_seed(0))
    gpu = noise.mc_dropout_loss(X.cuda(), y.cuda(), w.cuda(), 0.3, 64,
                                generator=torch.Generator().manual_seed(0))
    assert gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-10, atol=1e-10)
    xc = noise.cutout(torch.ones(3, 8, 8).cuda(), 3, generator=torch.Generator().manual_seed(1))
    x0 = noise.cutout(torch.ones(3, 8, 8), 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(xc.cpu(), x0)
