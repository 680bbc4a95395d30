r"""Representation regularizers: collapse, decorrelation, uniformity, sparsity, latent priors.

Embeddings are tensors :math:`Z \in \mathbb R^{n\times p}` (``n`` samples, ``p`` features),
or batches ``(B, n, p)`` of them (many heads or settings in one pass). The losses fall in
four groups:

- anti-collapse losses of self-supervised learning: :func:`vicreg_loss` (invariance,
  variance and covariance terms), :func:`barlow_twins_loss`, :func:`alignment` and
  :func:`uniformity` (Wang and Isola), :func:`vne` (von Neumann entropy) and
  :func:`effective_rank`;
- geometry diagnostics: :func:`neural_collapse` (NC1-NC4) and
  :func:`local_intrinsic_dimension` (the estimator LDReg regularizes);
- sparse activations: :func:`topk_activation`, :func:`flops_regularizer`,
  :func:`sparsemax` and its Jacobian :func:`sparsemax_jacobian`;
- latent regularizers: :func:`gaussian_kl` (the VAE term), :func:`mmd2` (the WAE penalty)
  and :func:`least_volume`.

**Data parallelism.** A loss that depends on batch statistics takes ``group``, a
``torch.distributed`` process group (``torch.distributed.group.WORLD`` for all processes).
Each rank passes its own rows; every rank then gets the value of the loss on the
concatenated batch, and its backward pass gives each rank's rows ``world_size`` times their
full-batch gradient, so that the gradient averaging of ``DistributedDataParallel`` (which
divides by ``world_size``) yields exactly the full-batch gradient of the parameters. Losses
that are functions of sums over samples (means, Gram matrices) all-reduce those sufficient
statistics with an all-reduce whose backward pass is again an all-reduce; pairwise losses
(:func:`uniformity`, :func:`mmd2`) all-gather the rows, with a backward pass that sums each
rank's share of the gradient over the ranks (then every rank must pass the same number of
rows). Each docstring says which and why.

Derivations: chapter 10.
"""

from __future__ import annotations

import math

import torch

from ._core import (
    as_float_tensor,
    check_finite,
    check_ndim,
    check_nonneg,
    check_positive,
    check_positive_int,
)

__all__ = [
    "vicreg_loss",
    "barlow_twins_loss",
    "alignment",
    "uniformity",
    "vne",
    "effective_rank",
    "neural_collapse",
    "local_intrinsic_dimension",
    "topk_activation",
    "flops_regularizer",
    "sparsemax",
    "sparsemax_jacobian",
    "gaussian_kl",
    "mmd2",
    "least_volume",
]


# ----------------------------------------------------------------------------- validation

def _embeddings(z, name: str, like: torch.Tensor | None = None, min_rows: int = 2):
    """A finite (n, p) or (B, n, p) floating tensor with at least ``min_rows`` rows."""
    z = check_ndim(as_float_tensor(z, name, like=like), name, (2, 3))
    if z.shape[-2] < min_rows or z.shape[-1] == 0:
        raise ValueError(f"{name} must have at least {min_rows} rows and one column, got "
                         f"shape {tuple(z.shape)}")
    return check_finite(z, name)


def _pair(z1, z2):
    z1 = _embeddings(z1, "z1")
    z2 = _embeddings(z2, "z2", like=z1)
    if z2.shape != z1.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got "
                         f"{tuple(z2.shape)}")
    return z1, z2




def _check_group(group):
    if group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("group was given but torch.distributed is not initialized "
                         "(call torch.distributed.init_process_group first)")
    return group


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of a group; the backward pass sums the gradients the same way
    (every rank's loss depends on the sum)."""

    @staticmethod
    def forward(ctx, t, group):
        import torch.distributed as dist

        ctx.group = group
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad, ctx.group), None


class _AllGatherRows(torch.autograd.Function):
    """Concatenate the ranks' rows (dimension -2); the backward pass gives each rank the sum
    over ranks of the gradient of its own rows."""

    @staticmethod
    def forward(ctx, t, group):
        import torch.distributed as dist

        ctx.group, ctx.rank = group, dist.get_rank(group)
        ctx.n = t.shape[-2]
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, t.contiguous(), group=group)
        return torch.cat(parts, dim=-2)

    @staticmethod
    def backward(ctx, grad):
        total = _AllReduceSum.apply(grad, ctx.group)
        return total.narrow(-2, ctx.rank * ctx.n, ctx.n), None


def _reducer(group):
    """Sum over ranks with autograd (its backward is again a sum), or None."""
    if _check_group(group) is None:
        return None
    return lambda t: _AllReduceSum.apply(t, group)


def _gather_rows(z: torch.Tensor, group) -> torch.Tensor:
    """Concatenate every rank's rows (dimension -2) with autograd; ranks must agree on n."""
    if _check_group(group) is None:
        return z
    import torch.distributed as dist

    sizes = [torch.zeros((), dtype=torch.long) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor(z.shape[-2]), group=group)
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(f"z must have the same number of rows on every rank for a pairwise "
                         f"loss, got {[int(s) for s in sizes]}")
    return _AllGatherRows.apply(z, group)


# ----------------------------------------------------------------------------- VICReg

