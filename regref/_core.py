"""Private helpers shared by every family module: conversion, validation, ``Info``.

Every public function in ``regref`` converts its inputs with :func:`as_float_tensor`
and checks them with the ``check_*`` helpers below, so that bad input raises a
``ValueError`` (or ``TypeError``) that names the argument instead of producing NaNs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Info", "ConvergenceWarning"]


@dataclass(frozen=True)
class Info:
    """What a solver reports with ``return_info=True``.

    Attributes
    ----------
    n_iter : int
        Iterations (or factorizations, for direct solvers) performed.
    converged : bool
        Whether the stopping rule was met.
    certificate : float
        The quantity that proves optimality for that problem (duality gap, KKT
        residual, marginal error, ...); each solver's docstring says which.
    """

    n_iter: int
    converged: bool
    certificate: float


class ConvergenceWarning(UserWarning):
    """A solver stopped at ``max_iter`` before meeting its tolerance."""


def as_float_tensor(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Convert ``x`` to a floating tensor, keeping its device and dtype.

    Floating tensors pass through untouched. Integer, boolean and array-like input
    becomes float64 (as numpy would), or takes the dtype and device of ``like``.
    Complex input is rejected.
    """
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:  # through numpy, so Python floats become float64, never float32
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a tensor or array-like of numbers, got "
                            f"{type(x).__name__}") from err
    if t.is_complex():
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    if like is not None:
        return t.to(dtype=like.dtype, device=like.device)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def check_positive(value, name: str) -> float:
    """A positive finite number (a tolerance, a strength); ``ValueError`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from err
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return v


def check_nonneg(value, name: str) -> float:
    """A finite number >= 0 (a strength, a radius, a weight); ``ValueError`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}") from err
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return v


def check_positive_int(value, name: str) -> int:
    """A positive integer (an iteration budget, a block size); ``ValueError`` otherwise.

    Booleans, floats (even integral ones such as ``10.0``), NaN and infinity are rejected,
    so ``max_iter=math.inf`` is a clear error rather than an ``OverflowError``.
    """
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value, is_int = int(value), True
    if not is_int or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_tol(tol, dtype: torch.dtype, float64: float, float32: float) -> float:
    """A solver's relative tolerance: ``tol``, or when it is None the default for ``dtype``
    (float64 certifies far tighter than float32); ``ValueError`` unless positive."""
    if tol is None:
        tol = float64 if dtype == torch.float64 else float32
    return check_positive(tol, "tol")


def check_loop_options(tol, max_iter, check_every, dtype: torch.dtype, float64: float,
                       float32: float) -> tuple[float, int, int]:
    """``(tol, max_iter, check_every)`` of an iterative solver that checks its certificate
    every ``check_every`` iterations, validated, with :func:`check_tol`'s defaults."""
    return (check_tol(tol, dtype, float64, float32), check_positive_int(max_iter, "max_iter"),
            check_positive_int(check_every, "check_every"))


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` if ``t`` holds NaN or infinity.

    A finite sum proves every entry finite (NaN and infinities propagate through it), in
    one pass and no temporary; only a non-finite sum (an overflow, or a bad entry) needs
    the entrywise check.
    """
    if t.is_floating_point() and bool(torch.isfinite(t.sum())):
        return t
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def check_ndim(t: torch.Tensor, name: str, ndims: tuple[int, ...]) -> torch.Tensor:
    """Raise ``ValueError`` unless ``t.ndim`` is one of ``ndims``."""
    if t.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    return t


def check_matrix(X, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Convert and validate a non-empty, finite 2-D matrix."""
    X = check_ndim(as_float_tensor(X, name, like=like), name, (2,))
    if min(X.shape) == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(X.shape)}")
    return check_finite(X, name)


def check_strength(value, name: str, like: torch.Tensor, *, positive: bool = False,
                   ndims: tuple[int, ...] = (0,)) -> torch.Tensor:
    """Validate a regularization strength (scalar or, with ``ndims=(1,)``, a list).

    Returns a tensor on ``like``'s device and dtype. Raises ``ValueError`` if a value
    is negative (or zero with ``positive=True``), NaN or infinite, or has the wrong
    number of dimensions.
    """
    t = as_float_tensor(value, name, like=like)
    check_ndim(t, name, ndims)
    if t.ndim == 1 and t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    check_finite(t, name)
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{name} must be > 0, got {_show(t)}")
    if bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got {_show(t)}")
    return t


def check_data(X, y, *, X_name: str = "X", y_name: str = "y"):
    """Validate a design matrix ``X`` (n, p) and response ``y`` (n,) or (n, k).

    ``y`` is converted to ``X``'s dtype and device. Returns ``(X, y)``.
    """
    X = check_matrix(X, X_name)
    y = as_float_tensor(y, y_name, like=X)
    check_ndim(y, y_name, (1, 2))
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{y_name} must have {X.shape[0]} rows (one per row of {X_name}), "
                         f"got shape {tuple(y.shape)}")
    check_finite(y, y_name)
    return X, y


