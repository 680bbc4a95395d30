r"""Proximal calculus shared by every family.

The proximal operator of a convex function :math:`f` with step :math:`\tau > 0` is

.. math:: \operatorname{prox}_{\tau f}(x) = \arg\min_v \tfrac12\|v - x\|_2^2 + \tau f(v).

Every operator here is elementwise or acts on the last dimension, so a batch of
vectors is one call. Derivations: chapter 01 (soft thresholding) and chapter 04.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._core import as_float_tensor, check_finite, check_strength

__all__ = [
    "soft_threshold",
    "hard_threshold",
    "prox_l2",
    "prox_elastic_net",
    "project_l1_ball",
    "prox_conjugate",
]


def _strength(tau, name: str, x: torch.Tensor) -> torch.Tensor:
    """Non-negative strengths: a scalar or a tensor that broadcasts to ``x.shape``."""
    t = as_float_tensor(tau, name, like=x)
    check_finite(t, name)
    if bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0")
    tail = x.shape[x.ndim - t.ndim:] if t.ndim <= x.ndim else None
    fits = tail is not None and all(a in (1, b) for a, b in zip(t.shape, tail, strict=True))
    if not fits:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to shape "
                         f"{tuple(x.shape)}")
    return t


def _input(x) -> torch.Tensor:
    return check_finite(as_float_tensor(x, "x"), "x")


def soft_threshold(x, tau) -> torch.Tensor:
    r"""Soft thresholding, the prox of :math:`\tau\|\cdot\|_1`.

    .. math:: \operatorname{prox}_{\tau\|\cdot\|_1}(x)_i
              = \operatorname{sign}(x_i)\max(|x_i| - \tau, 0).

    Parameters
    ----------
    x : tensor
        Any shape.
    tau : float or tensor
        Threshold(s) ``>= 0``, broadcastable to the shape of ``x``.
    """
    x = _input(x)
    tau = _strength(tau, "tau", x)
    return torch.sign(x) * torch.clamp(x.abs() - tau, min=0)


def hard_threshold(x, tau) -> torch.Tensor:
    r"""Hard thresholding: keep entries with :math:`|x_i| > \tau`, zero the rest.

    It is a prox of the (nonconvex) counting penalty
    :math:`\tfrac{\tau^2}{2}\|v\|_0`: keeping :math:`x_i` costs :math:`\tau^2/2`,
    zeroing it costs :math:`x_i^2/2`. (At :math:`|x_i| = \tau` both are minimizers;
    this function returns 0.)
    """
    x = _input(x)
    tau = _strength(tau, "tau", x)
    return torch.where(x.abs() > tau, x, torch.zeros_like(x))


def prox_l2(x, tau, dim: int = -1) -> torch.Tensor:
    r"""Block soft thresholding, the prox of :math:`\tau\|\cdot\|_2` along ``dim``.

    .. math:: \operatorname{prox}_{\tau\|\cdot\|_2}(x)
              = \max\Bigl(1 - \frac{\tau}{\|x\|_2}, 0\Bigr)\, x.

    Used for the group lasso: each slice along ``dim`` is one group.
    ``tau`` is a scalar or broadcasts to ``x``'s shape with ``dim`` reduced to 1
    (one threshold per group).
    """
    x = _input(x)
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    tau = _strength(tau, "tau", norm)
    scale = torch.clamp(1 - tau / torch.clamp(norm, min=torch.finfo(x.dtype).tiny), min=0)
    return scale * x


def prox_elastic_net(x, l1, l2) -> torch.Tensor:
    r"""Prox of the elastic-net penalty :math:`\ell_1\|v\|_1 + \tfrac{\ell_2}{2}\|v\|_2^2`.

    .. math:: \operatorname{prox}(x) = \frac{\operatorname{soft}(x, \ell_1)}{1 + \ell_2}.

    (The prox of a sum is not the composition of the proxes in general; it is here
    because the quadratic is isotropic and separable.)
    """
    x = _input(x)
    l1 = _strength(l1, "l1", x)
    l2 = _strength(l2, "l2", x)
    return soft_threshold(x, l1) / (1 + l2)  # l1 checked above, under its own name


def project_l1_ball(x, radius=1.0) -> torch.Tensor:
    r"""Euclidean projection onto :math:`\{v : \|v\|_1 \le r\}` along the last dimension.

    .. math:: P(x)_i = \operatorname{sign}(x_i)\max(|x_i| - \theta, 0),

    with :math:`\theta = 0` if :math:`\|x\|_1 \le r`, else the unique
    :math:`\theta > 0` such that :math:`\sum_i \max(|x_i| - \theta, 0) = r`, found by
    sorting :math:`|x|` once (Held, Wolfe and Crowder; Duchi et al., 2008).
    Cost :math:`O(p \log p)` per vector; a batch ``(..., p)`` is one call.

    Parameters
    ----------
    x : tensor of shape (..., p)
    radius : float or tensor of shape (...)
        Radius ``r >= 0`` of each ball.
    """
    x = _input(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the vector to project)")
    r = _strength(radius, "radius", x.new_empty(x.shape[:-1]))
    if x.shape[-1] == 0:
        return x.clone()
    r = r.expand(x.shape[:-1]).unsqueeze(-1)
    u = x.abs()
    s = torch.sort(u, dim=-1, descending=True).values
    css = torch.cumsum(s, dim=-1) - r
    k = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    # s_k > (cumsum_k - r) / k holds exactly for k <= rho (a prefix), so count it.
    rho = (s * k > css).sum(dim=-1, keepdim=True).clamp(min=1)
    theta = torch.gather(css, -1, rho - 1) / rho.to(x.dtype)
    theta = torch.where(u.sum(-1, keepdim=True) <= r, torch.zeros_like(theta), theta)
    return torch.sign(x) * torch.clamp(u - theta.clamp(min=0), min=0)


def prox_conjugate(prox: Callable[[torch.Tensor, float], torch.Tensor], x,
                   tau: float = 1.0) -> torch.Tensor:
    r"""Prox of the convex conjugate :math:`\tau f^*`, from the prox of :math:`f`.

    Moreau's decomposition :math:`x = \operatorname{prox}_{\tau f^*}(x)
    + \tau\operatorname{prox}_{f/\tau}(x/\tau)` gives

    .. math:: \operatorname{prox}_{\tau f^*}(x) = x - \tau\,\operatorname{prox}_{f/\tau}(x/\tau).

    Parameters
    ----------
    prox : callable
        ``prox(v, s)`` returns :math:`\operatorname{prox}_{s f}(v)`, e.g.
        :func:`soft_threshold` for :math:`f = \|\cdot\|_1` (whose conjugate is the
        indicator of the :math:`\ell_\infty` unit ball, so the result is a clip).
    x : tensor
    tau : float
        Step ``> 0``.
    """
    x = _input(x)
    tau = float(check_strength(tau, "tau", x, positive=True))
    return x - tau * prox(x / tau, 1 / tau)
