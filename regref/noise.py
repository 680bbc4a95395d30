r"""Noise as a regularizer: dropout, input noise, augmentation and quantization noise.

Training on randomly perturbed data minimizes an *expected* loss, and for linear models
and generalized linear models (GLMs) that expectation is the clean loss plus a penalty:

- :func:`dropout`, :func:`dropout_penalty`, :func:`dropout_expected_loss`,
  :func:`dropout_ridge`: inverted dropout (keep each entry with probability
  :math:`1 - q`, scale the kept ones by :math:`1/(1-q)`) on the inputs of least squares
  is exactly a data-dependent ridge, :math:`\tfrac{q}{1-q}\,w^\top\operatorname{diag}
  (X^\top X)\,w`;
- :func:`dropout_glm_penalty`, :func:`gaussian_noise_penalty`: the same for GLMs, to
  second order in the noise (an adaptive ridge), and Gaussian input noise as Tikhonov;
- :func:`mc_dropout_loss`: the Monte Carlo estimate of the expected dropout loss and
  its gradient over many masks at once (masks x samples in one batched pass);
- :func:`multisample_dropout_loss`: :math:`K` dropout masks through a shared head in
  one pass, whose gradient variance falls as :math:`1/K`;
- :func:`cutout`, :func:`mixup`, :func:`cutmix`: augmentation of image batches;
- :func:`quantize`, :func:`quantization_noise`, :func:`quantization_penalty`: uniform
  rounding, its additive-noise model and the penalty that model implies.

The drop probability is the argument ``p`` (as in ``torch.nn.functional.dropout``); the
book writes it :math:`q`, because :math:`p` is the number of features. Every random draw is
made on the CPU with ``generator`` and moved to the data's device.

Derivations: chapter 07.
"""

from __future__ import annotations

import math

import torch

from ._core import (
    as_float_tensor,
    check_data,
    check_finite,
    check_generator,
    check_matrix,
    check_positive,
    check_positive_int,
)

__all__ = [
    "dropout",
    "dropout_penalty",
    "dropout_expected_loss",
    "dropout_ridge",
    "dropout_glm_penalty",
    "gaussian_noise_penalty",
    "mc_dropout_loss",
    "multisample_dropout_loss",
    "cutout",
    "mixup",
    "cutmix",
    "quantize",
    "quantization_noise",
    "quantization_penalty",
]

FAMILIES = ("squared", "logistic", "poisson")


# ----------------------------------------------------------------------------- validation

def _rate(p, like: torch.Tensor | None = None, ndims=(0,)) -> torch.Tensor | float:
    """A drop probability in [0, 1) (a float, or a tensor of them with ``ndims=(0, 1)``)."""
    if isinstance(p, bool):
        raise ValueError(f"p must be a drop probability in [0, 1), got {p!r}")
    try:
        t = as_float_tensor(p, "p", like=like)
    except TypeError as err:
        raise ValueError(f"p must be a drop probability in [0, 1), got {p!r}") from err
    if t.ndim not in ndims or t.numel() == 0:
        raise ValueError(f"p must be a number in [0, 1){' or a 1-D list' if 1 in ndims else ''},"
                         f" got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool(((t < 0) | (t >= 1)).any()):
        raise ValueError(f"p must be a drop probability in [0, 1), got {t.tolist()}")
    return t if like is not None else float(t)


def _family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return family


def _weights(w, X: torch.Tensor) -> torch.Tensor:
    """Parameters ``w`` of shape (p,) or a batch (B, p) matching the columns of ``X``."""
    w = check_finite(as_float_tensor(w, "w", like=X), "w")
    if w.ndim not in (1, 2) or w.shape[-1] != X.shape[1]:
        raise ValueError(f"w must have shape ({X.shape[1]},) or (B, {X.shape[1]}), got "
                         f"{tuple(w.shape)}")
    return w


def _labels(y, X: torch.Tensor, family: str) -> torch.Tensor:
    y = check_data(X, y)[1]
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D with {X.shape[0]} entries, got shape {tuple(y.shape)}")
    if family == "logistic" and bool(((y < 0) | (y > 1)).any()):
        raise ValueError("y must lie in [0, 1] for family='logistic'")
    if family == "poisson" and bool((y < 0).any()):
        raise ValueError("y must be nonnegative for family='poisson'")
    return y


def _keep_masks(shape, q: float, generator, like: torch.Tensor) -> torch.Tensor:
    """0/1 masks, 1 with probability 1 - q, drawn on the CPU and moved to ``like``."""
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
    return (u >= q).to(dtype=like.dtype, device=like.device)


def _curvature(eta: torch.Tensor, family: str) -> torch.Tensor:
    """Second derivative of the loss in the linear predictor, A''(eta)."""
    if family == "squared":
        return torch.full_like(eta, 2.0)
    if family == "logistic":
        s = torch.sigmoid(eta)
        return s * (1 - s)
    return torch.exp(eta)


def _images(x, name: str = "x") -> torch.Tensor:
    x = check_finite(as_float_tensor(x, name), name)
    if x.ndim < 3 or min(x.shape) == 0:
        raise ValueError(f"{name} must be a non-empty batch of images (B, ..., H, W), got "
                         f"shape {tuple(x.shape)}")
    return x


def _soft_labels(y, x: torch.Tensor) -> torch.Tensor:
    y = check_finite(as_float_tensor(y, "y", like=x), "y")
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be (B, C) one-hot or soft labels with B = {x.shape[0]}, got "
                         f"shape {tuple(y.shape)}")
    return y