def _vicreg_kernel(z1, z2, target_std, std_eps, reduce=None):
    r"""The part to copy: the three VICReg terms of two views ``(..., n, p)``.

    ``reduce`` sums a tensor over the processes of a data-parallel group (None: one
    process); every batch statistic goes through it, so the terms are those of the full
    batch. Cost :math:`O(np^2)` for the two covariance matrices, one pass.
    """
    reduce = reduce or (lambda t: t)
    p = z1.shape[-1]
    n = reduce(torch.tensor(float(z1.shape[-2]), dtype=z1.dtype, device=z1.device))
    inv = reduce(((z1 - z2) ** 2).sum((-2, -1))) / (n * p)
    z = torch.stack((z1, z2))                                  # both views at once
    zc = z - reduce(z.sum(-2, keepdim=True)) / n                # full-batch mean removed
    cov = reduce(zc.mT @ zc) / (n - 1)                          # (2, ..., p, p)
    var = torch.diagonal(cov, dim1=-2, dim2=-1)
    hinge = torch.relu(target_std - torch.sqrt(var + std_eps)).mean(-1)
    off = (cov ** 2).sum((-2, -1)) - (var ** 2).sum(-1)         # squared off-diagonal
    return inv, hinge.mean(0), off.sum(0) / p


def vicreg_loss(z1, z2, *, inv_weight=25.0, var_weight=25.0, cov_weight=1.0,
                target_std=1.0, std_eps=1e-4, group=None, return_terms: bool = False):
    r"""The VICReg loss of two views: invariance, variance and covariance terms.

    .. math::

        \ell(Z, Z') = \lambda_I\, s(Z, Z') + \lambda_V\,\tfrac12\bigl(v(Z) + v(Z')\bigr)
        + \lambda_C\,\bigl(c(Z) + c(Z')\bigr),

    with :math:`s = \frac1{np}\|Z - Z'\|_F^2`, :math:`v(Z) = \frac1p\sum_j
    \max(0, \gamma - \sqrt{C_{jj} + \epsilon})` and :math:`c(Z) = \frac1p\sum_{j\ne k}
    C_{jk}^2`, where :math:`C` is the unbiased sample covariance of the columns of
    :math:`Z`. The weights and :math:`\gamma, \epsilon` default to those of the paper's
    code (25, 25, 1, 1 and 1e-4), and so does the halving of the variance term, so the
    value equals lightly's ``VICRegLoss()``. Cost :math:`O(np^2)`. Derived in chapter 10.

    Under data parallelism (``group``) the loss all-reduces its sufficient statistics (the
    sum of squared view differences, the column sums, then the centered :math:`p\times p`
    Gram matrices): :math:`O(p^2)` numbers per step whatever the batch size, and no rank
    holds the global batch. (When :math:`p` exceeds the global batch size, gathering the
    rows moves fewer numbers; the value and gradients are the same.)

    Parameters
    ----------
    z1, z2 : tensor of shape (n, p) or (B, n, p)
        Embeddings of two views of the same ``n`` inputs (row ``i`` of each); ``n >= 2``.
    inv_weight, var_weight, cov_weight : float
        The weights :math:`\lambda_I, \lambda_V, \lambda_C \ge 0`.
    target_std : float
        The target standard deviation :math:`\gamma > 0` of each feature.
    std_eps : float
        The :math:`\epsilon \ge 0` added to the variance under the square root.
    group : torch.distributed process group, optional
        Compute the loss of the batch spread over this group's processes.
    return_terms : bool
        Also return the unweighted terms :math:`(s, \frac12(v + v'), c + c')`.

    Returns
    -------
    loss : tensor of shape () or (B,)
    terms : tuple of three tensors
        Only with ``return_terms=True``: invariance, variance and covariance terms.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import vicreg_loss
    >>> z = torch.zeros(8, 3, dtype=torch.float64)          # complete collapse
    >>> loss, (inv, var, cov) = vicreg_loss(z, z, return_terms=True)
    >>> round(float(inv), 4), round(float(var), 4), round(float(cov), 4)
    (0.0, 0.99, 0.0)
    """
    z1, z2 = _pair(z1, z2)
    weights = [check_nonneg(w, name) for w, name in ((inv_weight, "inv_weight"),
                                                (var_weight, "var_weight"),
                                                (cov_weight, "cov_weight"))]
    target_std = check_positive(target_std, "target_std")
    std_eps = check_nonneg(std_eps, "std_eps")
    inv, var, cov = _vicreg_kernel(z1, z2, target_std, std_eps, _reducer(group))
    loss = weights[0] * inv + weights[1] * var + weights[2] * cov
    return (loss, (inv, var, cov)) if return_terms else loss


# ----------------------------------------------------------------------------- Barlow Twins

def _barlow_twins_kernel(z1, z2, lam, std_eps, normalize, reduce=None):
    r"""The part to copy: the Barlow Twins loss of two views ``(..., n, p)``.

    Each column is standardized with the full-batch mean and biased variance (batch
    normalization), :math:`C = Z_1^\top Z_2/n`, and the loss is
    :math:`\sum_j(1 - C_{jj})^2 + \lambda\sum_{j\ne k}C_{jk}^2`. ``reduce`` sums over the
    processes of a data-parallel group. Cost :math:`O(np^2)`.
    """
    reduce = reduce or (lambda t: t)
    n = reduce(torch.tensor(float(z1.shape[-2]), dtype=z1.dtype, device=z1.device))
    if normalize:
        z = torch.stack((z1, z2))
        zc = z - reduce(z.sum(-2, keepdim=True)) / n
        z1, z2 = zc / torch.sqrt(reduce((zc ** 2).sum(-2, keepdim=True)) / n + std_eps)
    c = reduce(z1.mT @ z2) / n
    diag = torch.diagonal(c, dim1=-2, dim2=-1)
    return ((1 - diag) ** 2).sum(-1) + lam * ((c ** 2).sum((-2, -1)) - (diag ** 2).sum(-1))


