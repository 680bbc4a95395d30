r"""Curvature, sharpness and sensitivity: Hessian-vector products, trace estimation,
gradient-norm and Jacobian penalties, sharpness-aware steps and Lipschitz bounds.

Every function takes a loss as a callable of its parameters, ``loss_fn(params) -> scalar``
(``params`` a tensor, or a tuple or dict of tensors, as :mod:`torch.func` accepts), so it
works on any model written functionally (``torch.func.functional_call``). Nothing here
builds the Hessian: a Hessian-vector product costs about two gradients (forward-over-
reverse differentiation).

- :func:`hvp`: :math:`H v` with :math:`H = \nabla^2 L(\theta)`;
- :func:`hessian_top_eig`: the eigenvalue of largest magnitude by power iteration on
  Hessian-vector products (the *sharpness* of chapters 08 and 09);
- :func:`per_sample_grads`: :math:`\nabla_\theta \ell(\theta; x_i)` for every sample of a
  batch in one vectorized pass (``torch.func.vmap`` of ``torch.func.grad``), the building
  block of Fisher estimates (chapter 12) and gradient-variance penalties (chapter 13);
- :func:`hutchinson_trace`, :func:`hutchpp_trace`: :math:`\operatorname{tr} H` from
  Hessian-vector products, all probes in one ``vmap``, with a standard error;
- :func:`gradient_penalty_grad`: the gradient of
  :math:`\mathcal L + \frac\lambda2\|\nabla\mathcal L\|^2` by double backprop or by one
  extra gradient (finite differences);
- :func:`adversarial_weight_perturbation`, :func:`sam_step`: sharpness-aware minimization
  and its multi-step and layer-wise variants;
- :func:`jacobian_penalty`, :func:`jacobian_two_to_inf`: Frobenius and two-to-infinity
  norms of an input Jacobian from random projections;
- :func:`gram_spectral_norm`, :func:`conv_spectral_bound`: certified upper bounds on
  spectral norms (of matrices and of convolutions) by Gram iteration.

Derivations: chapter 09.
"""

from __future__ import annotations

import math

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ._core import (
    Info,
    as_float_tensor,
    check_finite,
    check_generator,
    check_nonneg,
    check_positive,
    check_positive_int,
    check_tol,
    randn,
    warn_not_converged,
)

__all__ = ["hvp", "hessian_top_eig", "per_sample_grads", "hutchinson_trace", "hutchpp_trace",
           "gradient_penalty_grad", "adversarial_weight_perturbation", "sam_step",
           "jacobian_penalty", "jacobian_two_to_inf", "gram_spectral_norm",
           "conv_spectral_bound"]


def _check_like(params, v, name: str):
    p_leaves, p_spec = tree_flatten(params)
    v_leaves, v_spec = tree_flatten(v)
    if not p_leaves or not all(isinstance(t, torch.Tensor) for t in p_leaves):
        raise TypeError("params must be a tensor or a tuple/list/dict of tensors")
    if p_spec != v_spec or any(a.shape != b.shape for a, b in zip(p_leaves, v_leaves, strict=True)):
        raise ValueError(f"{name} must have the structure and shapes of params")
    return p_leaves, p_spec


