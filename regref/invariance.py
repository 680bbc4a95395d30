r"""Invariance across environments: IRMv1, V-REx, CORAL, Fishr, Hessian alignment, and
linear concept erasure (LEACE and iterative nullspace projection).

The training data come from several *environments* (domains), given by an integer label
``env`` of shape ``(n,)`` with values in ``0, ..., n_envs - 1``. Every penalty below is a
function of per-environment statistics (sums over the samples of each environment and
their counts), computed in one pass with a one-hot matrix, never with a Python loop over
environments:

- :func:`env_risks`: the risk of each environment, :math:`R_e = \frac1{n_e}\sum_{i\in e}\ell_i`;
- :func:`vrex_penalty`: the variance of the environment risks (V-REx);
- :func:`irm_penalty`: IRMv1, the squared derivative of each environment's risk with
  respect to a scalar multiplier of the logits, with the unbiased two-half estimator;
- :func:`coral_penalty`: mismatch of feature means and covariances (CORAL);
- :func:`fishr_penalty`: mismatch of the per-environment variances of per-sample gradients
  (Fishr);
- :func:`hessian_alignment_penalty`: mismatch of environment gradients and of
  Hessian-gradient products (HGP);
- :func:`leace`: the closed-form least-squares concept eraser; :func:`inlp`: iterative
  nullspace projection.

**Data parallelism.** With ``distributed=True`` each process passes its own shard and the
environment sums and counts are all-reduced over the default process group (with autograd,
``torch.distributed.nn.functional.all_reduce``), so every process gets the value of the
full batch, and the gradients, averaged over processes as ``DistributedDataParallel``
does, are those of the full batch.

Derivations: chapter 13.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten

from ._core import (
    Info,
    as_float_tensor,
    check_finite,
    check_matrix,
    check_ndim,
    check_positive_int,
    check_tol,
    warn_not_converged,
)
from .curvature import per_sample_grads

__all__ = [
    "env_risks",
    "vrex_penalty",
    "irm_penalty",
    "coral_penalty",
    "fishr_penalty",
    "hessian_alignment_penalty",
    "leace",
    "inlp",
]


# ----------------------------------------------------------------------------- helpers
def _check_distributed() -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs an initialized torch.distributed process group")


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum over the processes of the default group, differentiably."""
    import torch.distributed.nn.functional as dist_nn

    return dist_nn.all_reduce(t)


def _envs(env, n: int, n_envs, distributed: bool, device) -> tuple[torch.Tensor, int]:
    """Validate the environment labels; return them (long, on ``device``) and ``n_envs``."""
    if distributed:
        _check_distributed()
    if not isinstance(env, torch.Tensor):
        env = torch.as_tensor(env)
    if env.dtype.is_floating_point or env.is_complex() or env.dtype == torch.bool:
        raise TypeError(f"env must hold integer environment labels, got dtype {env.dtype}")
    if env.ndim != 1 or env.shape[0] != n:
        raise ValueError(f"env must have shape ({n},) (one label per sample), got "
                         f"{tuple(env.shape)}")
    env = env.to(device=device, dtype=torch.long)
    if n and int(env.min()) < 0:
        raise ValueError("env labels must be >= 0")
    if n_envs is None:
        top = env.max() if n else torch.tensor(-1, device=device)
        if distributed:
            import torch.distributed as dist

            top = top.clone()
            dist.all_reduce(top, op=dist.ReduceOp.MAX)
        n_envs = int(top) + 1
    n_envs = check_positive_int(n_envs, "n_envs")
    if n and int(env.max()) >= n_envs:
        raise ValueError(f"env labels must be < n_envs = {n_envs}")
    if n_envs < 2:
        raise ValueError(f"n_envs must be >= 2: an invariance penalty compares environments, "
                         f"got {n_envs}")
    return env, n_envs


def _env_sums(values: torch.Tensor, onehot: torch.Tensor, distributed: bool):
    """Per-environment sums ``(E, ...)`` of ``values`` ``(n, ...)`` and counts ``(E,)``."""
    sums = torch.tensordot(onehot.T, values, dims=1)
    counts = onehot.sum(0)
    if distributed:
        sums, counts = _all_reduce(sums), _all_reduce(counts.detach())
    return sums, counts


