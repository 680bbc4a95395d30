r"""Regularizing toward a reference: L2-SP, EWC with a correct Fisher, merging, KL to a policy.

Every penalty here pulls a model toward a *reference* instead of toward zero: the
pretrained weights (L2-SP), the solution of an earlier task weighted by its Fisher
information (elastic weight consolidation), the singular values or the weight
distribution at initialization (continual learning), or a reference policy (offline
reinforcement learning and alignment). Parameters are a tensor, or a tuple, list or dict of
tensors, as :mod:`torch.func` accepts, so any model written functionally
(``torch.func.functional_call``) can use them.

- :func:`l2_sp_penalty`: :math:`\tfrac\lambda2\|\theta - \theta^0\|^2` (L2-SP, L2-to-init);
- :func:`fisher_diagonal`: the diagonal of the true Fisher (labels drawn from the model),
  of the empirical Fisher (the observed labels) or the mistaken squared mini-batch
  gradient, from per-sample gradients in one vectorized pass, with a standard error and an
  all-reduce across data-parallel ranks;
- :func:`ewc_penalty`: :math:`\tfrac\lambda2\sum_j F_j(\theta_j - \theta^\star_j)^2` (or a
  full matrix :math:`F`);
- :func:`fisher_merge`: Fisher-weighted averaging of several models;
- :func:`spectral_penalty`: singular values pulled toward a target (one, or their values
  at initialization);
- :func:`wasserstein_to_init`: the squared 2-Wasserstein distance between the weight
  distributions now and at initialization;
- :func:`kl_regularized_policy` and :func:`kl_regularized_objective`: the closed-form
  maximizer :math:`\pi^\star \propto \pi_{\mathrm{ref}}\,e^{r/\beta}` of
  :math:`\mathbb E_\pi r - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})`.

Derivations: chapter 12.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten, tree_unflatten

from ._core import (
    as_float_tensor,
    check_finite,
    check_generator,
    check_positive_int,
    check_strength,
    check_symmetric,
)
from .curvature import per_sample_grads

__all__ = ["l2_sp_penalty", "ewc_penalty", "fisher_diagonal", "fisher_merge",
           "spectral_penalty", "wasserstein_to_init", "kl_regularized_policy",
           "kl_regularized_objective"]

KINDS = ("true", "empirical", "minibatch_squared")


# ----------------------------------------------------------------------------- validation

def _leaves(params, name: str):
    """The tensor leaves of a pytree and its structure; ``TypeError`` otherwise."""
    leaves, spec = tree_flatten(params)
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        raise TypeError(f"{name} must be a tensor or a tuple/list/dict of tensors")
    if not all(t.is_floating_point() for t in leaves):
        raise TypeError(f"{name} must hold floating tensors")
    return leaves, spec


def _like(params, other, name: str, *, nonnegative: bool = False):
    """The leaves of ``other``, which must have the structure and shapes of ``params``,
    converted to each leaf's dtype and device and checked finite (and >= 0)."""
    p_leaves, p_spec = _leaves(params, "params")
    o_leaves, o_spec = tree_flatten(other)
    if o_spec != p_spec or len(o_leaves) != len(p_leaves):
        raise ValueError(f"{name} must have the structure of params")
    out = []
    for p, o in zip(p_leaves, o_leaves, strict=True):
        o = as_float_tensor(o, name, like=p)
        if o.shape != p.shape:
            raise ValueError(f"{name} must have the shapes of params, got {tuple(o.shape)} "
                             f"for a leaf of shape {tuple(p.shape)}")
        check_finite(o, name)
        if nonnegative and bool((o < 0).any()):
            raise ValueError(f"{name} must be nonnegative")
        out.append(o)
    return p_leaves, out


def _lam(lam, like: torch.Tensor, name: str = "lam") -> torch.Tensor:
    return check_strength(lam, name, like)


# ----------------------------------------------------------------------------- penalties