def hvp(loss_fn, params, v):
    r"""Hessian-vector product :math:`\nabla^2 L(\theta)\,v` by forward-over-reverse
    differentiation.

    .. math:: H v = \frac{d}{dt}\Big|_{t=0} \nabla L(\theta + t v),

    computed with ``torch.func.jvp`` of ``torch.func.grad``: about the cost of two
    gradients and the memory of one, never the :math:`d \times d` Hessian. Derived in
    chapter 09.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor.
    params : tensor or tuple/list/dict of tensors
        The point :math:`\theta`.
    v : same structure as ``params``
        The direction.

    Returns
    -------
    same structure as ``params``
        :math:`H v`.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import hvp
    >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> loss = lambda w: 0.5 * w @ A @ w          # Hessian A
    >>> hvp(loss, torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 0.0],
    ...     dtype=torch.float64))
    tensor([2., 1.], dtype=torch.float64)
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params) -> scalar tensor")
    _check_like(params, v, "v")
    return torch.func.jvp(torch.func.grad(loss_fn), (params,), (v,))[1]


def _top_eig_kernel(matvec, v, tol, max_iter):
    r"""The part to copy: power iteration for the eigenvalue of largest magnitude of a
    symmetric operator given by ``matvec`` (flat vectors), from the unit start ``v``.

    Stops when the residual :math:`\|Hv - \theta v\| \le tol\,|\theta|` (then some
    eigenvalue lies within ``tol``·|θ| of θ) or after ``max_iter`` products. Returns
    ``(theta, v, relative residual, n_iter)``.
    """
    theta, residual, n_iter = v.new_zeros(()), float("inf"), 0
    while n_iter < max_iter:
        w, n_iter = matvec(v), n_iter + 1
        theta = torch.dot(v, w)
        residual = float(torch.linalg.vector_norm(w - theta * v) / theta.abs().clamp_min(
            torch.finfo(v.dtype).tiny))
        if residual <= tol:
            break
        v = w / torch.linalg.vector_norm(w).clamp_min(torch.finfo(v.dtype).tiny)
    return theta, v, residual, n_iter


def hessian_top_eig(loss_fn, params, *, tol=None, max_iter: int = 200, generator=None,
                    return_info: bool = False):
    r"""The Hessian eigenvalue of largest magnitude (the sharpness), by power iteration on
    :func:`hvp`.

    .. math:: \theta_{k} = v_k^\top H v_k, \qquad v_{k+1} = H v_k / \|H v_k\|,

    from a random unit start (drawn on the CPU with ``generator``). Near a minimum
    :math:`H \succeq 0` and this is :math:`\lambda_{\max}(H)`, the quantity that gradient
    descent with step :math:`\eta` keeps below :math:`2/\eta` (chapter 08). Cost: one HVP
    per iteration; convergence is geometric in :math:`|\lambda_2/\lambda_1|`. Derived in
    chapter 09.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor.
    params : tensor or tuple/list/dict of tensors
        The point at which the Hessian is taken.
    tol : float, optional
        Stop when :math:`\|Hv - \theta v\| \le` ``tol`` :math:`\cdot|\theta|`; the
        certificate is that relative residual (some eigenvalue of :math:`H` is within
        ``tol``:math:`\cdot|\theta|` of the returned value). Default 1e-6 (float64),
        1e-4 (float32).
    max_iter : int
        Maximum number of Hessian-vector products (power iterations).
    generator : torch.Generator, optional
        CPU generator for the start vector.
    return_info : bool
        Also return an :class:`~regref.Info`.

    Returns
    -------
    eigenvalue : tensor of shape ()
        The Rayleigh quotient :math:`\theta`.
    vector : same structure as ``params``
        The unit eigenvector estimate.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import hessian_top_eig
    >>> A = torch.diag(torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64))
    >>> loss = lambda w: 0.5 * w @ A @ w
    >>> lam, v = hessian_top_eig(loss, torch.zeros(3, dtype=torch.float64),
    ...                          generator=torch.Generator().manual_seed(0))
    >>> round(float(lam), 6)
    5.0
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params) -> scalar tensor")
    leaves, spec = _check_like(params, params, "params")
    dtype = leaves[0].dtype
    if not dtype.is_floating_point or any(t.dtype != dtype for t in leaves):
        raise TypeError("params must be floating tensors of one dtype")
    tol = check_tol(tol, dtype, 1e-6, 1e-4)
    max_iter = check_positive_int(max_iter, "max_iter")
    check_generator(generator)
    sizes = [t.numel() for t in leaves]

    def unflatten(flat):
        chunks = torch.split(flat, sizes)
        return tree_unflatten([c.view_as(t) for c, t in zip(chunks, leaves, strict=True)], spec)

    grad_fn = torch.func.grad(loss_fn)

    def matvec(flat):
        out = torch.func.jvp(grad_fn, (params,), (unflatten(flat),))[1]
        return torch.cat([t.reshape(-1) for t in tree_flatten(out)[0]])

    v = torch.randn(sum(sizes), generator=generator, dtype=torch.float64)
    v = (v / torch.linalg.vector_norm(v)).to(dtype=dtype, device=leaves[0].device)
    theta, v, residual, n_iter = _top_eig_kernel(matvec, v, tol, max_iter)
    converged = residual <= tol
    if not converged:
        warn_not_converged(f"hessian_top_eig: relative residual {residual:.2e} > tol "
                           f"{tol:.1e} after max_iter={max_iter} products")
    if return_info:
        return theta, unflatten(v), Info(n_iter, converged, residual)
    return theta, unflatten(v)