def _nonempty(counts: torch.Tensor, need: int = 1, what: str = "environment") -> None:
    small = (counts < need).nonzero().flatten().tolist()
    if small:
        raise ValueError(f"env: {what} {small} has fewer than {need} sample(s); every "
                         f"environment needs at least {need}")


def _losses(losses) -> torch.Tensor:
    losses = check_ndim(as_float_tensor(losses, "losses"), "losses", (1,))
    return check_finite(losses, "losses")


# ----------------------------------------------------------------------------- risks
def env_risks(losses, env, n_envs=None, *, distributed: bool = False) -> torch.Tensor:
    r"""The risk of each environment, the mean loss over its samples.

    .. math:: R_e = \frac{1}{n_e}\sum_{i:\,\mathrm{env}_i = e} \ell_i, \qquad e = 1, \dots, E.

    One matrix product with the one-hot environment matrix: :math:`O(nE)`. Derived in
    chapter 13.

    Parameters
    ----------
    losses : tensor of shape (n,)
        Per-sample losses :math:`\ell_i` (``reduction="none"``).
    env : integer tensor of shape (n,)
        Environment of each sample, in ``0, ..., n_envs - 1``.
    n_envs : int, optional
        Number of environments :math:`E \ge 2`; default ``env.max() + 1``.
    distributed : bool
        Sum the statistics over the default process group (see the module docstring).

    Returns
    -------
    tensor of shape (n_envs,)
        :math:`(R_1, \dots, R_E)`.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import env_risks
    >>> env_risks(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([0, 0, 1]))
    tensor([2., 2.])
    """
    losses = _losses(losses)
    env, n_envs = _envs(env, losses.shape[0], n_envs, distributed, losses.device)
    onehot = torch.nn.functional.one_hot(env, n_envs).to(losses.dtype)
    sums, counts = _env_sums(losses, onehot, distributed)
    _nonempty(counts)
    return sums / counts


def vrex_penalty(losses, env, n_envs=None, *, distributed: bool = False) -> torch.Tensor:
    r"""V-REx: the variance of the environment risks.

    .. math:: P_{\mathrm{V\text{-}REx}} = \frac1E\sum_{e=1}^E \bigl(R_e - \bar R\bigr)^2,
       \qquad \bar R = \frac1E\sum_e R_e,

    with :math:`R_e` from :func:`env_risks` (the population variance over environments,
    as in DomainBed). Cost :math:`O(nE)`. Derived in chapter 13.

    Parameters
    ----------
    losses : tensor of shape (n,)
        Per-sample losses.
    env : integer tensor of shape (n,)
        Environment of each sample.
    n_envs : int, optional
        Number of environments :math:`E \ge 2`; default ``env.max() + 1``.
    distributed : bool
        Sum the statistics over the default process group.

    Returns
    -------
    tensor of shape ()
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import vrex_penalty
    >>> vrex_penalty(torch.tensor([1.0, 3.0, 6.0]), torch.tensor([0, 0, 1]))
    tensor(4.)
    """
    risks = env_risks(losses, env, n_envs, distributed=distributed)
    return ((risks - risks.mean()) ** 2).mean()


