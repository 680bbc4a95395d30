r"""Proximal calculus shared by every family.

The proximal operator of a convex function :math:`f` with step :math:`\tau > 0` is

.. math:: \operatorname{prox}_{\tau f}(x) = \arg\min_v \tfrac12\|v - x\|_2^2 + \tau f(v).

For the nonconvex penalties here (:math:`\ell_0`, MCP, SCAD) the same formula defines the
prox where the scalar problem has a unique minimizer (each docstring says when), and the
operators are still exact, closed-form and cheap. Every operator here is elementwise or
acts on the last dimension, so a batch of vectors is one call. Derivations: chapter 01
(soft thresholding) and chapter 04.

Step conventions. The convex operators take the threshold already multiplied by the
step: ``soft_threshold(x, tau)``, ``hard_threshold(x, tau)`` and ``prox_l2(x, tau)`` are
the prox of :math:`\tau\|\cdot\|` (pass ``tau = step * lam``), and
``prox_elastic_net(x, l1, l2)`` that of :math:`\ell_1\|\cdot\|_1 +
\tfrac{\ell_2}2\|\cdot\|^2` (pass ``l1 = step * lam1``, ``l2 = step * lam2``). These
are the ``prox(v, s)`` signatures that :func:`prox_conjugate` needs. The nonconvex
operators take the strength and the step separately, ``prox_mcp(x, lam, gamma, step)``,
``prox_scad(x, lam, a, step)``, ``prox_l0(x, lam, step)``, because their shape
parameter does not scale with the step.

Mixed inputs: strengths and steps are converted to the dtype and device of ``x`` (a
float64 ``tau`` with a float32 ``x`` computes in float32).

Fast path. Every operator takes ``validate=True``; inside an iteration pass
``validate=False`` to skip the conversion, the NaN scan and the host synchronizations of
the checks (the arguments must then already be tensors of one dtype and device).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._core import _show, as_float_tensor, check_finite, check_strength, soft

__all__ = [
    "soft_threshold",
    "hard_threshold",
    "prox_l2",
    "prox_elastic_net",
    "project_l1_ball",
    "prox_conjugate",
    "mcp_penalty",
    "prox_mcp",
    "scad_penalty",
    "prox_scad",
    "prox_l0",
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


def soft_threshold(x, tau, *, validate: bool = True) -> torch.Tensor:
    r"""Soft thresholding, the prox of :math:`\tau\|\cdot\|_1`.

    .. math:: \operatorname{prox}_{\tau\|\cdot\|_1}(x)_i
              = \operatorname{sign}(x_i)\max(|x_i| - \tau, 0).

    Parameters
    ----------
    x : tensor
        Any shape.
    tau : float or tensor
        Threshold(s) ``>= 0``, broadcastable to the shape of ``x`` (the step times the
        strength).
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``. Cost: one pass over ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import soft_threshold
    >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
    tensor([-1.,  0.,  2.])
    """
    if validate:
        x = _input(x)
        tau = _strength(tau, "tau", x)
    return soft(x, tau)


def hard_threshold(x, tau, *, validate: bool = True) -> torch.Tensor:
    r"""Hard thresholding: keep entries with :math:`|x_i| > \tau`, zero the rest.

    It is a prox of the (nonconvex) counting penalty
    :math:`\tfrac{\tau^2}{2}\|v\|_0`: keeping :math:`x_i` costs :math:`\tau^2/2`,
    zeroing it costs :math:`x_i^2/2`. (At :math:`|x_i| = \tau` both are minimizers;
    this function returns 0.)

    Parameters
    ----------
    x : tensor
        Any shape.
    tau : float or tensor
        Threshold(s) ``>= 0``, broadcastable to the shape of ``x``.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import hard_threshold
    >>> hard_threshold(torch.tensor([-2.0, 0.5, 1.0, 3.0]), 1.0)
    tensor([-2.,  0.,  0.,  3.])
    """
    if validate:
        x = _input(x)
        tau = _strength(tau, "tau", x)
    return torch.where(x.abs() > tau, x, torch.zeros_like(x))


def prox_l2(x, tau, dim: int = -1, *, validate: bool = True) -> torch.Tensor:
    r"""Block soft thresholding, the prox of :math:`\tau\|\cdot\|_2` along ``dim``.

    .. math:: \operatorname{prox}_{\tau\|\cdot\|_2}(x)
              = \max\Bigl(1 - \frac{\tau}{\|x\|_2}, 0\Bigr)\, x.

    Used for the group lasso: each slice along ``dim`` is one group.
    ``tau`` is a scalar or broadcasts to ``x``'s shape with ``dim`` reduced to 1
    (one threshold per group).

    Parameters
    ----------
    x : tensor
        At least one dimension.
    tau : float or tensor
        Threshold(s) ``>= 0`` (the step times the strength).
    dim : int
        The dimension that holds each group; ``ValueError`` if ``x`` has no such
        dimension.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``. Cost: two passes over ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import prox_l2
    >>> prox_l2(torch.tensor([3.0, 4.0]), 2.5)
    tensor([1.5000, 2.0000])
    """
    if validate:
        x = _input(x)
        if isinstance(dim, bool) or not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
            raise ValueError(f"dim must be an int in [{-x.ndim}, {x.ndim}) for x of shape "
                             f"{tuple(x.shape)}, got {dim!r}")
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    if validate:
        tau = _strength(tau, "tau", norm)
    scale = torch.clamp(1 - tau / torch.clamp(norm, min=torch.finfo(x.dtype).tiny), min=0)
    return scale * x


def prox_elastic_net(x, l1, l2, *, validate: bool = True) -> torch.Tensor:
    r"""Prox of the elastic-net penalty :math:`\ell_1\|v\|_1 + \tfrac{\ell_2}{2}\|v\|_2^2`.

    .. math:: \operatorname{prox}(x) = \frac{\operatorname{soft}(x, \ell_1)}{1 + \ell_2}.

    (The prox of a sum is not the composition of the proxes in general; it is here
    because the quadratic is isotropic and separable.)

    Parameters
    ----------
    x : tensor
        Any shape.
    l1 : float or tensor
        :math:`\ell_1` weight ``>= 0`` (the step times the strength), broadcastable.
    l2 : float or tensor
        Quadratic weight ``>= 0`` (the step times the strength), broadcastable.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import prox_elastic_net
    >>> prox_elastic_net(torch.tensor([-3.0, 0.5, 3.0]), 1.0, 1.0)
    tensor([-1.,  0.,  1.])
    """
    if validate:
        x = _input(x)
        l1 = _strength(l1, "l1", x)
        l2 = _strength(l2, "l2", x)
    return soft(x, l1) / (1 + l2)


def project_l1_ball(x, radius=1.0, *, validate: bool = True) -> torch.Tensor:
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
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops (``radius``
        must then be a tensor).

    Returns
    -------
    tensor of shape (..., p)
        Like ``x``; an empty last dimension gives an empty result.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import project_l1_ball
    >>> project_l1_ball(torch.tensor([2.0, -1.0, 0.2]), 1.0)
    tensor([1., -0., 0.])
    """
    if validate:
        x = _input(x)
        if x.ndim == 0:
            raise ValueError("x must have at least one dimension (the vector to project)")
        r = _strength(radius, "radius", x.new_empty(x.shape[:-1]))
    else:
        r = radius
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
                   tau: float = 1.0, *, validate: bool = True) -> torch.Tensor:
    r"""Prox of the convex conjugate :math:`\tau f^*`, from the prox of :math:`f`.

    Moreau's decomposition :math:`x = \operatorname{prox}_{\tau f^*}(x)
    + \tau\operatorname{prox}_{f/\tau}(x/\tau)` gives

    .. math:: \operatorname{prox}_{\tau f^*}(x) = x - \tau\,\operatorname{prox}_{f/\tau}(x/\tau).

    Parameters
    ----------
    prox : callable
        ``prox(v, s)`` must return :math:`\operatorname{prox}_{s f}(v)` for a tensor
        ``v`` and a float ``s > 0``: the threshold-first signature of
        :func:`soft_threshold`, :func:`hard_threshold`, :func:`prox_l2` (for
        :math:`f = \|\cdot\|_1`, :math:`\|\cdot\|_0`-type, :math:`\|\cdot\|_2`). For
        the nonconvex operators, wrap them, e.g.
        ``lambda v, s: prox_mcp(v, 1.0, 3.0, step=s)``. With :math:`f = \|\cdot\|_1`
        the conjugate is the indicator of the :math:`\ell_\infty` unit ball, so the
        result is a clip.
    x : tensor
        Any shape.
    tau : float
        Step ``> 0``.
    validate : bool
        Check ``x`` and ``tau`` (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import prox_conjugate, soft_threshold
    >>> prox_conjugate(soft_threshold, torch.tensor([-2.0, 0.5, 3.0]), 0.5)
    tensor([-1.0000,  0.5000,  1.0000])
    """
    if validate:
        x = _input(x)
        tau = float(check_strength(tau, "tau", x, positive=True))
    return x - tau * prox(x / tau, 1 / tau)