def barlow_twins_loss(z1, z2, lam=5e-3, *, std_eps=1e-5, normalize: bool = True,
                      group=None):
    r"""The Barlow Twins loss: drive the cross-correlation of two views to the identity.

    .. math::

        \ell(Z, Z') = \sum_j (1 - C_{jj})^2 + \lambda \sum_{j \ne k} C_{jk}^2, \qquad
        C = \tfrac1n \tilde Z^\top \tilde Z',

    where :math:`\tilde Z` is :math:`Z` with each column centered and divided by
    :math:`\sqrt{\hat\sigma_j^2 + \epsilon}` (biased variance, as batch normalization does
    in training). With the defaults (:math:`\lambda = 5\cdot10^{-3}`,
    :math:`\epsilon = 10^{-5}`) the value equals lightly's ``BarlowTwinsLoss()`` on one
    process. ``normalize=False`` skips the standardization (:math:`\tilde Z = Z`), the
    linearized model of chapter 10. Cost :math:`O(np^2)`. Derived in chapter 10.

    Under data parallelism (``group``) the means, variances and the cross-correlation are
    all-reduced sums (:math:`O(p^2)` numbers), so the standardization uses full-batch
    statistics, like synchronized batch normalization; normalizing on each rank, as a
    plain ``BatchNorm1d`` would, changes the loss.

    Parameters
    ----------
    z1, z2 : tensor of shape (n, p) or (B, n, p)
        Embeddings of two views; ``n >= 2``.
    lam : float
        Weight :math:`\lambda \ge 0` of the redundancy (off-diagonal) term.
    std_eps : float
        :math:`\epsilon \ge 0` added to the variances.
    normalize : bool
        Standardize the columns first (the Barlow Twins loss) or not.
    group : torch.distributed process group, optional
        Compute the loss of the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The loss.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import barlow_twins_loss
    >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]],
    ...                  dtype=torch.float64) * 2 ** 0.5     # whitened columns
    >>> round(float(barlow_twins_loss(z, z, std_eps=0.0)), 6)
    0.0
    """
    z1, z2 = _pair(z1, z2)
    lam = check_nonneg(lam, "lam")
    std_eps = check_nonneg(std_eps, "std_eps")
    return _barlow_twins_kernel(z1, z2, lam, std_eps, bool(normalize), _reducer(group))


# ----------------------------------------------------------------------------- sphere

def alignment(z1, z2, alpha=2.0, *, group=None):
    r"""Alignment of positive pairs (Wang and Isola): the mean distance between two views.

    .. math:: \ell_{\mathrm{align}}(Z, Z') = \frac1n \sum_i \|z_i - z'_i\|^\alpha .

    Meant for rows on the unit sphere (normalize them first). Cost :math:`O(np)`. Under
    data parallelism (``group``) the sum and the count are all-reduced: the loss is a mean
    over samples, so two numbers suffice. Derived in chapter 10.

    Parameters
    ----------
    z1, z2 : tensor of shape (n, p) or (B, n, p)
        Embeddings of two views (``n >= 1``).
    alpha : float
        The exponent :math:`\alpha > 0`.
    group : torch.distributed process group, optional
        Compute the loss of the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The alignment loss.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import alignment
    >>> z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> round(float(alignment(z1, -z1)), 4)      # antipodal pairs: distance 2
    4.0
    """
    z1 = _embeddings(z1, "z1", min_rows=1)
    z2 = _embeddings(z2, "z2", like=z1, min_rows=1)
    if z2.shape != z1.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got "
                         f"{tuple(z2.shape)}")
    alpha = check_positive(alpha, "alpha")
    reduce = _reducer(group) or (lambda t: t)
    n = reduce(torch.tensor(float(z1.shape[-2]), dtype=z1.dtype, device=z1.device))
    dist = torch.linalg.vector_norm(z1 - z2, dim=-1)
    return reduce((dist ** alpha).sum(-1)) / n


def _pair_kernel(x, y, kernel, scale, exclude_diagonal):
    r"""The part to copy: the mean of :math:`k(x_i, y_j)` over pairs, for rows of
    ``(..., n, p)`` and ``(..., m, p)`` tensors; ``kernel`` is ``"gauss"``
    (:math:`e^{-\|x-y\|^2/\mathrm{scale}}`) or ``"imq"``
    (:math:`\mathrm{scale}/(\mathrm{scale} + \|x-y\|^2)`). With ``exclude_diagonal`` the
    pairs :math:`i = j` are left out (a U-statistic). Cost :math:`O(nmp)`.
    """
    d2 = ((x.unsqueeze(-2) - y.unsqueeze(-3)) ** 2).sum(-1)  # exact zeros on the diagonal
    k = torch.exp(-d2 / scale) if kernel == "gauss" else scale / (scale + d2)
    n, m = x.shape[-2], y.shape[-2]
    if exclude_diagonal:
        off = ~torch.eye(n, m, dtype=torch.bool, device=x.device)
        return (k * off).sum((-2, -1)) / (n * (m - 1))
    return k.sum((-2, -1)) / (n * m)