def _scale_derivatives(logits: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:
    """Per-sample :math:`d\\ell(s z_i, y_i)/ds` at :math:`s = 1`, differentiable."""
    s = torch.ones(logits.shape[0], dtype=logits.dtype, device=logits.device,
                   requires_grad=True)
    shape = (-1,) + (1,) * (logits.ndim - 1)
    with torch.enable_grad():
        losses = loss_fn(logits * s.view(shape), y)
        if losses.shape != (logits.shape[0],):
            raise ValueError(f"loss_fn must return per-sample losses of shape "
                             f"({logits.shape[0]},), got {tuple(losses.shape)}")
        keep = torch.is_grad_enabled() and logits.requires_grad  # to train through it
        return torch.autograd.grad(losses.sum(), s, create_graph=keep)[0]


def _default_loss(logits: torch.Tensor):
    if logits.ndim == 1:
        return lambda z, t: torch.nn.functional.binary_cross_entropy_with_logits(
            z, t.to(z.dtype), reduction="none")
    return lambda z, t: torch.nn.functional.cross_entropy(z, t, reduction="none")


def irm_penalty(logits, y, env, n_envs=None, *, loss_fn=None, unbiased: bool = True,
                halves=None, distributed: bool = False) -> torch.Tensor:
    r"""IRMv1: the squared derivative of each environment's risk with respect to a scalar
    multiplier of the logits, at 1.

    .. math:: P_{\mathrm{IRM}} = \frac1E\sum_{e=1}^E D_e^2, \qquad
       D_e = \frac{\partial}{\partial s}\Big|_{s=1} R_e(s\,z)
       = \frac1{n_e}\sum_{i\in e} \Big\langle \nabla_z\ell(z_i, y_i),\, z_i\Big\rangle .

    With ``unbiased=True`` (DomainBed's estimator) each environment's samples are split
    into two halves and :math:`D_e^2` is replaced by :math:`D_e^{(1)} D_e^{(2)}`, the
    product of the two half-sample means, which is unbiased for the squared population
    derivative when the halves are independent (the plug-in :math:`D_e^2` overestimates it
    by the variance of :math:`D_e`). The per-sample derivatives come from one backward
    pass (with ``create_graph`` when ``logits`` requires grad, so the penalty can be
    trained through). Cost: one extra
    backward pass through the loss, :math:`O(nk)` for ``k`` classes. Derived in chapter 13.

    Parameters
    ----------
    logits : tensor of shape (n, k) or (n,)
        The model's outputs :math:`z_i`; ``(n,)`` means binary logits.
    y : tensor of shape (n,)
        Labels: class indices for ``(n, k)`` logits, 0/1 targets for ``(n,)`` logits.
    env : integer tensor of shape (n,)
        Environment of each sample.
    n_envs : int, optional
        Number of environments :math:`E \ge 2`; default ``env.max() + 1``.
    loss_fn : callable, optional
        ``loss_fn(logits, y)`` returning per-sample losses of shape (n,); default the
        cross-entropy (``(n, k)`` logits) or the logistic loss (``(n,)`` logits).
    unbiased : bool
        Use the two-half estimator (default) instead of the plug-in :math:`D_e^2`.
    halves : bool tensor of shape (n,), optional
        Which half each sample belongs to (``True``: the second). Default: alternate
        within each environment, in the order the samples appear.
    distributed : bool
        Sum the statistics over the default process group (then pass ``halves``, since
        the default alternation is per process).

    Returns
    -------
    tensor of shape ()
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import irm_penalty
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    >>> y, env = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])
    >>> round(float(irm_penalty(logits, y, env, unbiased=False)), 4)
    0.0689
    """
    logits = as_float_tensor(logits, "logits")
    check_ndim(logits, "logits", (1, 2))
    check_finite(logits, "logits")
    n = logits.shape[0]
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
    y = y.to(logits.device)
    if loss_fn is None:
        loss_fn = _default_loss(logits)
    elif not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(logits, y) -> per-sample losses")
    env, n_envs = _envs(env, n, n_envs, distributed, logits.device)
    onehot = torch.nn.functional.one_hot(env, n_envs).to(logits.dtype)
    d = _scale_derivatives(logits, y, loss_fn)
    if not unbiased:
        sums, counts = _env_sums(d, onehot, distributed)
        _nonempty(counts)
        return ((sums / counts) ** 2).mean()
    if halves is None:  # alternate within each environment: position parity
        halves = ((onehot.cumsum(0) * onehot).sum(1) % 2) == 0
    elif not isinstance(halves, torch.Tensor) or halves.dtype != torch.bool \
            or halves.shape != (n,):
        raise ValueError(f"halves must be a bool tensor of shape ({n},)")
    second = halves.to(device=logits.device, dtype=logits.dtype)[:, None]
    both = torch.cat([onehot * (1 - second), onehot * second], 1)  # (n, 2E)
    sums, counts = _env_sums(d, both, distributed)
    _nonempty(counts, what="environment half (first halves, then second)")
    means = sums / counts
    return (means[:n_envs] * means[n_envs:]).mean()


def coral_penalty(features, env, n_envs=None, *, distributed: bool = False) -> torch.Tensor:
    r"""CORAL: mismatch of the feature means and covariances across environments.

    .. math:: P_{\mathrm{CORAL}} = \binom{E}{2}^{-1}\sum_{e<e'}
       \Big(\tfrac1d\|\mu_e - \mu_{e'}\|^2 + \tfrac1{d^2}\|C_e - C_{e'}\|_F^2\Big),

    with :math:`\mu_e` the mean and :math:`C_e` the unbiased covariance
    (:math:`n_e - 1` in the denominator) of the features of environment :math:`e`, as in
    DomainBed. The sum over pairs is computed as
    :math:`\sum_{e<e'}\|a_e - a_{e'}\|^2 = E\sum_e\|a_e - \bar a\|^2`, without a loop.
    The covariances come from the sufficient statistics :math:`\sum x`,
    :math:`\sum x x^\top`, which is what lets them be all-reduced. Cost
    :math:`O(n d^2 + E d^2)`. Derived in chapter 13.

    Parameters
    ----------
    features : tensor of shape (n, d)
        Features (representations) of the samples.
    env : integer tensor of shape (n,)
        Environment of each sample; each needs at least two samples.
    n_envs : int, optional
        Number of environments :math:`E \ge 2`; default ``env.max() + 1``.
    distributed : bool
        Sum the statistics over the default process group.

    Returns
    -------
    tensor of shape ()
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import coral_penalty
    >>> f = torch.tensor([[0.0], [2.0], [1.0], [5.0]])
    >>> coral_penalty(f, torch.tensor([0, 0, 1, 1]))
    tensor(40.)
    """
    features = as_float_tensor(features, "features")
    check_ndim(features, "features", (2,))
    check_finite(features, "features")
    n, dim = features.shape
    if dim == 0:
        raise ValueError("features must have at least one column")
    env, n_envs = _envs(env, n, n_envs, distributed, features.device)
    onehot = torch.nn.functional.one_hot(env, n_envs).to(features.dtype)
    stats = torch.cat([features, (features[:, :, None] * features[:, None, :]).flatten(1)], 1)
    sums, counts = _env_sums(stats, onehot, distributed)
    _nonempty(counts, need=2)
    mean = sums[:, :dim] / counts[:, None]
    second = sums[:, dim:].view(n_envs, dim, dim)
    cov = (second - counts[:, None, None] * mean[:, :, None] * mean[:, None, :]) \
        / (counts[:, None, None] - 1)
    spread = ((mean - mean.mean(0)) ** 2).sum() / dim + ((cov - cov.mean(0)) ** 2).sum() \
        / dim ** 2
    return 2 * spread / (n_envs - 1)


# ----------------------------------------------------------------------------- Fishr
def _fishr_kernel(grads, onehot, all_reduce=None):
    r"""The part to copy: Fishr's penalty from per-sample gradients.

    ``grads`` (n, P) holds one flattened gradient per sample, ``onehot`` (n, E) the
    environments. Per environment, the (biased) variance of each gradient coordinate,
    :math:`v_e = \frac1{n_e}\sum_{i\in e} g_i^2 - \bigl(\frac1{n_e}\sum_{i\in e}
    g_i\bigr)^2`, from the sums of :math:`g` and :math:`g^2` (which ``all_reduce``, if
    given, sums over processes); then the mean over environments of the mean squared
    distance of :math:`v_e` to their average. Returns ``(penalty, v)``.
    """
    stats = torch.cat([grads, grads * grads], 1)
    sums, counts = onehot.T @ stats, onehot.sum(0)
    if all_reduce is not None:
        sums, counts = all_reduce(sums), all_reduce(counts.detach())
    mean_g, mean_g2 = (sums / counts[:, None]).chunk(2, dim=1)
    v = mean_g2 - mean_g ** 2  # (E, P): per-environment gradient variances
    return ((v - v.mean(0)) ** 2).mean(), v


def _flat_grads(grads, n: int) -> torch.Tensor:
    return torch.cat([g.reshape(n, -1) for g in tree_flatten(grads)[0]], 1)


def _check_model(loss_fn, params, batch, env, n_envs, distributed):
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params, *batch) -> scalar")
    leaves = tree_flatten(params)[0]
    if not leaves or not all(isinstance(t, torch.Tensor) and t.is_floating_point()
                             for t in leaves):
        raise TypeError("params must be a floating tensor or a tuple/list/dict of them")
    if not batch or not all(isinstance(b, torch.Tensor) and b.ndim >= 1 for b in batch):
        raise ValueError("batch must be one or more tensors with a leading sample dimension")
    n = batch[0].shape[0]
    if any(b.shape[0] != n for b in batch):
        raise ValueError(f"batch tensors must share their first dimension, got "
                         f"{[b.shape[0] for b in batch]}")
    env, n_envs = _envs(env, n, n_envs, distributed, leaves[0].device)
    return env, n_envs, leaves[0].dtype, n