def per_sample_grads(loss_fn, params, *batch):
    r"""Gradients of a per-sample loss for every sample of a batch, in one vectorized pass.

    .. math:: g_i = \nabla_\theta\, \ell(\theta; x_i, y_i), \qquad i = 1, \dots, n,

    where ``loss_fn(params, *batch)`` computes the loss of a batch; each sample is passed
    as a batch of one (``torch.func.vmap`` of ``torch.func.grad``), so the loss is written
    once for batches. Memory: :math:`n` copies of the gradient. The building block of the
    Fisher estimates of chapter 12 and the gradient-variance penalties of chapter 13.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, *batch)`` returns the scalar loss of a batch.
    params : tensor or tuple/list/dict of tensors
        The parameters :math:`\theta`.
    *batch : tensors
        Data tensors sharing their first dimension :math:`n` (inputs, labels, ...).

    Returns
    -------
    same structure as ``params``
        Each leaf has a leading dimension :math:`n`: ``out[i]`` is :math:`g_i`.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import per_sample_grads
    >>> X = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 1.0], dtype=torch.float64)
    >>> loss = lambda w, X, y: 0.5 * ((X @ w - y) ** 2).mean()
    >>> per_sample_grads(loss, torch.zeros(2, dtype=torch.float64), X, y)
    tensor([[-1., -2.],
            [-3., -4.]], dtype=torch.float64)
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params, *batch) -> scalar")
    _check_like(params, params, "params")
    if not batch or not all(isinstance(b, torch.Tensor) and b.ndim >= 1 for b in batch):
        raise ValueError("batch must be one or more tensors with a leading sample dimension")
    n = batch[0].shape[0]
    if any(b.shape[0] != n for b in batch):
        raise ValueError(f"batch tensors must share their first dimension, got "
                         f"{[b.shape[0] for b in batch]}")

    def one(p, *sample):
        return loss_fn(p, *(s.unsqueeze(0) for s in sample))

    return torch.func.vmap(torch.func.grad(one), in_dims=(None,) + (0,) * len(batch))(
        params, *batch)


# ------------------------------------------------------------------ flat views of a pytree


def _flat_view(params):
    """``(leaves, flatten, unflatten)`` for a tensor or a tuple/list/dict of tensors of one
    floating dtype: flat vectors of length ``D`` (or batches ``(..., D)``) <-> pytrees."""
    leaves, spec = _check_like(params, params, "params")
    dtype = leaves[0].dtype
    if not dtype.is_floating_point or any(t.dtype != dtype for t in leaves):
        raise TypeError("params must be floating tensors of one dtype")
    shapes = [t.shape for t in leaves]
    sizes = [t.numel() for t in leaves]

    def flatten(tree):
        return torch.cat([t.reshape(*t.shape[:t.ndim - len(s)], -1)
                          for t, s in zip(tree_flatten(tree)[0], shapes, strict=True)], -1)

    def unflatten(flat):
        chunks = torch.split(flat, sizes, dim=-1)
        return tree_unflatten([c.reshape(*c.shape[:-1], *s)
                               for c, s in zip(chunks, shapes, strict=True)], spec)

    return leaves, flatten, unflatten


def _probes(shape, kind, generator, like):
    """Rademacher (+-1) or standard Gaussian probes drawn on the CPU, moved to ``like``."""
    if kind == "rademacher":
        z = torch.randint(0, 2, tuple(shape), generator=generator).to(torch.float64) * 2 - 1
    else:
        z = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    return z.to(dtype=like.dtype, device=like.device)


def _hessian_matmat(loss_fn, params):
    """Rows of ``V`` (..., D) -> rows of ``V H``: one vmapped Hessian-vector product."""
    leaves, flatten, unflatten = _flat_view(params)
    grad_fn = torch.func.grad(loss_fn)

    def one(v):
        return flatten(torch.func.jvp(grad_fn, (params,), (unflatten(v),))[1])

    def matmat(V):
        return torch.func.vmap(one)(V.reshape(-1, V.shape[-1])).reshape(V.shape)

    return matmat, leaves[0], sum(t.numel() for t in leaves)


# ------------------------------------------------------------------ trace estimation


def _hutchpp_kernel(matmat, S, G):
    r"""The part to copy: Hutch++ estimate of :math:`\operatorname{tr}(A)` for a symmetric
    operator seen only through products. Vectors are rows: ``matmat`` maps ``(..., j, D)``
    to the rows times :math:`A`. ``S`` (..., k, D) are sketch probes, ``G`` (..., m, D)
    Hutchinson probes (m >= 2); with k = 0 this is Hutchinson's estimator. Leading
    dimensions are independent repetitions, all in one pass.

    With :math:`Q` an orthonormal basis of the range of :math:`AS^\top`,
    :math:`\operatorname{tr}A = \operatorname{tr}(Q^\top AQ) +
    \operatorname{tr}\bigl((I - QQ^\top)A(I - QQ^\top)\bigr)`: the first term is exact,
    the second is estimated from the projected probes. Returns ``(estimate, std_err)``,
    the standard error of the random part given the sketch.
    """
    if S.shape[-2] > 0:
        Q = torch.linalg.qr(matmat(S).mT).Q  # (..., D, k)
        exact = (Q.mT * matmat(Q.mT)).sum((-2, -1))  # tr(Q^T A Q)
        G = G - (G @ Q) @ Q.mT  # probes in the orthogonal complement
    else:
        exact = G.new_zeros(G.shape[:-2])
    samples = (G * matmat(G)).sum(-1)  # g^T A g, shape (..., m)
    std_err = samples.std(-1) / math.sqrt(samples.shape[-1])
    return exact + samples.mean(-1), std_err


def _check_probe(probe):
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")


def hutchinson_trace(loss_fn, params, n_probes: int = 30, *, probe: str = "rademacher",
                     generator=None):
    r"""Hutchinson's estimate of the trace of the Hessian, probes batched in one pass.

    .. math:: \operatorname{tr} H \approx \frac1m \sum_{j=1}^m g_j^\top H g_j,
       \qquad \mathbb E[g g^\top] = I,

    with :math:`H = \nabla^2\mathcal L(w)`. The :math:`m` Hessian-vector products run as one
    ``torch.func.vmap`` of forward-over-reverse differentiation (cost about :math:`2m`
    gradients, memory :math:`m` gradients). Unbiased, with variance
    :math:`2(\|H\|_F^2 - \sum_i H_{ii}^2)/m` for Rademacher probes and
    :math:`2\|H\|_F^2/m` for Gaussian ones. Derived in chapter 09.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor; it must be ``vmap``-compatible (no
        ``.item()``, no data-dependent Python control flow).
    params : tensor or tuple/list/dict of tensors
        The point :math:`w`.
    n_probes : int
        Number of probes :math:`m` (at least 2, so that the error can be estimated).
    probe : {"rademacher", "gaussian"}
        Distribution of the probe entries.
    generator : torch.Generator, optional
        CPU generator for the probes.

    Returns
    -------
    trace : tensor of shape ()
        The estimate.
    std_err : tensor of shape ()
        Its standard error, the sample standard deviation of :math:`g_j^\top Hg_j` over
        :math:`\sqrt m`.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import hutchinson_trace
    >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    >>> loss = lambda w: 0.5 * w @ A @ w          # diagonal Hessian: Rademacher is exact
    >>> t, se = hutchinson_trace(loss, torch.zeros(3, dtype=torch.float64), 10,
    ...                          generator=torch.Generator().manual_seed(0))
    >>> round(float(t), 6), round(float(se), 6)
    (6.0, 0.0)
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params) -> scalar tensor")
    matmat, like, D = _hessian_matmat(loss_fn, params)
    m = check_positive_int(n_probes, "n_probes")
    if m < 2:
        raise ValueError(f"n_probes must be at least 2, got {m}")
    _check_probe(probe)
    check_generator(generator)
    G = _probes((m, D), probe, generator, like)
    return _hutchpp_kernel(matmat, G[:0], G)


