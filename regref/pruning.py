r"""Sparse networks: magnitude and structured masks, pruning penalties, sparse training.

Parameters are passed as a tensor, or a tuple/list/dict of tensors (the ``params`` of
:func:`torch.func.functional_call`), never as an ``nn.Module``; masks come back in the same
structure, as boolean tensors of the same shapes (``True`` = kept), so ``w * m`` applies
them. A mask keeps the weights of largest *score*, by default the magnitude :math:`|w_i|`.

- :func:`magnitude_masks`: prune a fraction :math:`\kappa` of the weights, globally (one
  threshold for all tensors, "class blinded") or per tensor ("class uniform"), in one
  selection pass (one ``kthvalue``) over all parameters;
- :func:`structured_mask`: prune whole channels (slices along a dimension) of smallest norm;
- :func:`block_mask`: keep the largest ``keep`` of every ``block`` consecutive weights (N:M
  sparsity, e.g. 2:4);
- :func:`apply_masks`, :func:`mask_sparsity`: zero the pruned weights, count them;
- :func:`group_lasso_penalty`, :func:`group_lasso_prox`: the group lasso on channels and its
  prox (group soft thresholding, :func:`regref.prox.prox_l2`), which zeroes whole channels;
- :func:`selective_decay`: weight decay on the weights a magnitude cut would remove only;
- :func:`hard_concrete_sample`, :func:`hard_concrete_gate`, :func:`hard_concrete_l0`: the
  stochastic gates of Louizos, Welling and Kingma (2018) and their expected :math:`\ell_0`
  norm in closed form;
- :func:`iterative_magnitude_pruning`: train, prune, rewind, repeat;
- :func:`sparse_training_step`: one drop-and-grow update of dynamic sparse training
  (drop by magnitude, regrow by gradient magnitude, as in RigL).

Ties are broken the same way everywhere: among equal scores, the entry that comes first
(in the order of the parameters, then row-major inside a tensor) is pruned first. The
number pruned is ``round(kappa * n)`` with Python's ``round`` (ties to even), as in
:mod:`torch.nn.utils.prune`, whose masks these equal when the scores have no ties.

Derivations: chapter 14.
"""

from __future__ import annotations

import math

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ._core import (
    as_float_tensor,
    check_finite,
    check_generator,
    check_positive,
    check_positive_int,
)
from .prox import prox_l2

__all__ = [
    "magnitude_masks",
    "structured_mask",
    "block_mask",
    "apply_masks",
    "mask_sparsity",
    "group_lasso_penalty",
    "group_lasso_prox",
    "selective_decay",
    "hard_concrete_sample",
    "hard_concrete_gate",
    "hard_concrete_l0",
    "iterative_magnitude_pruning",
    "sparse_training_step",
]


# ----------------------------------------------------------------------------- validation

def _leaves(params, name: str, like=None):
    """Flatten a tensor or a tuple/list/dict of them into finite floating tensors."""
    leaves, spec = tree_flatten(params)
    if not leaves:
        raise ValueError(f"{name} must hold at least one tensor, got an empty container")
    if like is not None and (spec != like[1] or len(leaves) != len(like[0])):
        raise ValueError(f"{name} must have the structure of params")
    out = []
    for i, leaf in enumerate(leaves):
        if leaf is None or isinstance(leaf, (str, bytes)):
            raise TypeError(f"{name} must contain tensors, got {type(leaf).__name__}")
        t = as_float_tensor(leaf, name)
        if like is not None and t.shape != like[0][i].shape:
            raise ValueError(f"{name} must have the shapes of params: entry {i} has shape "
                             f"{tuple(t.shape)}, expected {tuple(like[0][i].shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} must not contain empty tensors (entry {i})")
        out.append(check_finite(t, name))
    return out, spec


def _mask_leaves(masks, like):
    leaves, spec = tree_flatten(masks)
    if spec != like[1] or len(leaves) != len(like[0]):
        raise ValueError("masks must have the structure of params")
    out = []
    for m, t in zip(leaves, like[0], strict=True):
        m = torch.as_tensor(m, device=t.device)
        if m.shape != t.shape:
            raise ValueError(f"masks must have the shapes of params, got {tuple(m.shape)} "
                             f"for a tensor of shape {tuple(t.shape)}")
        out.append(m != 0)
    return out