def l2_sp_penalty(params, ref, lam=1.0, *, lam_new=0.0):
    r"""The L2-SP penalty: squared distance to a reference (starting point) of the weights.

    .. math:: R(\theta) = \frac\lambda2\,\|\theta_S - \theta^0_S\|_2^2
              + \frac{\lambda_{\mathrm{new}}}2\,\|\theta_{\bar S}\|_2^2 ,

    where :math:`\theta_S` are the parameters that have a reference :math:`\theta^0` (the
    pretrained weights, or the initialization for "L2-to-init") and
    :math:`\theta_{\bar S}` those that do not (a new classification head), which are
    shrunk toward zero. With :math:`\theta^0 = 0` it is weight decay. Cost: one pass over
    the parameters. Derived in chapter 12.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The parameters :math:`\theta`.
    ref : same structure as ``params``, or a dict with a subset of its keys
        The reference :math:`\theta^0`. When ``params`` is a dict, keys missing from
        ``ref`` are the new parameters :math:`\theta_{\bar S}`.
    lam : float
        Strength :math:`\lambda \ge 0` of the pull toward the reference.
    lam_new : float
        Strength :math:`\lambda_{\mathrm{new}} \ge 0` of the weight decay on parameters
        without a reference.

    Returns
    -------
    tensor of shape ()
        The penalty, differentiable in ``params``.

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import l2_sp_penalty
    >>> theta = {"body": torch.tensor([1.0, 2.0]), "head": torch.tensor([3.0])}
    >>> ref = {"body": torch.tensor([1.0, 0.0])}      # no reference for the head
    >>> float(l2_sp_penalty(theta, ref, lam=1.0, lam_new=0.5))   # 0.5 * 4 + 0.25 * 9
    4.25
    """
    all_leaves, _ = _leaves(params, "params")
    if isinstance(params, dict) and isinstance(ref, dict):
        unknown = set(ref) - set(params)
        if unknown:
            raise ValueError(f"ref has keys that params does not have: {sorted(unknown)}")
        shared = [params[k] for k in params if k in ref]
        refs = [ref[k] for k in params if k in ref]
        new = [params[k] for k in params if k not in ref]
    else:
        shared, refs, new = params, ref, []
    leaves, refs = _like(shared, refs, "ref") if tree_flatten(shared)[0] else ([], [])
    first = all_leaves[0]
    lam, lam_new = _lam(lam, first), _lam(lam_new, first, "lam_new")
    total, decay = first.new_zeros(()), first.new_zeros(())
    for p, r in zip(leaves, refs, strict=True):
        total = total + ((p - r) ** 2).sum()
    for p in tree_flatten(new)[0]:
        decay = decay + (p ** 2).sum()
    return 0.5 * lam * total + 0.5 * lam_new * decay


def ewc_penalty(params, ref, fisher, lam=1.0):
    r"""Elastic weight consolidation: a Fisher-weighted squared distance to an earlier
    solution.

    .. math:: R(\theta) = \frac\lambda2 \sum_j F_j\,(\theta_j - \theta^\star_j)^2
              \qquad\text{or}\qquad
              \frac\lambda2\,(\theta - \theta^\star)^\top F\,(\theta - \theta^\star),

    the diagonal (``fisher`` shaped like ``params``) or the full form (``params`` one
    vector of length :math:`d` and ``fisher`` a symmetric :math:`d\times d` matrix). It is
    the quadratic (Laplace) approximation of the earlier task's loss around its minimizer
    :math:`\theta^\star`; with the exact Hessian on quadratic tasks, minimizing the new
    loss plus this penalty gives the joint minimizer exactly (chapter 12). With
    :math:`F = 1` it is :func:`l2_sp_penalty`. Cost: :math:`O(d)`, or :math:`O(d^2)` for
    the full form. Derived in chapter 12.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The parameters :math:`\theta`.
    ref : same structure as ``params``
        The earlier solution :math:`\theta^\star`.
    fisher : same structure as ``params``, or a (d, d) tensor
        Nonnegative diagonal Fisher (e.g. from :func:`fisher_diagonal`), or a full
        symmetric matrix when ``params`` is a single 1-D tensor.
    lam : float
        Strength :math:`\lambda \ge 0`.

    Returns
    -------
    tensor of shape ()
        The penalty, differentiable in ``params``.

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import ewc_penalty
    >>> theta, star = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])
    >>> float(ewc_penalty(theta, star, torch.tensor([4.0, 0.0])))   # 0.5 * 4 * 1
    2.0
    >>> float(ewc_penalty(theta, star, torch.tensor([[2.0, 1.0], [1.0, 2.0]])))
    3.0
    """
    if isinstance(params, torch.Tensor) and isinstance(fisher, torch.Tensor) \
            and params.ndim == 1 and fisher.ndim == 2:
        _, (r,) = _like(params, ref, "ref")
        Fm = check_finite(as_float_tensor(fisher, "fisher", like=params), "fisher")
        if Fm.shape != (params.numel(), params.numel()):
            raise ValueError(f"fisher must be ({params.numel()}, {params.numel()}) or shaped "
                             f"like params, got {tuple(Fm.shape)}")
        check_symmetric(Fm, "fisher")
        d = params - r
        return 0.5 * _lam(lam, params) * d @ Fm @ d
    leaves, refs = _like(params, ref, "ref")
    _, fs = _like(params, fisher, "fisher", nonnegative=True)
    lam = _lam(lam, leaves[0])
    total = leaves[0].new_zeros(())
    for p, r, f in zip(leaves, refs, fs, strict=True):
        total = total + (f * (p - r) ** 2).sum()
    return 0.5 * lam * total