def fishr_penalty(loss_fn, params, env, *batch, n_envs=None,
                  distributed: bool = False) -> torch.Tensor:
    r"""Fishr: mismatch of the per-environment variances of per-sample gradients.

    .. math:: P_{\mathrm{Fishr}} = \frac1E\sum_{e=1}^E \frac1P\|v_e - \bar v\|^2, \qquad
       v_e = \frac1{n_e}\sum_{i\in e}\bigl(g_i - \bar g_e\bigr)^{\odot 2},

    where :math:`g_i = \nabla_\theta\ell(\theta; x_i, y_i) \in \mathbb R^P` is the
    gradient of sample :math:`i` (:func:`regref.curvature.per_sample_grads`, one
    ``vmap`` of ``grad``), :math:`\bar g_e` their mean over environment :math:`e`, and
    :math:`\bar v` the mean of the :math:`v_e` (DomainBed's scaling, without its moving
    average). Usually ``params`` are those of the classifier head only. The kernel is
    :func:`_fishr_kernel`. Cost: :math:`n` per-sample gradients, memory :math:`nP`.
    Derived in chapter 13.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, *batch)`` returns the mean loss of a batch (each sample is
        passed as a batch of one).
    params : tensor or tuple/list/dict of tensors
        The parameters :math:`\theta` whose gradients are compared.
    env : integer tensor of shape (n,)
        Environment of each sample.
    *batch : tensors
        Data tensors sharing their first dimension :math:`n`.
    n_envs : int, optional
        Number of environments :math:`E \ge 2`; default ``env.max() + 1``.
    distributed : bool
        Sum the statistics over the default process group.

    Returns
    -------
    tensor of shape ()
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import fishr_penalty
    >>> X = torch.tensor([[1.0], [3.0], [1.0], [1.0]], dtype=torch.float64)
    >>> y = torch.zeros(4, dtype=torch.float64)
    >>> loss = lambda w, X, y: 0.5 * ((X @ w - y) ** 2).mean()
    >>> fishr_penalty(loss, torch.ones(1, dtype=torch.float64), torch.tensor([0, 0, 1, 1]),
    ...               X, y)
    tensor(64., dtype=torch.float64)
    """
    env, n_envs, dtype, n = _check_model(loss_fn, params, batch, env, n_envs, distributed)
    grads = _flat_grads(per_sample_grads(loss_fn, params, *batch), n)
    onehot = torch.nn.functional.one_hot(env, n_envs).to(dtype)
    counts = onehot.sum(0)
    if distributed:
        counts = _all_reduce(counts)
    _nonempty(counts)
    return _fishr_kernel(grads, onehot, _all_reduce if distributed else None)[0]