def uniformity(z, t=2.0, *, group=None):
    r"""Uniformity on the sphere (Wang and Isola): the log of the mean Gaussian potential.

    .. math::

        \ell_{\mathrm{unif}}(Z) = \log \frac{1}{n(n-1)} \sum_{i \ne j} e^{-t\|z_i - z_j\|^2}.

    Meant for rows on the unit sphere (normalize them first); its minimizers spread the
    rows out, and as :math:`n \to \infty` their distribution tends to the uniform measure
    on the sphere. Cost :math:`O(n^2 p)` time and :math:`O(n^2 p)` memory (explicit
    differences, so self-pairs are exact zeros). Derived in chapter 10.

    Under data parallelism (``group``) the rows are all-gathered with autograd: the loss
    couples every pair of samples, including pairs on different ranks, and a Gaussian
    potential has no finite sufficient statistic. Every rank must pass the same number of
    rows.

    Parameters
    ----------
    z : tensor of shape (n, p) or (B, n, p)
        Embeddings, ``n >= 2``.
    t : float
        The scale :math:`t > 0` of the potential (Wang and Isola use 2).
    group : torch.distributed process group, optional
        Compute the loss of the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The uniformity loss (at most 0, which a collapsed batch attains).

    Examples
    --------
    >>> import torch
    >>> from regref.representation import uniformity
    >>> square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]],
    ...                       dtype=torch.float64)
    >>> round(float(uniformity(square, t=1.0)), 4)     # log((2e^-2 + e^-4) / 3)
    -2.34
    """
    z = _embeddings(z, "z")
    t = check_positive(t, "t")
    z = _gather_rows(z, group)
    return torch.log(_pair_kernel(z, z, "gauss", 1.0 / t, True))


def _gram(z: torch.Tensor, group, normalize_rows: bool, center: bool):
    """The (p, p) second-moment matrix Z^T Z / n of the full batch, by all-reduce."""
    reduce = _reducer(group) or (lambda t: t)
    if normalize_rows:
        z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(
            torch.finfo(z.dtype).tiny)
    n = reduce(torch.tensor(float(z.shape[-2]), dtype=z.dtype, device=z.device))
    if center:
        z = z - reduce(z.sum(-2, keepdim=True)) / n
    return reduce(z.mT @ z) / n