def _sparsity(value) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sparsity must be a number in [0, 1), got {value!r}") from err
    if isinstance(value, bool) or not 0 <= s < 1:
        raise ValueError(f"sparsity must be a number in [0, 1), got {value!r}")
    return s


def _scope(scope: str) -> str:
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    return scope


def _n_models(leaves, batched: bool) -> int:
    if not batched:
        return 1
    B = leaves[0].shape[0] if leaves[0].ndim else 0
    if any(t.ndim == 0 or t.shape[0] != B for t in leaves):
        raise ValueError("params must share their first dimension (the model index) "
                         "when batched=True")
    if any(t[0].numel() == 0 for t in leaves):
        raise ValueError("params must not hold empty models when batched=True")
    return B


# ----------------------------------------------------------------------------- the kernel

def _prune_smallest_kernel(scores, n_prune):
    r"""The part to copy: keep-mask that prunes the ``n_prune`` smallest scores of each
    row of ``scores`` (shape ``(B, n)``, one row per model), all rows in one pass.

    One selection finds the threshold :math:`t` (the ``n_prune``-th smallest score of
    the row); every score below :math:`t` is pruned, and among the scores equal to
    :math:`t` the first ones (lowest index) are pruned until exactly ``n_prune`` are.
    Cost on the CPU: :math:`O(Bn)` (quickselect, comparisons, one cumulative sum); on a
    GPU one radix sort finds :math:`t`, because CUDA's ``kthvalue`` is far slower than a
    sort on long rows (pytorch issue 75599). Returns a boolean tensor of the shape of
    ``scores``, ``True`` where kept.
    """
    if n_prune <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if scores.is_cuda:
        t = torch.sort(scores, dim=-1).values[..., n_prune - 1:n_prune]
    else:
        t = torch.kthvalue(scores, n_prune, dim=-1, keepdim=True).values
    below = scores < t
    tied = scores == t
    room = n_prune - below.sum(-1, keepdim=True)  # tied entries still to prune
    prune_tied = tied & (torch.cumsum(tied, dim=-1) <= room)
    return ~(below | prune_tied)


# ----------------------------------------------------------------------------- masks