# ----------------------------------------------------------------------------- Hessian
def hessian_alignment_penalty(loss_fn, params, env, *batch, n_envs=None,
                              distributed: bool = False) -> torch.Tensor:
    r"""Hessian alignment (HGP): mismatch of the environment gradients and of the
    Hessian-gradient products.

    .. math:: P_{\mathrm{HGP}} = \frac1E\sum_{e=1}^E \Bigl(\|g_e - \bar g\|^2
       + \|H_e g_e - \overline{Hg}\|^2\Bigr),

    with :math:`g_e = \nabla R_e(\theta)`, :math:`H_e = \nabla^2 R_e(\theta)` the gradient
    and Hessian of environment :math:`e`'s risk, and bars the means over environments.
    :math:`H_e` is never formed: :math:`H_e g_e` is a forward-over-reverse
    Hessian-vector product of :math:`R_e` (one ``vmap`` over the environments, the
    kernel :func:`_hgp_kernel`), so the cost is about :math:`3E` passes over the batch
    (no per-sample gradients), memory :math:`E` gradients. Usually ``params`` are the
    classifier head's. Derived in chapter 13.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, *batch)`` returns the mean loss of a batch.
    params : tensor or tuple/list/dict of tensors
        The parameters :math:`\theta`.
    env : integer tensor of shape (n,)
        Environment of each sample.
    *batch : tensors
        Data tensors sharing their first dimension :math:`n`.
    n_envs : int, optional
        Number of environments :math:`E \ge 2`; default ``env.max() + 1``.
    distributed : bool
        Sum the statistics over the default process group (two all-reduces: the
        gradients first, then the Hessian-gradient products).

    Returns
    -------
    tensor of shape ()
        The penalty.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import hessian_alignment_penalty
    >>> X = torch.tensor([[1.0], [1.0], [2.0], [2.0]], dtype=torch.float64)
    >>> y = torch.zeros(4, dtype=torch.float64)
    >>> loss = lambda w, X, y: 0.5 * ((X @ w - y) ** 2).mean()
    >>> hessian_alignment_penalty(loss, torch.ones(1, dtype=torch.float64),
    ...                           torch.tensor([0, 0, 1, 1]), X, y)
    tensor(58.5000, dtype=torch.float64)
    """
    env, n_envs, dtype, n = _check_model(loss_fn, params, batch, env, n_envs, distributed)
    onehot = torch.nn.functional.one_hot(env, n_envs).to(dtype)
    counts = onehot.sum(0)
    if distributed:
        counts = _all_reduce(counts)
    _nonempty(counts)
    g_env, hg_env = _hgp_kernel(loss_fn, params, onehot.T / counts[:, None], batch,
                                _all_reduce if distributed else None)
    return (((g_env - g_env.mean(0)) ** 2).sum(1) + ((hg_env - hg_env.mean(0)) ** 2).sum(1)
            ).mean()


