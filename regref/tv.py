r"""Total variation, Tikhonov deconvolution and plug-and-play for inverse problems.

Images are tensors of shape ``(H, W)`` or batches ``(B, H, W)``. The discrete gradient uses
forward differences with a zero difference past the last row and column (scikit-image's
convention), :math:`(\nabla u)_{ij} = (u_{i+1,j} - u_{ij},\ u_{i,j+1} - u_{ij})`, and the
divergence is its negative adjoint, :math:`\operatorname{div} = -\nabla^\top`. The (weighted)
total variation is

.. math:: \mathrm{TV}_w(u) = \sum_{ij} w_{ij}\,|(\nabla u)_{ij}|,

with the Euclidean norm of the two differences (isotropic) or their :math:`\ell_1` norm
(anisotropic). The solvers stop on a certificate checked every few iterations (one host
synchronization per check), take a leading batch dimension in one pass, and run on a GPU
unchanged:

- :func:`tv_denoise`: the ROF model :math:`\tfrac12\|u - f\|^2 + \lambda\mathrm{TV}_w(u)` by an
  accelerated projected gradient on its dual, certified by the duality gap;
- :func:`chambolle_pock`: :math:`\tfrac12\|Au - b\|^2 + \lambda\mathrm{TV}_w(u)` for a user
  operator pair :math:`(A, A^\top)`;
- :func:`parallel_beam` / :func:`matrix_operator`: a small tomography operator;
- :func:`deconvolve_fft`: Tikhonov and Sobolev deconvolution of a periodic blur in closed form;
- :func:`pnp_proximal_gradient`: plug-and-play proximal gradient with any denoiser.

Derivations: chapter 16.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._core import (
    Info,
    as_float_tensor,
    check_finite,
    check_generator,
    check_loop_options,
    check_ndim,
    check_positive,
    check_positive_int,
    check_strength,
    power_iteration,
    randn,
    warn_not_converged,
)

__all__ = [
    "grad2d",
    "div2d",
    "tv_norm",
    "tv_denoise",
    "chambolle_pock",
    "parallel_beam",
    "matrix_operator",
    "blur_fft",
    "deconvolve_fft",
    "pnp_proximal_gradient",
]


# ----------------------------------------------------------------------------- validation

def _image(f, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """A finite, non-empty (H, W) or (B, H, W) floating tensor."""
    f = check_ndim(as_float_tensor(f, name, like=like), name, (2, 3))
    if f.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(f.shape)}")
    return check_finite(f, name)


def _batch(f: torch.Tensor) -> torch.Tensor:
    return f if f.ndim == 3 else f[None]


def _strengths(lam, f: torch.Tensor) -> torch.Tensor:
    """``lam`` as a (B, 1, 1) tensor: one number, or one per image of the batch ``f``."""
    lam = check_strength(lam, "lam", f, ndims=(0, 1))
    if lam.ndim == 1 and lam.shape[0] not in (1, f.shape[0]):
        raise ValueError(f"lam must be a number or have one entry per image ({f.shape[0]}), "
                         f"got shape {tuple(lam.shape)}")
    return lam.reshape(-1, 1, 1).expand(f.shape[0], 1, 1)


def _pixel_weights(weights, f: torch.Tensor) -> torch.Tensor | None:
    """Nonnegative finite weights broadcastable to the batch ``f`` (B, H, W), or None."""
    if weights is None:
        return None
    w = check_finite(as_float_tensor(weights, "weights", like=f), "weights")
    if w.ndim not in (2, 3) or w.shape[-2:] != f.shape[-2:] or (
            w.ndim == 3 and w.shape[0] not in (1, f.shape[0])):
        raise ValueError(f"weights must have shape {tuple(f.shape[-2:])} or "
                         f"({f.shape[0]}, {f.shape[-2]}, {f.shape[-1]}), got {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError("weights must be nonnegative")
    return _batch(w)


def _warn(name: str, tol: float, max_iter: int, reached: float) -> None:
    warn_not_converged(f"{name} did not reach a certificate of {tol:g} in {max_iter} "
                       f"iterations (reached {reached:.3g}); increase max_iter or tol")


# ----------------------------------------------------------------------------- operators

def _grad(u: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Forward differences of ``u`` (..., H, W) into ``out`` (..., 2, H, W), no allocation."""
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=out[..., 0, :-1, :])
    out[..., 0, -1, :] = 0
    torch.sub(u[..., :, 1:], u[..., :, :-1], out=out[..., 1, :, :-1])
    out[..., 1, :, -1] = 0
    return out