def magnitude_masks(params, sparsity, *, scope: str = "global", scores=None, masks=None,
                    batched: bool = False):
    r"""Magnitude pruning masks: keep the weights of largest score, prune a fraction
    :math:`\kappa` of them, with one threshold for all tensors or one per tensor.

    .. math:: m_i = \mathbb 1\{|w_i| > t\} \ (\text{plus ties}), \qquad
              \#\{i : m_i = 0\} = \operatorname{round}(\kappa\, n),

    where :math:`n` counts the entries of all tensors (``scope="global"``, "class blinded"
    pruning) or of each tensor separately (``scope="layer"``, "class uniform"). The global
    mask solves :math:`\min_{\|v\|_0 \le n - k}\|v - w\|` (the projection onto the
    :math:`\ell_0` ball keeps the largest entries). Cost: one concatenation of the scores
    and one selection over all parameters (``kthvalue``, :math:`O(n)`, on the CPU; a
    radix sort on a GPU); with
    ``batched=True`` the :math:`B` models stacked along the first dimension are pruned in
    the same single pass. Ties at the threshold: the first entries (parameter order, then
    row-major) are pruned first. The masks equal those of
    ``torch.nn.utils.prune.global_unstructured`` (``L1Unstructured``) and
    ``l1_unstructured`` when the scores have no ties. Derived in chapter 14.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The weights to prune (pass only the tensors that should be pruned).
    sparsity : float
        The fraction :math:`\kappa \in [0, 1)` of entries to prune (per model, and per
        tensor with ``scope="layer"``); ``round(sparsity * n)`` entries are pruned.
    scope : {"global", "layer"}
        One threshold across all tensors, or one per tensor.
    scores : same structure as ``params``, optional
        Importance scores replacing :math:`|w|` (e.g. the Optimal Brain Damage saliency
        :math:`\tfrac12 H_{ii} w_i^2`); the smallest are pruned.
    masks : same structure as ``params``, optional
        Entries already pruned: they stay pruned and count toward ``sparsity``.
    batched : bool
        The first dimension of every tensor indexes :math:`B` independent models (as
        ``torch.func.stack_module_state`` stacks them); each model gets its own cut.

    Returns
    -------
    same structure as ``params``
        Boolean tensors of the shapes of ``params``, ``True`` where the weight is kept.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import magnitude_masks
    >>> p = {"a": torch.tensor([0.1, -3.0, 0.2]), "b": torch.tensor([2.0, -0.3, 1.0])}
    >>> m = magnitude_masks(p, 0.5)                      # one threshold for both
    >>> m["a"].tolist(), m["b"].tolist()
    ([False, True, False], [True, False, True])
    >>> magnitude_masks(p, 0.5, scope="layer")["a"].tolist()   # 2 of 3 per tensor
    [False, True, False]
    """
    leaves, spec = _leaves(params, "params")
    kappa, scope = _sparsity(sparsity), _scope(scope)
    B = _n_models(leaves, batched)
    score = leaves if scores is None else _leaves(scores, "scores", (leaves, spec))[0]
    score = [s.abs() if scores is None else s for s in score]
    if masks is not None:
        old = _mask_leaves(masks, (leaves, spec))
        score = [torch.where(m, s, -math.inf) for s, m in zip(score, old, strict=True)]
    rows = [s.reshape(B, -1) for s in score]
    if scope == "global":
        flat = torch.cat(rows, dim=1)
        keep = _prune_smallest_kernel(flat, round(kappa * flat.shape[1]))
        keep = torch.split(keep, [r.shape[1] for r in rows], dim=1)
    else:
        keep = [_prune_smallest_kernel(r, round(kappa * r.shape[1])) for r in rows]
    out = [k.reshape(t.shape) for k, t in zip(keep, leaves, strict=True)]
    if masks is not None:
        out = [k & m for k, m in zip(out, old, strict=True)]
    return tree_unflatten(out, spec)