def _hgp_kernel(loss_fn, params, weights, batch, all_reduce=None):
    r"""The part to copy: environment gradients and Hessian-gradient products.

    ``weights`` (E, n) holds :math:`1/n_e` on the samples of environment :math:`e` and 0
    elsewhere, so :math:`R_e(\theta) = \sum_i W_{ei}\ell_i(\theta)`. One ``vmap`` over
    the environments of ``grad`` gives every :math:`g_e`; one of a forward-over-reverse
    ``jvp`` gives every :math:`H_e g_e`, without forming :math:`H_e`. Under data
    parallelism ``all_reduce`` sums each over the processes (the second one needs the
    summed :math:`g_e`). Returns flattened ``(g, Hg)``, each of shape (E, P).
    """
    def per_sample_losses(p):  # each sample as a batch of one
        return torch.func.vmap(lambda *s: loss_fn(p, *(t.unsqueeze(0) for t in s)))(*batch)

    def risk(p, w):
        return w @ per_sample_losses(p)

    def flat(tree):
        return torch.cat([t.reshape(t.shape[0], -1) for t in
                          torch.utils._pytree.tree_flatten(tree)[0]], 1)

    def unflat(v):  # (P,) -> the structure of params
        leaves, spec = torch.utils._pytree.tree_flatten(params)
        chunks = v.split([t.numel() for t in leaves])
        return torch.utils._pytree.tree_unflatten(
            [c.view_as(t) for c, t in zip(chunks, leaves, strict=True)], spec)

    g = flat(torch.func.vmap(torch.func.grad(risk), in_dims=(None, 0))(params, weights))
    if all_reduce is not None:
        g = all_reduce(g)

    def hvp_env(w, v):
        return torch.func.jvp(lambda p: torch.func.grad(risk)(p, w), (params,), (unflat(v),))[1]

    hg = flat(torch.func.vmap(hvp_env)(weights, g))
    if all_reduce is not None:
        hg = all_reduce(hg)
    return g, hg


# ----------------------------------------------------------------------------- erasure
def _concept(X: torch.Tensor, z, name: str = "z") -> torch.Tensor:
    """The concept as a float matrix (n, k): integer labels become one-hot columns."""
    if not isinstance(z, torch.Tensor):
        z = torch.as_tensor(z)
    if z.shape[:1] != X.shape[:1] or z.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape ({X.shape[0]},) or ({X.shape[0]}, k), "
                         f"got {tuple(z.shape)}")
    if z.ndim == 1 and not z.dtype.is_floating_point:
        if int(z.min()) < 0:
            raise ValueError(f"{name}: integer class labels must be >= 0")
        z = torch.nn.functional.one_hot(z.long())
    Z = as_float_tensor(z, name, like=X)
    Z = Z[:, None] if Z.ndim == 1 else Z
    return check_finite(Z, name)