def _beta(alpha: float, generator) -> float:
    """One draw of Beta(alpha, alpha) from uniforms (Johnk's rejection method, in logs)."""
    while True:
        u = torch.rand(64, 2, generator=generator, dtype=torch.float64)
        a, b = torch.log(u[:, 0]) / alpha, torch.log(u[:, 1]) / alpha
        s = torch.logaddexp(a, b)
        ok = torch.nonzero(s <= 0)
        if len(ok):
            i = int(ok[0, 0])
            return float(torch.exp(a[i] - s[i]))


# ----------------------------------------------------------------------------- dropout

def dropout(x, p, *, generator=None) -> torch.Tensor:
    r"""Inverted dropout: keep each entry with probability :math:`1-q`, scale it by
    :math:`1/(1-q)`.

    .. math:: \tilde x = \frac{m \odot x}{1 - q}, \qquad m_j \sim \operatorname{Bernoulli}
              (1 - q)\ \text{independent}, \qquad \mathbb E\,\tilde x = x,\quad
              \operatorname{Var}\tilde x_j = \tfrac{q}{1-q}\,x_j^2 .

    The mask is drawn on the CPU (one uniform per entry) and moved to ``x``'s device.
    Cost: :math:`O(\text{numel})`. Derived in chapter 07.

    Parameters
    ----------
    x : tensor
        Any shape.
    p : float
        Drop probability :math:`q \in [0, 1)`.
    generator : torch.Generator, optional
        CPU generator for the mask.

    Returns
    -------
    tensor
        :math:`\tilde x`, same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import dropout
    >>> x = torch.ones(8, dtype=torch.float64)
    >>> dropout(x, 0.5, generator=torch.Generator().manual_seed(0)).tolist()
    [2.0, 2.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0]
    """
    x = check_finite(as_float_tensor(x, "x"), "x")
    q = _rate(p)
    check_generator(generator)
    return x * _keep_masks(x.shape, q, generator, x) / (1 - q)


def dropout_penalty(X, p) -> torch.Tensor:
    r"""Weights of the ridge penalty that inverted dropout on the inputs of least squares
    adds: :math:`c = \tfrac{q}{1-q}\operatorname{diag}(X^\top X)`.

    .. math:: \mathbb E_m \bigl\|y - \tilde X w\bigr\|^2 = \|y - Xw\|^2 + \sum_j c_j w_j^2,
              \qquad c_j = \frac{q}{1-q}\sum_i x_{ij}^2,

    where :math:`\tilde X = M \odot X/(1-q)` with independent
    :math:`\operatorname{Bernoulli}(1-q)` entries in :math:`M`. Cost: :math:`O(np)`.
    Derived in chapter 07.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite.
    p : float or tensor of shape (L,)
        Drop probability (or several), each in :math:`[0, 1)`.

    Returns
    -------
    tensor of shape (p,) or (L, p)
        The weights :math:`c` (one row per drop probability).

    Examples
    --------
    >>> import torch
    >>> from regref.noise import dropout_penalty
    >>> X = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    >>> dropout_penalty(X, 0.5).tolist()
    [10.0, 4.0]
    """
    X = check_matrix(X, "X")
    q = _rate(p, like=X, ndims=(0, 1))
    return (q / (1 - q))[..., None] * (X * X).sum(0)