# ----------------------------------------------------------------------------- Fisher

def _fisher_kernel(grad_fn, X, Y, W, group):
    r"""The part to copy: sufficient statistics of a diagonal Fisher estimate.

    ``X`` holds ``n`` inputs, ``Y`` (n, K) the labels at which the gradient of the
    negative log-likelihood is taken for each input and ``W`` (n, K) their weights (each
    row sums to one). ``grad_fn(X, y)`` returns the flat per-sample gradients, one row per
    sample. One vectorized pass computes the gradients of all ``n * K`` (input, label)
    pairs. Each input contributes one *unit* :math:`u_i = \sum_k W_{ik}\,g_{ik}^2`
    (true or empirical Fisher); with ``group = B > 1`` the units are instead the squared
    mean gradients of consecutive mini-batches of ``B`` inputs (the mistaken estimate).
    Returns ``(sum of units, sum of squared units, number of units)``: what ranks add up.
    """
    n, K = Y.shape
    G = grad_fn(X.repeat_interleave(K, dim=0), Y.reshape(-1))          # (n K, d)
    if group > 1:   # the mistake: square the gradient of each mini-batch mean loss
        U = G.reshape(n // group, group, -1).mean(1) ** 2
    else:           # the Fisher: average the squares of per-sample gradients
        U = (W.reshape(-1, 1) * G ** 2).reshape(n, K, -1).sum(1)
    return U.sum(0), (U ** 2).sum(0), U.shape[0]


def fisher_diagonal(logits_fn, params, X, y=None, *, kind: str = "true", n_samples=1,
                    batch_size=None, generator=None, return_stderr: bool = False,
                    distributed: bool = False):
    r"""Diagonal of the Fisher information of a classifier, from per-sample gradients.

    For a model with class probabilities :math:`p_\theta(\cdot\mid x) =
    \mathrm{softmax}(\text{logits\_fn}(\theta, x))` and per-sample gradients
    :math:`g(x, y) = \nabla_\theta[-\log p_\theta(y\mid x)]`, three estimates:

    .. math::
        F^{\mathrm{true}} = \frac1n\sum_{i=1}^n \mathbb E_{\tilde y \sim p_\theta(\cdot\mid
        x_i)}\, g(x_i, \tilde y)^{2}, \qquad
        F^{\mathrm{emp}} = \frac1n\sum_{i=1}^n g(x_i, y_i)^{2}, \qquad
        F^{\mathrm{mb}} = \frac Bn\sum_{b=1}^{n/B} \Bigl(\frac1B\sum_{i\in b} g(x_i,
        y_i)\Bigr)^{2}

    (squares elementwise). ``kind="true"`` is the Fisher information: the expectation is
    over labels drawn from the *model*, estimated with ``n_samples`` draws per input (on
    the CPU, with ``generator``) or computed exactly over all classes with
    ``n_samples=None``; it equals the expected Hessian of the negative log-likelihood
    (chapter 12). ``kind="empirical"`` uses the observed labels instead; it differs from
    the Fisher away from a well-specified optimum. ``kind="minibatch_squared"`` is the
    common mistake of squaring the gradient of a mini-batch's *mean* loss: near a minimum
    it is about :math:`F^{\mathrm{emp}}/B`, not a Fisher at all.

    Cost: one vectorized pass (``torch.func.vmap`` of ``torch.func.grad``, through
    :func:`regref.curvature.per_sample_grads`) over :math:`n K` (input, label) pairs, with
    :math:`K` = ``n_samples``, the number of classes (exact), or 1; memory :math:`n K d`
    for :math:`d` parameters (split the data and add the sufficient statistics when it
    does not fit). Derived in chapter 12.

    Parameters
    ----------
    logits_fn : callable
        ``logits_fn(params, X)`` returns the (m, C) logits of a batch of m inputs.
    params : tensor or tuple/list/dict of tensors
        The point :math:`\theta` (e.g. the solution of an earlier task).
    X : tensor of shape (n, ...)
        Inputs.
    y : tensor of shape (n,), optional
        Integer labels in ``[0, C)``; required for ``"empirical"`` and
        ``"minibatch_squared"``, ignored by ``"true"``.
    kind : {"true", "empirical", "minibatch_squared"}
        Which estimate.
    n_samples : int or None
        Labels drawn per input for ``"true"``; ``None`` takes the exact expectation over
        the classes (no sampling).
    batch_size : int, optional
        Mini-batch size :math:`B` for ``"minibatch_squared"``; must divide ``n``.
    generator : torch.Generator, optional
        CPU generator for the sampled labels.
    return_stderr : bool
        Also return ``{"n": m, "stderr": ...}``: the number :math:`m` of averaged units
        (inputs, or mini-batches) and the standard error of the mean over them,
        :math:`\hat s/\sqrt m` for the sample standard deviation :math:`\hat s` of the
        units, shaped like ``params`` (the error against the population Fisher, data and
        label sampling together).
    distributed : bool
        Add the sufficient statistics of all ranks of the default ``torch.distributed``
        process group (one all-reduce): each rank passes its own shard and all ranks get
        the estimate on the union of the shards.

    Returns
    -------
    fisher : same structure as ``params``
        The estimate, nonnegative.
    stats : dict
        Only with ``return_stderr=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import fisher_diagonal
    >>> X = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    >>> y = torch.tensor([1, 0])
    >>> def logits(w, X):             # logistic regression: logits (0, x w)
    ...     return torch.cat([torch.zeros_like(X), X * w], dim=1)
    >>> w = torch.zeros(1, dtype=torch.float64)       # p = 1/2: F = mean p(1-p) x^2
    >>> fisher_diagonal(logits, w, X, n_samples=None)
    tensor([0.6250], dtype=torch.float64)
    >>> fisher_diagonal(logits, w, X, y, kind="empirical")   # mean (p - y)^2 x^2
    tensor([0.6250], dtype=torch.float64)
    >>> fisher_diagonal(logits, w, X, y, kind="minibatch_squared", batch_size=2)
    tensor([0.0625], dtype=torch.float64)
    """
    if not callable(logits_fn):
        raise TypeError("logits_fn must be callable: logits_fn(params, X) -> (n, C) logits")
    leaves, spec = _leaves(params, "params")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(X, torch.Tensor):
        X = as_float_tensor(X, "X", like=leaves[0])
    if X.ndim < 1 or X.shape[0] == 0:
        raise ValueError(f"X must have a non-empty leading sample dimension, got shape "
                         f"{tuple(X.shape)}")
    if X.is_floating_point():
        check_finite(X, "X")
    n = X.shape[0]
    with torch.no_grad():
        logits = logits_fn(params, X)
    if not isinstance(logits, torch.Tensor) or logits.shape[:1] != (n,) or logits.ndim != 2:
        raise ValueError("logits_fn must return logits of shape (n, C) for X of n samples")
    C = logits.shape[1]
    group = 1
    if kind == "true":
        probs = torch.softmax(logits.double(), dim=1)
        if n_samples is None:   # exact expectation over the C classes
            Y = torch.arange(C, device=X.device).expand(n, C)
            W = probs.to(leaves[0].dtype)
        else:
            S = check_positive_int(n_samples, "n_samples")
            check_generator(generator)
            Y = torch.multinomial(probs.cpu(), S, replacement=True,
                                  generator=generator).to(X.device)
            W = torch.full((n, S), 1.0 / S, dtype=leaves[0].dtype, device=X.device)
    else:
        if y is None:
            raise ValueError(f"y is required for kind={kind!r}")
        y = torch.as_tensor(y, device=X.device)
        if y.shape != (n,) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"y must be an integer tensor of shape ({n},)")
        if bool(((y < 0) | (y >= C)).any()):
            raise ValueError(f"y must hold class indices in [0, {C})")
        Y = y.reshape(n, 1)
        W = torch.ones(n, 1, dtype=leaves[0].dtype, device=X.device)
        if kind == "minibatch_squared":
            if batch_size is None:
                raise ValueError("batch_size is required for kind='minibatch_squared'")
            group = check_positive_int(batch_size, "batch_size")
            if n % group:
                raise ValueError(f"batch_size must divide the number of samples {n}, "
                                 f"got {group}")

    def nll(p, Xb, yb):
        return F.cross_entropy(logits_fn(p, Xb), yb)

    def grad_fn(Xr, yr):
        g = per_sample_grads(nll, params, Xr, yr)
        return torch.cat([t.reshape(Xr.shape[0], -1) for t in tree_flatten(g)[0]], dim=1)

    s, ss, m = _fisher_kernel(grad_fn, X, Y, W, group)
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("distributed=True needs an initialized torch.distributed "
                             "process group")
        packed = torch.cat([s, ss, s.new_tensor([float(m)])])
        dist.all_reduce(packed)
        d = s.numel()
        s, ss, m = packed[:d], packed[d:2 * d], int(round(float(packed[-1])))
    mean = s / m
    sizes = [t.numel() for t in leaves]

    def unflatten(flat):
        chunks = torch.split(flat, sizes)
        return tree_unflatten([c.view_as(t) for c, t in zip(chunks, leaves, strict=True)],
                              spec)

    fisher = unflatten(mean)
    if not return_stderr:
        return fisher
    var = ((ss - s * mean) / max(m - 1, 1)).clamp(min=0)
    return fisher, {"n": m, "stderr": unflatten((var / m).sqrt())}


