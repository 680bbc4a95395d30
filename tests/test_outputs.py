"""regref.outputs against direct formulas and peers.

Oracles: PyTorch's ``cross_entropy(label_smoothing=...)`` for label smoothing, torchmetrics'
``MulticlassCalibrationError`` (equal-width bins) and its bin-boundary routine with
equal-mass boundaries, a direct loop for equal-mass ECE, explicit repeated
``ridge.kernel_ridge`` fits for self-distillation, a grid/bisection for the temperature,
and the soft-target formula ``T (q_s - q_t)`` for the distillation gradient.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import load_kernel

import regref
from regref import outputs, ridge

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _classifier_outputs(n=400, K=5, seed=0, scale=3.0):
    """Logits of a noisy, overconfident classifier and labels drawn from a softer model."""
    g = _gen(seed)
    z = scale * torch.randn(n, K, generator=g, dtype=F64)
    y = torch.multinomial(torch.softmax(z / 2, -1), 1, generator=g).squeeze(-1)
    return z, y


def _kernel_problem(n=40, seed=0):
    g = _gen(seed)
    x = torch.rand(n, 1, generator=g, dtype=F64)
    K = ridge.rbf_kernel(x, length_scale=0.2)
    y = torch.sin(6 * x[:, 0]) + 0.3 * torch.randn(n, generator=g, dtype=F64)
    return K, y


# --- label smoothing, confidence penalty, soft targets ---------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_label_smoothing_equals_torch_and_kl_form(alpha):
    z, y = _classifier_outputs(50, 7)
    got = outputs.label_smoothing_loss(z, y, alpha)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(
        z, y, label_smoothing=alpha), rtol=1e-13, atol=1e-13)
    # direct formula: CE((1 - a) e_y + a u, p) = (1 - a) CE(e_y, p) + a KL(u || p) + a log K
    logp = torch.log_softmax(z, -1)
    ce = -logp[torch.arange(50), y]
    kl_u = (-math.log(7) - logp).mean(-1)
    direct = ((1 - alpha) * ce + alpha * kl_u + alpha * math.log(7)).mean()
    torch.testing.assert_close(got, direct, rtol=1e-13, atol=1e-13)
    t = (1 - alpha) * torch.nn.functional.one_hot(y, 7).to(F64) + alpha / 7
    torch.testing.assert_close(got, outputs.soft_target_loss(z, t), rtol=1e-13, atol=1e-13)


def test_confidence_penalty_is_reverse_kl_to_uniform():
    z, y = _classifier_outputs(30, 4, seed=1)
    lam = 0.3
    logp = torch.log_softmax(z, -1)
    p = logp.exp()
    kl_p_u = (p * (logp + math.log(4))).sum(-1)
    direct = (-logp[torch.arange(30), y] + lam * kl_p_u - lam * math.log(4)).mean()
    torch.testing.assert_close(outputs.confidence_penalty(z, y, lam), direct, rtol=1e-13,
                               atol=1e-13)


def test_label_smoothing_optimum_has_the_stated_logit_gap():
    """argmin_z CE((1-a)e_y + a u, softmax z): gaps log(1 + K (1 - a) / a) (chapter 11)."""
    K, a = 6, 0.2
    z = torch.zeros(1, K, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=1, max_iter=200, tolerance_grad=1e-14,
                            tolerance_change=0, line_search_fn="strong_wolfe")
    y = torch.tensor([2])

    def closure():
        opt.zero_grad()
        loss = outputs.label_smoothing_loss(z, y, a)
        loss.backward()
        return loss

    opt.step(closure)
    gaps = (z[0, 2] - torch.cat([z[0, :2], z[0, 3:]])).detach()
    assert torch.allclose(gaps, torch.full_like(gaps, math.log(1 + K * (1 - a) / a)),
                          atol=1e-8)


def test_soft_target_gradient_is_p_minus_t():
    z, y = _classifier_outputs(20, 5, seed=2)
    t = outputs.pskd_targets(y, torch.softmax(z.flip(0), -1), 0.4)
    torch.testing.assert_close(t.sum(-1), torch.ones(20, dtype=F64))
    zz = z.clone().requires_grad_()
    outputs.soft_target_loss(zz, t).backward()
    torch.testing.assert_close(zz.grad, (torch.softmax(z, -1) - t) / 20, rtol=1e-12,
                               atol=1e-15)


def test_losses_gradcheck():
    z, y = _classifier_outputs(6, 4, seed=3)
    zs = z.clone().requires_grad_()
    t = torch.softmax(torch.randn(6, 4, generator=_gen(4), dtype=F64), -1)
    for f in (lambda v: outputs.label_smoothing_loss(v, y, 0.2),
              lambda v: outputs.confidence_penalty(v, y, 0.5),
              lambda v: outputs.soft_target_loss(v, t),
              lambda v: outputs.elr_loss(v, y, t, 3.0),
              lambda v: outputs.distillation_loss(v, z.flip(0), y, 3.0, 0.7)):
        assert torch.autograd.gradcheck(f, (zs,))


# --- distillation ------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 4.0, 20.0])
def test_distillation_gradient_is_the_soft_target_formula(T):
    zs, y = _classifier_outputs(25, 6, seed=5)
    zt = torch.randn(25, 6, generator=_gen(6), dtype=F64)
    w = 0.7
    v = zs.clone().requires_grad_()
    outputs.distillation_loss(v, zt, y, T, w).backward()
    hard = torch.softmax(zs, -1) - torch.nn.functional.one_hot(y, 6)
    soft = T * (torch.softmax(zs / T, -1) - torch.softmax(zt / T, -1))
    torch.testing.assert_close(v.grad, ((1 - w) * hard + w * soft) / 25, rtol=1e-11,
                               atol=1e-14)


def test_distillation_t_squared_keeps_the_gradient_scale():
    """For zero-mean logits T (q_s - q_t) -> (z_s - z_t) / K as T grows (Hinton et al.)."""
    g = _gen(7)
    zs, zt = torch.randn(10, 8, generator=g, dtype=F64), torch.randn(10, 8, generator=g,
                                                                     dtype=F64)
    zs, zt = zs - zs.mean(-1, keepdim=True), zt - zt.mean(-1, keepdim=True)
    y = torch.zeros(10, dtype=torch.long)
    v = zs.clone().requires_grad_()
    outputs.distillation_loss(v, zt, y, 1e5, 1.0).backward()
    torch.testing.assert_close(v.grad * 10, (zs - zt) / 8, rtol=1e-4, atol=1e-5)
    loss = outputs.distillation_loss(zs, zt, y, 1e5, 1.0)
    direct = ((zs - zt) ** 2).sum(-1).mean() / (2 * 8)  # T^2 KL -> ||z_s - z_t||^2 / 2K
    assert abs(float(loss - direct)) <= 1e-3 * float(direct)


def test_distillation_loss_is_torch_kl_div():
    zs, y = _classifier_outputs(12, 3, seed=8)
    zt = torch.randn(12, 3, generator=_gen(9), dtype=F64)
    T, w = 2.5, 0.6
    kl = torch.nn.functional.kl_div(torch.log_softmax(zs / T, -1),
                                    torch.log_softmax(zt / T, -1), log_target=True,
                                    reduction="batchmean")
    expected = (1 - w) * torch.nn.functional.cross_entropy(zs, y) + w * T * T * kl
    torch.testing.assert_close(outputs.distillation_loss(zs, zt, y, T, w), expected,
                               rtol=1e-13, atol=1e-13)


# --- temperature scaling -------------------------------------------------------------------------


def test_temperature_scale_minimizes_nll_and_keeps_accuracy():
    z, y = _classifier_outputs(500, 5, seed=10)
    T, info = outputs.temperature_scale(z, y, return_info=True)
    assert info.converged and info.certificate <= 1e-10 and info.n_iter < 30

    def nll(t):
        return float(torch.nn.functional.cross_entropy(z / t, y))

    for factor in (0.999, 1.001, 0.9, 1.1):
        assert nll(T) <= nll(T * factor)
    # the derivative in T vanishes
    t = T.clone().requires_grad_()
    torch.nn.functional.cross_entropy(z / t, y).backward()
    assert abs(float(t.grad)) * float(T) <= 1e-9
    assert float(T) > 1  # these logits are overconfident by construction (scale 3 vs 2)
    assert torch.equal((z / T).argmax(-1), z.argmax(-1))


@pytest.mark.parametrize("c", [0.25, 3.0])
def test_temperature_scale_is_scale_equivariant(c):
    """Scaling the logits by c > 0 scales the fitted temperature by c."""
    z, y = _classifier_outputs(300, 6, seed=15)
    T, Tc = outputs.temperature_scale(z, y), outputs.temperature_scale(c * z, y)
    assert abs(float(Tc) - c * float(T)) <= 1e-8 * c * float(T)


def test_temperature_scale_float32_and_warning():
    z, y = _classifier_outputs(200, 4, seed=11)
    T32 = outputs.temperature_scale(z.float(), y)
    assert T32.dtype == torch.float32
    assert abs(float(T32) - float(outputs.temperature_scale(z, y))) <= 1e-4 * float(T32)
    separable = torch.tensor([[3.0, 0.0], [0.0, 3.0]], dtype=F64)
    with pytest.warns(regref.ConvergenceWarning) as record:
        outputs.temperature_scale(separable, torch.tensor([0, 1]), max_iter=20)
    assert record[0].filename == __file__


# --- calibration ---------------------------------------------------------------------------------


def _tm_ece(probs, y, n_bins):
    from torchmetrics.classification import MulticlassCalibrationError

    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
    return metric(probs, y)


@pytest.mark.parametrize("n_bins", [5, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_equal_width_matches_torchmetrics(n_bins, seed):
    z, y = _classifier_outputs(300, 4, seed=seed)
    p = torch.softmax(z, -1)
    assert float(p.max()) < 1  # torchmetrics puts a confidence of exactly 1 in an extra bin
    got = outputs.expected_calibration_error(p, y, n_bins)
    # the metric class computes in float32; its routine on float64 input agrees to rounding
    torch.testing.assert_close(got, _tm_ece(p, y, n_bins).to(F64), rtol=1e-6, atol=1e-7)
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    conf, pred = p.max(-1)
    tm64 = _ce_compute(conf, (pred == y).to(F64), n_bins, norm="l1")
    assert abs(float(got - tm64)) <= 1e-13


def test_ece_equal_mass_matches_direct_formula_and_torchmetrics_bins():
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    z, y = _classifier_outputs(303, 6, seed=3)
    p = torch.softmax(z, -1)
    conf, pred = p.max(-1)
    correct = (pred == y).double()
    B = 10
    order = torch.argsort(conf)
    chunks = [order[-(-b * 303 // B):-(-(b + 1) * 303 // B)] for b in range(B)]
    direct = sum(len(c) / 303 * abs(float(correct[c].mean() - conf[c].mean())) for c in chunks)
    got = outputs.expected_calibration_error(p, y, B, binning="mass")
    assert abs(float(got) - direct) <= 1e-12
    _, _, counts = outputs.reliability_curve(p, y, B, binning="mass")
    assert counts.tolist() == [len(c) for c in chunks]
    # the same bins as boundaries (midpoints between neighbours) in torchmetrics' routine
    sc = conf[order]
    cuts = [(sc[len(torch.cat(chunks[:b])) - 1] + sc[len(torch.cat(chunks[:b]))]) / 2
            for b in range(1, B)]
    edges = torch.tensor([0.0, *cuts, 2.0], dtype=F64)
    tm = _ce_compute(conf, correct, edges, norm="l1")
    assert abs(float(tm) - direct) <= 1e-12


def test_reliability_curve_and_brier_direct():
    z, y = _classifier_outputs(200, 3, seed=4)
    p = torch.softmax(z, -1)
    conf_b, acc_b, count = outputs.reliability_curve(p, y, 4)
    conf, pred = p.max(-1)
    for b in range(4):
        m = (conf >= b / 4) & (conf < (b + 1) / 4) if b < 3 else conf >= 0.75
        assert int(count[b]) == int(m.sum())
        if m.any():
            assert abs(float(conf_b[b] - conf[m].mean())) <= 1e-14
            assert abs(float(acc_b[b] - (pred[m] == y[m]).double().mean())) <= 1e-14
    brier = sum(float(((p[i] - torch.eye(3, dtype=F64)[y[i]]) ** 2).sum()) for i in range(200))
    assert abs(float(outputs.brier_score(p, y)) - brier / 200) <= 1e-13
    perfect = torch.eye(3, dtype=F64)[y]
    assert float(outputs.expected_calibration_error(perfect, y)) == 0.0


def test_ece_of_a_calibrated_model_is_small_monte_carlo():
    """Labels drawn from the predicted probabilities: ECE is only the sampling noise,
    about sqrt(conf (1 - conf) / n_b) per bin; 5 standard errors bound it."""
    g = _gen(12)
    n, B = 20000, 10
    p = torch.softmax(2 * torch.randn(n, 4, generator=g, dtype=F64), -1)
    y = torch.multinomial(p, 1, generator=g).squeeze(-1)
    conf_b, _, count = outputs.reliability_curve(p, y, B)
    se = (count * torch.sqrt(conf_b * (1 - conf_b) / count.clamp_min(1))).sum() / n
    assert float(outputs.expected_calibration_error(p, y, B)) <= 5 * float(se)


# --- self-distillation in kernel ridge --------------------------------------------------------


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.8, 1.0])
def test_self_distillation_equals_repeated_kernel_ridge_fits(weight):
    K, y = _kernel_problem()
    lam = 0.5
    rounds = [0, 1, 2, 5, 12]
    alphas = outputs.self_distill_kernel_ridge(K, y, lam, rounds, weight=weight)
    a = ridge.kernel_ridge(K, y, lam)
    explicit = [a]
    for _ in range(12):
        a = ridge.kernel_ridge(K, (1 - weight) * y + weight * (K @ a), lam)
        explicit.append(a)
    for i, t in enumerate(rounds):
        torch.testing.assert_close(alphas[i], explicit[t], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("weight", [0.25, 0.5, 0.9])
def test_infinite_self_distillation_is_kernel_ridge_with_amplified_lambda(weight):
    """Exactly (to rounding): rounds=inf equals kernel ridge at lam / (1 - w), and so does
    the limit of the explicit fits."""
    K, y = _kernel_problem(seed=1)
    lam = 0.2
    limit = outputs.self_distill_kernel_ridge(K, y, lam, math.inf, weight=weight)
    amplified = ridge.kernel_ridge(K, y, lam / (1 - weight))
    torch.testing.assert_close(limit, amplified, rtol=1e-11, atol=1e-12)
    a = ridge.kernel_ridge(K, y, lam)
    for _ in range(400):  # contraction factor <= weight: 0.9 ** 400 ~ 5e-19
        a = ridge.kernel_ridge(K, (1 - weight) * y + weight * (K @ a), lam)
    torch.testing.assert_close(a, amplified, rtol=1e-10, atol=1e-11)


def test_self_distillation_pure_filter_and_shapes():
    K, y = _kernel_problem(n=25, seed=2)
    lam = 0.3
    d, Q = torch.linalg.eigh(K)
    s = d.clamp_min(0) / (d.clamp_min(0) + lam)
    alphas = outputs.self_distill_kernel_ridge(K, y, lam, [0, 3], weight=1.0)
    fitted = K @ alphas[1]
    torch.testing.assert_close(fitted, Q @ (s ** 4 * (Q.T @ y)), rtol=1e-9, atol=1e-11)
    Y = torch.stack([y, 2 * y], 1)
    two = outputs.self_distill_kernel_ridge(K, Y, lam, [1, 2, math.inf])
    assert two.shape == (3, 25, 2)
    torch.testing.assert_close(two[..., 1], 2 * two[..., 0])
    single = outputs.self_distill_kernel_ridge(K.float(), y.float(), lam, 2)
    assert single.shape == (25,) and single.dtype == torch.float32


def test_self_distill_kernel_pastes_alone():
    K, y = _kernel_problem(n=15, seed=3)
    kernel = load_kernel(outputs._self_distill_kernel)
    r = torch.tensor([0.0, 4.0, math.inf], dtype=F64)
    got = kernel(K, y[:, None], 0.4, 0.6, r)[..., 0]
    torch.testing.assert_close(got, outputs.self_distill_kernel_ridge(K, y, 0.4, [0, 4, math.inf],
                                                                      weight=0.6))


def test_temperature_kernel_pastes_alone():
    z, y = _classifier_outputs(100, 3, seed=13)
    kernel = load_kernel(outputs._temperature_kernel)
    T, cert, _ = kernel(z, y, 1e-10, 100)
    assert cert <= 1e-10 and abs(T - float(outputs.temperature_scale(z, y))) <= 1e-14 * T


# --- ELR --------------------------------------------------------------------------------------


def test_elr_loss_direct_and_targets():
    z, y = _classifier_outputs(40, 5, seed=14)
    t = torch.zeros(40, 5, dtype=F64)
    for k in range(3):
        p = torch.softmax(z + k, -1)
        t = outputs.elr_update_targets(t, p, 0.7)
    expected_t = 0.3 * (0.49 + 0.7 + 1) * torch.softmax(z, -1)  # softmax(z + k) = softmax(z)
    torch.testing.assert_close(t, expected_t, rtol=1e-13, atol=1e-15)
    p = torch.softmax(z, -1)
    direct = (-torch.log(p[torch.arange(40), y]) + 3.0 * torch.log(1 - (p * t).sum(-1))).mean()
    torch.testing.assert_close(outputs.elr_loss(z, y, t, 3.0), direct, rtol=1e-13, atol=1e-13)
    # the regularizer's gradient direction: -lam (p * t - <p, t> p) / (1 - <p, t>) / n
    v = z.clone().requires_grad_()
    outputs.elr_loss(v, y, t, 3.0).backward()
    pt = (p * t).sum(-1, keepdim=True)
    reg = -3.0 * (p * t - pt * p) / (1 - pt)
    ce = p - torch.nn.functional.one_hot(y, 5)
    torch.testing.assert_close(v.grad, (ce + reg) / 40, rtol=1e-11, atol=1e-15)


# --- bad input ---------------------------------------------------------------------------------

Z = torch.zeros(3, 4, dtype=F64)
Y = torch.tensor([0, 1, 2])
P = torch.full((3, 4), 0.25, dtype=F64)
KM = torch.eye(3, dtype=F64)
YV = torch.ones(3, dtype=F64)

BAD = [
    (lambda: outputs.label_smoothing_loss(Z, torch.tensor([0, 1, 4]), 0.1), ValueError, "labels"),
    (lambda: outputs.label_smoothing_loss(Z, torch.tensor([0, -1, 2]), 0.1), ValueError,
     "labels"),
    (lambda: outputs.label_smoothing_loss(Z, torch.tensor([0.0, 1.0, 2.0]), 0.1), TypeError,
     "labels"),
    (lambda: outputs.label_smoothing_loss(Z, Y[:2], 0.1), ValueError, "labels"),
    (lambda: outputs.label_smoothing_loss(Z, Y, 1.5), ValueError, "smoothing"),
    (lambda: outputs.label_smoothing_loss(Z, Y, -0.1), ValueError, "smoothing"),
    (lambda: outputs.label_smoothing_loss(torch.zeros(3, 1), Y * 0, 0.1), ValueError, "logits"),
    (lambda: outputs.label_smoothing_loss(Z + math.nan, Y, 0.1), ValueError, "logits"),
    (lambda: outputs.confidence_penalty(Z, Y, -1.0), ValueError, "lam"),
    (lambda: outputs.soft_target_loss(Z, P * 2), ValueError, "targets"),
    (lambda: outputs.soft_target_loss(Z, P[:2]), ValueError, "targets"),
    (lambda: outputs.expected_calibration_error(P * 0.9, Y), ValueError, "probs"),
    (lambda: outputs.expected_calibration_error(P - 0.5 + 0.5, Y + 3), ValueError, "labels"),
    (lambda: outputs.expected_calibration_error(P, Y, 0), ValueError, "n_bins"),
    (lambda: outputs.expected_calibration_error(P, Y, binning="quantile"), ValueError,
     "binning"),
    (lambda: outputs.reliability_curve(P[:0], Y[:0]), ValueError, "probs"),
    (lambda: outputs.brier_score(torch.tensor([[1.5, -0.5], [0.5, 0.5]]), Y[:2]), ValueError,
     "probs"),
    (lambda: outputs.temperature_scale(Z, Y, max_iter=0), ValueError, "max_iter"),
    (lambda: outputs.temperature_scale(Z, Y, tol=-1.0), ValueError, "tol"),
    (lambda: outputs.temperature_scale(Z[None], Y[None]), ValueError, "logits"),
    (lambda: outputs.distillation_loss(Z, Z[:2], Y), ValueError, "teacher_logits"),
    (lambda: outputs.distillation_loss(Z, Z, Y, temperature=0.0), ValueError, "temperature"),
    (lambda: outputs.distillation_loss(Z, Z, Y, weight=2.0), ValueError, "weight"),
    (lambda: outputs.pskd_targets(Y, P * 3, 0.5), ValueError, "past_probs"),
    (lambda: outputs.pskd_targets(Y, P, -0.5), ValueError, "weight"),
    (lambda: outputs.elr_loss(Z, Y, -P, 3.0), ValueError, "targets"),
    (lambda: outputs.elr_loss(Z, Y, P, -3.0), ValueError, "lam"),
    (lambda: outputs.elr_update_targets(P[:2], P, 0.7), ValueError, "targets"),
    (lambda: outputs.elr_update_targets(P, P, 1.2), ValueError, "momentum"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV, 0.0, 1), ValueError, "lam"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV, 1.0, -1), ValueError, "rounds"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV, 1.0, 1.5), ValueError, "rounds"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV, 1.0, []), ValueError, "rounds"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV, 1.0, "two"), TypeError, "rounds"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV, 1.0, 1, weight=1.1), ValueError,
     "weight"),
    (lambda: outputs.self_distill_kernel_ridge(KM[:2], YV, 1.0, 1), ValueError, "K"),
    (lambda: outputs.self_distill_kernel_ridge(-KM, YV, 1.0, 1), ValueError, "K"),
    (lambda: outputs.self_distill_kernel_ridge(KM + torch.triu(KM.roll(1, 1)), YV, 1.0, 1),
     ValueError, "K"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV[:2], 1.0, 1), ValueError, "y"),
    (lambda: outputs.self_distill_kernel_ridge(KM, YV * math.inf, 1.0, 1), ValueError, "y"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", regref.ConvergenceWarning)
        with pytest.raises(error, match=name):
            call()


@pytest.mark.gpu
def test_gpu_matches_cpu():
    K, y = _kernel_problem(n=200, seed=5)
    cpu = outputs.self_distill_kernel_ridge(K, y, 0.1, [0, 3, math.inf], weight=0.5)
    gpu = outputs.self_distill_kernel_ridge(K.cuda(), y.cuda(), 0.1, [0, 3, math.inf],
                                            weight=0.5)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-8, atol=1e-9)
    z, lab = _classifier_outputs(300, 5)
    p = torch.softmax(z, -1)
    assert abs(float(outputs.temperature_scale(z.cuda(), lab.cuda()))
               - float(outputs.temperature_scale(z, lab))) <= 1e-9
    for binning in ("width", "mass"):
        assert abs(float(outputs.expected_calibration_error(p.cuda(), lab.cuda(), 10, binning))
                   - float(outputs.expected_calibration_error(p, lab, 10, binning))) <= 1e-12