def dropout_expected_loss(X, y, w, p) -> torch.Tensor:
    r"""Exact expected squared loss of a linear model under inverted input dropout.

    .. math:: \mathbb E_m \bigl\|y - \tilde X w\bigr\|^2 = \|y - Xw\|^2
              + \frac{q}{1-q}\, w^\top \operatorname{diag}(X^\top X)\, w ,

    with one independent mask entry per sample and feature (the loss uses the ridge
    scaling of the book, a sum of squares without :math:`\tfrac12`). Cost: :math:`O(np)` per
    parameter vector. Derived in chapter 07.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    y : tensor of shape (n,)
        Response.
    w : tensor of shape (p,) or (B, p)
        Parameters (a batch of them is evaluated in one pass).
    p : float
        Drop probability in :math:`[0, 1)`.

    Returns
    -------
    tensor of shape () or (B,)
        The expected loss.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import dropout_expected_loss
    >>> X = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 1.0], dtype=torch.float64)
    >>> float(dropout_expected_loss(X, y, torch.tensor([1.0, 1.0]), 0.5))
    22.0
    """
    X, y = check_data(X, y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {tuple(y.shape)}")
    w = _weights(w, X)
    c = dropout_penalty(X, _rate(p))
    return ((y - w @ X.T) ** 2).sum(-1) + (c * w * w).sum(-1)


def dropout_ridge(X, y, p) -> torch.Tensor:
    r"""Minimizer of the expected dropout loss of least squares, for one or several drop
    probabilities.

    .. math:: \hat w_q = \bigl(X^\top X + \tfrac{q}{1-q}\operatorname{diag}(X^\top X)\bigr)^{-1}
              X^\top y ,

    a ridge whose penalty on :math:`w_j` is proportional to the energy of feature
    :math:`j`. Cost: :math:`O(np^2 + Lp^3)` (one Gram matrix, one batched Cholesky).
    Derived in chapter 07.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix; for ``p = 0`` it must have full column rank.
    y : tensor of shape (n,)
        Response.
    p : float or tensor of shape (L,)
        Drop probability (or several) in :math:`[0, 1)`.

    Returns
    -------
    tensor of shape (p,) or (L, p)
        :math:`\hat w_q`, one row per drop probability.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import dropout_ridge
    >>> X = torch.eye(2, dtype=torch.float64)
    >>> w = dropout_ridge(X, torch.tensor([1.0, 2.0], dtype=torch.float64), 0.5)
    >>> [round(v, 6) for v in w.tolist()]     # 1 / (1 + q / (1 - q)) = 1 - q
    [0.5, 1.0]
    """
    X, y = check_data(X, y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {tuple(y.shape)}")
    c = dropout_penalty(X, p)
    G = X.T @ X
    A = G + torch.diag_embed(c)
    L, bad = torch.linalg.cholesky_ex(A)
    if bool((bad != 0).any()):
        raise ValueError("X^T X + diag(c) is singular: X needs full column rank when p = 0")
    b = (X.T @ y).expand(*c.shape[:-1], -1)[..., None]
    return torch.cholesky_solve(b, L)[..., 0]


def _glm_setup(X, w, family):
    X = check_matrix(X, "X")
    w = _weights(w, X)
    return X, w, _family(family)


def dropout_glm_penalty(X, w, p, *, family: str = "logistic") -> torch.Tensor:
    r"""The penalty that inverted input dropout adds to a GLM loss, to second order.

    For a loss :math:`\sum_i A(\eta_i) - y_i\eta_i` in the linear predictor
    :math:`\eta_i = x_i^\top w`, a second-order expansion of :math:`A` around
    :math:`\eta_i` gives

    .. math:: \mathbb E_m \sum_i \ell(y_i, \tilde x_i^\top w) \approx \sum_i \ell(y_i, x_i^\top w)
              + \frac12 \frac{q}{1-q} \sum_i A''(x_i^\top w) \sum_j x_{ij}^2 w_j^2 ,

    an adaptive ridge: confident predictions (small :math:`A''`) are penalized less
    (Wager, Wang and Liang, 2013). The expansion is in the size of the perturbation of
    :math:`\eta_i` (the products :math:`x_{ij}w_j`), not in :math:`q`: every cumulant of
    Bernoulli noise is of order :math:`q`, so the relative error is of order
    :math:`\max_{ij}|x_{ij}w_j|` times :math:`|A'''/A''|`. ``family``: ``"logistic"``
    (:math:`A = \log(1+e^\eta)`, labels in [0, 1]), ``"poisson"`` (:math:`A = e^\eta`),
    or ``"squared"`` (the loss :math:`(y - \eta)^2`, for which the expansion is exact and
    the result is :func:`dropout_penalty`'s). Cost: :math:`O(np)` per parameter vector.
    Derived in chapter 07.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    w : tensor of shape (p,) or (B, p)
        Parameters.
    p : float
        Drop probability in :math:`[0, 1)`.
    family : {"logistic", "poisson", "squared"}
        The loss.

    Returns
    -------
    tensor of shape () or (B,)
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import dropout_glm_penalty
    >>> X = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    >>> float(dropout_glm_penalty(X, torch.zeros(2), 0.5))
    0.0
    >>> float(dropout_glm_penalty(X, torch.tensor([1.0, 1.0]), 0.5, family="squared"))
    14.0
    """
    X, w, family = _glm_setup(X, w, family)
    q = _rate(p)
    eta = w @ X.T
    var = q / (1 - q) * (w * w) @ (X * X).T  # Var of the noisy predictor, per sample
    return 0.5 * (_curvature(eta, family) * var).sum(-1)


def gaussian_noise_penalty(X, w, sigma, *, family: str = "squared") -> torch.Tensor:
    r"""The penalty that Gaussian input noise :math:`x_i + \sigma z_i`,
    :math:`z_i \sim \mathcal N(0, I_p)`, adds to a loss: Tikhonov regularization.

    .. math:: \mathbb E_z \sum_i \ell(y_i, (x_i + \sigma z_i)^\top w) \approx
              \sum_i \ell(y_i, x_i^\top w) + \frac{\sigma^2}2\|w\|^2\sum_i A''(x_i^\top w),

    exact for the squared loss :math:`(y-\eta)^2` (:math:`A'' = 2`), where the penalty is
    ridge's :math:`n\sigma^2\|w\|^2` (Bishop, 1995), and second order for the
    ``"logistic"`` and ``"poisson"`` families. Cost: :math:`O(np)`. Derived in chapter 07.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    w : tensor of shape (p,) or (B, p)
        Parameters.
    sigma : float
        Noise standard deviation, :math:`\sigma \ge 0`.
    family : {"squared", "logistic", "poisson"}
        The loss.

    Returns
    -------
    tensor of shape () or (B,)
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import gaussian_noise_penalty
    >>> X = torch.zeros(4, 2, dtype=torch.float64)
    >>> float(gaussian_noise_penalty(X, torch.tensor([1.0, 1.0]), 0.5))   # n sigma^2 |w|^2
    2.0
    """
    X, w, family = _glm_setup(X, w, family)
    try:
        s = float(sigma) if not isinstance(sigma, bool) else math.nan
    except (TypeError, ValueError):
        s = math.nan
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    curv = _curvature(w @ X.T, family).sum(-1)
    return 0.5 * s * s * (w * w).sum(-1) * curv


# ----------------------------------------------------------------------------- Monte Carlo

def _mc_dropout_kernel(X, y, w, keep, q, family):
    r"""The part to copy: the loss and its gradient for K dropout masks in one pass.

    ``X`` (n, p), ``y`` (n,), ``w`` (p,), ``keep`` (K, n, p) of 0/1 (1 with probability
    1 - q). Mask k gives the noisy design :math:`X_k = \mathrm{keep}_k \odot X/(1-q)`, the
    predictor :math:`\eta_k = X_k w` and the loss :math:`\sum_i \ell(y_i, \eta_{ki})`, whose
    gradient in w is :math:`X_k^\top \ell'(y, \eta_k)`. Returns the K losses (K,) and the K
    gradients (K, p); their means estimate the expected loss and its gradient.
    """
    Xk = keep * (X / (1 - q))  # (K, n, p): masks x samples, all at once
    eta = Xk @ w  # (K, n)
    if family == "squared":  # (y - eta)^2
        loss, dloss = (y - eta) ** 2, 2 * (eta - y)
    elif family == "logistic":  # log(1 + e^eta) - y eta
        loss = torch.nn.functional.softplus(eta) - y * eta
        dloss = torch.sigmoid(eta) - y
    else:  # poisson: e^eta - y eta
        loss, dloss = torch.exp(eta) - y * eta, torch.exp(eta) - y
    grads = torch.einsum("kn,knp->kp", dloss, Xk)
    return loss.sum(-1), grads


def mc_dropout_loss(X, y, w, p, n_masks: int, *, family: str = "squared", block=None,
                    generator=None, return_samples: bool = False):
    r"""Monte Carlo estimate of the expected loss of a (generalized) linear model under
    inverted input dropout, and of its gradient, over many masks at once.

    .. math:: \hat L = \frac1K\sum_{k=1}^K \sum_i \ell\bigl(y_i, \tilde x_{ki}^\top w\bigr),
              \qquad \hat g = \frac1K\sum_{k=1}^K \sum_i \ell'\bigl(y_i,
              \tilde x_{ki}^\top w\bigr)\,\tilde x_{ki},

    with :math:`\tilde x_{ki} = m_{ki}\odot x_i/(1-q)` and independent masks. The masks of
    ``block`` draws are processed in one batched pass (a (block, n, p) tensor, no loop over
    masks inside a block); the standard error of the mean is the sample standard deviation
    of the per-mask values over :math:`\sqrt K` (``return_samples=True`` returns them).
    Unbiased for the exact expectation (:func:`dropout_expected_loss` for the squared
    loss). Cost: :math:`O(Knp)` time, :math:`O(\text{block}\cdot np)` memory. Derived in
    chapter 07.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    y : tensor of shape (n,)
        Response (labels in [0, 1] for ``"logistic"``, counts for ``"poisson"``).
    w : tensor of shape (p,)
        Parameters.
    p : float
        Drop probability in :math:`[0, 1)`.
    n_masks : int
        Number of masks :math:`K`.
    family : {"squared", "logistic", "poisson"}
        The loss: :math:`(y-\eta)^2`, :math:`\log(1+e^\eta) - y\eta` or
        :math:`e^\eta - y\eta`.
    block : int, optional
        Masks per batched pass (default: all :math:`K` in one pass).
    generator : torch.Generator, optional
        CPU generator for the masks.
    return_samples : bool
        Return the per-mask losses and gradients instead of their means.

    Returns
    -------
    loss : tensor of shape () or (K,)
        :math:`\hat L`, or the K per-mask losses.
    grad : tensor of shape (p,) or (K, p)
        :math:`\hat g`, or the K per-mask gradients.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import mc_dropout_loss
    >>> X = torch.ones(3, 2, dtype=torch.float64)
    >>> y = torch.zeros(3, dtype=torch.float64)
    >>> loss, grad = mc_dropout_loss(X, y, torch.ones(2), 0.0, 4)   # no dropout: exact
    >>> float(loss), grad.tolist()
    (12.0, [12.0, 12.0])
    """
    family = _family(family)
    X = check_matrix(X, "X")
    y = _labels(y, X, family)
    w = _weights(w, X)
    if w.ndim != 1:
        raise ValueError(f"w must be 1-D with {X.shape[1]} entries, got shape {tuple(w.shape)}")
    q = _rate(p)
    K = check_positive_int(n_masks, "n_masks")
    block = K if block is None else check_positive_int(block, "block")
    check_generator(generator)
    losses, grads = [], []
    for start in range(0, K, block):  # blocks of masks bound the memory, not the batching
        keep = _keep_masks((min(block, K - start),) + tuple(X.shape), q, generator, X)
        loss_b, grad_b = _mc_dropout_kernel(X, y, w, keep, q, family)
        losses.append(loss_b)
        grads.append(grad_b)
    losses, grads = torch.cat(losses), torch.cat(grads)
    if return_samples:
        return losses, grads
    return losses.mean(), grads.mean(0)


def multisample_dropout_loss(h, y, head, p, n_samples: int, *, loss_fn=None,
                             generator=None) -> torch.Tensor:
    r"""Multi-sample dropout: the loss averaged over :math:`K` dropout masks of the same
    features, passed through a shared head in one batched call (Inoue, 2019).

    .. math:: L_K = \frac1K\sum_{k=1}^K \frac1n\sum_{i=1}^n
              \ell\Bigl(\operatorname{head}\bigl(\tfrac{m_{ki}\odot h_i}{1-q}\bigr),\ y_i\Bigr).

    ``head`` is called once on a (K, n, d) tensor (``torch.nn.Linear`` and most
    ``torch.func`` heads broadcast over the leading dimension). The :math:`K` masks are
    independent, so the gradient of :math:`L_K` has the mean of one-mask dropout's and
    :math:`1/K` of its variance over the masks. With :math:`K = 1` and the same generator
    this is ordinary dropout followed by the head. Cost: :math:`K` head evaluations in
    one pass; the layers before ``h`` run once. Derived in chapter 07.

    Parameters
    ----------
    h : tensor of shape (n, d)
        Features entering the dropout layer.
    y : tensor of shape (n,) or (n, ...)
        Targets, passed to ``loss_fn``.
    head : callable
        Maps (K, n, d) features to (K, n, C) outputs.
    p : float
        Drop probability in :math:`[0, 1)`.
    n_samples : int
        Number of masks :math:`K`.
    loss_fn : callable, optional
        ``loss_fn(outputs, targets)`` on (K*n, C) outputs and the targets repeated K times,
        returning the mean loss; default ``torch.nn.functional.cross_entropy``.
    generator : torch.Generator, optional
        CPU generator for the masks.

    Returns
    -------
    tensor of shape ()
        :math:`L_K`, differentiable in ``h`` and the head's parameters.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import multisample_dropout_loss
    >>> h = torch.zeros(4, 3, dtype=torch.float64)
    >>> head = lambda z: z @ torch.zeros(3, 2, dtype=torch.float64)   # uniform logits
    >>> y = torch.tensor([0, 1, 0, 1])
    >>> round(float(multisample_dropout_loss(h, y, head, 0.5, 8)), 4)   # log 2
    0.6931
    """
    h = check_finite(as_float_tensor(h, "h"), "h")
    if h.ndim != 2 or h.shape[0] == 0:
        raise ValueError(f"h must be (n, d) with n > 0, got shape {tuple(h.shape)}")
    if not isinstance(y, torch.Tensor) or y.ndim == 0 or y.shape[0] != h.shape[0]:
        raise ValueError(f"y must be a tensor with {h.shape[0]} rows (one per row of h)")
    if not callable(head):
        raise TypeError("head must be callable: head(features (K, n, d)) -> (K, n, C)")
    q = _rate(p)
    K = check_positive_int(n_samples, "n_samples")
    check_generator(generator)
    loss_fn = torch.nn.functional.cross_entropy if loss_fn is None else loss_fn
    hk = _keep_masks((K,) + tuple(h.shape), q, generator, h) * h / (1 - q)  # (K, n, d)
    out = head(hk)
    targets = y.unsqueeze(0).expand(K, *y.shape).reshape(K * y.shape[0], *y.shape[1:])
    return loss_fn(out.reshape(K * h.shape[0], *out.shape[2:]), targets)


# ----------------------------------------------------------------------------- augmentation

def cutout(x, size: int, *, generator=None) -> torch.Tensor:
    r"""Cutout: zero one ``size`` x ``size`` square per image, at a uniformly random
    center, clipped at the border (DeVries and Taylor, 2017).

    .. math:: \tilde x_{b,\cdot,ij} = x_{b,\cdot,ij}\,\mathbf 1\bigl[(i,j)\notin
              S(c_b)\bigr], \qquad S(c) = [c_0 - \lfloor s/2\rfloor, c_0 - \lfloor s/2
              \rfloor + s) \times [c_1 - \lfloor s/2\rfloor, c_1 - \lfloor s/2\rfloor + s),

    with the center :math:`c_b` uniform on the :math:`H \times W` grid, the same square for
    every channel of an image. One pass over the batch. Cost: :math:`O(\text{numel})`.
    Derived in chapter 07.

    Parameters
    ----------
    x : tensor of shape (B, ..., H, W)
        A batch of images (channels, if any, between the batch and the pixels).
    size : int
        Side :math:`s` of the square, in pixels.
    generator : torch.Generator, optional
        CPU generator for the centers.

    Returns
    -------
    tensor
        The masked batch, same shape as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import cutout
    >>> x = torch.ones(1, 4, 4, dtype=torch.float64)
    >>> cutout(x, 2, generator=torch.Generator().manual_seed(1))[0]
    tensor([[1., 1., 0., 0.],
            [1., 1., 0., 0.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.]], dtype=torch.float64)
    """
    x = _images(x)
    s = check_positive_int(size, "size")
    check_generator(generator)
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    cy = torch.randint(H, (B,), generator=generator) - s // 2
    cx = torch.randint(W, (B,), generator=generator) - s // 2
    rows = torch.arange(H)[None] - cy[:, None]  # (B, H): inside when 0 <= . < s
    cols = torch.arange(W)[None] - cx[:, None]
    inside = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    keep = (~inside).to(dtype=x.dtype, device=x.device)
    return x * keep.reshape(B, *([1] * (x.ndim - 3)), H, W)


def _alpha(alpha) -> float:
    return check_positive(alpha, "alpha")


def mixup(x, y, alpha: float, *, generator=None):
    r"""Mixup: convex combinations of pairs of examples and of their labels
    (Zhang et al., 2018).

    .. math:: \tilde x_i = \lambda x_i + (1-\lambda) x_{\pi(i)}, \qquad
              \tilde y_i = \lambda y_i + (1-\lambda) y_{\pi(i)},

    with one :math:`\lambda \sim \operatorname{Beta}(\alpha, \alpha)` per batch and a
    uniformly random permutation :math:`\pi` of the batch. Because :math:`\pi` is a
    permutation and :math:`\lambda` is shared, the batch sums :math:`\sum_i \tilde x_i` and
    :math:`\sum_i \tilde y_i` (the label mass of every class) equal those of the input,
    whatever the order of the batch. Cost: :math:`O(\text{numel})`. Derived in chapter 07.

    Parameters
    ----------
    x : tensor of shape (B, ...)
        A batch of inputs.
    y : tensor of shape (B, C)
        One-hot or soft labels.
    alpha : float
        Beta parameter, > 0 (small values keep :math:`\lambda` near 0 or 1).
    generator : torch.Generator, optional
        CPU generator for :math:`\lambda` and :math:`\pi`.

    Returns
    -------
    x_mixed : tensor
        Same shape as ``x``.
    y_mixed : tensor of shape (B, C)
        Mixed labels; rows of one-hot labels still sum to one.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import mixup
    >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> y = torch.eye(2, dtype=torch.float64)
    >>> xm, ym = mixup(x, y, 1.0, generator=torch.Generator().manual_seed(0))
    >>> float(xm.sum()), ym.sum(0).tolist()
    (1.0, [1.0, 1.0])
    """
    x = check_finite(as_float_tensor(x, "x"), "x")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    y = _soft_labels(y, x)
    a = _alpha(alpha)
    check_generator(generator)
    lam = _beta(a, generator)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x, y, alpha: float, *, generator=None):
    r"""CutMix: paste a random box of another example of the batch, mix labels by area
    (Yun et al., 2019).

    A :math:`\lambda \sim \operatorname{Beta}(\alpha, \alpha)` sets a box of side
    :math:`H\sqrt{1-\lambda}` by :math:`W\sqrt{1-\lambda}` (rounded) at a uniformly random
    center, clipped at the border; the box is copied from example :math:`\pi(i)` into
    example :math:`i` (one box and one permutation per batch), and

    .. math:: \tilde y_i = \lambda' y_i + (1 - \lambda') y_{\pi(i)}, \qquad
              \lambda' = 1 - \frac{\text{box area}}{HW}.

    As for :func:`mixup`, the batch sums of images and of labels are those of the input.
    Cost: :math:`O(\text{numel})`. Derived in chapter 07.

    Parameters
    ----------
    x : tensor of shape (B, ..., H, W)
        A batch of images.
    y : tensor of shape (B, C)
        One-hot or soft labels.
    alpha : float
        Beta parameter, > 0 (the paper uses 1, a uniform :math:`\lambda`).
    generator : torch.Generator, optional
        CPU generator for :math:`\lambda`, the box and :math:`\pi`.

    Returns
    -------
    x_mixed : tensor
        Same shape as ``x``.
    y_mixed : tensor of shape (B, C)
        Labels mixed in proportion to the pixels.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import cutmix
    >>> x = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)]).double()
    >>> y = torch.eye(2, dtype=torch.float64)
    >>> xm, ym = cutmix(x, y, 1.0, generator=torch.Generator().manual_seed(0))
    >>> float(xm.sum()), ym.sum(0).tolist()
    (16.0, [1.0, 1.0])
    """
    x = _images(x)
    y = _soft_labels(y, x)
    a = _alpha(alpha)
    check_generator(generator)
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    lam = _beta(a, generator)
    bh, bw = round(H * math.sqrt(1 - lam)), round(W * math.sqrt(1 - lam))
    cy, cx = (int(torch.randint(n, (1,), generator=generator)) for n in (H, W))
    r0, r1 = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, H)
    c0, c1 = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, W)
    perm = torch.randperm(B, generator=generator).to(x.device)
    out = x.clone()
    out[..., r0:r1, c0:c1] = x[perm][..., r0:r1, c0:c1]
    lam_area = 1 - max(r1 - r0, 0) * max(c1 - c0, 0) / (H * W)
    return out, lam_area * y + (1 - lam_area) * y[perm]