# ----------------------------------------------------------------------------- merging

def fisher_merge(models, fishers, *, weights=None):
    r"""Fisher-weighted averaging of models that share an architecture.

    .. math:: \theta^{\mathrm{merge}}_j = \frac{\sum_k w_k F_{k,j}\,\theta_{k,j}}
              {\sum_k w_k F_{k,j}},

    the minimizer of :math:`\sum_k w_k \sum_j F_{k,j}(\theta_j - \theta_{k,j})^2`, the sum
    of the models' diagonal Laplace approximations. Where every Fisher is zero, the
    weighted plain average is used. With equal Fishers it is plain averaging. Cost:
    :math:`O(Kd)` for :math:`K` models of :math:`d` parameters, one batched pass per
    leaf. Derived in chapter 12.

    Parameters
    ----------
    models : sequence of parameter structures
        :math:`K \ge 1` models (tensors, or tuples/lists/dicts of tensors of equal
        structure).
    fishers : sequence of parameter structures
        Their nonnegative diagonal Fishers, one per model.
    weights : sequence of float, optional
        Nonnegative model weights :math:`w_k` (default 1 each), not all zero.

    Returns
    -------
    same structure as the models
        The merged parameters.

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import fisher_merge
    >>> a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
    >>> fisher_merge([a, b], [torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0])])
    tensor([0.5000, 0.2500])
    """
    models, fishers = list(models), list(fishers)
    if not models:
        raise ValueError("models must hold at least one model")
    if len(fishers) != len(models):
        raise ValueError(f"fishers must have one entry per model ({len(models)}), got "
                         f"{len(fishers)}")
    leaves, spec = _leaves(models[0], "models")
    stacks = [[t] for t in leaves]
    for m in models[1:]:
        _, ls = _like(models[0], m, "models")
        for acc, t in zip(stacks, ls, strict=True):
            acc.append(t)
    fstacks = [[] for _ in leaves]
    for f in fishers:
        _, fs = _like(models[0], f, "fishers", nonnegative=True)
        for acc, t in zip(fstacks, fs, strict=True):
            acc.append(t)
    K = len(models)
    w = torch.ones(K, dtype=leaves[0].dtype, device=leaves[0].device) if weights is None \
        else check_strength(weights, "weights", leaves[0], ndims=(1,))
    if w.shape != (K,) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be {K} nonnegative numbers, not all zero")
    out = []
    for ts, fs in zip(stacks, fstacks, strict=True):
        T, Fk = torch.stack(ts), torch.stack(fs)            # (K, ...)
        wk = w.reshape((K,) + (1,) * (T.ndim - 1))
        num, den = (wk * Fk * T).sum(0), (wk * Fk).sum(0)
        plain = (wk * T).sum(0) / w.sum()
        out.append(torch.where(den > 0, num / torch.where(den > 0, den, 1.0), plain))
    return tree_unflatten(out, spec)