# --- nonconvex penalties (chapter 04) ---------------------------------------------------


def _above(value, name: str, x: torch.Tensor, bound, what: str) -> torch.Tensor:
    """A finite parameter broadcastable to ``x.shape`` and ``> bound`` (``what`` says which)."""
    t = as_float_tensor(value, name, like=x)
    if bool((t <= bound).any()):
        raise ValueError(f"{name} must be > {what}, got {_show(t)}")
    return _strength(t, name, x)


def mcp_penalty(x, lam, gamma, *, validate: bool = True) -> torch.Tensor:
    r"""Minimax concave penalty (Zhang, 2010), elementwise.

    .. math:: \operatorname{MCP}_{\lambda,\gamma}(x_i) = \begin{cases}
              \lambda|x_i| - \dfrac{x_i^2}{2\gamma} & |x_i| \le \gamma\lambda, \\
              \dfrac{\gamma\lambda^2}{2} & |x_i| > \gamma\lambda,
              \end{cases}

    that is :math:`\int_0^{|x_i|} (\lambda - t/\gamma)_+\,dt`: the :math:`\ell_1` slope
    :math:`\lambda` at 0, tapering linearly to a flat penalty beyond
    :math:`\gamma\lambda`, so large entries are not shrunk.

    Parameters
    ----------
    x : tensor
        Any shape.
    lam : float or tensor
        Strength(s) ``>= 0``, broadcastable to the shape of ``x``.
    gamma : float or tensor
        Concavity ``> 0`` (broadcastable); :math:`\gamma \to \infty` gives
        :math:`\lambda|x|`.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        The penalty of each entry: same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import mcp_penalty
    >>> mcp_penalty(torch.tensor([0.5, 1.0, 5.0]), 1.0, 2.0)
    tensor([0.4375, 0.7500, 1.0000])
    """
    if validate:
        x = _input(x)
        lam = _strength(lam, "lam", x)
        gamma = _above(gamma, "gamma", x, 0, "0")
    u = x.abs()
    return torch.where(u <= gamma * lam, lam * u - u * u / (2 * gamma), gamma * lam**2 / 2)