# ----------------------------------------------------------------------------- quantization

def _step(w: torch.Tensor, bits: int) -> torch.Tensor:
    return (w.amax() - w.amin()) / (2**bits - 1)


def _quant_args(w, bits):
    w = check_finite(as_float_tensor(w, "w"), "w")
    if w.numel() == 0:
        raise ValueError("w must be non-empty")
    b = check_positive_int(bits, "bits")
    if b > 52:
        raise ValueError(f"bits must be at most 52, got {b}")
    return w, b


def quantize(w, bits: int, *, ste: bool = False) -> torch.Tensor:
    r"""Uniform (min-max) quantization of a tensor to :math:`2^b` levels.

    .. math:: Q(w) = w_{\min} + \Delta\,\operatorname{round}\Bigl(\frac{w - w_{\min}}
              \Delta\Bigr), \qquad \Delta = \frac{w_{\max} - w_{\min}}{2^b - 1},

    so :math:`|Q(w) - w| \le \Delta/2` entrywise. With ``ste=True`` the result is
    :math:`w + \operatorname{sg}(Q(w) - w)`, whose gradient in :math:`w` is the identity
    (the straight-through estimator of quantization-aware training). Cost:
    :math:`O(\text{numel})`. Derived in chapter 07.

    Parameters
    ----------
    w : tensor
        Any shape, finite.
    bits : int
        Number of bits :math:`b \ge 1`.
    ste : bool
        Pass gradients straight through.

    Returns
    -------
    tensor
        :math:`Q(w)`, same shape as ``w``.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import quantize
    >>> quantize(torch.tensor([0.0, 0.2, 0.45, 1.0], dtype=torch.float64), 2).tolist()
    [0.0, 0.3333333333333333, 0.3333333333333333, 1.0]
    """
    w, b = _quant_args(w, bits)
    delta = _step(w.detach(), b)
    if float(delta) == 0:
        return w.clone()
    lo = w.detach().amin()
    q = lo + delta * torch.round((w.detach() - lo) / delta)
    return w + (q - w).detach() if ste else q