def hutchpp_trace(loss_fn, params, n_matvecs: int = 30, *, probe: str = "rademacher",
                  generator=None):
    r"""Hutch++ estimate of the trace of the Hessian (Meyer et al., 2021), in one pass.

    The budget of :math:`N` Hessian-vector products is split in three: :math:`k = \lfloor
    N/3\rfloor` products :math:`HS` whose range, with orthonormal basis :math:`Q`, captures
    the top of the spectrum; :math:`k` products :math:`HQ` for the exact part
    :math:`\operatorname{tr}(Q^\top HQ)`; and :math:`m = N - 2k` Hutchinson probes on the
    deflated operator :math:`(I - QQ^\top)H(I - QQ^\top)`:

    .. math:: \operatorname{tr} H \approx \operatorname{tr}(Q^\top HQ) + \frac1m
       \sum_{j=1}^m g_j^\top (I - QQ^\top)H(I - QQ^\top) g_j .

    Unbiased; for :math:`H \succeq 0` the relative error is :math:`O(1/N)` instead of
    Hutchinson's :math:`O(1/\sqrt N)`. Each group of products is one ``vmap``; cost about
    :math:`2N` gradients plus a QR of a :math:`D \times k` matrix. Derived in chapter 09.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor (``vmap``-compatible).
    params : tensor or tuple/list/dict of tensors
        The point :math:`w`.
    n_matvecs : int
        Total number :math:`N` of Hessian-vector products (at least 4).
    probe : {"rademacher", "gaussian"}
        Distribution of the probe entries (sketch and estimation probes).
    generator : torch.Generator, optional
        CPU generator for the probes.

    Returns
    -------
    trace : tensor of shape ()
        The estimate.
    std_err : tensor of shape ()
        The standard error of the Hutchinson part, given the sketch.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import hutchpp_trace
    >>> A = torch.diag(torch.tensor([5.0, 1.0, 0.5, 0.1], dtype=torch.float64))
    >>> loss = lambda w: 0.5 * w @ A @ w
    >>> t, se = hutchpp_trace(loss, torch.zeros(4, dtype=torch.float64), 12,
    ...                       generator=torch.Generator().manual_seed(0))
    >>> round(float(t), 6)                 # k = 4 = D: the sketch captures everything
    6.6
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params) -> scalar tensor")
    matmat, like, D = _hessian_matmat(loss_fn, params)
    N = check_positive_int(n_matvecs, "n_matvecs")
    if N < 4:
        raise ValueError(f"n_matvecs must be at least 4, got {N}")
    _check_probe(probe)
    check_generator(generator)
    k = N // 3
    Z = _probes((N - k, D), probe, generator, like)
    return _hutchpp_kernel(matmat, Z[:k], Z[k:])


# ------------------------------------------------------------------ gradient-norm penalty


def _tree_axpy(a, x, y):
    """``a * x + y`` leaf by leaf."""
    return torch.utils._pytree.tree_map(lambda s, t: a * s + t, x, y)


def _tree_norm(tree):
    return torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(t) for t in tree_flatten(tree)[0]]))


def gradient_penalty_grad(loss_fn, params, lam, *, method: str = "finite_difference",
                          h: float = 1e-2):
    r"""Gradient of the gradient-norm-penalized loss, by double backprop or by one extra
    gradient.

    .. math:: F_\lambda(w) = \mathcal L(w) + \frac\lambda2\|\nabla\mathcal L(w)\|^2, \qquad
       \nabla F_\lambda(w) = g + \lambda H g, \quad g = \nabla\mathcal L(w),\
       H = \nabla^2\mathcal L(w).

    ``method="double_backprop"`` differentiates :math:`F_\lambda` itself (reverse over
    reverse, :func:`torch.func.grad` of a function that calls it). ``"finite_difference"``
    replaces :math:`Hg` by a forward difference along the ascent direction,

    .. math:: \nabla F_\lambda(w) \approx g + \frac\lambda h\bigl(\nabla\mathcal L(w + hg)
       - g\bigr),

    two plain gradients and no second-order graph (Karakida et al., 2023); its error is
    at most :math:`\tfrac12\lambda hM_3\|g\|^2` when the third derivative is bounded by
    :math:`M_3` along the segment. Derived in chapter 09.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor.
    params : tensor or tuple/list/dict of tensors
        The point :math:`w`.
    lam : float
        Strength :math:`\lambda \ge 0`.
    method : {"finite_difference", "double_backprop"}
        How :math:`Hg` is obtained.
    h : float
        Finite-difference step (> 0); ignored by double backprop.

    Returns
    -------
    same structure as ``params``
        :math:`\nabla F_\lambda(w)`.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import gradient_penalty_grad
    >>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> loss = lambda w: 0.5 * w @ A @ w          # g = A w, Hg = A^2 w
    >>> w = torch.tensor([1.0, 1.0], dtype=torch.float64)
    >>> gradient_penalty_grad(loss, w, 0.5, method="double_backprop")
    tensor([4.0000, 1.5000], dtype=torch.float64)
    >>> gradient_penalty_grad(loss, w, 0.5, h=1e-3)   # exact for a quadratic
    tensor([4.0000, 1.5000], dtype=torch.float64)
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params) -> scalar tensor")
    leaves, _, _ = _flat_view(params)
    lam = float(check_nonneg(lam, "lam"))
    grad_fn = torch.func.grad(loss_fn)
    if method == "double_backprop":
        def penalized(p):
            sq = sum((t * t).sum() for t in tree_flatten(grad_fn(p))[0])
            return loss_fn(p) + 0.5 * lam * sq
        return torch.func.grad(penalized)(params)
    if method != "finite_difference":
        raise ValueError(f"method must be 'finite_difference' or 'double_backprop', got "
                         f"{method!r}")
    h = check_positive(h, "h")
    g = grad_fn(params)
    g_ahead = grad_fn(_tree_axpy(h, g, params))
    return torch.utils._pytree.tree_map(lambda a, b: a + lam / h * (b - a), g, g_ahead)