def _div(p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """:math:`-\\nabla^\\top p` of ``p`` (..., 2, H, W) into ``out`` (..., H, W)."""
    p0, p1 = p[..., 0, :, :], p[..., 1, :, :]
    out[..., :-1, :] = p0[..., :-1, :]
    out[..., -1, :] = 0
    out[..., 1:, :] -= p0[..., :-1, :]
    out[..., :, :-1] += p1[..., :, :-1]
    out[..., :, 1:] -= p1[..., :, :-1]
    return out


def grad2d(u) -> torch.Tensor:
    r"""Discrete gradient of images by forward differences (zero past the last row/column).

    .. math:: (\nabla u)_{0,ij} = u_{i+1,j} - u_{ij}\ (i < H - 1), \qquad
              (\nabla u)_{1,ij} = u_{i,j+1} - u_{ij}\ (j < W - 1),

    and 0 on the last row (resp. column). :math:`\|\nabla\|^2 \le 8`. Cost: :math:`O(HW)`.

    Parameters
    ----------
    u : tensor of shape (..., H, W)
        Image(s), finite.

    Returns
    -------
    tensor of shape (..., 2, H, W)
        Vertical then horizontal differences.

    Examples
    --------
    >>> import torch
    >>> from regref.tv import grad2d
    >>> grad2d(torch.tensor([[0.0, 1.0], [3.0, 5.0]]))
    tensor([[[3., 4.],
             [0., 0.]],
    <BLANKLINE>
            [[1., 0.],
             [2., 0.]]])
    """
    u = as_float_tensor(u, "u")
    if u.ndim < 2:
        raise ValueError(f"u must have at least 2 dimensions (H, W), got shape {tuple(u.shape)}")
    check_finite(u, "u")
    return _grad(u, u.new_empty(u.shape[:-2] + (2,) + u.shape[-2:]))


def div2d(p) -> torch.Tensor:
    r"""Discrete divergence, the negative adjoint of :func:`grad2d`:
    :math:`\langle \nabla u, p\rangle = -\langle u, \operatorname{div} p\rangle`.

    .. math:: (\operatorname{div} p)_{ij} = \bar p_{0,ij} - \bar p_{0,i-1,j}
              + \bar p_{1,ij} - \bar p_{1,i,j-1},

    where :math:`\bar p` is :math:`p` with its last row (first component) and last column
    (second component) set to zero, and out-of-range terms are zero. Cost: :math:`O(HW)`.

    Parameters
    ----------
    p : tensor of shape (..., 2, H, W)
        Vector field(s), finite.

    Returns
    -------
    tensor of shape (..., H, W)
        The divergence.

    Examples
    --------
    >>> import torch
    >>> from regref.tv import div2d, grad2d
    >>> u = torch.arange(12.0).reshape(3, 4) ** 2
    >>> p = torch.ones(2, 3, 4)
    >>> float((grad2d(u) * p).sum() + (u * div2d(p)).sum())   # <grad u, p> = -<u, div p>
    0.0
    """
    p = as_float_tensor(p, "p")
    if p.ndim < 3 or p.shape[-3] != 2:
        raise ValueError(f"p must have shape (..., 2, H, W), got {tuple(p.shape)}")
    check_finite(p, "p")
    return _div(p, p.new_empty(p.shape[:-3] + p.shape[-2:]))


def _magnitude(g: torch.Tensor, isotropic: bool) -> torch.Tensor:
    """Pointwise norm of a field (..., 2, H, W): Euclidean or l1."""
    if isotropic:
        return torch.hypot(g[..., 0, :, :], g[..., 1, :, :])
    return g[..., 0, :, :].abs() + g[..., 1, :, :].abs()


def tv_norm(u, *, isotropic: bool = True, weights=None) -> torch.Tensor:
    r"""(Weighted) total variation of images.

    .. math:: \mathrm{TV}_w(u) = \sum_{ij} w_{ij}\,|(\nabla u)_{ij}|, \qquad
              |g| = \sqrt{g_0^2 + g_1^2}\ \text{(isotropic)} \ \text{or}\ |g_0| + |g_1|,

    with :func:`grad2d`'s forward differences. Derived in chapter 16.

    Parameters
    ----------
    u : tensor of shape (H, W) or (B, H, W)
    isotropic : bool
        Euclidean (default) or :math:`\ell_1` norm of the two differences.
    weights : tensor of shape (H, W) or (B, H, W), optional
        Nonnegative pixel weights :math:`w` (default 1).

    Returns
    -------
    tensor of shape () or (B,)
        The total variation of each image.

    Examples
    --------
    >>> import torch
    >>> from regref.tv import tv_norm
    >>> u = torch.zeros(4, 4)
    >>> u[1:3, 1:3] = 1.0              # a 2 x 2 square: perimeter 8 (anisotropic)
    >>> float(tv_norm(u, isotropic=False)), round(float(tv_norm(u)), 4)
    (8.0, 7.4142)
    """
    u = _image(u, "u")
    w = _pixel_weights(weights, _batch(u))
    mag = _magnitude(grad2d(u), isotropic)
    if w is not None:
        mag = mag * (w if u.ndim == 3 else w[0])
    return mag.sum((-2, -1))


def _rof_kernel(f, radius, isotropic, tol, max_iter, check_every, compile=False):
    r"""The part to copy: ROF denoising of a batch by accelerated primal-dual iterations.

    For each image of ``f`` (B, H, W) it minimizes
    :math:`P(u) = \tfrac12\|u - f\|^2 + \sum_{ij} r_{ij}|(\nabla u)_{ij}|` with
    ``radius`` :math:`r = \lambda w` of shape (B, 1, 1) or (B, H, W), by Chambolle and Pock's
    accelerated method for a 1-strongly convex primal. The dual field is two images ``p0``,
    ``p1`` (its vertical and horizontal parts). One iteration is three in-place steps on
    preallocated buffers (no allocation, no host synchronization; the step sizes of a block
    of iterations are computed on the host and sent as one tensor). With ``compile=True``
    each step runs through ``torch.compile`` (a few fused loops per iteration). Every
    ``check_every`` iterations it evaluates the duality gap :math:`P(u) - D(p)` at ``u`` and
    at :math:`u_p = f + \operatorname{div} p`, keeps the better of the two for each image,
    and stops when every gap divided by :math:`P(\bar f) = \tfrac12\|f - \bar f\|^2` is at
    most ``tol`` or after ``max_iter`` iterations. Returns ``(u, relative gap of that u,
    n_iter)``.
    """
    def ascent(p0, p1, u_bar, sigma, dv=None, dh=None):  # p <- p + sigma grad u_bar
        p0[:, :-1].addcmul_(torch.sub(u_bar[:, 1:], u_bar[:, :-1], out=dv), sigma)
        p1[:, :, :-1].addcmul_(torch.sub(u_bar[:, :, 1:], u_bar[:, :, :-1], out=dh), sigma)

    def project(p0, p1, m=None):  # each pair onto the ball of radius r (or the l_inf box)
        if not isotropic:
            p0.clamp_(r_neg, radius)
            p1.clamp_(r_neg, radius)
            return
        m = torch.hypot(p0, p1, out=m).clamp_(min=r_safe)
        m = torch.div(radius, m, out=m)                   # min(1, r / |p|)
        p0.mul_(m)
        p1.mul_(m)

    def div(p0, p1, d=None):  # minus the adjoint of grad (p0, p1 are 0 past the last row / col)
        d = torch.add(p0, p1, out=d)
        d[:, 1:].sub_(p0[:, :-1])
        d[:, :, 1:].sub_(p1[:, :, :-1])
        return d

    def primal(p0, p1, u, u_bar, s, d=None):  # s = (sigma, tau, 1 + tau, 1 + theta)
        u_bar.copy_(u)
        u.addcmul_(div(p0, p1, d).add_(f), s[1]).div_(s[2])  # (u + tau (f + div p)) / (1 + tau)
        u_bar.lerp_(u, s[3])                                  # u + theta (u - u_old)

    def gap(u, p0, p1):  # P(u) - D(p) = 1/2 ||u - u_p||^2 + sum r |grad u| - <grad u, p> >= 0
        g0, g1 = torch.zeros_like(u), torch.zeros_like(u)
        ascent(g0, g1, u, one)                                # grad u
        mag = torch.hypot(g0, g1) if isotropic else g0.abs() + g1.abs()
        return (0.5 * ((u - f - div(p0, p1)) ** 2).sum((1, 2))
                + (radius * mag - g0 * p0 - g1 * p1).sum((1, 2)))

    tiny = torch.finfo(f.dtype).tiny
    r_safe, r_neg, one = radius.clamp(min=tiny), -radius, f.new_ones(())
    scale = (0.5 * ((f - f.mean((1, 2), keepdim=True)) ** 2).sum((1, 2))).clamp(min=tiny)
    tau, sigma, gamma = 0.3, 1.0 / (8 * 0.3), 0.5    # tau * sigma * ||grad||^2 <= 1
    p0, p1, u, u_bar, n_iter = torch.zeros_like(f), torch.zeros_like(f), f.clone(), f.clone(), 0
    B, H, W = f.shape
    bufs = (f.new_empty(B, H - 1, W), f.new_empty(B, H, W - 1), torch.empty_like(f))
    sched, steps = f.new_empty(check_every, 4), [ascent, project, primal]
    if compile:   # the same steps, traced without the buffers so that inductor fuses them
        steps = [torch.compile(s, fullgraph=True, dynamic=False) for s in steps]
        bufs = (None, None, None)
    while True:
        rows = []   # the step sizes of the next iterations, (sigma, tau, 1 + tau, 1 + theta)
        for _ in range(min(check_every, max_iter - n_iter)):
            theta = 1.0 / math.sqrt(1.0 + 2.0 * gamma * tau)
            rows.append((sigma, tau, 1.0 + tau, 1.0 + theta))
            tau, sigma = theta * tau, sigma / theta
        sched[:len(rows)].copy_(torch.tensor(rows, dtype=f.dtype))
        for s in sched[:len(rows)]:
            steps[0](p0, p1, u_bar, s[0], *bufs[:2])
            steps[1](p0, p1, bufs[2])
            steps[2](p0, p1, u, u_bar, s, bufs[2])
            n_iter += 1
        u_p = f + div(p0, p1)
        gap_u, gap_p = gap(u, p0, p1), gap(u_p, p0, p1)
        best = torch.where((gap_p <= gap_u)[:, None, None], u_p, u)
        cert = torch.minimum(gap_u, gap_p) / scale
        if bool((cert <= tol).all()) or n_iter >= max_iter:
            return best, cert, n_iter


_COMPILE_PIXELS = 2**22      # on the CPU, compile from this many pixels (B H W) on (see below)
_COMPILE_FAILED: set[str] = set()   # device types where torch.compile failed in this process


def _run_kernel(kernel, args, compile, like: torch.Tensor):
    """``kernel(*args, compile=...)``: compiled when ``compile`` is True, or None and
    ``like`` is on a GPU or has at least ``_COMPILE_PIXELS`` elements; eager when
    compilation is unavailable (no C compiler, no Triton, an unsupported Python), under a
    ``TorchDispatchMode`` (which ``torch.compile`` refuses), or once the compiled steps have
    met more image shapes than dynamo's ``recompile_limit`` (8) in this process."""
    if compile is not None and not isinstance(compile, bool):
        raise TypeError(f"compile must be None, True or False, got {compile!r}")
    if compile is None:
        compile = like.device.type != "cpu" or like.numel() >= _COMPILE_PIXELS
    device = like.device.type
    if (compile and device not in _COMPILE_FAILED and _get_current_dispatch_mode() is None
            and torch._dynamo.is_dynamo_supported()):
        try:
            return kernel(*args, compile=True)
        except torch._dynamo.exc.FailOnRecompileLimitHit:  # too many shapes in this process
            pass
        except torch._dynamo.exc.TorchDynamoException:  # e.g. no working C++ compiler
            _COMPILE_FAILED.add(device)
    return kernel(*args, compile=False)


def tv_denoise(f, lam, *, weights=None, isotropic: bool = True, tol=None,
               max_iter: int = 10_000, check_every: int = 20, compile: bool | None = None,
               return_info: bool = False):
    r"""Total-variation denoising (the ROF model), batched, certified by the duality gap.

    .. math:: \min_u\ P(u) = \tfrac12\|u - f\|_2^2 + \lambda\,\mathrm{TV}_w(u),

    with :func:`tv_norm`'s forward differences (zero past the last row/column): with unit
    weights and ``isotropic=True`` this is scikit-image's
    ``denoise_tv_chambolle(f, weight=lam)`` objective.

    Dual (chapter 16): :math:`\max_{|p_{ij}| \le \lambda w_{ij}} D(p) = \tfrac12\|f\|^2
    - \tfrac12\|f + \operatorname{div} p\|^2`, with the primal point
    :math:`u_p = f + \operatorname{div} p` (the pointwise ball is Euclidean, or the
    :math:`\ell_\infty` box for ``isotropic=False``). Algorithm: Chambolle and Pock's
    accelerated primal-dual method for a 1-strongly convex primal (their "Algorithm 2"),

    .. math:: p \leftarrow \Pi(p + \sigma\nabla\bar u), \quad
              u^+ \leftarrow \frac{u + \tau(f + \operatorname{div} p)}{1 + \tau}, \quad
              \theta = (1 + 2\gamma\tau)^{-1/2},\ \tau \leftarrow \theta\tau,\
              \sigma \leftarrow \sigma/\theta, \quad \bar u \leftarrow u^+ + \theta(u^+ - u),

    with :math:`\tau_0\sigma_0 = 1/8 \le 1/\|\nabla\|^2`, :math:`\tau_0 = 0.3`,
    :math:`\gamma = 0.5`; :math:`\|u - u^\star\|^2 = O(1/k^2)`. Cost per iteration: 17
    in-place elementwise kernels (14 anisotropic) over :math:`BHW` numbers, no allocation;
    every ``check_every`` iterations the gap is computed (one host synchronization). The
    iteration is ``_rof_kernel``, pure torch, which can be copied on its own.

    Compiled path: with ``compile=True`` the three steps of an iteration (dual ascent,
    projection, primal update) run through ``torch.compile``; inductor fuses them into 4
    loops per iteration with no temporary (about 16 passes over an image against some 40
    eagerly), on the CPU as on a GPU. The answers are those of the eager path up to
    rounding. Compiling costs 10-25 s per process and image shape on a 2-core CPU, which
    the faster iterations (about 2x on the CPU from 1024^2 pixels) repay only on large
    problems: ``compile=None`` compiles on a GPU, and on the CPU from :math:`BHW \ge 2^{22}`
    pixels. Without a working compiler (no C++ compiler, no Triton, an unsupported Python)
    it runs eagerly.

    Certificate: for any :math:`u` and feasible :math:`p`, the duality gap is
    :math:`P(u) - D(p) = \tfrac12\|u - u_p\|^2 + \lambda\mathrm{TV}_w(u) - \langle\nabla u,
    p\rangle \ge 0`; it bounds :math:`P(u) - P(u^\star)` and :math:`\tfrac12\|u -
    u^\star\|^2`. It is evaluated at both :math:`u` and :math:`u_p`, and for each image the
    one with the smaller gap is returned, with that gap. The solver stops when, for every
    image, the gap is at most ``tol`` times :math:`P(\bar f) = \tfrac12\|f - \bar f\|^2`,
    the objective at the constant image equal to the mean of :math:`f` (which the solution
    preserves).

    Parameters
    ----------
    f : tensor of shape (H, W) or (B, H, W)
        Noisy image(s); a batch is solved in one pass. Its dtype and device are used
        throughout: ``lam`` and ``weights`` are converted to them.
    lam : float or tensor of shape (B,)
        Strength(s) :math:`\lambda \ge 0` (scikit-image's ``weight``).
    weights : tensor of shape (H, W) or (B, H, W), optional
        Nonnegative pixel weights of the weighted TV (default 1).
    isotropic : bool
        Isotropic (default) or anisotropic TV.
    tol : float, optional
        Relative duality gap, see above. Default ``1e-8`` in float64, ``1e-5`` in float32.
    max_iter : int
        Budget of iterations (each one dual and one primal step, for the whole batch); a
        :class:`regref.ConvergenceWarning` when it is reached.
    check_every : int
        Iterations between two evaluations of the gap.
    compile : bool, optional
        Run the iterations through ``torch.compile`` (see above); default: on a GPU, and on
        the CPU for :math:`BHW \ge 2^{22}`. Falls back to eager execution silently when
        compilation is unavailable.
    return_info : bool
        Also return :class:`regref.Info`; ``certificate`` is the largest relative gap over the
        batch, that of the returned images, and ``converged == (certificate <= tol)``.

    Returns
    -------
    u : tensor of ``f``'s shape, device and dtype
        The denoised image(s).
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.tv import tv_denoise
    >>> f = torch.zeros(8, 8, dtype=torch.float64)
    >>> f[2:6, 2:6] = 1.0
    >>> u, info = tv_denoise(f, 0.1, return_info=True)
    >>> info.converged, round(float(u[3, 3]), 3), round(float(u.mean()), 4)   # keeps the mean
    (True, 0.912, 0.25)
    """
    f = _image(f, "f")
    fb = _batch(f)
    lam_b = _strengths(lam, fb)
    w = _pixel_weights(weights, fb)
    tol, max_iter, check_every = check_loop_options(tol, max_iter, check_every, f.dtype, 1e-8, 1e-5)
    radius = lam_b if w is None else lam_b * w
    with torch.no_grad():
        u, cert, n_iter = _run_kernel(
            _rof_kernel, (fb, radius, isotropic, tol, max_iter, check_every), compile, fb)
    worst = float(cert.amax())
    info = Info(n_iter=n_iter, converged=worst <= tol, certificate=worst)
    if not info.converged:
        _warn("tv_denoise", tol, max_iter, worst)
    if f.ndim == 2:
        u = u[0]
    return (u, info) if return_info else u


# ----------------------------------------------------------------------------- Chambolle-Pock

_POWER_STEPS = 50   # power iterations for ||A||^2 in chambolle_pock


def _pdhg_kernel(A, AT, b, radius, isotropic, tau, sigma, tol, max_iter, check_every):
    r"""The part to copy: TV-regularized least squares by Chambolle and Pock's method.

    For a batch it minimizes :math:`P(u) = \tfrac12\|Au - b\|^2 + \sum_{ij}
    r_{ij}|(\nabla u)_{ij}|` (``radius`` :math:`r = \lambda w`, shape (B, 1, 1) or
    (B, H, W)); ``A`` maps images (B, H, W) to data of ``b``'s shape (B, ...) and ``AT`` back.
    Primal-dual hybrid gradient on :math:`\min_u F(Ku)`, :math:`K = (A, \nabla)`, with dual
    variables ``y`` (data) and ``p`` (gradient); needs :math:`\tau\sigma\|K\|^2 < 1`. Every
    ``check_every`` iterations it computes, per image, the KKT residual
    :math:`\max(\tfrac12\|Au - b - y\|^2 + \sum r|\nabla u| - \langle\nabla u, p\rangle)/P(0),
    \ \|A^\top y - \operatorname{div} p\|/\|A^\top b\|)` and stops when every one is at most
    ``tol`` or after ``max_iter`` iterations. Returns ``(u, residual of that u, n_iter)``.
    """
    def grad(u):  # forward differences, zero past the last row / column: (B, 2, H, W)
        g = u.new_zeros(u.shape[0], 2, *u.shape[1:])
        g[:, 0, :-1] = u[:, 1:] - u[:, :-1]
        g[:, 1, :, :-1] = u[:, :, 1:] - u[:, :, :-1]
        return g

    def div(p):  # minus the adjoint of grad
        d = torch.zeros_like(p[:, 0])
        d[:, :-1] += p[:, 0, :-1]
        d[:, 1:] -= p[:, 0, :-1]
        d[:, :, :-1] += p[:, 1, :, :-1]
        d[:, :, 1:] -= p[:, 1, :, :-1]
        return d

    def magnitude(g):  # pointwise Euclidean (isotropic) or l1 norm of the pairs
        return torch.hypot(g[:, 0], g[:, 1]) if isotropic else g.abs().sum(1)

    def project(q):  # each pair onto the ball of radius r (Euclidean, or the l_inf box)
        if not isotropic:
            return q.clamp(min=-radius[:, None], max=radius[:, None])
        return q * (radius / magnitude(q).clamp(min=tiny)).clamp(max=1.0)[:, None]

    tiny = torch.finfo(b.dtype).tiny
    dims = tuple(range(1, b.ndim))
    atb = AT(b)
    scale_gap = (0.5 * (b * b).sum(dims)).clamp(min=tiny)              # P(0)
    scale_stat = atb.flatten(1).norm(dim=1).clamp(min=tiny)            # ||A^T b||
    u, u_bar, y, p, n_iter = atb * 0, atb * 0, b * 0, grad(atb).zero_(), 0
    while True:
        for _ in range(min(check_every, max_iter - n_iter)):
            y = (y + sigma * (A(u_bar) - b)) / (1.0 + sigma)
            p = project(p + sigma * grad(u_bar))
            u_old, u = u, u - tau * (AT(y) - div(p))
            u_bar = 2 * u - u_old
            n_iter += 1
        g, r = grad(u), A(u) - b - y
        fy_gap = (0.5 * (r * r).sum(dims) + (radius * magnitude(g)).sum((1, 2))
                  - (g * p).sum((1, 2, 3)))
        stationarity = (AT(y) - div(p)).flatten(1).norm(dim=1)
        cert = torch.maximum(fy_gap / scale_gap, stationarity / scale_stat)
        if bool((cert <= tol).all()) or n_iter >= max_iter:
            return u, cert, n_iter

def chambolle_pock(A: Callable, AT: Callable, b, lam, *, weights=None, isotropic: bool = True,
                   op_norm=None, step_ratio: float = 1.0, tol=None, max_iter: int = 20_000,
                   check_every: int = 50, generator: torch.Generator | None = None,
                   return_info: bool = False):
    r"""TV-regularized least squares for a linear operator, by Chambolle and Pock's method.

    .. math:: \min_u\ P(u) = \tfrac12\|Au - b\|_2^2 + \lambda\,\mathrm{TV}_w(u).

    Algorithm (chapter 16): the primal-dual hybrid gradient on
    :math:`\min_u F(Ku)` with :math:`K = (A, \nabla)` and
    :math:`F(y, p) = \tfrac12\|y - b\|^2 + \lambda\sum_{ij} w_{ij}|p_{ij}|`:

    .. math:: y &\leftarrow (y + \sigma(A\bar u - b))/(1 + \sigma), \qquad
              p \leftarrow \Pi_{\lambda w}(p + \sigma\nabla\bar u), \\
              u^+ &\leftarrow u - \tau(A^\top y - \operatorname{div} p), \qquad
              \bar u \leftarrow 2u^+ - u,

    with :math:`\tau\sigma\|K\|^2 < 1`, :math:`\|K\|^2 \le \|A\|^2 + 8`. Unless ``op_norm``
    is given, :math:`\|A\|^2` is estimated by 50 steps of power iteration on
    :math:`A^\top A` from a random start (an estimate from below, so it is enlarged by 5%:
    the steps are then safe unless the start is nearly orthogonal to the top singular
    vector). ``step_ratio`` is :math:`\sigma/\tau`. Cost per iteration: one :math:`A` and
    one :math:`A^\top`, plus :math:`O(BHW)`; the check costs one more of each. The iteration
    is ``_pdhg_kernel``, pure torch, which can be copied on its own.

    Certificate (a KKT residual, not a duality gap): :math:`(u, y, p)` is a saddle point iff
    the Fenchel-Young gap of :math:`F`,
    :math:`\tfrac12\|Au - b - y\|^2 + \lambda\mathrm{TV}_w(u) - \langle\nabla u, p\rangle`
    (nonnegative), and the stationarity residual :math:`\|A^\top y - \operatorname{div}
    p\|` both vanish. They bound the suboptimality only through the unknown distance to
    a solution, :math:`P(u) - P^\star \le \text{gap} + \|u - u^\star\|\,\text{residual}`.
    The solver stops when, for every image, both the gap divided by :math:`P(0) =
    \tfrac12\|b\|^2` and the residual divided by :math:`\|A^\top b\|` are at most ``tol``;
    ``certificate`` is the larger of the two (worst image), computed at the returned
    :math:`u`.

    Parameters
    ----------
    A, AT : callables
        The operator and its adjoint. ``AT(b)`` must have shape (H, W) or (B, H, W) (this
        fixes the image shape) and ``A`` must map it back to ``b``'s shape; both act on the
        whole batch at once.
    b : tensor
        Data, of the shape ``A`` produces (a leading batch dimension when batched). Its
        dtype and device are used throughout: ``lam`` and ``weights`` are converted to them.
    lam : float or tensor of shape (B,)
        Strength(s) :math:`\lambda \ge 0`.
    weights : tensor of shape (H, W) or (B, H, W), optional
        Nonnegative pixel weights of the weighted TV (default 1).
    isotropic : bool
        Isotropic (default) or anisotropic TV.
    op_norm : float, optional
        An upper bound on :math:`\|A\|` (skips the power iteration).
    step_ratio : float
        :math:`\sigma/\tau > 0`; the steps are :math:`\tau = 0.99/(\|K\|\sqrt{r})`,
        :math:`\sigma = 0.99\sqrt{r}/\|K\|`.
    tol : float, optional
        Default ``1e-6`` in float64, ``1e-4`` in float32.
    max_iter : int
        Budget of iterations (each one dual and one primal step, for the whole batch); a
        :class:`regref.ConvergenceWarning` when it is reached.
    check_every : int
        Iterations between two evaluations of the certificate.
    generator : torch.Generator, optional
        A CPU generator for the power iteration's random start (drawn on the CPU, then
        moved to ``b``'s device).
    return_info : bool
        Also return :class:`regref.Info`.

    Returns
    -------
    u : tensor of the image shape, on ``b``'s device and dtype
        The reconstruction(s).
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.tv import chambolle_pock
    >>> b = torch.zeros(8, 8, dtype=torch.float64)
    >>> b[2:6, 2:6] = 1.0
    >>> def ident(u):
    ...     return u
    >>> u, info = chambolle_pock(ident, ident, b, 0.1, op_norm=1.0, return_info=True)
    >>> info.converged, round(float(u[3, 3]), 3)     # A = I: tv_denoise's solution
    (True, 0.912)
    """
    b = check_finite(as_float_tensor(b, "b"), "b")
    generator = check_generator(generator)
    x0 = AT(b)
    if not isinstance(x0, torch.Tensor) or x0.ndim not in (2, 3):
        raise ValueError("AT(b) must be an image tensor of shape (H, W) or (B, H, W), got "
                         f"{getattr(x0, 'shape', type(x0).__name__)}")
    Ab = A(torch.zeros_like(x0))
    if not isinstance(Ab, torch.Tensor) or Ab.shape != b.shape:
        raise ValueError(f"A must map images of shape {tuple(x0.shape)} to b's shape "
                         f"{tuple(b.shape)}, got {tuple(getattr(Ab, 'shape', ()))}")
    batched = x0.ndim == 3
    xb = _batch(x0)
    lam_b = _strengths(lam, xb)
    w = _pixel_weights(weights, xb)
    tol, max_iter, check_every = check_loop_options(tol, max_iter, check_every, b.dtype, 1e-6, 1e-4)
    ratio = check_positive(step_ratio, "step_ratio")

    def fwd(v):  # A on a (B, H, W) batch, result with a leading batch dimension
        out = A(v if batched else v[0])
        return out if batched else out[None]

    def adj(y):
        out = AT(y if batched else y[0])
        return out if batched else out[None]

    with torch.no_grad():
        if op_norm is None:
            start = randn((x0.numel(),), generator, x0)
            top, _ = power_iteration(lambda v: adj(fwd(v.reshape(xb.shape))).reshape(-1),
                                     start, _POWER_STEPS)
            norm2 = 1.05 * float(top)
        else:
            norm2 = check_positive(op_norm, "op_norm") ** 2
        K = math.sqrt(norm2 + 8.0)
        tau, sigma = 0.99 / (K * math.sqrt(ratio)), 0.99 * math.sqrt(ratio) / K
        bb = b if batched else b[None]
        radius = lam_b if w is None else lam_b * w
        u, cert, n_iter = _pdhg_kernel(fwd, adj, bb, radius, isotropic, tau, sigma, tol,
                                       max_iter, check_every)
    worst = float(cert.amax())
    info = Info(n_iter=n_iter, converged=worst <= tol, certificate=worst)
    if not info.converged:
        _warn("chambolle_pock", tol, max_iter, worst)
    u = u if batched else u[0]
    return (u, info) if return_info else u


# ----------------------------------------------------------------------------- tomography

def parallel_beam(n: int, angles, *, n_det: int | None = None, dtype=torch.float64,
                  device=None) -> torch.Tensor:
    r"""Parallel-beam projection matrix of an ``n`` x ``n`` image (pixel-driven, linear).

    Pixel :math:`(i, j)` (row :math:`i`, column :math:`j`) has centre
    :math:`x = j - c`, :math:`y = c - i`, :math:`c = \lfloor n/2\rfloor`; at angle
    :math:`\theta` it projects to the detector coordinate
    :math:`s = x\cos\theta + y\sin\theta`, and its value is split between the
    two nearest of ``n_det`` unit detector bins (centres at
    :math:`k - \lfloor n_\mathrm{det}/2\rfloor`) by linear interpolation. The row of bin
    :math:`k` at angle :math:`\theta` thus approximates the line integral along
    :math:`\{x\cos\theta + y\sin\theta = s_k\}`, like ``skimage.transform.radon``
    (``circle=False``, angles in degrees there). Each column has at most 2 nonzeros per angle.

    Parameters
    ----------
    n : int
        Image side.
    angles : sequence of float
        Projection angles in radians.
    n_det : int, optional
        Detector bins; default :math:`\lceil\sqrt2\,n\rceil`, enough for every pixel.
    dtype : torch.dtype
        Of the matrix (built in float64, then converted).
    device : torch.device, optional
        Where the matrix is moved at the end (default: the CPU).

    Returns
    -------
    sparse CSR tensor of shape (len(angles) * n_det, n * n)
        Rows ordered angle-major, columns the row-major flattened image. Use
        :func:`matrix_operator` for an ``(A, AT)`` pair.

    Examples
    --------
    >>> import math
    >>> from regref.tv import parallel_beam
    >>> M = parallel_beam(4, [0.0, math.pi / 2])
    >>> tuple(M.shape), float(M.to_dense().sum(0)[0])    # each pixel's mass, once per angle
    ((12, 16), 2.0)
    """
    n = check_positive_int(n, "n")
    theta = check_finite(as_float_tensor(angles, "angles").to(torch.float64), "angles")
    theta = check_ndim(theta, "angles", (1,))
    if theta.numel() == 0:
        raise ValueError("angles must not be empty")
    n_det = math.ceil(math.sqrt(2) * n) if n_det is None else check_positive_int(n_det, "n_det")
    c = n // 2  # the rotation centre of skimage.transform.radon
    idx = torch.arange(n, dtype=torch.float64)
    y, x = torch.meshgrid(c - idx, idx - c, indexing="ij")
    s = (x.reshape(1, -1) * torch.cos(theta)[:, None] + y.reshape(1, -1) * torch.sin(theta)[:, None]
         + n_det // 2)                                         # (angles, pixels), in bin units
    k0 = torch.floor(s)
    frac = s - k0
    pix = torch.arange(n * n).expand_as(s)
    ang = torch.arange(len(theta))[:, None].expand_as(s)
    rows, cols, vals = [], [], []
    for k, v in ((k0, 1.0 - frac), (k0 + 1, frac)):
        ok = (k >= 0) & (k < n_det) & (v > 0)
        rows.append((ang * n_det + k.long())[ok])
        cols.append(pix[ok])
        vals.append(v[ok])
    M = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals),
                                (len(theta) * n_det, n * n), check_invariants=True).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        M = M.to(dtype=dtype).to_sparse_csr()
    return M if device is None else M.to(device)