# ----------------------------------------------------------------------------- init-space

def spectral_penalty(W, target=1.0, lam=1.0, *, which: str = "max"):
    r"""Pull the singular values of weight matrices toward a target (spectral
    regularization for continual learning).

    .. math:: R(W) = \frac\lambda2\,\bigl(s_1(W) - t\bigr)^2 \quad(\texttt{which="max"}),
              \qquad
              R(W) = \frac\lambda2\sum_{i} \bigl(s_i(W) - t_i\bigr)^2
              \quad(\texttt{which="all"}),

    summed over a batch of matrices. ``"max"`` keeps the spectral norm near :math:`t`
    (one, as Lewandowski et al. propose, so each layer neither explodes nor collapses
    signals); ``"all"`` keeps the whole spectrum near given values, e.g. those at
    initialization, :math:`t = s(W^0)`. Singular values are differentiable where they
    are distinct. Cost: one batched ``svdvals``, :math:`O(mn\min(m,n))` per matrix.
    Derived in chapter 12.

    Parameters
    ----------
    W : tensor of shape (..., m, n)
        One weight matrix or a batch of them.
    target : float or tensor
        For ``"max"``: a number or one per matrix (shape ``W.shape[:-2]``). For
        ``"all"``: the target singular values, shape ``(..., min(m, n))`` in decreasing
        order.
    lam : float
        Strength :math:`\lambda \ge 0`.
    which : {"max", "all"}
        Penalize the largest singular value or all of them.

    Returns
    -------
    tensor of shape ()
        The penalty, summed over the batch.

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import spectral_penalty
    >>> W = torch.diag(torch.tensor([3.0, 0.5]))
    >>> float(spectral_penalty(W, 1.0))                    # 0.5 * (3 - 1)^2
    2.0
    >>> float(spectral_penalty(W, torch.tensor([2.0, 1.5]), which="all"))
    1.0
    """
    W = as_float_tensor(W, "W")
    if W.ndim < 2 or W.shape[-1] == 0 or W.shape[-2] == 0:
        raise ValueError(f"W must be a matrix or a batch of matrices, got shape "
                         f"{tuple(W.shape)}")
    check_finite(W, "W")
    if which not in ("max", "all"):
        raise ValueError(f"which must be 'max' or 'all', got {which!r}")
    t = check_finite(as_float_tensor(target, "target", like=W), "target")
    lam = _lam(lam, W)
    s = torch.linalg.svdvals(W)
    want = W.shape[:-2] + ((min(W.shape[-2:]),) if which == "all" else ())
    if t.ndim and t.shape != want:
        raise ValueError(f"target must be a number or have shape {tuple(want)}, got "
                         f"{tuple(t.shape)}")
    top = s if which == "all" else s[..., 0]
    return 0.5 * lam * ((top - t) ** 2).sum()