def prox_mcp(x, lam, gamma, step=1.0, *, validate: bool = True) -> torch.Tensor:
    r"""Firm thresholding, the prox of :math:`\tau\operatorname{MCP}_{\lambda,\gamma}`.

    .. math:: \operatorname{prox}(x)_i = \begin{cases}
              0 & |x_i| \le \tau\lambda, \\
              \operatorname{sign}(x_i)\dfrac{|x_i| - \tau\lambda}{1 - \tau/\gamma}
              & \tau\lambda < |x_i| \le \gamma\lambda, \\
              x_i & |x_i| > \gamma\lambda,
              \end{cases}

    with :math:`\tau` = ``step``. For :math:`\gamma > \tau` the scalar objective
    :math:`\tfrac12(v - x)^2 + \tau\operatorname{MCP}(v)` is strongly convex (modulus
    :math:`1 - \tau/\gamma`) and its minimizer is its one stationary point:
    :math:`0 \in v - x + \tau\,\partial\operatorname{MCP}(v)`, where
    :math:`\partial\operatorname{MCP}(v)` is the derivative
    :math:`(\lambda - |v|/\gamma)_+\operatorname{sign}(v)` for :math:`v \ne 0` and
    :math:`[-\lambda, \lambda]` at 0. Solving it on each piece gives the three cases.
    It interpolates between soft thresholding (:math:`\gamma \to \infty`) and hard
    thresholding at :math:`\tau\lambda` (:math:`\gamma \downarrow \tau`).

    Parameters
    ----------
    x : tensor
        Any shape.
    lam : float or tensor
        Strength(s) ``>= 0``, broadcastable to the shape of ``x``.
    gamma : float or tensor
        Concavity, ``> step`` (else the prox is not given by this formula).
    step : float or tensor
        Step :math:`\tau > 0`.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import prox_mcp
    >>> prox_mcp(torch.tensor([0.5, 1.5, 5.0]), 1.0, 2.0)
    tensor([0., 1., 5.])
    """
    if validate:
        x = _input(x)
        lam = _strength(lam, "lam", x)
        gamma = _above(gamma, "gamma", x, 0, "0")
        step = _above(step, "step", x, 0, "0")
        if bool((gamma <= step).any()):
            raise ValueError("gamma must be > step (otherwise the prox objective is not "
                             "strongly convex and firm thresholding is not its minimizer)")
    u = x.abs()
    firm = torch.clamp(u - step * lam, min=0) / (1 - step / gamma)  # no overflow: huge gamma
    return torch.where(u <= gamma * lam, torch.sign(x) * firm, x)