def _leace_kernel(X, Z, rtol):
    r"""The part to copy: the LEACE eraser of ``Z`` from ``X`` in closed form.

    With :math:`\Sigma_{xx}`, :math:`\Sigma_{xz}` the (biased) covariances,
    :math:`W = (\Sigma_{xx}^{1/2})^+` the whitening map and :math:`U` an orthonormal basis
    of the range of :math:`W\Sigma_{xz}`, returns ``(P, mean)`` with
    :math:`P = W^+ U U^\top W`; the eraser is :math:`x \mapsto x - P(x - \mu)`.
    Eigenvalues below ``rtol`` times the largest are treated as zero.
    """
    mean = X.mean(0)
    Xc, Zc = X - mean, Z - Z.mean(0)
    sxx, sxz = Xc.T @ Xc / X.shape[0], Xc.T @ Zc / X.shape[0]
    evals, evecs = torch.linalg.eigh(sxx)
    keep = evals > rtol * evals.max().clamp_min(torch.finfo(X.dtype).tiny)
    root = evals.clamp_min(0).sqrt()
    inv_root = torch.where(keep, 1 / root.clamp_min(torch.finfo(X.dtype).tiny), 0.0)
    W = (evecs * inv_root) @ evecs.T  # (Sigma^{1/2})^+
    W_pinv = (evecs * torch.where(keep, root, 0.0)) @ evecs.T
    U, s, _ = torch.linalg.svd(W @ sxz, full_matrices=False)
    U = U[:, s > rtol * s.max().clamp_min(torch.finfo(X.dtype).tiny)]
    return W_pinv @ U @ U.T @ W, mean