# ------------------------------------------------------------------ SAM and weight perturbation


def adversarial_weight_perturbation(loss_fn, params, rho, *, n_steps: int = 1,
                                    relative: bool = False):
    r"""A norm-bounded weight perturbation that (approximately) maximizes the loss.

    .. math:: \delta \approx \arg\max_{\|\delta\| \le \rho}\ \mathcal L(w + \delta),

    by ``n_steps`` normalized gradient-ascent steps of length :math:`\rho/n` projected on
    the ball. One step gives SAM's :math:`\delta = \rho\, g/\|g\|`
    (Foret et al., 2021); several steps give the inner maximization of adversarial model
    perturbation (Zheng et al., 2021). With ``relative=True`` every tensor (layer) ``l``
    gets its own ball of radius :math:`\rho\|w_l\|` and its own normalization, as in
    adversarial weight perturbation (Wu et al., 2020). Cost: ``n_steps`` gradients.
    Derived in chapter 09.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor.
    params : tensor or tuple/list/dict of tensors
        The point :math:`w`.
    rho : float
        Radius :math:`\rho \ge 0` (relative to each layer's norm when ``relative``).
    n_steps : int
        Number of ascent steps.
    relative : bool
        Layer-wise radii proportional to the layer norms.

    Returns
    -------
    same structure as ``params``
        The perturbation :math:`\delta`.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import adversarial_weight_perturbation
    >>> loss = lambda w: (w ** 2).sum()
    >>> adversarial_weight_perturbation(loss, torch.tensor([3.0, 4.0]), 0.5)
    tensor([0.3000, 0.4000])
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params) -> scalar tensor")
    return _perturbation(loss_fn, params, rho, n_steps, relative)[0]


def _perturbation(loss_fn, params, rho, n_steps, relative):
    """Validated ascent of :func:`adversarial_weight_perturbation`; also returns the loss
    at ``params`` (from the first gradient)."""
    leaves, _, _ = _flat_view(params)
    rho = check_nonneg(rho, "rho")
    n_steps = check_positive_int(n_steps, "n_steps")
    tiny = torch.finfo(leaves[0].dtype).tiny
    tree_map = torch.utils._pytree.tree_map
    if relative:
        radius = tree_map(lambda t: rho * torch.linalg.vector_norm(t), params)
    grad_fn = torch.func.grad_and_value(loss_fn)
    delta, value = tree_map(torch.zeros_like, params), None
    for _ in range(n_steps):
        g, v = grad_fn(_tree_axpy(1.0, delta, params))
        value = v if value is None else value
        if relative:  # one ball per tensor
            def step(d, gl, r):
                d = d + r / n_steps * gl / torch.linalg.vector_norm(gl).clamp_min(tiny)
                return d * (r / torch.linalg.vector_norm(d).clamp_min(tiny)).clamp(max=1)
            delta = tree_map(step, delta, g, radius)
        else:
            scale = rho / n_steps / _tree_norm(g).clamp_min(tiny)
            delta = _tree_axpy(scale, g, delta)
            shrink = (rho / _tree_norm(delta).clamp_min(tiny)).clamp(max=1)
            delta = tree_map(lambda d, s=shrink: d * s, delta)
    return delta, value


def sam_step(loss_fn, params, lr, rho, *, n_steps: int = 1, relative: bool = False):
    r"""One step of sharpness-aware minimization: ascend to the worst nearby weights, then
    descend with the gradient found there.

    .. math:: \delta = \rho\,\frac{g}{\|g\|},\quad g = \nabla\mathcal L(w), \qquad
       w^+ = w - \eta\,\nabla\mathcal L(w + \delta),

    which descends the sharpness-aware loss :math:`\max_{\|\delta\|\le\rho}
    \mathcal L(w + \delta)` to first order (Foret et al., 2021). To first order in
    :math:`\rho`, :math:`\nabla\mathcal L(w + \delta) = g + \rho Hg/\|g\|`: SAM is the
    finite-difference gradient-norm penalty of :func:`gradient_penalty_grad` with
    :math:`\lambda/h = 1` and :math:`h = \rho/\|g\|`. ``n_steps`` and ``relative`` select
    the perturbation of :func:`adversarial_weight_perturbation` (AMP, AWP). Cost:
    ``n_steps + 1`` gradients. Derived in chapter 09.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params)`` returns a scalar tensor.
    params : tensor or tuple/list/dict of tensors
        The current weights :math:`w`.
    lr : float
        Step size :math:`\eta > 0`.
    rho : float
        Perturbation radius :math:`\rho \ge 0` (``rho=0`` is a plain gradient step).
    n_steps : int
        Ascent steps of the inner maximization.
    relative : bool
        Layer-wise radii (adversarial weight perturbation).

    Returns
    -------
    new_params : same structure as ``params``
        :math:`w^+`.
    loss : tensor of shape ()
        :math:`\mathcal L(w)` at the current weights (free: computed with the first
        gradient).

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import sam_step
    >>> loss = lambda w: (w ** 2).sum()               # gradient 2 w
    >>> w_new, value = sam_step(loss, torch.tensor([3.0, 4.0]), lr=0.1, rho=0.5)
    >>> w_new, value                                 # w - 0.1 * 2 * (w + 0.1 w)
    (tensor([2.3400, 3.1200]), tensor(25.))
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params) -> scalar tensor")
    lr = check_positive(lr, "lr")
    delta, value = _perturbation(loss_fn, params, rho, n_steps, relative)
    g = torch.func.grad(loss_fn)(_tree_axpy(1.0, delta, params))
    return _tree_axpy(-lr, g, params), value.detach()