def scad_penalty(x, lam, a=3.7, *, validate: bool = True) -> torch.Tensor:
    r"""Smoothly clipped absolute deviation penalty (Fan and Li, 2001), elementwise.

    .. math:: \operatorname{SCAD}_{\lambda,a}(x_i) = \begin{cases}
              \lambda|x_i| & |x_i| \le \lambda, \\
              \dfrac{2a\lambda|x_i| - x_i^2 - \lambda^2}{2(a - 1)}
              & \lambda < |x_i| \le a\lambda, \\
              \dfrac{(a + 1)\lambda^2}{2} & |x_i| > a\lambda,
              \end{cases}

    that is :math:`\int_0^{|x_i|} \min\bigl(\lambda, (a\lambda - t)_+/(a - 1)\bigr)\,dt`:
    the :math:`\ell_1` penalty up to :math:`\lambda`, a quadratic spline to
    :math:`a\lambda`, flat beyond.

    Parameters
    ----------
    x : tensor
        Any shape.
    lam : float or tensor
        Strength(s) ``>= 0``, broadcastable to the shape of ``x``.
    a : float or tensor
        Shape parameter ``> 2`` (broadcastable); 3.7 is Fan and Li's default.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        The penalty of each entry: same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import scad_penalty
    >>> scad_penalty(torch.tensor([0.5, 2.0, 5.0]), 1.0, 3.0)
    tensor([0.5000, 1.7500, 2.0000])
    """
    if validate:
        x = _input(x)
        lam = _strength(lam, "lam", x)
        a = _above(a, "a", x, 2, "2")
    u = x.abs()
    mid = (2 * a * lam * u - u * u - lam**2) / (2 * (a - 1))
    return torch.where(u <= lam, lam * u, torch.where(u <= a * lam, mid, (a + 1) * lam**2 / 2))