def structured_mask(weight, sparsity, *, dim: int = 0, ord: float = 2,
                    batched: bool = False) -> torch.Tensor:
    r"""Structured pruning: remove whole channels (slices along ``dim``) of smallest norm.

    .. math:: m_{c,\cdot} = \mathbb 1\{\|W_{c,\cdot}\|_{\mathrm{ord}} > t\}, \qquad
              \#\{c : m_c = 0\} = \operatorname{round}(\kappa\, C),

    where :math:`W_{c,\cdot}` is the :math:`c`-th slice along ``dim`` (a neuron's incoming
    weights for ``dim=0`` of a linear layer, a filter of a convolution) and :math:`C` the
    number of channels. Equal to ``torch.nn.utils.prune.ln_structured(module, name,
    amount=sparsity, n=ord, dim=dim)`` when the channel norms have no ties; ties are
    broken as in :func:`magnitude_masks` (lowest channel index pruned first). Cost: one
    pass to compute the norms, one selection over :math:`C`. Derived in chapter 14.

    Parameters
    ----------
    weight : tensor
        At least 2-D (at least 3-D with ``batched=True``).
    sparsity : float
        Fraction of channels to prune, in [0, 1).
    dim : int
        The dimension that indexes channels (counted without the batch dimension).
    ord : float
        The norm of a channel (``torch.linalg.vector_norm``'s ``ord``), e.g. 1 or 2.
    batched : bool
        The first dimension indexes independent models, each pruned separately.

    Returns
    -------
    tensor
        Boolean, the shape of ``weight``: whole channels are ``False`` or ``True``.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import structured_mask
    >>> W = torch.tensor([[3.0, 4.0], [0.1, 0.2], [1.0, 1.0]])   # row norms 5, 0.22, 1.4
    >>> structured_mask(W, 0.34, dim=0).all(dim=1).tolist()
    [True, False, True]
    """
    W = check_finite(as_float_tensor(weight, "weight"), "weight")
    kappa = _sparsity(sparsity)
    core = W.ndim - int(bool(batched))
    if core < 2 or W.numel() == 0:
        raise ValueError(f"weight must be a non-empty tensor with at least 2 dimensions "
                         f"per model, got shape {tuple(W.shape)}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -core <= dim < core:
        raise ValueError(f"dim must be an int in [{-core}, {core}), got {dim!r}")
    ord = float(ord)
    if not ord > 0:
        raise ValueError(f"ord must be > 0, got {ord}")
    Wb = W if batched else W[None]
    d = dim % core + 1
    moved = Wb.movedim(d, 1)
    norms = torch.linalg.vector_norm(moved.reshape(*moved.shape[:2], -1), ord=ord, dim=-1)
    keep = _prune_smallest_kernel(norms, round(kappa * norms.shape[1]))
    shape = [Wb.shape[0]] + [1] * (Wb.ndim - 1)
    shape[d] = Wb.shape[d]
    mask = keep.reshape(shape).expand(Wb.shape)
    return mask if batched else mask[0]


def block_mask(weight, keep: int, block: int) -> torch.Tensor:
    r"""N:M sparsity: in every block of ``block`` consecutive weights along the last
    dimension, keep the ``keep`` of largest magnitude.

    .. math:: \#\{i \in \text{block} : m_i = 1\} = \texttt{keep} \quad
              \text{for every block},

    the pattern that sparse tensor cores accelerate (2:4). All blocks are one batch of
    rows for the selection kernel, so the whole tensor is cut in one pass; ties are broken
    as in :func:`magnitude_masks`. Cost: :math:`O(n)`. Derived in chapter 14.

    Parameters
    ----------
    weight : tensor
        Its last dimension must be a multiple of ``block``.
    keep : int
        Weights kept per block, ``1 <= keep <= block``.
    block : int
        Block length.

    Returns
    -------
    tensor
        Boolean, the shape of ``weight``.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import block_mask
    >>> block_mask(torch.tensor([[0.1, -2.0, 0.3, 1.0, 5.0, 0.0, 0.2, -0.1]]), 2, 4).int()
    tensor([[0, 1, 0, 1, 1, 0, 1, 0]], dtype=torch.int32)
    """
    W = check_finite(as_float_tensor(weight, "weight"), "weight")
    block = check_positive_int(block, "block")
    keep = check_positive_int(keep, "keep")
    if keep > block:
        raise ValueError(f"keep must be at most block ({block}), got {keep}")
    if W.ndim < 1 or W.numel() == 0 or W.shape[-1] % block:
        raise ValueError(f"weight must be non-empty with a last dimension that is a "
                         f"multiple of block ({block}), got shape {tuple(W.shape)}")
    rows = W.abs().reshape(-1, block)
    return _prune_smallest_kernel(rows, block - keep).reshape(W.shape)


def apply_masks(params, masks):
    r"""Zero the pruned weights: :math:`w \odot m` for every tensor.

    Cost: one pass over the parameters. Gradients flow to the kept weights only.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The weights.
    masks : same structure as ``params``
        Boolean (or 0/1) masks of the same shapes.

    Returns
    -------
    same structure as ``params``
        The masked weights, in the dtype of ``params``.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import apply_masks
    >>> apply_masks({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([True, False])})
    {'w': tensor([1., 0.])}
    """
    leaves, spec = _leaves(params, "params")
    old = _mask_leaves(masks, (leaves, spec))
    return tree_unflatten([t * m.to(t.dtype) for t, m in zip(leaves, old, strict=True)], spec)


def mask_sparsity(masks) -> float:
    r"""The fraction of pruned entries, :math:`\#\{i : m_i = 0\} / n`, over all masks.

    Parameters
    ----------
    masks : tensor or tuple/list/dict of tensors
        Boolean (or 0/1) masks.

    Returns
    -------
    float
        Pruned entries over all entries.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import mask_sparsity
    >>> mask_sparsity({"a": torch.tensor([True, False]), "b": torch.tensor([False, False])})
    0.75
    """
    leaves, _ = tree_flatten(masks)
    if not leaves:
        raise ValueError("masks must hold at least one tensor, got an empty container")
    leaves = [torch.as_tensor(m) for m in leaves]
    total = sum(m.numel() for m in leaves)
    if total == 0:
        raise ValueError("masks must not be empty")
    return sum(int((m == 0).sum()) for m in leaves) / total


# ----------------------------------------------------------------------------- penalties

def _channels(W: torch.Tensor, dim, name: str = "weight") -> tuple[torch.Tensor, int]:
    if W.ndim < 2 or W.numel() == 0:
        raise ValueError(f"{name} must be a non-empty tensor with at least 2 dimensions, "
                         f"got shape {tuple(W.shape)}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -W.ndim <= dim < W.ndim:
        raise ValueError(f"dim must be an int in [{-W.ndim}, {W.ndim}), got {dim!r}")
    d = dim % W.ndim
    moved = W.movedim(d, 0)
    return moved.reshape(moved.shape[0], -1), d


def group_lasso_penalty(weight, *, dim: int = 0) -> torch.Tensor:
    r"""The group lasso on channels, :math:`R(W) = \sum_c \|W_{c,\cdot}\|_2`.

    A channel is a slice along ``dim``. The penalty is non-smooth where a channel is
    zero, which is what makes its minimizers drop whole channels
    (:func:`group_lasso_prox`). Cost: one pass. Derived in chapter 14.

    Parameters
    ----------
    weight : tensor
        At least 2-D.
    dim : int
        The dimension that indexes channels.

    Returns
    -------
    tensor of shape ()
        The penalty (differentiable where no channel is zero).

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import group_lasso_penalty
    >>> float(group_lasso_penalty(torch.tensor([[3.0, 4.0], [0.0, 1.0]])))
    6.0
    """
    W = check_finite(as_float_tensor(weight, "weight"), "weight")
    groups, _ = _channels(W, dim)
    return torch.linalg.vector_norm(groups, dim=1).sum()


def group_lasso_prox(weight, tau, *, dim: int = 0) -> torch.Tensor:
    r"""Prox of :math:`\tau\sum_c\|W_{c,\cdot}\|_2`: group soft thresholding of channels.

    .. math:: \operatorname{prox}(W)_{c,\cdot}
              = \max\Bigl(1 - \frac{\tau}{\|W_{c,\cdot}\|_2}, 0\Bigr) W_{c,\cdot},

    so a channel of norm at most :math:`\tau` becomes exactly zero. Each channel is
    thresholded by :func:`regref.prox.prox_l2`. A proximal gradient step on
    :math:`\mathcal L(W) + \lambda R(W)` with step :math:`\eta` uses
    :math:`\tau = \eta\lambda`. Cost: two passes. Derived in chapter 14.

    Parameters
    ----------
    weight : tensor
        At least 2-D.
    tau : float or tensor
        Threshold :math:`\ge 0`, one number or one per channel (shape ``(C,)``).
    dim : int
        The dimension that indexes channels.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``weight``.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import group_lasso_prox
    >>> group_lasso_prox(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    tensor([[2.4000, 3.2000],
            [0.0000, 0.0000]])
    """
    W = check_finite(as_float_tensor(weight, "weight"), "weight")
    groups, d = _channels(W, dim)
    t = check_finite(as_float_tensor(tau, "tau", like=W), "tau")
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != groups.shape[0]):
        raise ValueError(f"tau must be a number or have one entry per channel "
                         f"({groups.shape[0]}), got shape {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise ValueError("tau must be >= 0")
    out = prox_l2(groups, t.reshape(-1, 1) if t.ndim else t, dim=-1, validate=False)
    moved_shape = W.movedim(d, 0).shape
    return out.reshape(moved_shape).movedim(0, d)


def selective_decay(params, sparsity, *, scope: str = "global",
                    batched: bool = False) -> torch.Tensor:
    r"""Weight decay on the weights a magnitude cut would remove, and on no others.

    .. math:: R(w) = \tfrac12 \sum_i (1 - m_i)\, w_i^2, \qquad
              m = \texttt{magnitude\_masks}(w, \kappa) \ \text{(held fixed)},

    so gradient steps on :math:`\mathcal L + \lambda R` shrink the currently irrelevant
    weights toward zero while the relevant ones get a plain update: the regularizer of
    Bonetta et al. (2022) with magnitude as the relevance score. The mask is recomputed at
    every call and not differentiated. Cost: one call of :func:`magnitude_masks`.
    Derived in chapter 14.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The weights.
    sparsity : float
        The target fraction :math:`\kappa \in [0, 1)` of the later cut.
    scope : {"global", "layer"}
        As in :func:`magnitude_masks`.
    batched : bool
        As in :func:`magnitude_masks` (one cut per stacked model; the penalties add up).

    Returns
    -------
    tensor of shape ()
        :math:`R(w)`, differentiable in ``params``.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import selective_decay
    >>> w = torch.tensor([0.5, -2.0, 1.0, 0.1], dtype=torch.float64)
    >>> round(float(selective_decay(w, 0.5)), 6)      # (0.5^2 + 0.1^2) / 2
    0.13
    """
    leaves, spec = _leaves(params, "params")
    with torch.no_grad():
        m = tree_flatten(magnitude_masks(tree_unflatten([t.detach() for t in leaves], spec),
                                         sparsity, scope=scope, batched=batched))[0]
    return sum(0.5 * (t * (~k).to(t.dtype)).pow(2).sum() for t, k in zip(leaves, m,
                                                                            strict=True))


# ----------------------------------------------------------------------------- L0 gates

def _gate_args(log_alpha, temperature, limits):
    la = check_finite(as_float_tensor(log_alpha, "log_alpha"), "log_alpha")
    beta = check_positive(temperature, "temperature")
    try:
        lo, hi = (float(v) for v in limits)
    except (TypeError, ValueError) as err:
        raise ValueError(f"limits must be a pair (lo, hi) with lo < 0 < 1 < hi, got "
                         f"{limits!r}") from err
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < 0 and hi > 1):
        raise ValueError(f"limits must be a pair (lo, hi) with lo < 0 < 1 < hi, got "
                         f"{limits!r}")
    return la, beta, lo, hi


def hard_concrete_sample(log_alpha, *, temperature: float = 2 / 3,
                         limits=(-0.1, 1.1), sample_shape=(), generator=None):
    r"""Draw hard-concrete gates :math:`z \in [0, 1]` (Louizos, Welling and Kingma, 2018).

    .. math:: u \sim \mathcal U(0, 1), \quad
              s = \sigma\Bigl(\frac{\log u - \log(1-u) + \log\alpha}{\beta}\Bigr), \quad
              z = \min\bigl(1, \max(0, l + (r - l)s)\bigr),

    with temperature :math:`\beta` and stretch limits :math:`l < 0 < 1 < r`: the stretched
    binary concrete is clipped, so :math:`z` is exactly 0 or exactly 1 with positive
    probability, and differentiable in :math:`\log\alpha` elsewhere (the
    reparameterization trick). Uniforms are drawn on the CPU with ``generator`` and moved
    to ``log_alpha``'s device. Cost: one pass. Derived in chapter 14.

    Parameters
    ----------
    log_alpha : tensor
        Location parameters, one per gate.
    temperature : float
        :math:`\beta > 0`.
    limits : pair of floats
        :math:`(l, r)` with :math:`l < 0` and :math:`r > 1`.
    sample_shape : tuple of int
        Leading shape of independent draws (the result has shape
        ``sample_shape + log_alpha.shape``).
    generator : torch.Generator, optional
        CPU generator for the uniforms.

    Returns
    -------
    tensor
        The gates, in ``log_alpha``'s dtype and device.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import hard_concrete_sample
    >>> gen = torch.Generator().manual_seed(0)
    >>> z = hard_concrete_sample(torch.zeros(10_000, dtype=torch.float64), generator=gen)
    >>> bool(((z >= 0) & (z <= 1)).all()), round(float((z == 0).double().mean()), 2)
    (True, 0.17)
    """
    la, beta, lo, hi = _gate_args(log_alpha, temperature, limits)
    check_generator(generator)
    shape = tuple(int(k) for k in sample_shape) + tuple(la.shape)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    u = u.clamp(torch.finfo(torch.float64).tiny, 1 - torch.finfo(torch.float64).eps)
    logistic = (torch.log(u) - torch.log1p(-u)).to(dtype=la.dtype, device=la.device)
    s = torch.sigmoid((logistic + la) / beta)
    return (lo + (hi - lo) * s).clamp(0, 1)


def hard_concrete_gate(log_alpha, *, limits=(-0.1, 1.1)) -> torch.Tensor:
    r"""The deterministic gate used after training:
    :math:`\hat z = \min(1, \max(0, l + (r - l)\,\sigma(\log\alpha)))`.

    Gates with :math:`\sigma(\log\alpha) \le -l/(r - l)` are exactly zero: their weights
    are pruned. Cost: one pass. Derived in chapter 14.

    Parameters
    ----------
    log_alpha : tensor
        Location parameters.
    limits : pair of floats
        :math:`(l, r)` with :math:`l < 0` and :math:`r > 1`.

    Returns
    -------
    tensor
        Gates in :math:`[0, 1]`.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import hard_concrete_gate
    >>> hard_concrete_gate(torch.tensor([-5.0, 0.0, 5.0]))
    tensor([0.0000, 0.5000, 1.0000])
    """
    la, _, lo, hi = _gate_args(log_alpha, 1.0, limits)
    return (lo + (hi - lo) * torch.sigmoid(la)).clamp(0, 1)


def hard_concrete_l0(log_alpha, *, temperature: float = 2 / 3,
                     limits=(-0.1, 1.1)) -> torch.Tensor:
    r"""Probability that each hard-concrete gate is non-zero, in closed form.

    .. math:: \mathbb P(z \ne 0) = \sigma\Bigl(\log\alpha - \beta\log\frac{-l}{r}\Bigr),

    so :math:`\mathbb E\|z\|_0` is the sum of the result: the smooth :math:`\ell_0` penalty
    of Louizos et al. (2018), differentiable in :math:`\log\alpha`. Cost: one pass.
    Derived in chapter 14.

    Parameters
    ----------
    log_alpha : tensor
        Location parameters.
    temperature : float
        :math:`\beta > 0`.
    limits : pair of floats
        :math:`(l, r)` with :math:`l < 0` and :math:`r > 1`.

    Returns
    -------
    tensor
        :math:`\mathbb P(z_j \ne 0)` for every gate (sum it for the penalty).

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import hard_concrete_l0
    >>> round(float(hard_concrete_l0(torch.zeros(()))), 4)   # P(z = 0) = 0.168
    0.8318
    """
    la, beta, lo, hi = _gate_args(log_alpha, temperature, limits)
    return torch.sigmoid(la - beta * math.log(-lo / hi))


# ----------------------------------------------------------------------------- training

def iterative_magnitude_pruning(params, train_fn, sparsity, *, n_rounds: int = 3,
                                scope: str = "global", rewind=None, batched: bool = False):
    r"""Iterative magnitude pruning with weight rewinding (train, prune, rewind, repeat).

    Round :math:`r = 1, \dots, R` trains from the rewinding point with the current mask,
    then prunes to the cumulative sparsity :math:`\kappa_r = 1 - (1 - \kappa)^{r/R}` (the
    same fraction of the surviving weights each round) by :func:`magnitude_masks`, keeping
    earlier cuts. A last training from the rewinding point with the final mask gives the
    returned weights. ``n_rounds=1`` is one-shot pruning followed by retraining from the
    rewinding point. The first round trains from ``params``; the later ones restart from
    ``rewind`` (default ``params``, the "lottery ticket" rewinding to initialization).
    Cost: :math:`R + 1` calls of ``train_fn`` and :math:`R` mask computations.
    Derived in chapter 14.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The initial weights (all of them are pruned; pass the prunable ones).
    train_fn : callable
        ``train_fn(params, masks) -> params``: trains from ``params`` keeping the pruned
        weights at zero (e.g. by multiplying by ``masks`` in the forward pass).
    sparsity : float
        The final fraction :math:`\kappa \in [0, 1)` of pruned weights.
    n_rounds : int
        :math:`R`, the number of prune steps.
    scope : {"global", "layer"}
        As in :func:`magnitude_masks`.
    rewind : same structure as ``params``, optional
        The weights each later round restarts from (e.g. those after a few training
        steps); default ``params``.
    batched : bool
        As in :func:`magnitude_masks`: :math:`B` stacked models, each cut separately.

    Returns
    -------
    params : same structure as ``params``
        The weights after the last training, zero where pruned.
    masks : same structure as ``params``
        The final masks.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import iterative_magnitude_pruning, mask_sparsity
    >>> target = torch.tensor([3.0, -0.1, 2.0, 0.05, -1.0, 0.2, 0.0, 4.0])
    >>> def train(w, m):                     # "training" moves the kept weights to target
    ...     return target * m
    >>> w, m = iterative_magnitude_pruning(torch.ones(8), train, 0.5, n_rounds=2)
    >>> w.tolist(), mask_sparsity(m)
    ([3.0, -0.0, 2.0, 0.0, -1.0, 0.0, 0.0, 4.0], 0.5)
    """
    leaves, spec = _leaves(params, "params")
    if not callable(train_fn):
        raise TypeError("train_fn must be callable: train_fn(params, masks) -> params")
    kappa, scope = _sparsity(sparsity), _scope(scope)
    n_rounds = check_positive_int(n_rounds, "n_rounds")
    start = leaves if rewind is None else _leaves(rewind, "rewind", (leaves, spec))[0]
    start = tree_unflatten(start, spec)
    masks = tree_unflatten([torch.ones_like(t, dtype=torch.bool) for t in leaves], spec)
    current = tree_unflatten(leaves, spec)
    for r in range(1, n_rounds + 1):
        trained = train_fn(current if r == 1 else apply_masks(start, masks), masks)
        kappa_r = 1 - (1 - kappa) ** (r / n_rounds)
        masks = magnitude_masks(trained, kappa_r, scope=scope, masks=masks, batched=batched)
    final = train_fn(apply_masks(start, masks), masks)
    return apply_masks(final, masks), masks


def sparse_training_step(params, masks, grads, drop_fraction):
    r"""One drop-and-grow update of dynamic sparse training (RigL, Evci et al., 2020).

    In each tensor, of the :math:`a` active weights the :math:`d =
    \operatorname{round}(\text{drop\_fraction}\cdot a)` of smallest magnitude are dropped,
    and the :math:`d` inactive positions of largest gradient magnitude :math:`|g_i|` are
    grown (a dropped position may grow back), so every tensor keeps exactly :math:`a`
    active weights. Newly grown weights start at zero. Ties are broken as in
    :func:`magnitude_masks`. Cost: two selections per tensor. Derived in chapter 14.

    Parameters
    ----------
    params : tensor or tuple/list/dict of tensors
        The weights (zero where inactive).
    masks : same structure as ``params``
        The current masks (``True`` = active).
    grads : same structure as ``params``
        The gradient of the loss with respect to the *dense* weights.
    drop_fraction : float
        Fraction of the active weights to replace, in [0, 1).

    Returns
    -------
    params : same structure as ``params``
        The weights, zero outside the new mask and at newly grown positions.
    masks : same structure as ``params``
        The new masks, with the same number of active entries per tensor.

    Examples
    --------
    >>> import torch
    >>> from regref.pruning import sparse_training_step
    >>> w = torch.tensor([0.1, 2.0, 0.0, 0.0])
    >>> m = torch.tensor([True, True, False, False])
    >>> g = torch.tensor([0.0, 0.0, 0.5, -3.0])
    >>> w2, m2 = sparse_training_step(w, m, g, 0.5)
    >>> w2.tolist(), m2.tolist()
    ([0.0, 2.0, 0.0, 0.0], [False, True, False, True])
    """
    leaves, spec = _leaves(params, "params")
    old = _mask_leaves(masks, (leaves, spec))
    g = _leaves(grads, "grads", (leaves, spec))[0]
    frac = _sparsity(drop_fraction)
    new_w, new_m = [], []
    for w, m, gi in zip(leaves, old, g, strict=True):
        n, active = w.numel(), int(m.sum())
        n_drop = round(frac * active)
        drop_scores = torch.where(m, w.abs(), -math.inf).reshape(1, -1)
        kept = _prune_smallest_kernel(drop_scores, n - active + n_drop)
        grow_scores = torch.where(kept, math.inf, gi.abs().reshape(1, -1))
        mask = _prune_smallest_kernel(grow_scores, n - active).reshape(w.shape)
        new_m.append(mask)
        new_w.append(torch.where(mask & m, w, torch.zeros_like(w)))
    return tree_unflatten(new_w, spec), tree_unflatten(new_m, spec)