def wasserstein_to_init(params, init, lam=1.0):
    r"""Squared 2-Wasserstein distance between each layer's weight distribution and its
    distribution at initialization.

    .. math:: R(\theta) = \frac\lambda2 \sum_{\ell} \sum_{j=1}^{d_\ell}
              \bigl(\theta_{\ell,(j)} - \theta^0_{\ell,(j)}\bigr)^2
              = \frac\lambda2 \sum_\ell d_\ell\, W_2^2(\mu_\ell, \mu^0_\ell),

    where :math:`\theta_{\ell,(j)}` is the :math:`j`-th smallest entry of the leaf
    :math:`\ell` and :math:`\mu_\ell` the empirical distribution of its :math:`d_\ell`
    entries: in one dimension the optimal coupling matches sorted values. It is at most
    the L2-to-init penalty (:func:`l2_sp_penalty` with the initialization as reference)
    and is unchanged by any permutation of the weights, so it keeps the *distribution* of
    the initialization without tying each weight to its initial value. Cost: one sort per
    leaf, :math:`O(d\log d)`. Derived in chapter 12.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The parameters :math:`\theta`.
    init : same structure as ``params``
        The initialization :math:`\theta^0`.
    lam : float
        Strength :math:`\lambda \ge 0`.

    Returns
    -------
    tensor of shape ()
        The penalty, differentiable in ``params``.

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import wasserstein_to_init
    >>> init = torch.tensor([0.0, 1.0, 2.0])
    >>> float(wasserstein_to_init(torch.tensor([2.0, 0.0, 1.0]), init))   # a permutation
    0.0
    """
    leaves, inits = _like(params, init, "init")
    lam = _lam(lam, leaves[0])
    total = leaves[0].new_zeros(())
    for p, q in zip(leaves, inits, strict=True):
        total = total + ((torch.sort(p.reshape(-1)).values
                          - torch.sort(q.reshape(-1)).values) ** 2).sum()
    return 0.5 * lam * total