# ------------------------------------------------------------------ Jacobian penalties


def jacobian_penalty(f, x, n_proj: int = 1, *, generator=None):
    r"""Unbiased random-projection estimate of the squared Frobenius norm of a Jacobian.

    .. math:: \|J\|_F^2 = \mathbb E_v\,\|J^\top v\|^2, \qquad v \sim \mathcal N(0, I),

    with :math:`J^\top v` one vector-Jacobian product; the ``n_proj`` products run as one
    ``vmap`` (Hoffman et al., 2019). For a model applied to a batch, :math:`J` is block
    diagonal and the estimate is :math:`\sum_i\|J_f(x_i)\|_F^2`. Parameters that ``f``
    closes over keep their autograd graph, so the estimate can be added to a training loss
    (its gradient costs a double backprop). Variance :math:`2\|J^\top J\|_F^2/`
    ``n_proj``. Derived in chapter 09.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a tensor.
    x : tensor
        The input at which the Jacobian is taken.
    n_proj : int
        Number of random projections.
    generator : torch.Generator, optional
        CPU generator for the projections.

    Returns
    -------
    tensor of shape ()
        The estimate of :math:`\|J_f(x)\|_F^2`.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import jacobian_penalty
    >>> W = torch.tensor([[1.0, 2.0], [0.0, 3.0]], dtype=torch.float64)
    >>> est = jacobian_penalty(lambda x: x @ W.T, torch.zeros(2, dtype=torch.float64),
    ...                        20000, generator=torch.Generator().manual_seed(0))
    >>> abs(float(est) - 14.0) < 0.5                  # ||W||_F^2 = 14
    True
    """
    if not callable(f):
        raise TypeError("f must be callable: f(x) -> tensor")
    x = as_float_tensor(x, "x")
    n_proj = check_positive_int(n_proj, "n_proj")
    check_generator(generator)
    out, vjp_fn = torch.func.vjp(f, x)
    V = randn((n_proj, *out.shape), generator, out)
    JtV = torch.func.vmap(vjp_fn)(V)[0]
    return (JtV * JtV).sum() / n_proj


def _row_norms_kernel(matmat, rmatmat, S, G):
    r"""The part to copy: squared row norms of :math:`A` (:math:`\operatorname{diag}AA^\top`)
    from products only, rows as vectors: ``matmat`` maps ``(..., j, p)`` to the rows of
    :math:`VA^\top` (:math:`j` products :math:`Av`) and ``rmatmat`` maps ``(..., j, m)`` to
    those of :math:`UA` (products :math:`A^\top u`). ``S`` (..., k, m) are sketch probes,
    ``G`` (..., r, p) estimation probes (r >= 2); k = 0 is Hutchinson's estimator.

    With :math:`Q` an orthonormal basis of the range of :math:`A^\top S^\top`, each row
    :math:`a_i` splits as :math:`\|a_i\|^2 = \|Q^\top a_i\|^2 + \|(I - QQ^\top)a_i\|^2`:
    the first term is exact, the second estimated by
    :math:`\operatorname{mean}_j (a_i^\top(I - QQ^\top)g_j)^2`. Returns
    ``(estimates, std_errs)`` of shape (..., m).
    """
    if S.shape[-2] > 0:
        Q = torch.linalg.qr(rmatmat(S).mT).Q  # (..., p, k)
        exact = (matmat(Q.mT) ** 2).sum(-2)  # ||Q^T a_i||^2, shape (..., m)
        G = G - (G @ Q) @ Q.mT
    else:
        exact = 0.0
    samples = matmat(G) ** 2  # (a_i^T g_j)^2, shape (..., r, m)
    std_err = samples.std(-2) / math.sqrt(samples.shape[-2])
    return exact + samples.mean(-2), std_err