def _entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of nonnegative weights that sum to one (last dimension)."""
    w = weights.clamp_min(0)
    return -(w * torch.log(w.clamp_min(torch.finfo(w.dtype).tiny))).sum(-1)


def vne(z, *, group=None):
    r"""Von Neumann entropy of the autocorrelation of the normalized embeddings.

    .. math::

        \mathrm{VNE}(Z) = -\sum_j \lambda_j \log \lambda_j, \qquad \lambda = \operatorname{eig}
        \Bigl(\tfrac1n \sum_i \hat z_i \hat z_i^\top\Bigr), \quad \hat z_i = z_i/\|z_i\|,

    between 0 (every row on one line) and :math:`\log p` (isotropic). The VNE paper
    regularizes it up or down. Cost :math:`O(np^2 + p^3)`. Under data parallelism
    (``group``) the :math:`p\times p` autocorrelation is an all-reduced sum, so only
    :math:`p^2` numbers move. Derived in chapter 10.

    Parameters
    ----------
    z : tensor of shape (n, p) or (B, n, p)
        Embeddings, ``n >= 1``, rows not zero.
    group : torch.distributed process group, optional
        Compute the entropy of the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The entropy (natural logarithm).

    Examples
    --------
    >>> import torch
    >>> from regref.representation import vne
    >>> round(float(vne(torch.eye(4, dtype=torch.float64))), 4)    # log 4
    1.3863
    """
    z = _embeddings(z, "z", min_rows=1)
    if bool((torch.linalg.vector_norm(z, dim=-1) == 0).any()):
        raise ValueError("z must not have zero rows (they have no direction)")
    return _entropy(torch.linalg.eigvalsh(_gram(z, group, True, False)))


def effective_rank(z, *, center: bool = True, group=None):
    r"""The effective rank of Roy and Vetterli: the exponential of the entropy of the
    normalized singular values.

    .. math::

        \operatorname{erank}(Z) = \exp\Bigl(-\sum_j q_j \log q_j\Bigr), \qquad
        q_j = \frac{s_j}{\sum_k s_k},

    where :math:`s_j` are the singular values of :math:`Z` (of its centered columns with
    ``center=True``). It lies between 1 and :math:`\operatorname{rank} Z`, and is
    :math:`p` exactly when all singular values are equal. Cost :math:`O(np^2 + p^3)`
    (singular values from the eigenvalues of :math:`Z^\top Z`). Under data parallelism
    (``group``) :math:`Z^\top Z` and the column sums are all-reduced sums. Derived in
    chapter 10.

    Parameters
    ----------
    z : tensor of shape (n, p) or (B, n, p)
        Embeddings, ``n >= 2``, not all zero.
    center : bool
        Remove the batch mean of each column first.
    group : torch.distributed process group, optional
        Compute it for the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The effective rank.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import effective_rank
    >>> z = torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    >>> round(float(effective_rank(z, center=False)), 4)
    2.0
    """
    z = _embeddings(z, "z")
    lam = torch.linalg.eigvalsh(_gram(z, group, False, bool(center)))
    if bool((lam.amax(-1) <= 0).any()):
        raise ValueError("z must not be constant (all singular values are zero)")
    s = torch.sqrt(lam.clamp_min(torch.finfo(z.dtype).tiny))  # finite gradients at 0
    return torch.exp(_entropy(s / s.sum(-1, keepdim=True)))


# ----------------------------------------------------------------------------- diagnostics

def neural_collapse(h, y, w=None, b=None):
    r"""The four neural-collapse metrics of Papyan, Han and Donoho (NC1-NC4).

    With class means :math:`\mu_c`, global mean :math:`\mu_G`, centered means
    :math:`M = [\mu_c - \mu_G]_c \in \mathbb R^{C\times p}`, within- and between-class
    covariances :math:`\Sigma_W, \Sigma_B`:

    - NC1 :math:`= \frac1C\operatorname{tr}(\Sigma_W\Sigma_B^{+})` (within-class variability);
    - NC2 :math:`= \bigl\|\frac{MM^\top}{\|MM^\top\|_F} - \frac{I - \mathbf 1\mathbf 1^\top/C}
      {\sqrt{C-1}}\bigr\|_F` (distance to a simplex equiangular tight frame);
    - NC3 :math:`= \bigl\|\frac{W}{\|W\|_F} - \frac{M}{\|M\|_F}\bigr\|_F` (self-duality of
      the classifier :math:`W \in \mathbb R^{C\times p}`);
    - NC4: the fraction of samples where :math:`\arg\max_c (Wh + b)_c` differs from the
      nearest class mean.

    All are 0 at neural collapse. A diagnostic, computed on one process (gather the
    features first). Cost :math:`O(np^2 + p^3 + nCp)`. Derived in chapter 10.

    Parameters
    ----------
    h : tensor of shape (n, p)
        Features (penultimate layer).
    y : tensor of shape (n,)
        Integer labels in ``0..C-1``, every class present, ``C >= 2``.
    w : tensor of shape (C, p), optional
        Last-layer weights (for NC3 and NC4).
    b : tensor of shape (C,), optional
        Last-layer bias (for NC4; zero if omitted).

    Returns
    -------
    dict
        ``{"nc1", "nc2"}`` and, with ``w``, ``"nc3"`` and ``"nc4"``: tensors of shape ().

    Examples
    --------
    >>> import torch
    >>> from regref.representation import neural_collapse
    >>> means = torch.tensor([[1.0, 0.0], [-0.5, 3 ** 0.5 / 2], [-0.5, -3 ** 0.5 / 2]],
    ...                      dtype=torch.float64)      # a simplex ETF in the plane
    >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> nc = neural_collapse(means[y], y, w=means)
    >>> [round(float(v), 6) for v in nc.values()]
    [0.0, 0.0, 0.0, 0.0]
    """
    h = _embeddings(h, "h")
    check_ndim(h, "h", (2,))
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != h.shape[0] or y.is_floating_point() or y.is_complex():
        raise ValueError(f"y must be integer labels of shape ({h.shape[0]},), got "
                         f"{y.dtype} of shape {tuple(y.shape)}")
    y = y.to(h.device)
    n_classes = int(y.max()) + 1
    counts = torch.bincount(y, minlength=n_classes)
    if int(y.min()) < 0 or n_classes < 2 or bool((counts == 0).any()):
        raise ValueError("y must hold labels 0..C-1 with C >= 2 and every class present")
    onehot = torch.nn.functional.one_hot(y, n_classes).to(h.dtype)
    means = onehot.T @ h / counts.to(h.dtype)[:, None]
    m = means - h.mean(0)
    within = h - means[y]
    sigma_w = within.T @ within / h.shape[0]
    sigma_b = m.T @ m / n_classes
    out = {"nc1": torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / n_classes}
    gram = m @ m.T
    etf = (torch.eye(n_classes, dtype=h.dtype, device=h.device) - 1 / n_classes) / math.sqrt(
        n_classes - 1)
    out["nc2"] = torch.linalg.matrix_norm(gram / torch.linalg.matrix_norm(gram) - etf)
    if w is not None:
        w = check_finite(as_float_tensor(w, "w", like=h), "w")
        if w.shape != (n_classes, h.shape[1]):
            raise ValueError(f"w must have shape ({n_classes}, {h.shape[1]}), got "
                             f"{tuple(w.shape)}")
        bias = torch.zeros(n_classes, dtype=h.dtype, device=h.device) if b is None else \
            check_finite(as_float_tensor(b, "b", like=h), "b")
        if bias.shape != (n_classes,):
            raise ValueError(f"b must have shape ({n_classes},), got {tuple(bias.shape)}")
        out["nc3"] = torch.linalg.matrix_norm(w / torch.linalg.matrix_norm(w)
                                              - m / torch.linalg.matrix_norm(m))
        ncc = torch.cdist(h, means).argmin(1)
        out["nc4"] = ((h @ w.T + bias).argmax(1) != ncc).to(h.dtype).mean()
    return out


def local_intrinsic_dimension(z, k=20, *, reference=None):
    r"""Maximum-likelihood local intrinsic dimension of each row (the LDReg estimator).

    .. math::

        \widehat{\mathrm{LID}}(z_i) = -\Bigl(\frac1k\sum_{j=1}^{k}
        \log\frac{r_j(z_i)}{r_k(z_i)}\Bigr)^{-1},

    where :math:`r_j(z_i)` is the distance from :math:`z_i` to its :math:`j`-th nearest
    neighbour among the rows of ``reference`` (default: the other rows of ``z``). LDReg
    maximizes the mean of :math:`\log \widehat{\mathrm{LID}}` (the geometric mean of the
    estimates, the Fisher-Rao centre of their distributions) to prevent local collapse.
    Cost :math:`O(nmp)` for ``m`` reference rows. Derived in chapter 10.

    Parameters
    ----------
    z : tensor of shape (n, p)
        Query points.
    k : int
        Number of neighbours, ``k >= 2``.
    reference : tensor of shape (m, p), optional
        Neighbour candidates (default ``z`` itself, each row excluding itself).

    Returns
    -------
    tensor of shape (n,)
        The estimates.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import local_intrinsic_dimension
    >>> g = torch.Generator().manual_seed(0)
    >>> plane = torch.rand(2000, 2, generator=g, dtype=torch.float64)
    >>> z = torch.cat([plane, torch.zeros(2000, 3, dtype=torch.float64)], 1)
    >>> lid = local_intrinsic_dimension(z, k=20)
    >>> bool(1.6 < lid.median() < 2.4)     # a plane in 5-D: dimension 2
    True
    """
    z = _embeddings(z, "z", min_rows=1)
    check_ndim(z, "z", (2,))
    k = check_positive_int(k, "k")
    self_ref = reference is None
    ref = z if self_ref else _embeddings(reference, "reference", like=z, min_rows=1)
    if ref.ndim != 2 or ref.shape[1] != z.shape[1]:
        raise ValueError(f"reference must have shape (m, {z.shape[1]}), got "
                         f"{tuple(ref.shape)}")
    if k < 2 or k > ref.shape[0] - int(self_ref):
        raise ValueError(f"k must be between 2 and the number of neighbours "
                         f"({ref.shape[0] - int(self_ref)}), got {k}")
    dist = torch.cdist(z, ref)
    if self_ref:
        dist = dist + torch.diag(torch.full((z.shape[0],), math.inf, dtype=z.dtype,
                                            device=z.device))
    r = torch.topk(dist, k, dim=1, largest=False).values
    if bool((r[:, 0] == 0).any()):
        raise ValueError("z has duplicate points (a zero neighbour distance)")
    return -1.0 / torch.log(r / r[:, -1:]).mean(1)


# ----------------------------------------------------------------------------- sparsity

def topk_activation(h, k):
    r"""Keep the ``k`` largest entries of each row, zero the rest (k-sparse auto-encoders).

    .. math:: \operatorname{topk}(h)_j = h_j\,\mathbb 1[h_j \text{ among the } k
              \text{ largest of } h],

    ties broken by ``torch.topk``. Gradients flow only to the kept entries. Cost
    :math:`O(p \log k)` per row; any leading dimensions. Derived in chapter 10.

    Parameters
    ----------
    h : tensor of shape (..., p)
        Pre-activations.
    k : int
        Entries kept per row, ``1 <= k <= p``.

    Returns
    -------
    tensor of the shape of ``h``
        The k-sparse activations.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import topk_activation
    >>> topk_activation(torch.tensor([0.5, -2.0, 3.0, 1.0], dtype=torch.float64), 2)
    tensor([0., 0., 3., 1.], dtype=torch.float64)
    """
    h = check_finite(as_float_tensor(h, "h"), "h")
    if h.ndim == 0:
        raise ValueError("h must have at least one dimension")
    k = check_positive_int(k, "k")
    if k > h.shape[-1]:
        raise ValueError(f"k must be at most the number of entries {h.shape[-1]}, got {k}")
    values, index = torch.topk(h, k, dim=-1)
    return torch.zeros_like(h).scatter(-1, index, values)


def flops_regularizer(a, *, group=None):
    r"""The FLOPS regularizer of Paria et al.: a smooth proxy for the cost of retrieval with
    sparse embeddings.

    .. math:: R_{\mathrm{FLOPS}}(A) = \sum_{j=1}^p \Bigl(\frac1n\sum_{i=1}^n |a_{ij}|\Bigr)^2,

    the relaxation of :math:`\sum_j \Pr(a_j \ne 0)^2`, to which the expected number of
    multiplications of an inverted-index search is proportional. Unlike
    :math:`\|A\|_1` it penalizes dense *columns*, so it spreads the non-zeros evenly. Cost
    :math:`O(np)`. Under data parallelism (``group``) the column sums and the count are
    all-reduced sums. Derived in chapter 10.

    Parameters
    ----------
    a : tensor of shape (n, p) or (B, n, p)
        Activations (typically nonnegative), ``n >= 1``.
    group : torch.distributed process group, optional
        Compute it for the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The regularizer.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import flops_regularizer
    >>> spread = torch.eye(4, dtype=torch.float64)            # each column used once
    >>> piled = torch.zeros(4, 4, dtype=torch.float64); piled[:, 0] = 1
    >>> float(flops_regularizer(spread)), float(flops_regularizer(piled))
    (0.25, 1.0)
    """
    a = _embeddings(a, "a", min_rows=1)
    reduce = _reducer(group) or (lambda t: t)
    n = reduce(torch.tensor(float(a.shape[-2]), dtype=a.dtype, device=a.device))
    return ((reduce(a.abs().sum(-2)) / n) ** 2).sum(-1)


def _sparsemax_kernel(z):
    r"""The part to copy: sparsemax along the last dimension, by sorting.

    :math:`p = (z - \tau)_+` with :math:`\tau` chosen so that :math:`\sum p = 1`: sort
    :math:`z` decreasingly, find the support size :math:`k = \max\{j : 1 + j z_{(j)} >
    \sum_{i\le j} z_{(i)}\}`, and :math:`\tau = (\sum_{i\le k} z_{(i)} - 1)/k`.
    Cost :math:`O(p\log p)` per row.
    """
    zs = torch.sort(z, dim=-1, descending=True).values
    j = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cums = zs.cumsum(-1)
    k = (1 + j * zs > cums).sum(-1, keepdim=True)            # support size, >= 1
    tau = (cums.gather(-1, k - 1) - 1) / k.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def sparsemax(z, dim: int = -1):
    r"""Sparsemax (Martins and Astudillo): the Euclidean projection onto the simplex.

    .. math:: \operatorname{sparsemax}(z) = \arg\min_{q \in \Delta^{p-1}} \|q - z\|^2
              = (z - \tau(z)\mathbf 1)_+ ,

    a probability vector like softmax, but with exact zeros. Differentiable almost
    everywhere, with the sparse Jacobian of :func:`sparsemax_jacobian` (autograd through
    the sort gives it). Cost :math:`O(p\log p)` per vector; any leading dimensions.
    Derived in chapter 10.

    Parameters
    ----------
    z : tensor
        Scores, at least one dimension.
    dim : int
        The dimension that sums to one.

    Returns
    -------
    tensor of the shape of ``z``
        Probabilities.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import sparsemax
    >>> sparsemax(torch.tensor([2.0, 1.5, 0.0], dtype=torch.float64))
    tensor([0.7500, 0.2500, 0.0000], dtype=torch.float64)
    """
    z = check_finite(as_float_tensor(z, "z"), "z")
    if z.ndim == 0 or z.shape[dim] == 0:
        raise ValueError(f"z must have a non-empty dimension {dim}, got shape "
                         f"{tuple(z.shape)}")
    return _sparsemax_kernel(z.movedim(dim, -1)).movedim(-1, dim)


def sparsemax_jacobian(z):
    r"""The Jacobian of :func:`sparsemax` along the last dimension, in closed form.

    .. math:: J(z) = \operatorname{diag}(s) - \frac{s s^\top}{|S|}, \qquad
              s_j = \mathbb 1[\operatorname{sparsemax}(z)_j > 0],\ |S| = \textstyle\sum_j s_j,

    valid wherever no coordinate sits exactly at the threshold (almost everywhere). It is
    symmetric, zero outside the support, and :math:`Jv` costs :math:`O(p)` without forming
    :math:`J`. Cost here :math:`O(p^2)` per vector (the dense matrix). Derived in chapter 10.

    Parameters
    ----------
    z : tensor of shape (..., p)
        Scores.

    Returns
    -------
    tensor of shape (..., p, p)
        The Jacobians.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import sparsemax_jacobian
    >>> sparsemax_jacobian(torch.tensor([2.0, 1.5, 0.0], dtype=torch.float64))
    tensor([[ 0.5000, -0.5000,  0.0000],
            [-0.5000,  0.5000,  0.0000],
            [ 0.0000,  0.0000,  0.0000]], dtype=torch.float64)
    """
    z = check_finite(as_float_tensor(z, "z"), "z")
    if z.ndim == 0 or z.shape[-1] == 0:
        raise ValueError(f"z must have a non-empty last dimension, got shape {tuple(z.shape)}")
    s = (_sparsemax_kernel(z) > 0).to(z.dtype)
    return torch.diag_embed(s) - s.unsqueeze(-1) * s.unsqueeze(-2) / s.sum(-1)[..., None, None]


# ----------------------------------------------------------------------------- latent

def gaussian_kl(mu, logvar, *, group=None):
    r"""The VAE regularizer: KL divergence from :math:`\mathcal N(\mu, \operatorname{diag}
    \sigma^2)` to :math:`\mathcal N(0, I)`, averaged over the batch.

    .. math::

        \frac1n\sum_{i=1}^n \frac12 \sum_{j=1}^p \bigl(\mu_{ij}^2 + \sigma_{ij}^2
        - \log\sigma_{ij}^2 - 1\bigr), \qquad \log\sigma^2 = \texttt{logvar}.

    Cost :math:`O(np)`. Under data parallelism (``group``) the sum and the count are
    all-reduced, so unequal batches on the ranks are averaged correctly. Derived in
    chapter 10.

    Parameters
    ----------
    mu : tensor of shape (n, p) or (B, n, p)
        Posterior means, ``n >= 1``.
    logvar : tensor of the shape of ``mu``
        Posterior log-variances.
    group : torch.distributed process group, optional
        Average over the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The mean KL divergence (nats).

    Examples
    --------
    >>> import torch
    >>> from regref.representation import gaussian_kl
    >>> mu = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    >>> float(gaussian_kl(mu, torch.zeros(1, 2, dtype=torch.float64)))
    0.5
    """
    mu = _embeddings(mu, "mu", min_rows=1)
    logvar = _embeddings(logvar, "logvar", like=mu, min_rows=1)
    if logvar.shape != mu.shape:
        raise ValueError(f"logvar must have the shape of mu {tuple(mu.shape)}, got "
                         f"{tuple(logvar.shape)}")
    reduce = _reducer(group) or (lambda t: t)
    n = reduce(torch.tensor(float(mu.shape[-2]), dtype=mu.dtype, device=mu.device))
    kl = 0.5 * (mu ** 2 + torch.exp(logvar) - logvar - 1).sum((-2, -1))
    return reduce(kl) / n


def mmd2(x, y, *, kernel: str = "imq", scale=1.0, group=None):
    r"""Unbiased squared maximum mean discrepancy (the WAE-MMD penalty).

    .. math::

        \widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)}\sum_{i\ne j}k(x_i, x_j)
        + \frac{1}{m(m-1)}\sum_{i\ne j}k(y_i, y_j) - \frac{2}{nm}\sum_{i,j}k(x_i, y_j),

    with the inverse multiquadric kernel :math:`k(x, y) = c/(c + \|x - y\|^2)` (``"imq"``,
    the WAE paper's choice, :math:`c` = ``scale``, which the paper sets to :math:`2p` for
    a standard normal prior) or the Gaussian :math:`e^{-\|x-y\|^2/c}` (``"gauss"``). An
    unbiased estimate of :math:`\mathrm{MMD}^2(P_x, P_y)`, so it can be negative. Cost
    :math:`O((n + m)^2 p)`. Under data parallelism (``group``) both samples are
    all-gathered with autograd (pairwise terms across ranks; same row counts on every
    rank). Derived in chapter 10.

    Parameters
    ----------
    x : tensor of shape (n, p) or (B, n, p)
        Encoded samples (aggregate posterior), ``n >= 2``.
    y : tensor of shape (m, p) or (B, m, p)
        Samples of the prior, ``m >= 2``.
    kernel : {"imq", "gauss"}
        The kernel.
    scale : float
        The kernel scale :math:`c > 0`.
    group : torch.distributed process group, optional
        Compute it for the samples spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The estimate.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import mmd2
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(500, 2, generator=g, dtype=torch.float64)
    >>> y = torch.randn(500, 2, generator=g, dtype=torch.float64)
    >>> bool(abs(mmd2(x, y, scale=4.0)) < 0.01), bool(mmd2(x + 1, y, scale=4.0) > 0.05)
    (True, True)
    """
    x = _embeddings(x, "x")
    y = _embeddings(y, "y", like=x)
    if y.ndim != x.ndim or y.shape[-1] != x.shape[-1] or y.shape[:-2] != x.shape[:-2]:
        raise ValueError(f"y must have shape (..., m, {x.shape[-1]}) matching x, got "
                         f"{tuple(y.shape)}")
    if kernel not in ("imq", "gauss"):
        raise ValueError(f"kernel must be 'imq' or 'gauss', got {kernel!r}")
    scale = check_positive(scale, "scale")
    x, y = _gather_rows(x, group), _gather_rows(y, group)
    return (_pair_kernel(x, x, kernel, scale, True) + _pair_kernel(y, y, kernel, scale, True)
            - 2 * _pair_kernel(x, y, kernel, scale, False))


def least_volume(z, delta=1.0, *, group=None):
    r"""The least-volume penalty of Chen and Fuge: the geometric mean of the latent
    standard deviations.

    .. math:: \mathrm{Vol}(Z) = \Bigl(\prod_{j=1}^p (\hat\sigma_j + \delta)\Bigr)^{1/p},

    with :math:`\hat\sigma_j` the (biased) standard deviation of column :math:`j` over the
    batch: the :math:`p`-th root of the paper's product, with the same minimizers. Paired
    with a Lipschitz decoder, it flattens the latent set onto as few coordinates as the
    data needs; :math:`\delta > 0` keeps the gradient bounded when a
    coordinate collapses (large :math:`\delta` makes it an :math:`\ell_1` penalty on the
    deviations). Computed through logarithms. Cost :math:`O(np)`. Under data parallelism
    (``group``) the column sums, then the centered sums of squares, are all-reduced.
    Derived in chapter 10.

    Parameters
    ----------
    z : tensor of shape (n, p) or (B, n, p)
        Latent codes, ``n >= 2``.
    delta : float
        The offset :math:`\delta > 0`.
    group : torch.distributed process group, optional
        Compute it for the batch spread over this group's processes.

    Returns
    -------
    tensor of shape () or (B,)
        The volume.

    Examples
    --------
    >>> import torch
    >>> from regref.representation import least_volume
    >>> z = torch.tensor([[3.0, 1.0], [-3.0, -1.0]], dtype=torch.float64)  # stds 3, 1
    >>> round(float(least_volume(z, delta=1.0)), 4)                       # sqrt(4 * 2)
    2.8284
    """
    z = _embeddings(z, "z")
    delta = check_positive(delta, "delta")
    reduce = _reducer(group) or (lambda t: t)
    n = reduce(torch.tensor(float(z.shape[-2]), dtype=z.dtype, device=z.device))
    zc = z - reduce(z.sum(-2, keepdim=True)) / n
    std = torch.sqrt((reduce((zc ** 2).sum(-2)) / n).clamp_min(torch.finfo(z.dtype).tiny))
    return torch.exp(torch.log(std + delta).mean(-1))