def check_symmetric(A: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` unless ``A`` is square (last two dims) and symmetric."""
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(A.shape)}")
    if A.numel() == 0:
        return A
    scale = A.abs().amax()
    tol = 100 * torch.finfo(A.dtype).eps * max(float(scale), 1.0)
    if float((A - A.mT).abs().amax()) > tol:
        raise ValueError(f"{name} must be symmetric")
    return A


def warn_not_converged(message: str) -> None:
    """Emit a :class:`ConvergenceWarning` attributed to the first caller outside regref.

    The stack level is found by walking the frames, so a warning raised deep inside a
    solver (or through a ``torch.no_grad`` decorator) points at the user's line.
    """
    import inspect
    import os
    import warnings

    here = os.path.dirname(os.path.abspath(__file__))
    skip = (here, os.path.dirname(os.path.abspath(torch.__file__)))
    frame, level = inspect.currentframe(), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ConvergenceWarning, stacklevel=level)


def check_generator(generator, name: str = "generator"):
    """``None`` or a CPU ``torch.Generator``; ``TypeError``/``ValueError`` otherwise.

    regref draws every random number on the CPU and then moves it to the data's device,
    so the same seed gives the same numbers on every device.
    """
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU torch.Generator (regref draws on the CPU "
                         f"and moves the draws to the data's device), got one on "
                         f"{generator.device}")
    return generator


def randn(shape, generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws of ``shape``, made on the CPU with ``generator`` and moved to
    ``like``'s device and dtype (so results do not depend on the device)."""
    z = torch.randn(tuple(shape), generator=check_generator(generator), dtype=torch.float64)
    return z.to(dtype=like.dtype, device=like.device)


def gram(X: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    r""":math:`X^\top X` from its upper block triangle, mirrored: 5/8 of the flops of one GEMM
    for 4 blocks. torch has no symmetric rank-k update (BLAS ``syrk``, which numpy uses for
    ``X.T @ X``); for :math:`XX^\top` pass ``X.mT``."""
    p = X.shape[1]
    edges = [p * i // blocks for i in range(blocks + 1)]
    G = X.new_empty(p, p)
    for i in range(blocks):
        a, b = edges[i], edges[i + 1]
        block = X[:, a:b].mT @ X[:, a:]
        G[a:b, a:] = block
        G[b:, a:b] = block[:, b - a:].mT
    return G


def soft(x: torch.Tensor, tau) -> torch.Tensor:
    """Soft thresholding ``sign(x) * max(|x| - tau, 0)`` without validation: the fast
    path for use inside iterations (``prox.soft_threshold`` is the validated one)."""
    return torch.sign(x) * torch.clamp(x.abs() - tau, min=0)


def power_iteration(matvec, v: torch.Tensor, n_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_iter`` steps of power iteration on a symmetric positive semi-definite operator.

    ``v`` has shape ``(..., n)`` (a batch of start vectors) and ``matvec`` maps such a
    batch to its image. Returns ``(sigma, v)``: the Rayleigh quotients (an estimate of the
    top eigenvalue from below) and the last unit vectors. No host synchronization.
    """
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    for _ in range(n_iter):
        w = matvec(v)
        v = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(
            torch.finfo(v.dtype).tiny)
    return (v * matvec(v)).sum(-1), v


def fista(gradient, prox, gap, W, step, target, max_iter: int, check_every: int = 10,
          stall: int = 30):
    r"""Batched FISTA with gradient restart, stopped on a certificate. The part to copy.

    Minimizes :math:`f(w) + g(w)` for every column of ``W`` at once (one problem per
    column), :math:`f` smooth with an :math:`L`-Lipschitz gradient and ``step`` at most
    :math:`1/L` (a scalar or one step per column). ``gradient(Z)`` is :math:`\nabla f`
    at each column of ``Z``; ``prox(V, step)`` is :math:`\operatorname{prox}_{step\,g}`;
    ``gap(W)`` is a per-column upper bound on :math:`F(w) - F^\star` (a duality gap),
    computed every ``check_every`` steps. The momentum restarts whenever it points
    against the last step (O'Donoghue and Candes, 2015). A column is done when its gap
    is at most ``target`` or has not improved by 1% in ``stall`` checks (rounding); a
    done column is frozen. Stops when all are done or after ``max_iter`` steps (the gap
    is checked after the last one). Returns
    ``(W, gaps, n_iter)``; the gaps are those of the returned ``W``. No validation, and
    one host synchronization per check.
    """
    Z, t = W.clone(), torch.ones_like(target, dtype=W.dtype)
    best = torch.full_like(target, math.inf)
    checks_since_best = torch.zeros_like(target)
    active = torch.ones_like(target, dtype=torch.bool)
    gaps, n_iter = None, 0
    while n_iter < max_iter and bool(active.any()):
        steps = min(check_every, max_iter - n_iter)  # max_iter is a hard budget
        for _ in range(steps):
            W_new = torch.where(active, prox(Z - step * gradient(Z), step), W)
            restart = ((Z - W_new) * (W_new - W)).sum(0) > 0
            t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
            momentum = torch.where(restart, 0.0, (t - 1) / t_new)
            Z = W_new + momentum * (W_new - W)
            W, t = W_new, torch.where(restart, 1.0, t_new)
        n_iter += steps
        gaps = gap(W)
        improved = gaps < 0.99 * best
        best = torch.where(improved, gaps, best)
        checks_since_best = torch.where(improved, 0, checks_since_best + 1)
        active = (gaps > target) & (checks_since_best < stall)
    return W, gaps, n_iter


def _show(t: torch.Tensor) -> str:
    vals = t.flatten()[:5].tolist()
    more = ", ..." if t.numel() > 5 else ""
    return "[" + ", ".join(f"{v:g}" if math.isfinite(v) else str(v) for v in vals) + more + "]" \
        if t.ndim else f"{t.item():g}"