def jacobian_two_to_inf(f, x, n_matvecs: int = 30, *, sketch: bool = True, generator=None):
    r"""Matrix-free estimate of the two-to-infinity norm of a Jacobian, the largest
    Euclidean norm of its rows.

    .. math:: \|J\|_{2\to\infty} = \max_{\|v\|\le 1}\|Jv\|_\infty = \max_i \|\nabla f_i(x)\|
       = \max_i \sqrt{(JJ^\top)_{ii}} ,

    the worst output's sensitivity to an input perturbation of unit Euclidean norm. The
    diagonal of :math:`JJ^\top` is estimated with Hutchinson's diagonal estimator
    (``sketch=False``: :math:`N` Jacobian-vector products) or its Hutch++ version
    (:math:`k = \lfloor N/3\rfloor` vector-Jacobian products for a sketch, :math:`k` JVPs for
    its exact part, :math:`N - 2k` JVPs for the rest); each group is one ``vmap``. As in
    Tsyganov et al. (2025), the row with the largest estimate is then computed exactly (one
    more VJP), so the returned norm is a certified lower bound, exact whenever the
    estimates rank the largest row first. Derived in chapter 09.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a tensor (the outputs are its flattened entries).
    x : tensor
        The input at which the Jacobian is taken.
    n_matvecs : int
        Total number :math:`N` of products (at least 2; at least 4 with ``sketch``).
    sketch : bool
        Hutch++ (deflate a sketched subspace exactly) or plain Hutchinson.
    generator : torch.Generator, optional
        CPU generator for the probes (Gaussian).

    Returns
    -------
    norm : tensor of shape ()
        The exact norm of the row with the largest estimate: :math:`\le
        \|J\|_{2\to\infty}`, with equality when that row is the largest.
    sq_row_norms : tensor of shape ``f(x).shape``
        The unbiased estimates of the squared row norms :math:`\|\nabla f_i(x)\|^2`.
    std_err : tensor of shape ``f(x).shape``
        Their standard errors (given the sketch).

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import jacobian_two_to_inf
    >>> W = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    >>> norm, sq, _ = jacobian_two_to_inf(lambda x: W @ x, torch.zeros(2,
    ...     dtype=torch.float64), 6, generator=torch.Generator().manual_seed(0))
    >>> round(float(norm), 6)              # the sketch spans R^2: exact, row [3, 4]
    5.0
    """
    if not callable(f):
        raise TypeError("f must be callable: f(x) -> tensor")
    x = as_float_tensor(x, "x")
    N = check_positive_int(n_matvecs, "n_matvecs")
    k = N // 3 if sketch else 0
    if N - 2 * k < 2:
        raise ValueError(f"n_matvecs must be at least {4 if sketch else 2}, got {N}")
    check_generator(generator)
    out, vjp_fn = torch.func.vjp(f, x)
    p, m = x.numel(), out.numel()

    def jvp(v):
        return torch.func.jvp(f, (x,), (v.reshape(x.shape),))[1].reshape(-1)

    def matmat(V):
        return torch.func.vmap(jvp)(V.reshape(-1, p)).reshape(*V.shape[:-1], m)

    def rmatmat(U):
        rows = torch.func.vmap(vjp_fn)(U.reshape(-1, *out.shape))[0]
        return rows.reshape(*U.shape[:-1], p)

    S = randn((k, m), generator, out)
    G = randn((N - 2 * k, p), generator, out)
    sq, std_err = _row_norms_kernel(matmat, rmatmat, S, G)
    e = torch.zeros_like(sq).scatter_(0, sq.argmax().reshape(1), 1.0)
    norm = torch.linalg.vector_norm(rmatmat(e[None]))  # exact norm of the chosen row
    return norm, sq.reshape(out.shape), std_err.reshape(out.shape)


# ------------------------------------------------------------------ Lipschitz bounds


def _gram_kernel(W, tol, max_iter):
    r"""The part to copy: Gram iteration on a batch of matrices ``W`` (..., m, n), real or
    complex. :math:`G_0 = W`, :math:`G_{t+1} = G_t^{\mathsf H}G_t` (rescaled to avoid
    overflow; the log of the scale is carried), so that :math:`s_1(W) \le
    \|G_t\|_F^{1/2^t}` (an upper bound, exact in the limit). A lower bound comes free: the
    largest column of :math:`G_t` is a power iterate :math:`v`, and :math:`\|Wv\|/\|v\| \le
    s_1(W)`. Stops when the worst relative gap (upper - lower)/upper is at most ``tol``
    or after ``max_iter`` squarings. Returns ``(upper, lower, gap, n_iter)``.
    """
    G, log_scale = W, torch.zeros(W.shape[:-2], dtype=W.real.dtype, device=W.device)
    upper, lower = torch.linalg.matrix_norm(W), torch.zeros_like(log_scale)
    gap, t = float("inf"), 0
    while t < max_iter and gap > tol:
        f = torch.linalg.matrix_norm(G).clamp_min(torch.finfo(log_scale.dtype).tiny)
        G = G / f[..., None, None]
        log_scale = 2 * (log_scale + f.log())
        G, t = G.mH @ G, t + 1
        upper = ((log_scale + torch.linalg.matrix_norm(G).log()) / 2**t).exp()
        cols = torch.linalg.vector_norm(G, dim=-2)  # (..., n)
        idx = cols.argmax(-1, keepdim=True)[..., None].expand(*G.shape[:-1], 1)
        v = torch.gather(G, -1, idx)  # (..., n, 1)
        lower = torch.linalg.vector_norm(W @ v, dim=(-2, -1)) / cols.amax(-1)
        gap = float(((upper - lower) / upper).amax())
    return upper, lower, gap, t