def leace(X, z, *, rtol=None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""LEACE: the closed-form least-squares concept eraser.

    Returns the affine map :math:`r(x) = x - P(x - \mu)` of smallest expected squared
    distortion :math:`\mathbb E\|r(x) - x\|_M^2` (for any inner product :math:`M`
    matching the whitening, in particular :math:`\Sigma_{xx}^{+}`) among those after
    which the features are uncorrelated with the concept,
    :math:`\operatorname{Cov}(r(x), z) = 0`; then no linear predictor of :math:`z` from
    :math:`r(x)` beats a constant, for any convex loss. Here
    :math:`P = W^+ P_{W\Sigma_{xz}} W` with :math:`W = (\Sigma_{xx}^{1/2})^+`
    (Belrose et al., 2023). Cost: one :math:`p\times p` eigendecomposition and one SVD
    of a :math:`p \times k` matrix, :math:`O(np^2 + p^3)`. Derived in chapter 13.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Features (empirical distribution of :math:`x`).
    z : tensor of shape (n,) or (n, k)
        The concept: integer class labels (one-hot encoded) or real columns.
    rtol : float, optional
        Relative threshold under which eigenvalues of :math:`\Sigma_{xx}` and singular
        values of :math:`W\Sigma_{xz}` count as zero; default ``n * eps(dtype)``.

    Returns
    -------
    P : tensor of shape (p, p)
        The (oblique) projection :math:`P`, with :math:`P^2 = P`.
    mean : tensor of shape (p,)
        The feature mean :math:`\mu`. Erase with ``X - (X - mean) @ P.T``.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import leace
    >>> X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 3.0], [3.0, 2.0]],
    ...                  dtype=torch.float64)
    >>> P, mean = leace(X, torch.tensor([0, 0, 1, 1]))
    >>> Xe = X - (X - mean) @ P.T
    >>> print(Xe.round(decimals=3))
    tensor([[1., 2.],
            [2., 1.],
            [1., 2.],
            [2., 1.]], dtype=torch.float64)
    """
    X = check_matrix(X, "X")
    Z = _concept(X, z)
    if rtol is None:
        rtol = X.shape[0] * torch.finfo(X.dtype).eps
    rtol = check_tol(rtol, X.dtype, 0.0, 0.0)
    return _leace_kernel(X, Z, rtol)


def _inlp_kernel(X, Z, lam, tol, max_iter):
    r"""The part to copy: iterative nullspace projection with least-squares probes.

    Repeats: fit the ridge probe :math:`B = (X_c^\top X_c + \lambda I)^{-1}X_c^\top Z_c`
    on the current (projected, centered) features, orthonormalize its columns and
    project them out, :math:`Q \leftarrow (I - VV^\top)Q`. Stops when the relative
    cross-covariance :math:`\|Q\Sigma_{xz}\|_F / \|\Sigma_{xz}\|_F \le` ``tol``. Returns
    ``(Q, residual, n_iter)``; ``Q`` is an orthogonal projection.
    """
    Xc, Zc = X - X.mean(0), Z - Z.mean(0)
    p = X.shape[1]
    Q = torch.eye(p, dtype=X.dtype, device=X.device)
    sxz = Xc.T @ Zc
    scale = torch.linalg.matrix_norm(sxz).clamp_min(torch.finfo(X.dtype).tiny)
    residual, n_iter = float(torch.linalg.matrix_norm(sxz) / scale), 0
    while residual > tol and n_iter < max_iter:
        Xq = Xc @ Q
        B = torch.linalg.solve(Xq.T @ Xq + lam * torch.eye(p, dtype=X.dtype,
                                                           device=X.device), Xq.T @ Zc)
        V, s, _ = torch.linalg.svd(Q @ B, full_matrices=False)
        V = V[:, s > 1e-12 * s.max().clamp_min(torch.finfo(X.dtype).tiny)]
        Q = Q - V @ (V.T @ Q)
        Q = (Q + Q.T) / 2
        n_iter += 1
        residual = float(torch.linalg.matrix_norm(Q @ sxz) / scale)
    return Q, residual, n_iter


def inlp(X, z, *, lam: float = 1e-3, tol=None, max_iter: int = 20,
         return_info: bool = False):
    r"""INLP: iterative nullspace projection of a concept out of the features.

    Each iteration fits linear probes predicting the concept :math:`z` from the current
    features, by ridge least squares
    :math:`\min_B \|Z_c - X_cQB\|_F^2 + \lambda\|B\|_F^2`, and projects the features
    onto the nullspace of the probes' directions (Ravfogel et al., 2020, with least
    squares in place of their linear classifiers). The result is an orthogonal projection
    :math:`Q`; erase with ``(X - mean) @ Q + mean``. Unlike :func:`leace`, one probe
    direction is not enough in general: after projecting it out, the features can still be
    correlated with :math:`z` along other directions. Stops when the relative
    cross-covariance :math:`\|Q\Sigma_{xz}\|_F / \|\Sigma_{xz}\|_F \le` ``tol`` (the
    certificate; 0 means no linear information is left). Cost per iteration: one
    :math:`p\times p` solve and one SVD, :math:`O(np^2 + p^3)`. Derived in chapter 13.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Features.
    z : tensor of shape (n,) or (n, k)
        The concept: integer class labels (one-hot encoded) or real columns.
    lam : float
        Ridge strength of the probes (> 0).
    tol : float, optional
        Relative cross-covariance at which to stop; default 1e-10 (float64), 1e-5
        (float32).
    max_iter : int
        Maximum number of projections (iterations).
    return_info : bool
        Also return an :class:`~regref.Info`.

    Returns
    -------
    Q : tensor of shape (p, p)
        The orthogonal projection (:math:`Q = Q^\top = Q^2`).
    info : Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.invariance import inlp
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    >>> z = (X[:, 0] + X[:, 1] > 0).long()
    >>> Q, info = inlp(X, z, return_info=True)
    >>> Xe = X @ Q                               # the erased features
    >>> cov = (Xe - Xe.mean(0)).T @ (z - z.double().mean()) / 200
    >>> info.converged, bool(cov.abs().max() < 1e-8)
    (True, True)
    """
    X = check_matrix(X, "X")
    Z = _concept(X, z)
    lam = float(as_float_tensor(lam, "lam"))
    if not (lam > 0 and lam < float("inf")):
        raise ValueError(f"lam must be a positive finite number, got {lam}")
    tol = check_tol(tol, X.dtype, 1e-10, 1e-5)
    max_iter = check_positive_int(max_iter, "max_iter")
    Q, residual, n_iter = _inlp_kernel(X, Z, lam, tol, max_iter)
    converged = residual <= tol
    if not converged:
        warn_not_converged(f"inlp: relative cross-covariance {residual:.2e} > tol "
                           f"{tol:.1e} after max_iter={max_iter} projections")
    if return_info:
        return Q, Info(n_iter, converged, residual)
    return Q