def quantization_noise(w, bits: int, *, generator=None) -> torch.Tensor:
    r"""The additive-noise model of :func:`quantize`: :math:`w + \varepsilon` with
    :math:`\varepsilon_j \sim \mathcal U(-\Delta/2, \Delta/2)` independent.

    The rounding error of a fine quantizer behaves like this noise: zero mean, bounded by
    :math:`\Delta/2`, variance :math:`\Delta^2/12`, with
    :math:`\Delta = (w_{\max} - w_{\min})/(2^b - 1)`. Cost: :math:`O(\text{numel})`.
    Derived in chapter 07.

    Parameters
    ----------
    w : tensor
        Any shape, finite.
    bits : int
        Number of bits :math:`b \ge 1`.
    generator : torch.Generator, optional
        CPU generator for the noise.

    Returns
    -------
    tensor
        :math:`w + \varepsilon`, same shape as ``w``.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import quantization_noise
    >>> w = torch.linspace(0, 1, 1000, dtype=torch.float64)
    >>> e = quantization_noise(w, 2, generator=torch.Generator().manual_seed(0)) - w
    >>> bool(e.abs().max() <= 1 / 6)
    True
    """
    w, b = _quant_args(w, bits)
    check_generator(generator)
    u = torch.rand(tuple(w.shape), generator=generator, dtype=torch.float64)
    return w + (u.to(dtype=w.dtype, device=w.device) - 0.5) * _step(w, b)