def matrix_operator(M: torch.Tensor, shape: tuple[int, int]):
    r"""The pair :math:`(u \mapsto Mu,\ y \mapsto M^\top y)` acting on images.

    ``A(u)`` maps images (H, W) or (B, H, W) to vectors (m,) or (B, m) and ``AT`` back, with
    :math:`M` dense or sparse of shape (m, H W) (e.g. :func:`parallel_beam`); the batch is one
    matrix product. Cost: :math:`O(\mathrm{nnz}(M))` per image.

    Parameters
    ----------
    M : tensor of shape (m, H W)
        Dense or sparse (COO/CSR) matrix acting on row-major flattened images.
    shape : tuple of int
        The image shape ``(H, W)``.

    Returns
    -------
    A : callable
        Images (H, W) or (B, H, W) to vectors (m,) or (B, m).
    AT : callable
        Its adjoint, vectors back to images; the pair is ready for :func:`chambolle_pock`.

    Examples
    --------
    >>> import torch
    >>> from regref.tv import matrix_operator
    >>> A, AT = matrix_operator(torch.ones(1, 4), (2, 2))    # the sum of the pixels
    >>> A(torch.ones(3, 2, 2)).flatten().tolist(), AT(torch.tensor([2.0])).tolist()
    ([4.0, 4.0, 4.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    H, W = shape
    if M.ndim != 2 or M.shape[1] != H * W:
        raise ValueError(f"M must have shape (m, {H * W}) for images of shape {(H, W)}, "
                         f"got {tuple(M.shape)}")
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        MT = M.t().to_sparse_csr() if M.layout != torch.strided else M.t()

    def A(u):
        flat = u.reshape(-1, H * W)
        out = (M @ flat.t()).t()
        return out if u.ndim == 3 else out[0]

    def AT(y):
        flat = y.reshape(-1, M.shape[0])
        out = (MT @ flat.t()).t().reshape(-1, H, W)
        return out if y.ndim == 2 else out[0]

    return A, AT


# ----------------------------------------------------------------------------- deconvolution

def _kernel_fft(kernel, like: torch.Tensor) -> torch.Tensor:
    """FFT of a small centred PSF zero-padded and rolled to the image size."""
    k = _image(kernel, "kernel", like=like)
    if k.ndim != 2 or k.shape[0] > like.shape[-2] or k.shape[1] > like.shape[-1]:
        raise ValueError(f"kernel must be 2-D and no larger than the image "
                         f"{tuple(like.shape[-2:])}, got shape {tuple(k.shape)}")
    H, W = like.shape[-2:]
    pad = like.new_zeros(H, W)
    pad[: k.shape[0], : k.shape[1]] = k
    pad = torch.roll(pad, (-(k.shape[0] // 2), -(k.shape[1] // 2)), dims=(0, 1))
    return torch.fft.rfft2(pad)


def blur_fft(u, kernel) -> torch.Tensor:
    r"""Periodic convolution :math:`k * u` of images with a centred kernel, by FFT.

    The kernel's centre is entry ``(kh // 2, kw // 2)``; the image wraps around at its edges.
    Cost: :math:`O(HW\log(HW))` per image.

    Parameters
    ----------
    u : tensor of shape (H, W) or (B, H, W)
        Image(s).
    kernel : tensor of shape (kh, kw), no larger than the image
        Point-spread function, converted to ``u``'s dtype and device.

    Returns
    -------
    tensor of ``u``'s shape
        The blurred image(s).

    Examples
    --------
    >>> import torch
    >>> from regref.tv import blur_fft
    >>> u = torch.zeros(5, 5, dtype=torch.float64)
    >>> u[0, 0] = 1.0
    >>> out = blur_fft(u, torch.ones(3, 3, dtype=torch.float64) / 9)
    >>> round(float(out[4, 4]), 4), round(float(out.sum()), 4)   # wraps around the corner
    (0.1111, 1.0)
    """
    u = _image(u, "u")
    K = _kernel_fft(kernel, u)
    return torch.fft.irfft2(torch.fft.rfft2(u) * K, s=u.shape[-2:])


def deconvolve_fft(f, kernel, lam, *, order: int = 0) -> torch.Tensor:
    r"""Tikhonov (``order=0``) or Sobolev (``order >= 1``) deconvolution of a periodic blur.

    .. math:: \min_u\ \tfrac12\|k * u - f\|_2^2 + \tfrac\lambda2\|D^{s} u\|_2^2
              \quad\Longrightarrow\quad
              \hat u(\xi) = \frac{\overline{\hat k(\xi)}\,\hat f(\xi)}
              {|\hat k(\xi)|^2 + \lambda\,|\hat d(\xi)|^{2s}},

    where :math:`|\hat d(\xi)|^2 = 4\sin^2(\pi\xi_0/H) + 4\sin^2(\pi\xi_1/W)` is the symbol of
    the periodic :math:`-\Delta = \nabla_{per}^\top\nabla_{per}`: ``order=1`` penalizes the
    periodic forward differences (:math:`H^1` seminorm), ``order=2`` the Laplacian. Both
    operators are diagonal in the Fourier basis, so the normal equations are solved
    frequency by frequency. Cost: :math:`O(HW\log(HW))` per image. Derived in chapter 16.

    Parameters
    ----------
    f : tensor of shape (H, W) or (B, H, W)
        Blurred, noisy image(s).
    kernel : tensor of shape (kh, kw)
        Point-spread function, centred at ``(kh // 2, kw // 2)`` (as in :func:`blur_fft`).
    lam : float >= 0
        Strength :math:`\lambda`.
    order : int >= 0
        Sobolev order :math:`s` of the penalty.

    Returns
    -------
    u : tensor of ``f``'s shape
        The restored image(s).

    Raises
    ------
    ValueError
        If the normal equations are singular (a frequency where both :math:`\hat k` and the
        penalty's symbol vanish, e.g. ``order >= 1`` with a kernel summing to zero).

    Examples
    --------
    >>> import torch
    >>> from regref.tv import deconvolve_fft
    >>> f = torch.ones(4, 4, dtype=torch.float64)
    >>> delta = torch.ones(1, 1, dtype=torch.float64)       # no blur: Tikhonov shrinks
    >>> round(float(deconvolve_fft(f, delta, 1.0)[0, 0]), 4)
    0.5
    """
    f = _image(f, "f")
    lam = float(check_strength(lam, "lam", f))
    if isinstance(order, bool) or int(order) != order or order < 0:
        raise ValueError(f"order must be a nonnegative integer, got {order}")
    H, W = f.shape[-2:]
    K = _kernel_fft(kernel, f)
    xi0 = torch.arange(H, dtype=f.dtype, device=f.device)[:, None]
    xi1 = torch.arange(W // 2 + 1, dtype=f.dtype, device=f.device)[None, :]
    symbol = 4 * torch.sin(math.pi * xi0 / H) ** 2 + 4 * torch.sin(math.pi * xi1 / W) ** 2
    denom = K.abs() ** 2 + lam * symbol ** int(order)
    if bool((denom <= 1e3 * torch.finfo(f.dtype).tiny).any()):
        raise ValueError("the deconvolution is singular: the kernel's Fourier transform and "
                         "the penalty vanish at a common frequency (increase lam, use "
                         "order=0, or a kernel with nonzero sum)")
    return torch.fft.irfft2(K.conj() * torch.fft.rfft2(f) / denom, s=(H, W))


# ----------------------------------------------------------------------------- plug-and-play

def pnp_proximal_gradient(grad_f: Callable, denoiser: Callable, x0, step, *, tol=None,
                          max_iter: int = 1000, check_every: int = 1,
                          return_info: bool = False):
    r"""Plug-and-play proximal gradient: :math:`x \leftarrow D(x - \gamma\nabla f(x))`.

    With :math:`D = \operatorname{prox}_{\gamma g}` this is the proximal gradient method
    (ISTA) for :math:`\min f + g`, e.g. :math:`D = ` soft thresholding at
    :math:`\gamma\lambda` gives the lasso's ISTA, iterate for iterate; plug-and-play
    replaces the prox by any denoiser (a TV denoiser, a learned network). Convergence needs
    conditions on :math:`D` (nonexpansive, or an exact prox of some function, chapter 16).

    Certificate: the relative fixed-point residual
    :math:`\|x_{k+1} - x_k\|/\max(\|x_{k+1}\|, 1)` at the returned :math:`x_{k+1}`. It
    vanishes exactly at fixed points, but it is **not** an optimality certificate: it bounds
    no objective gap (a denoiser need not minimize anything), and for a slowly converging
    iteration it can be small far from the fixed point.

    Cost per iteration: one gradient and one denoiser call, on whatever shape (and batch)
    ``x0`` has.

    Parameters
    ----------
    grad_f : callable
        :math:`x \mapsto \nabla f(x)`, same shape as ``x``.
    denoiser : callable
        :math:`v \mapsto D(v)`, same shape as ``v``.
    x0 : tensor
        Starting point.
    step : float > 0
        :math:`\gamma` (for ISTA, at most :math:`1/L`, L the Lipschitz constant of
        :math:`\nabla f`).
    tol : float, optional
        Stop when :math:`\|x_{k+1} - x_k\| \le` ``tol`` :math:`\cdot\max(\|x_{k+1}\|, 1)`
        (whole tensor). Default ``1e-10`` in float64, ``1e-6`` in float32.
    max_iter : int
        Budget of iterations (one gradient and one denoiser call each);
        :class:`regref.ConvergenceWarning` when reached.
    check_every : int
        Iterations between two evaluations of the residual.
    return_info : bool
        Also return :class:`regref.Info`; ``certificate`` is the fixed-point residual above
        and ``converged == (certificate <= tol)``.

    Returns
    -------
    x : tensor of ``x0``'s shape
        The last iterate.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref.tv import pnp_proximal_gradient
    >>> def grad_f(x):                        # f(x) = ||x - 3||^2 / 2
    ...     return x - 3.0
    >>> def shrink(v):                        # prox of 0.5 * g, g(x) = ||x||^2 / 2
    ...     return v / 1.5
    >>> x, info = pnp_proximal_gradient(grad_f, shrink, torch.zeros(2), 0.5, return_info=True)
    >>> info.converged, round(float(x[0]), 4)   # the minimizer of f + g
    (True, 1.5)
    """
    x = check_finite(as_float_tensor(x0, "x0"), "x0")
    step = check_positive(step, "step")
    tol, max_iter, check_every = check_loop_options(
        tol, max_iter, check_every, x.dtype, 1e-10, 1e-6)
    n_iter = 0
    while True:
        for _ in range(min(check_every, max_iter - n_iter)):
            x_old = x
            x = denoiser(x - step * grad_f(x))
            n_iter += 1
        res = float((x - x_old).norm() / x.norm().clamp(min=1.0))
        if not math.isfinite(res):
            raise ValueError("pnp_proximal_gradient diverged (non-finite iterate): reduce step")
        if res <= tol or n_iter >= max_iter:
            break
    info = Info(n_iter=n_iter, converged=res <= tol, certificate=res)
    if not info.converged:
        _warn("pnp_proximal_gradient", tol, max_iter, res)
    return (x, info) if return_info else x