# ----------------------------------------------------------------------------- policies

def _policy_inputs(ref_logits, reward, beta):
    ref_logits = as_float_tensor(ref_logits, "ref_logits")
    if ref_logits.ndim < 1 or ref_logits.shape[-1] == 0:
        raise ValueError("ref_logits must have a non-empty last (action) dimension")
    if bool(torch.isnan(ref_logits).any()) or bool((ref_logits == math.inf).any()):
        raise ValueError("ref_logits must not hold NaN or +inf (-inf marks an action the "
                         "reference never takes)")
    if bool((ref_logits == -math.inf).all(-1).any()):
        raise ValueError("ref_logits must give some action a finite logit in every row")
    reward = check_finite(as_float_tensor(reward, "reward", like=ref_logits), "reward")
    try:
        torch.broadcast_shapes(ref_logits.shape, reward.shape)
    except RuntimeError as err:
        raise ValueError(f"reward must broadcast with ref_logits {tuple(ref_logits.shape)}, "
                         f"got {tuple(reward.shape)}") from err
    beta = check_strength(beta, "beta", ref_logits, positive=True, ndims=(0, 1))
    if beta.ndim == 1:   # one policy per strength, along a new leading dimension
        beta = beta.reshape((-1,) + (1,) * ref_logits.ndim)
    return torch.log_softmax(ref_logits, dim=-1), reward, beta


