r"""Curvature of a loss: Hessian-vector products, top eigenvalue, per-sample gradients.

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
  block of Fisher estimates (chapter 12) and gradient-variance penalties (chapter 13).

Derivations: chapter 09.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ._core import Info, check_generator, check_positive_int, check_tol, warn_not_converged

__all__ = ["hvp", "hessian_top_eig", "per_sample_grads"]


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
