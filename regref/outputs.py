r"""Regularizing the targets and the outputs of a classifier: label smoothing, confidence
penalties, temperature scaling, calibration error, distillation and noisy labels.

A classifier with :math:`K` classes outputs logits :math:`z \in \mathbb R^K` and
probabilities :math:`p = \operatorname{softmax}(z)`; a target is a point :math:`t` of the
simplex (a one-hot label :math:`e_y`, or something softer). Logits are tensors of shape
``(..., K)`` and integer labels of shape ``(...)``; losses are averaged over every leading
position. The cross-entropy of a target is
:math:`\operatorname{CE}(t, p) = -\sum_k t_k \log p_k`.

- :func:`soft_target_loss`, :func:`label_smoothing_loss`, :func:`confidence_penalty`:
  cross-entropy against soft targets, the smoothed labels
  :math:`(1-\alpha)e_y + \alpha/K`, and the entropy bonus :math:`-\lambda H(p)`;
- :func:`temperature_scale`: the temperature :math:`T` that minimizes the held-out
  negative log-likelihood of :math:`\operatorname{softmax}(z/T)` (Newton on :math:`1/T`);
- :func:`expected_calibration_error`, :func:`reliability_curve`, :func:`brier_score`:
  calibration with equal-width or equal-mass bins;
- :func:`distillation_loss` (with the :math:`T^2` factor), :func:`pskd_targets`
  (progressive self-knowledge distillation), :func:`self_distill_kernel_ridge` (repeated
  self-distillation in kernel ridge regression, all rounds from one eigendecomposition);
- :func:`elr_loss` and :func:`elr_update_targets`: early-learning regularization for
  noisy labels and its moving-average targets.

Derivations: chapter 11.
"""

from __future__ import annotations

import math

import torch

from ._core import (
    Info,
    as_float_tensor,
    check_finite,
    check_positive_int,
    check_strength,
    check_symmetric,
    check_tol,
    warn_not_converged,
)

__all__ = [
    "soft_target_loss",
    "label_smoothing_loss",
    "confidence_penalty",
    "temperature_scale",
    "expected_calibration_error",
    "reliability_curve",
    "brier_score",
    "distillation_loss",
    "pskd_targets",
    "self_distill_kernel_ridge",
    "elr_loss",
    "elr_update_targets",
]


# --- validation -----------------------------------------------------------------------------


def _logits(z, name: str = "logits") -> torch.Tensor:
    z = as_float_tensor(z, name)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (..., K) with K >= 2 classes, got shape "
                         f"{tuple(z.shape)}")
    return check_finite(z, name)