def gram_spectral_norm(W, *, tol=None, max_iter: int = 30, return_info: bool = False):
    r"""Certified upper bound on the spectral norm of a batch of matrices by Gram iteration.

    .. math:: G_0 = W,\quad G_{t+1} = G_t^{\mathsf H} G_t, \qquad
       s_1(W) \le \|G_t\|_F^{1/2^t} \le r^{1/2^{t+1}}\, s_1(W),

    with :math:`r` the rank of :math:`W`: every iterate is an upper bound, and the bound
    converges quadratically once :math:`(s_2/s_1)^{2^t}` is small (Delattre et al., 2023).
    Only matrix products, so it is differentiable and fast on a GPU, unlike an SVD. The
    certificate is the largest relative gap (upper - lower)/upper over the batch, where the
    lower bound is the Rayleigh quotient of the largest column of :math:`G_t`. Cost per
    iteration: one batched product, :math:`O(n^3)` per matrix. Derived in chapter 09.

    Parameters
    ----------
    W : tensor of shape (..., m, n)
        Real or complex matrices (batched over leading dimensions).
    tol : float, optional
        Stop when the relative gap between the upper and lower bounds is at most ``tol``.
        Default 1e-6 (float64), 1e-4 (float32).
    max_iter : int
        Maximum number of Gram iterations (squarings).
    return_info : bool
        Also return an :class:`~regref.Info` (the certificate is the relative gap).

    Returns
    -------
    tensor of shape ``W.shape[:-2]``
        The upper bounds :math:`\|G_t\|_F^{1/2^t} \ge s_1(W)`.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import gram_spectral_norm
    >>> W = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> bound, info = gram_spectral_norm(W, tol=1e-10, return_info=True)
    >>> round(float(bound), 8), info.converged
    (3.0, True)
    """
    W = check_finite(as_float_tensor(W, "W") if not (isinstance(W, torch.Tensor)
                                                     and W.is_complex()) else W, "W")
    if W.ndim < 2 or 0 in W.shape[-2:]:
        raise ValueError(f"W must be (..., m, n) with m, n > 0, got shape {tuple(W.shape)}")
    tol = check_tol(tol, W.real.dtype if W.is_complex() else W.dtype, 1e-6, 1e-4)
    max_iter = check_positive_int(max_iter, "max_iter")
    if W.shape[-2] < W.shape[-1]:  # the smaller Gram matrix: s_1(W) = s_1(W^H)
        W = W.mH
    upper, _, gap, n_iter = _gram_kernel(W, tol, max_iter)
    return _finish_bound(upper, gap, n_iter, tol, max_iter, return_info, "gram_spectral_norm")


def _finish_bound(upper, gap, n_iter, tol, max_iter, return_info, name):
    converged = gap <= tol
    if not converged:
        warn_not_converged(f"{name}: relative gap {gap:.2e} > tol {tol:.1e} after "
                           f"max_iter={max_iter} Gram iterations")
    if return_info:
        return upper, Info(n_iter, converged, gap)
    return upper


def conv_spectral_bound(kernel, n, *, tol=None, max_iter: int = 30,
                        return_info: bool = False):
    r"""Certified upper bound on the spectral norm of a circular 2-D convolution by Gram
    iteration in the Fourier domain.

    The 2-D DFT block-diagonalizes the layer into the :math:`n_1 n_2` matrices
    :math:`\hat K_{pq} \in \mathbb C^{c_{out}\times c_{in}}` (the same decomposition as
    :func:`regref.lowrank.conv_singular_values`), so :math:`\|\mathrm{conv}\|_2 =
    \max_{pq} s_1(\hat K_{pq})`. Gram iteration runs on all frequencies at once, and

    .. math:: \max_{pq} \|\hat K_{pq}\|_{\mathrm{low}} \le \|\mathrm{conv}\|_2 \le
       \max_{pq} \|G_t(\hat K_{pq})\|_F^{1/2^t},

    (Delattre et al., 2023). Batched products only: no SVD. For zero padding, pass the grid
    enlarged by the kernel size minus one, which gives an upper bound (see
    :func:`regref.lowrank.conv_spectral_norm`). Derived in chapter 09.

    Parameters
    ----------
    kernel : tensor of shape (..., c_out, c_in, k1, k2)
        Convolution kernels (batched over leading dimensions).
    n : int or (int, int)
        Image size.
    tol : float, optional
        Stop when the relative gap between the upper and lower bounds of every layer is at
        most ``tol``. Default 1e-6 (float64), 1e-4 (float32).
    max_iter : int
        Maximum number of Gram iterations.
    return_info : bool
        Also return an :class:`~regref.Info` (the certificate is the relative gap).

    Returns
    -------
    tensor of shape ``kernel.shape[:-4]``
        Upper bounds on the layers' spectral norms.
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.curvature import conv_spectral_bound
    >>> K = torch.ones(1, 1, 3, 3, dtype=torch.float64) / 9     # a 3 x 3 box blur
    >>> round(float(conv_spectral_bound(K, 8)), 6)
    1.0
    """
    from .lowrank import _grid

    K = check_finite(as_float_tensor(kernel, "kernel"), "kernel")
    if K.ndim < 4 or 0 in K.shape[-4:]:
        raise ValueError(f"kernel must be (..., c_out, c_in, k1, k2) with nonzero sizes, "
                         f"got shape {tuple(K.shape)}")
    n1, n2 = _grid(n)
    if K.shape[-2] > n1 or K.shape[-1] > n2:
        raise ValueError(f"kernel size {tuple(K.shape[-2:])} exceeds the grid {(n1, n2)}")
    tol = check_tol(tol, K.dtype, 1e-6, 1e-4)
    max_iter = check_positive_int(max_iter, "max_iter")
    Khat = torch.fft.fft2(K, s=(n1, n2)).movedim((-4, -3), (-2, -1))  # (..., n1, n2, co, ci)
    if Khat.shape[-2] < Khat.shape[-1]:
        Khat = Khat.mH
    upper, lower, _, n_iter = _gram_kernel(Khat, tol, max_iter)
    upper, lower = upper.amax((-2, -1)), lower.amax((-2, -1))
    gap = float(((upper - lower) / upper).amax())
    return _finish_bound(upper, gap, n_iter, tol, max_iter, return_info, "conv_spectral_bound")