def kl_regularized_policy(ref_logits, reward, beta):
    r"""The maximizer of expected reward minus :math:`\beta` times the KL divergence to a
    reference policy, in closed form.

    .. math:: \pi^\star = \arg\max_{\pi \in \Delta}\ \sum_a \pi(a)\,r(a) - \beta\,
              \mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}}), \qquad
              \pi^\star(a) = \frac{\pi_{\mathrm{ref}}(a)\,e^{r(a)/\beta}}
              {\sum_{b}\pi_{\mathrm{ref}}(b)\,e^{r(b)/\beta}},

    with :math:`\pi_{\mathrm{ref}} = \mathrm{softmax}(\text{ref\_logits})`. The optimal
    value is :math:`\beta\log\sum_b \pi_{\mathrm{ref}}(b)e^{r(b)/\beta}`. As
    :math:`\beta\to\infty`, :math:`\pi^\star\to\pi_{\mathrm{ref}}`; as :math:`\beta\to 0`
    it concentrates on the best actions *in the support of* :math:`\pi_{\mathrm{ref}}`.
    Batched over leading dimensions (states), computed in log space. Cost: one softmax.
    Derived in chapter 12.

    Parameters
    ----------
    ref_logits : tensor of shape (..., A)
        Logits of the reference (behaviour) policy; ``-inf`` for actions it never takes.
    reward : tensor broadcastable to (..., A)
        Rewards (or action values) :math:`r(a)`.
    beta : float or tensor of shape (B,)
        Strength(s) :math:`\beta > 0`; a 1-D tensor adds a leading dimension, one policy
        per strength.

    Returns
    -------
    tensor of shape (..., A), or (B, ..., A)
        The optimal policy :math:`\pi^\star`.

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import kl_regularized_policy
    >>> ref = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    >>> r = torch.tensor([0.0, 1.0], dtype=torch.float64)
    >>> kl_regularized_policy(ref, r, 1.0)           # (1, e) / (1 + e)
    tensor([0.2689, 0.7311], dtype=torch.float64)
    """
    log_ref, reward, beta = _policy_inputs(ref_logits, reward, beta)
    return torch.softmax(log_ref + reward / beta, dim=-1)


def kl_regularized_objective(policy, ref_logits, reward, beta):
    r"""Expected reward minus :math:`\beta` times the KL divergence to a reference policy.

    .. math:: J_\beta(\pi) = \sum_a \pi(a)\,r(a) - \beta \sum_a \pi(a)
              \log\frac{\pi(a)}{\pi_{\mathrm{ref}}(a)},

    with :math:`0\log 0 = 0`, and :math:`-\infty` when :math:`\pi` puts mass where
    :math:`\pi_{\mathrm{ref}}` has none. Its maximizer is :func:`kl_regularized_policy`,
    and :math:`J_\beta(\pi) = J_\beta(\pi^\star) - \beta\,\mathrm{KL}(\pi\,\|\,\pi^\star)`
    (chapter 12). Cost: :math:`O(A)` per state. Derived in chapter 12.

    Parameters
    ----------
    policy : tensor of shape (..., A)
        Probabilities :math:`\pi` (nonnegative, summing to one over the last dimension).
    ref_logits : tensor of shape (..., A)
        Logits of the reference policy.
    reward : tensor broadcastable to (..., A)
        Rewards :math:`r(a)`.
    beta : float or tensor of shape (B,)
        Strength(s) :math:`\beta > 0`, as in :func:`kl_regularized_policy`.

    Returns
    -------
    tensor
        :math:`J_\beta(\pi)`, one value per state (and strength).

    Examples
    --------
    >>> import torch
    >>> from regref.transfer import kl_regularized_objective, kl_regularized_policy
    >>> ref = torch.zeros(3, dtype=torch.float64)
    >>> r = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    >>> best = kl_regularized_policy(ref, r, 0.5)
    >>> value = kl_regularized_objective(best, ref, r, 0.5)
    >>> bool(value > kl_regularized_objective(torch.tensor([0.0, 0.0, 1.0],
    ...      dtype=torch.float64), ref, r, 0.5))
    True
    """
    log_ref, reward, beta = _policy_inputs(ref_logits, reward, beta)
    pi = check_finite(as_float_tensor(policy, "policy", like=log_ref), "policy")
    if pi.shape[-1] != log_ref.shape[-1]:
        raise ValueError(f"policy must have {log_ref.shape[-1]} actions, got shape "
                         f"{tuple(pi.shape)}")
    if bool((pi < 0).any()) or not torch.allclose(pi.sum(-1), torch.ones_like(pi[..., 0]),
                                                   atol=1e-6):
        raise ValueError("policy must be nonnegative and sum to one over the last dim")
    support = pi > 0      # 0 log 0 = 0; pi > 0 where the reference is 0 gives +inf
    log_pi = torch.log(torch.where(support, pi, 1.0))
    kl = torch.where(support, pi * (log_pi - torch.where(support, log_ref, 0.0)), 0.0).sum(-1)
    return (pi * reward).sum(-1) - (beta[..., 0] if beta.ndim else beta) * kl