def _labels(y, z: torch.Tensor, name: str = "labels") -> torch.Tensor:
    y = torch.as_tensor(y, device=z.device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if tuple(y.shape) != tuple(z.shape[:-1]):
        raise ValueError(f"{name} must have shape {tuple(z.shape[:-1])} (the logits' leading "
                         f"dimensions), got {tuple(y.shape)}")
    K = z.shape[-1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= K):
        raise ValueError(f"{name} must be in [0, {K}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y.long()


def _probs(p, name: str = "probs", like: torch.Tensor | None = None) -> torch.Tensor:
    p = _logits(p, name) if like is None else check_finite(as_float_tensor(p, name, like), name)
    if like is not None and p.shape != like.shape:
        raise ValueError(f"{name} must have shape {tuple(like.shape)}, got {tuple(p.shape)}")
    atol = 1e-6 if p.dtype == torch.float64 else 1e-4
    if p.numel() and (bool((p < 0).any()) or float((p.sum(-1) - 1).abs().max()) > atol):
        raise ValueError(f"{name} must be probabilities: non-negative, each row summing to 1")
    return p


def _fraction(value, name: str, like: torch.Tensor) -> float:
    v = float(check_strength(value, name, like))
    if v > 1:
        raise ValueError(f"{name} must be in [0, 1], got {v:g}")
    return v


def _one_hot(labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, like.shape[-1]).to(like.dtype)


# --- losses on soft targets -----------------------------------------------------------------


def soft_target_loss(logits, targets) -> torch.Tensor:
    r"""Mean cross-entropy of soft targets, the loss every target regularizer feeds.

    .. math:: \frac1n \sum_{i} \operatorname{CE}(t_i, \operatorname{softmax}(z_i))
              = -\frac1n \sum_i \sum_k t_{ik} \log \operatorname{softmax}(z_i)_k .

    Its gradient in :math:`z_i` is :math:`(\operatorname{softmax}(z_i) - t_i)/n` when
    :math:`t_i` sums to one. Cost: :math:`O(nK)`. Derived in chapter 11.

    Parameters
    ----------
    logits : tensor of shape (..., K)
        Logits :math:`z`.
    targets : tensor of shape (..., K)
        Targets on the simplex (non-negative, rows summing to 1); not differentiated
        through unless they require grad.

    Returns
    -------
    tensor of shape ()
        The mean over every leading position.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import soft_target_loss
    >>> z = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    >>> round(float(soft_target_loss(z, torch.tensor([[0.5, 0.5]]))), 4)
    1.1269
    """
    z = _logits(logits)
    t = _probs(targets, "targets", like=z)
    return -(t * torch.log_softmax(z, -1)).sum(-1).mean()


def label_smoothing_loss(logits, labels, smoothing: float = 0.1) -> torch.Tensor:
    r"""Cross-entropy against smoothed labels :math:`(1-\alpha)e_y + \alpha u`,
    :math:`u = (1/K, \dots, 1/K)`.

    .. math:: \operatorname{CE}\big((1-\alpha)e_y + \alpha u,\ p\big)
              = (1-\alpha)\operatorname{CE}(e_y, p) + \alpha\,\mathrm{KL}(u\,\|\,p)
                + \alpha\log K,

    averaged over samples: a KL penalty toward the uniform distribution (chapter 11), which
    gives the minimizer the finite logit gap
    :math:`\log(1 + K(1-\alpha)/\alpha)`. Equals PyTorch's
    ``cross_entropy(logits, labels, label_smoothing=smoothing)``. Cost: :math:`O(nK)`.

    Parameters
    ----------
    logits : tensor of shape (..., K)
        Logits.
    labels : integer tensor of shape (...)
        Classes in :math:`[0, K)`.
    smoothing : float
        :math:`\alpha \in [0, 1]`; 0 is the plain cross-entropy.

    Returns
    -------
    tensor of shape ()
        The mean loss.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import label_smoothing_loss
    >>> z = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    >>> round(float(label_smoothing_loss(z, torch.tensor([0]), 0.1)), 4)
    0.3729
    """
    z = _logits(logits)
    y = _labels(labels, z)
    a = _fraction(smoothing, "smoothing", z)
    logp = torch.log_softmax(z, -1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return ((1 - a) * nll - a * logp.mean(-1)).mean()


def confidence_penalty(logits, labels, lam: float = 0.1) -> torch.Tensor:
    r"""Cross-entropy minus :math:`\lambda` times the entropy of the prediction.

    .. math:: \operatorname{CE}(e_y, p) - \lambda H(p)
              = \operatorname{CE}(e_y, p) + \lambda\,\mathrm{KL}(p\,\|\,u) - \lambda\log K,

    averaged over samples (Pereyra et al., 2017). Label smoothing with
    :math:`\alpha` is, up to the constant :math:`\alpha\log K` and the factor
    :math:`1-\alpha`, the cross-entropy plus :math:`\tfrac{\alpha}{1-\alpha}
    \mathrm{KL}(u\|p)`: the same penalty toward the uniform distribution with the KL's
    arguments swapped (chapter 11). Cost: :math:`O(nK)`.

    Parameters
    ----------
    logits : tensor of shape (..., K)
        Logits.
    labels : integer tensor of shape (...)
        Classes in :math:`[0, K)`.
    lam : float
        Strength :math:`\lambda \ge 0`.

    Returns
    -------
    tensor of shape ()
        The mean loss.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import confidence_penalty
    >>> z = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    >>> round(float(confidence_penalty(z, torch.tensor([0]), 0.1)), 4)
    0.173
    """
    z = _logits(logits)
    y = _labels(labels, z)
    lam = float(check_strength(lam, "lam", z))
    logp = torch.log_softmax(z, -1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return (nll - lam * entropy).mean()


# --- temperature scaling --------------------------------------------------------------------


def _temperature_kernel(z, y, tol, max_iter):
    r"""The part to copy: the temperature that minimizes the mean NLL of softmax(z / T).

    The NLL is convex in :math:`b = 1/T` with derivative :math:`g = \bar E_p[z] - \bar z_y`
    and second derivative the mean variance of the logits under :math:`p`, so Newton's
    method on :math:`b` converges fast; a bracket ``[lo, hi]`` on the root of :math:`g`
    catches steps that leave it (bisection, or doubling while ``hi`` is infinite). Stops
    when :math:`|\partial\,\mathrm{NLL}/\partial\log T| \le tol \cdot \mathrm{NLL}` or
    after ``max_iter`` Newton steps. Returns ``(T, certificate, n_iter)``.
    """
    zy = z.gather(-1, y.unsqueeze(-1)).squeeze(-1)

    def state(b):  # mean NLL, its first and second derivatives in b, and the certificate
        logp = torch.log_softmax(b * z, -1)
        p = logp.exp()
        mean_z = (p * z).sum(-1)
        nll = -logp.gather(-1, y.unsqueeze(-1)).mean()
        g = (mean_z - zy).mean()
        h = ((p * z * z).sum(-1) - mean_z ** 2).mean()
        return float(nll), float(g), float(h), abs(b * float(g)) / max(float(nll), 1e-300)

    b, lo, hi, n_iter = 1.0, 0.0, math.inf, 0
    nll, g, h, cert = state(b)
    while cert > tol and n_iter < max_iter:
        lo, hi = (lo, b) if g > 0 else (b, hi)
        step = b - g / h if h > 0 else math.nan
        if not lo < step < hi:  # outside the bracket (or NaN): bisect, or grow
            step = 2 * b if math.isinf(hi) else (lo + hi) / 2
        b, n_iter = step, n_iter + 1
        nll, g, h, cert = state(b)
    return 1.0 / b, cert, n_iter


def temperature_scale(logits, labels, *, tol=None, max_iter: int = 100,
                      return_info: bool = False):
    r"""Fit the temperature of a classifier on held-out logits (temperature scaling).

    .. math:: \hat T = \arg\min_{T > 0}\ \frac1n\sum_i
              -\log\operatorname{softmax}(z_i / T)_{y_i},

    the one-parameter recalibration of Guo et al. (2017). Dividing the logits by
    :math:`T > 0` never changes the predicted class, so accuracy is unchanged (chapter 11).
    The objective is convex in :math:`1/T` and is solved by safeguarded Newton steps on
    :math:`1/T`. A minimizer exists when the logits are informative but not perfectly
    separating: if every held-out point is classified with a positive margin the NLL
    keeps decreasing as :math:`T \to 0`, and the solver warns at ``max_iter``. Cost:
    :math:`O(nK)` per Newton step. Derived in chapter 11.

    Parameters
    ----------
    logits : tensor of shape (n, K)
        Held-out logits (not those the model was trained on).
    labels : integer tensor of shape (n,)
        Their classes.
    tol : float, optional
        Stop when :math:`|\partial\,\mathrm{NLL}/\partial \log T| \le` ``tol`` times the
        NLL; that ratio is the certificate (the relative change of the NLL per relative
        change of :math:`T`, zero at the optimum). Default 1e-10 (float64), 1e-5 (float32).
    max_iter : int
        Maximum number of Newton steps.
    return_info : bool
        Also return an :class:`~regref.Info`.

    Returns
    -------
    T : tensor of shape ()
        The fitted temperature, in ``logits``' dtype and device.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import temperature_scale
    >>> z = torch.tensor([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]],
    ...                  dtype=torch.float64)
    >>> y = torch.tensor([0, 0, 1, 1])
    >>> round(float(temperature_scale(z, y)), 4)   # softmax(z / T) gives 3/4 on the argmax
    3.641
    """
    z = _logits(logits)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must have shape (n, K) with n >= 1, got {tuple(z.shape)}")
    y = _labels(labels, z)
    tol = check_tol(tol, z.dtype, 1e-10, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    T, cert, n_iter = _temperature_kernel(z, y, tol, max_iter)
    converged = cert <= tol
    if not converged:
        warn_not_converged(f"temperature_scale: certificate {cert:.2e} > tol {tol:.1e} "
                           f"after max_iter={max_iter} Newton steps (T = {T:.3g})")
    T = torch.tensor(T, dtype=z.dtype, device=z.device)
    return (T, Info(n_iter, converged, float(cert))) if return_info else T


# --- calibration ----------------------------------------------------------------------------


def reliability_curve(probs, labels, n_bins: int = 15, binning: str = "width"):
    r"""Mean confidence, accuracy and count of the top-class predictions in each bin.

    The confidence of a prediction is :math:`c_i = \max_k p_{ik}` and it is correct when
    :math:`\arg\max_k p_{ik} = y_i`. With ``binning="width"`` the bins are
    :math:`[b/B, (b+1)/B)` for :math:`b < B-1` and :math:`[(B-1)/B, 1]` (the bins of
    torchmetrics, except that a confidence of exactly 1 joins the last bin instead of an
    extra one); with ``binning="mass"`` the predictions sorted by confidence are split
    into :math:`B` consecutive groups of sizes differing by at most one (ties split by
    position). Plotting accuracy against confidence gives the reliability diagram.
    Cost: :math:`O(nK)`, plus :math:`O(n\log n)` for equal mass. Derived in chapter 11.

    Parameters
    ----------
    probs : tensor of shape (n, K)
        Predicted probabilities (rows summing to 1).
    labels : integer tensor of shape (n,)
        True classes.
    n_bins : int
        Number of bins :math:`B`.
    binning : {"width", "mass"}
        Equal-width or equal-mass bins.

    Returns
    -------
    confidence, accuracy, count : tensors of shape (n_bins,)
        Mean confidence and accuracy in each bin (0 for an empty bin) and the number of
        predictions in it.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import reliability_curve
    >>> p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]],
    ...                  dtype=torch.float64)
    >>> conf, acc, count = reliability_curve(p, torch.tensor([0, 1, 1, 1]), n_bins=2,
    ...                                      binning="mass")
    >>> [[round(float(v), 4) for v in t] for t in (conf, acc, count)]
    [[0.65, 0.85], [1.0, 0.5], [2.0, 2.0]]
    """
    p = _probs(probs)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (n, K) with n >= 1, got {tuple(p.shape)}")
    y = _labels(labels, p)
    n_bins = check_positive_int(n_bins, "n_bins")
    conf, pred = p.max(-1)
    correct = (pred == y).to(p.dtype)
    if binning == "width":
        edges = torch.linspace(0, 1, n_bins + 1, dtype=p.dtype, device=p.device)
        index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    elif binning == "mass":
        order = torch.argsort(conf, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(conf), device=p.device)
        index = rank * n_bins // len(conf)
    else:
        raise ValueError(f"binning must be 'width' or 'mass', got {binning!r}")
    count = torch.zeros(n_bins, dtype=p.dtype, device=p.device).index_add_(
        0, index, torch.ones_like(conf))
    total_conf = torch.zeros_like(count).index_add_(0, index, conf)
    total_acc = torch.zeros_like(count).index_add_(0, index, correct)
    safe = count.clamp_min(1)
    return total_conf / safe, total_acc / safe, count


def expected_calibration_error(probs, labels, n_bins: int = 15,
                               binning: str = "width") -> torch.Tensor:
    r"""Expected calibration error of the top-class confidence.

    .. math:: \mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{n}\,
              \big|\operatorname{acc}(b) - \operatorname{conf}(b)\big|,

    with the bins of :func:`reliability_curve` (equal width, as torchmetrics'
    ``MulticlassCalibrationError(norm="l1")``, or equal mass). A plug-in estimate: biased
    upward by sampling noise in small bins, and dependent on :math:`B`. Cost: that of
    :func:`reliability_curve`. Derived in chapter 11.

    Parameters
    ----------
    probs : tensor of shape (n, K)
        Predicted probabilities.
    labels : integer tensor of shape (n,)
        True classes.
    n_bins : int
        Number of bins.
    binning : {"width", "mass"}
        Equal-width or equal-mass bins.

    Returns
    -------
    tensor of shape ()
        The ECE, in :math:`[0, 1]`.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import expected_calibration_error
    >>> p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]],
    ...                  dtype=torch.float64)
    >>> round(float(expected_calibration_error(p, torch.tensor([0, 1, 1, 1]), 2,
    ...                                      binning="mass")), 4)
    0.35
    """
    conf, acc, count = reliability_curve(probs, labels, n_bins, binning)
    return (count * (acc - conf).abs()).sum() / count.sum()


def brier_score(probs, labels) -> torch.Tensor:
    r"""The multiclass Brier score, :math:`\frac1n\sum_i \|p_i - e_{y_i}\|^2`.

    A proper scoring rule (minimized in expectation by the true conditional
    probabilities), between 0 and 2. Cost: :math:`O(nK)`. Derived in chapter 11.

    Parameters
    ----------
    probs : tensor of shape (..., K)
        Predicted probabilities.
    labels : integer tensor of shape (...)
        True classes.

    Returns
    -------
    tensor of shape ()
        The mean squared distance to the one-hot labels.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import brier_score
    >>> p = torch.tensor([[0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    >>> round(float(brier_score(p, torch.tensor([0, 0]))), 4)
    0.37
    """
    p = _probs(probs)
    y = _labels(labels, p)
    return ((p - _one_hot(y, p)) ** 2).sum(-1).mean()


# --- distillation ---------------------------------------------------------------------------


def distillation_loss(student_logits, teacher_logits, labels, temperature: float = 4.0,
                      weight: float = 0.9) -> torch.Tensor:
    r"""Knowledge distillation (Hinton et al., 2015): hard labels plus softened teacher
    targets.

    .. math:: (1-w)\,\operatorname{CE}(e_y, \operatorname{softmax}(z_s))
              + w\,T^2\,\mathrm{KL}\big(\operatorname{softmax}(z_t/T)\,\big\|\,
              \operatorname{softmax}(z_s/T)\big),

    averaged over samples. The gradient of the second term in :math:`z_s` is
    :math:`T\,(q_s - q_t)` with :math:`q = \operatorname{softmax}(\cdot/T)`; for large
    :math:`T` and logits of zero mean it tends to :math:`(z_s - z_t)/K`, so the
    :math:`T^2` factor keeps the soft term's gradients on the scale of the hard term's
    whatever the temperature (chapter 11). The teacher's logits are detached. Cost:
    :math:`O(nK)`.

    Parameters
    ----------
    student_logits : tensor of shape (..., K)
        The student's logits :math:`z_s`.
    teacher_logits : tensor of shape (..., K)
        The teacher's logits :math:`z_t`.
    labels : integer tensor of shape (...)
        True classes.
    temperature : float
        :math:`T > 0`.
    weight : float
        :math:`w \in [0, 1]`, the share of the teacher's term.

    Returns
    -------
    tensor of shape ()
        The mean loss.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import distillation_loss
    >>> zs = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    >>> zt = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    >>> round(float(distillation_loss(zs, zt, torch.tensor([0]), 2.0, 0.5)), 4)
    0.3176
    """
    zs = _logits(student_logits, "student_logits")
    zt = check_finite(as_float_tensor(teacher_logits, "teacher_logits", like=zs),
                      "teacher_logits").detach()
    if zt.shape != zs.shape:
        raise ValueError(f"teacher_logits must have shape {tuple(zs.shape)}, got "
                         f"{tuple(zt.shape)}")
    y = _labels(labels, zs)
    T = float(check_strength(temperature, "temperature", zs, positive=True))
    w = _fraction(weight, "weight", zs)
    logp = torch.log_softmax(zs, -1)
    hard = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    log_qs, log_qt = torch.log_softmax(zs / T, -1), torch.log_softmax(zt / T, -1)
    kl = (log_qt.exp() * (log_qt - log_qs)).sum(-1)
    return ((1 - w) * hard + w * T * T * kl).mean()


def pskd_targets(labels, past_probs, weight) -> torch.Tensor:
    r"""Targets of progressive self-knowledge distillation (Kim et al., 2021).

    .. math:: t_i = (1 - \alpha_e)\,e_{y_i} + \alpha_e\,p^{(e-1)}_i,

    the one-hot label mixed with the model's own prediction from the previous epoch, with
    a weight :math:`\alpha_e` that grows over training (linearly, :math:`\alpha_e =
    \alpha_E\, e/E`, in the paper). Trained with :func:`soft_target_loss`, the gradient in
    the logits is :math:`p_i - t_i = (1-\alpha_e)(p_i - e_{y_i}) + \alpha_e(p_i -
    p^{(e-1)}_i)`: examples the model already fits see their gradient shrink most.
    Cost: :math:`O(nK)`. Derived in chapter 11.

    Parameters
    ----------
    labels : integer tensor of shape (...)
        True classes.
    past_probs : tensor of shape (..., K)
        The model's predicted probabilities at the previous epoch (detached).
    weight : float
        :math:`\alpha_e \in [0, 1]`.

    Returns
    -------
    tensor of shape (..., K)
        The soft targets, rows summing to 1.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import pskd_targets
    >>> pskd_targets(torch.tensor([0]), torch.tensor([[0.2, 0.8]], dtype=torch.float64), 0.5)
    tensor([[0.6000, 0.4000]], dtype=torch.float64)
    """
    p = _probs(past_probs, "past_probs").detach()
    y = _labels(labels, p)
    a = _fraction(weight, "weight", p)
    return (1 - a) * _one_hot(y, p) + a * p


def _self_distill_kernel(K, Y, lam, weight, rounds):
    r"""The part to copy: kernel ridge dual coefficients after each number of rounds of
    self-distillation, from one eigendecomposition of ``K``.

    Round 0 is kernel ridge, :math:`\alpha_0 = (K + \lambda I)^{-1}Y`; round
    :math:`t` refits kernel ridge to :math:`(1-w)Y + wK\alpha_{t-1}`. On an eigenvector of
    ``K`` with eigenvalue :math:`d` the coefficient filter is
    :math:`c_\infty + r^t (c_0 - c_\infty)` with :math:`r = wd/(d+\lambda)`,
    :math:`c_0 = 1/(d+\lambda)` and :math:`c_\infty = 1/(d + \lambda/(1-w))`: kernel ridge
    with the amplified strength :math:`\lambda/(1-w)` in the limit. ``rounds`` is a 1-D
    float tensor (``inf`` allowed); ``Y`` is (n, k). Returns (R, n, k).
    """
    d, Q = torch.linalg.eigh(K)
    d = d.clamp_min(0)  # rounding can leave tiny negative eigenvalues of a PSD matrix
    r = weight * d / (d + lam)  # the teacher's share times the ridge filter, in [0, 1)
    c0 = 1 / (d + lam)
    c_inf = (1 - weight) / ((1 - weight) * d + lam)
    coef = c_inf + r ** rounds[:, None] * (c0 - c_inf)  # (R, n); r ** inf = 0
    return Q @ (coef[:, :, None] * (Q.mT @ Y))


def self_distill_kernel_ridge(K, y, lam, rounds, weight: float = 0.5) -> torch.Tensor:
    r"""Repeated self-distillation in kernel ridge regression, every round count at once.

    The teacher is kernel ridge, :math:`\alpha_0 = (K + \lambda I)^{-1}y`, the minimizer of
    :math:`\|y - K\alpha\|^2 + \lambda\,\alpha^\top K\alpha` (the scaling of
    :func:`regref.ridge.kernel_ridge`). Round :math:`t \ge 1` trains a student on the
    ground truth and the previous model's predictions :math:`f_{t-1} = K\alpha_{t-1}`:

    .. math:: \alpha_t = \arg\min_\alpha\ (1-w)\|y - K\alpha\|^2 + w\|f_{t-1} - K\alpha\|^2
              + \lambda\,\alpha^\top K\alpha,

    which is kernel ridge on the target :math:`(1-w)y + wf_{t-1}` (Borup and Andersen,
    2021, with their :math:`\xi = 1 - w`). In the eigenbasis of :math:`K` each round
    multiplies the previous filter by :math:`wd/(d+\lambda)` and adds a fixed term, so
    all rounds come from one eigendecomposition; as :math:`t \to \infty` the student is
    exactly kernel ridge with strength :math:`\lambda/(1-w)` (chapter 11). ``rounds`` may
    contain ``math.inf`` for that limit. With ``weight=1`` (distilling only the teacher)
    round :math:`t` has the filter :math:`(d/(d+\lambda))^{t+1}`: a spectrum-dependent
    amplification that tends to the zero function. Cost: one :math:`O(n^3)`
    eigendecomposition, then :math:`O(Rn^2k)` for :math:`R` round counts.

    Parameters
    ----------
    K : tensor of shape (n, n)
        Symmetric positive semidefinite kernel matrix. Symmetry is checked, and that
        :math:`K + \lambda I` is positive definite (one Cholesky factorization).
    y : tensor of shape (n,) or (n, k)
        Response(s); converted to ``K``'s dtype and device.
    lam : float
        Strength :math:`\lambda > 0`.
    rounds : int or sequence of int
        Number(s) of distillation rounds :math:`t \ge 0` (``math.inf`` allowed). A
        sequence returns a leading dimension, in the given order.
    weight : float
        :math:`w \in [0, 1]`, the share of the previous model's predictions in each
        student's target.

    Returns
    -------
    alpha : tensor of shape ([R,] n[, k])
        Dual coefficients; the student's prediction at :math:`x` is
        :math:`\sum_i \alpha_i k(x_i, x)`.

    Examples
    --------
    >>> import math, torch
    >>> from regref.outputs import self_distill_kernel_ridge
    >>> from regref.ridge import kernel_ridge
    >>> K = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    >>> a = self_distill_kernel_ridge(K, y, 1.0, [0, 1, math.inf], weight=0.5)
    >>> torch.round(a, decimals=4)
    tensor([[ 0.3750, -0.1250],
            [ 0.2969, -0.0781],
            [ 0.2667, -0.0667]], dtype=torch.float64)
    >>> torch.round(kernel_ridge(K, y, 2.0), decimals=4)     # lam / (1 - w) = 2
    tensor([ 0.2667, -0.0667], dtype=torch.float64)
    """
    K = as_float_tensor(K, "K")
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"K must be a non-empty square matrix, got shape {tuple(K.shape)}")
    check_finite(K, "K")
    check_symmetric(K, "K")
    y = check_finite(as_float_tensor(y, "y", like=K), "y")
    if y.ndim not in (1, 2) or y.shape[0] != K.shape[0]:
        raise ValueError(f"y must have shape ({K.shape[0]},) or ({K.shape[0]}, k), got "
                         f"{tuple(y.shape)}")
    lam = float(check_strength(lam, "lam", K, positive=True))
    w = _fraction(weight, "weight", K)
    single = isinstance(rounds, (int, float)) or (isinstance(rounds, torch.Tensor)
                                                  and rounds.ndim == 0)
    try:
        r = torch.as_tensor(rounds, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"rounds must be an int or a sequence of ints, got {rounds!r}") \
            from err
    if r.numel() == 0 or bool((r < 0).any() | r.isnan().any()) or bool(
            (r[r.isfinite()] != r[r.isfinite()].round()).any()):
        raise ValueError(f"rounds must be non-negative integers (or math.inf), got {rounds!r}")
    eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
    if int(torch.linalg.cholesky_ex(K + lam * eye)[1]) != 0:  # as ridge.kernel_ridge
        raise ValueError("K must be positive semidefinite (K + lam I is not positive definite)")
    alpha = _self_distill_kernel(K, y.reshape(y.shape[0], -1), lam, w,
                                 r.to(dtype=K.dtype, device=K.device))
    alpha = alpha.reshape((len(r),) + tuple(y.shape))
    return alpha[0] if single else alpha


# --- noisy labels ---------------------------------------------------------------------------


def elr_loss(logits, labels, targets, lam: float = 3.0) -> torch.Tensor:
    r"""Early-learning regularization (Liu et al., 2020): cross-entropy plus a pull toward
    the model's own running-average predictions.

    .. math:: \frac1n\sum_i \Big[\operatorname{CE}(e_{y_i}, p_i)
              + \lambda \log\big(1 - \langle p_i, t_i\rangle\big)\Big],

    where :math:`t_i` is a moving average of past predictions
    (:func:`elr_update_targets`), treated as a constant. Its gradient in :math:`z_i`
    contains :math:`-\lambda\,\frac{p_i \odot t_i - \langle p_i, t_i\rangle p_i}
    {1 - \langle p_i, t_i\rangle}`, which keeps pushing the prediction toward the class
    the model learned early (before it memorizes a wrong label) and cancels part of
    the cross-entropy gradient of a wrong label (chapter 11). Cost: :math:`O(nK)`.

    Parameters
    ----------
    logits : tensor of shape (..., K)
        Logits.
    labels : integer tensor of shape (...)
        The (possibly noisy) classes.
    targets : tensor of shape (..., K)
        Running-average predictions :math:`t_i` (non-negative); detached.
    lam : float
        Strength :math:`\lambda \ge 0`.

    Returns
    -------
    tensor of shape ()
        The mean loss.

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import elr_loss
    >>> z = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    >>> t = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    >>> round(float(elr_loss(z, torch.tensor([1]), t, 1.0)), 4)
    1.4338
    """
    z = _logits(logits)
    y = _labels(labels, z)
    t = check_finite(as_float_tensor(targets, "targets", like=z), "targets").detach()
    if t.shape != z.shape or bool((t < 0).any()):
        raise ValueError(f"targets must be non-negative with shape {tuple(z.shape)}")
    lam = float(check_strength(lam, "lam", z))
    logp = torch.log_softmax(z, -1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    agree = (logp.exp() * t).sum(-1)
    return (nll + lam * torch.log((1 - agree).clamp_min(torch.finfo(z.dtype).tiny))).mean()


def elr_update_targets(targets, probs, momentum: float = 0.7) -> torch.Tensor:
    r"""The moving average of predictions that :func:`elr_loss` pulls toward.

    .. math:: t_i \leftarrow \beta\, t_i + (1-\beta)\, p_i ,

    with the probabilities :math:`p_i` detached (the targets of temporal ensembling).
    Started from zero, after :math:`e` updates :math:`t_i` holds weights
    :math:`(1-\beta)\beta^{e-s}` on the prediction of update :math:`s`. Cost: :math:`O(nK)`.
    Derived in chapter 11.

    Parameters
    ----------
    targets : tensor of shape (..., K)
        Current targets (zeros at the start).
    probs : tensor of shape (..., K)
        Current predicted probabilities.
    momentum : float
        :math:`\beta \in [0, 1]`.

    Returns
    -------
    tensor of shape (..., K)
        The updated targets (a new tensor).

    Examples
    --------
    >>> import torch
    >>> from regref.outputs import elr_update_targets
    >>> t = torch.zeros(1, 2, dtype=torch.float64)
    >>> elr_update_targets(t, torch.tensor([[0.8, 0.2]], dtype=torch.float64), 0.5)
    tensor([[0.4000, 0.1000]], dtype=torch.float64)
    """
    p = _probs(probs).detach()
    t = check_finite(as_float_tensor(targets, "targets", like=p), "targets")
    if t.shape != p.shape:
        raise ValueError(f"targets must have shape {tuple(p.shape)}, got {tuple(t.shape)}")
    m = _fraction(momentum, "momentum", p)
    return m * t + (1 - m) * p