def quantization_penalty(X, w, bits: int) -> torch.Tensor:
    r"""Expected increase of the squared loss of a linear model when its weights carry the
    quantization noise of :func:`quantization_noise`.

    .. math:: \mathbb E_\varepsilon \|y - X(w + \varepsilon)\|^2 - \|y - Xw\|^2
              = \frac{\Delta^2}{12}\|X\|_F^2
              = \frac{\|X\|_F^2}{12\,(2^b-1)^2}\,(w_{\max} - w_{\min})^2 :

    a penalty on the range of the weights (the square of a seminorm), whose strength falls
    by about 4 per extra bit. Cost: :math:`O(np)`. Derived in chapter 07.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix.
    w : tensor of shape (p,) or (B, p)
        Weights (one range per row).
    bits : int
        Number of bits :math:`b \ge 1`.

    Returns
    -------
    tensor of shape () or (B,)
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.noise import quantization_penalty
    >>> X = torch.ones(3, 2, dtype=torch.float64)
    >>> float(quantization_penalty(X, torch.tensor([0.0, 1.0]), 1))   # 6 / 12
    0.5
    """
    X = check_matrix(X, "X")
    w = _weights(w, X)
    b = _quant_args(w, bits)[1]
    delta = (w.amax(-1) - w.amin(-1)) / (2**b - 1)
    return delta * delta / 12 * (X * X).sum()