def prox_scad(x, lam, a=3.7, step=1.0, *, validate: bool = True) -> torch.Tensor:
    r"""Prox of :math:`\tau\operatorname{SCAD}_{\lambda,a}`, elementwise.

    .. math:: \operatorname{prox}(x)_i = \begin{cases}
              \operatorname{sign}(x_i)(|x_i| - \tau\lambda)_+ & |x_i| \le (1 + \tau)\lambda, \\
              \operatorname{sign}(x_i)\dfrac{(a - 1)|x_i| - \tau a\lambda}{a - 1 - \tau}
              & (1 + \tau)\lambda < |x_i| \le a\lambda, \\
              x_i & |x_i| > a\lambda,
              \end{cases}

    with :math:`\tau` = ``step`` (for :math:`\tau = 1` this is Fan and Li's
    thresholding rule).

    Derivation: take :math:`x \ge 0` (the prox is odd) and :math:`v \ge 0`. The
    penalty's slope is :math:`\lambda` on :math:`[0, \lambda]`,
    :math:`(a\lambda - v)/(a - 1)` on :math:`[\lambda, a\lambda]` and 0 beyond, so the
    objective :math:`\tfrac12(v - x)^2 + \tau\operatorname{SCAD}(v)` has curvature at
    least :math:`1 - \tau/(a - 1) > 0` when :math:`a > 1 + \tau`: strongly convex, and
    its one stationary point is the prox. Setting the derivative to zero on each piece:
    :math:`v = x - \tau\lambda` on the first, valid while it lies in
    :math:`[0, \lambda]`, i.e. :math:`\tau\lambda \le x \le (1 + \tau)\lambda` (below,
    :math:`v = 0` by the subgradient :math:`[-\tau\lambda, \tau\lambda]` at 0);
    :math:`v - x + \tau(a\lambda - v)/(a - 1) = 0` on the second, solved by the middle
    line, which lies in :math:`[\lambda, a\lambda]` exactly when
    :math:`(1 + \tau)\lambda \le x \le a\lambda`; :math:`v = x` on the flat part, valid
    for :math:`x \ge a\lambda`. The pieces agree at both knots.

    Parameters
    ----------
    x : tensor
        Any shape.
    lam : float or tensor
        Strength(s) ``>= 0``, broadcastable to the shape of ``x``.
    a : float or tensor
        Shape parameter, ``> 2`` (SCAD's definition) and ``> 1 + step`` (strong
        convexity, without which the formula is not the minimizer).
    step : float or tensor
        Step :math:`\tau > 0`.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops.

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import prox_scad
    >>> prox_scad(torch.tensor([0.5, 1.5, 2.5, 5.0]), 1.0, 3.0)
    tensor([0.0000, 0.5000, 2.0000, 5.0000])
    """
    if validate:
        x = _input(x)
        lam = _strength(lam, "lam", x)
        a = _above(a, "a", x, 2, "2")
        step = _above(step, "step", x, 0, "0")
        if bool((a <= 1 + step).any()):
            raise ValueError("a must be > 1 + step (otherwise the prox objective is not "
                             "strongly convex and this formula is not its minimizer)")
    u = x.abs()
    soft = torch.clamp(u - step * lam, min=0)
    c = step / (a - 1)  # the middle line, written so that a huge a cannot overflow
    mid = (u - c * a * lam) / (1 - c)
    v = torch.where(u <= (1 + step) * lam, soft, mid)
    return torch.where(u <= a * lam, torch.sign(x) * v, x)


def prox_l0(x, lam, step=1.0, *, validate: bool = True) -> torch.Tensor:
    r"""Prox of the counting penalty :math:`\tau\lambda\|v\|_0`: hard thresholding.

    .. math:: \operatorname{prox}(x)_i = \begin{cases}
              x_i & |x_i| > \sqrt{2\tau\lambda}, \\ 0 & |x_i| \le \sqrt{2\tau\lambda},
              \end{cases}

    with :math:`\tau` = ``step``: elementwise, keeping :math:`x_i` costs
    :math:`\tau\lambda` and zeroing it costs :math:`x_i^2/2`. At the tie
    :math:`|x_i| = \sqrt{2\tau\lambda}` both are minimizers and 0 is returned (the
    convention of :func:`hard_threshold`, which this calls with the threshold
    :math:`\sqrt{2\tau}\sqrt{\lambda}` rounded in the dtype of ``x``).

    Parameters
    ----------
    x : tensor
        Any shape.
    lam : float or tensor
        Strength(s) ``>= 0``, broadcastable to the shape of ``x``.
    step : float or tensor
        Step :math:`\tau > 0`.
    validate : bool
        Check the arguments (default); ``False`` is the fast path for loops (``lam``
        and ``step`` must then be tensors).

    Returns
    -------
    tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> from regref.prox import prox_l0
    >>> prox_l0(torch.tensor([-2.0, 0.5, 1.5]), 0.5)
    tensor([-2.0000,  0.0000,  1.5000])
    """
    if validate:
        x = _input(x)
        lam = _strength(lam, "lam", x)
        step = _above(step, "step", x, 0, "0")
    return hard_threshold(x, torch.sqrt(2 * step) * torch.sqrt(lam), validate=False)
