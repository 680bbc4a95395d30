r"""Low rank, spectra and orthogonality: nuclear norm, SVT, soft-impute, spectral norms.

* :func:`nuclear_norm` and its prox :func:`svt` (singular value thresholding), batched;
* :func:`soft_impute` / :func:`soft_impute_path`: nuclear-norm matrix completion

  .. math:: \min_Z \tfrac12\|P_\Omega(Y - Z)\|_F^2 + \lambda\|Z\|_*,

  with the iterate kept as factors :math:`U\operatorname{diag}(s)V^\top` and the observed
  entries as index lists, so that no dense :math:`m\times n` array is formed for sparse
  input; certified by a duality gap;
* :func:`spectral_norm` (batched power iteration), :func:`conv_singular_values` and
  :func:`conv_spectral_norm` (exact for circular padding, an upper bound for zero padding);
* :func:`newton_schulz` (the orthogonal polar factor without an SVD),
  :func:`orthogonality_penalty` and :func:`hyperspherical_energy`.

Derivations: chapter 05.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import NamedTuple

import torch

from ._core import (
    Info,
    as_float_tensor,
    check_finite,
    check_generator,
    check_ndim,
    check_positive_int,
    check_strength,
    check_tol,
    power_iteration,
    randn,
    warn_not_converged,
)

__all__ = [
    "nuclear_norm",
    "svt",
    "Factors",
    "soft_impute",
    "soft_impute_path",
    "spectral_norm",
    "conv_singular_values",
    "conv_spectral_norm",
    "newton_schulz",
    "orthogonality_penalty",
    "hyperspherical_energy",
]

_CHECK_EVERY = 5  # soft-impute iterations between two duality-gap checks
_EXACT_MAX = 10**6  # up to m * n entries, ||R||_2 of the certificate by a dense SVD
_GRAM_MAX = 8192  # above, up to min(m, n), by Gram iteration on the smaller Gram matrix
_GRAM_STEPS = 40  # at most this many Gram squarings (it stops when the bound is flat)
_SCREEN_MIN = 10**5  # above m * n, the costly bound is screened by a power estimate
_DENSE_MAX = 2**24  # up to m * n entries (128 MB in float64), the residual may be dense
_DENSE_OBSERVED = 0.04  # ... and is, from this fraction observed (crossover 3-5%, measured)
_POWER_STEPS = 20  # power steps of the estimate of ||R||_2
_SPECTRAL_CHECK = 10  # power steps of spectral_norm between two checks


def _batched_matrix(W, name: str) -> torch.Tensor:
    W = check_finite(as_float_tensor(W, name), name)
    if W.ndim < 2 or min(W.shape[-2:]) == 0:
        raise ValueError(f"{name} must be a non-empty matrix or a batch of matrices (..., m, n), "
                         f"got shape {tuple(W.shape)}")
    return W


# ----------------------------------------------------------------------------- nuclear norm, SVT

def nuclear_norm(W) -> torch.Tensor:
    r"""Nuclear norm :math:`\|W\|_* = \sum_i s_i(W)`, batched over leading dimensions.

    It is the convex envelope of the rank on the spectral-norm unit ball and equals
    :math:`\min_{AB = W} \tfrac12(\|A\|_F^2 + \|B\|_F^2)`. Cost: one SVD.

    Parameters
    ----------
    W : tensor of shape (..., m, n)
        A matrix or a batch of matrices (finite, non-empty).

    Returns
    -------
    tensor of shape ``W.shape[:-2]``
        The sum of the singular values of each matrix.

    Notes
    -----
    Derived in chapter 05 (the nuclear norm and its variational form).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> W = torch.tensor([[3.0, 0.0], [0.0, -4.0]], dtype=torch.float64)
    >>> float(lowrank.nuclear_norm(W))
    7.0
    """
    return torch.linalg.svdvals(_batched_matrix(W, "W")).sum(-1)


def svt(Y, tau) -> torch.Tensor:
    r"""Singular value thresholding, the prox of :math:`\tau\|\cdot\|_*`.

    .. math:: \operatorname{svt}(Y, \tau) = \arg\min_Z \tfrac12\|Z - Y\|_F^2 + \tau\|Z\|_*
              = U\operatorname{diag}\bigl((s_i - \tau)_+\bigr)V^\top

    for :math:`Y = U\operatorname{diag}(s)V^\top`. Cost: one (batched) thin SVD.

    Parameters
    ----------
    Y : tensor of shape (m, n) or (..., m, n)
        A matrix or a batch of matrices (finite, non-empty).
    tau : float or tensor of shape ``Y.shape[:-2]``
        The threshold(s), >= 0: one for all matrices or one per matrix (converted to
        ``Y``'s dtype and device).

    Returns
    -------
    tensor of the shape of ``Y``
        The thresholded matrices.

    Notes
    -----
    Derived in chapter 05 (the nuclear norm and its prox).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> Y = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    >>> lowrank.svt(Y, 2.0)
    tensor([[1., 0.],
            [0., 0.]], dtype=torch.float64)
    """
    Y = _batched_matrix(Y, "Y")
    tau = check_strength(tau, "tau", Y, ndims=(0, Y.ndim - 2))
    if tau.ndim and tuple(tau.shape) != tuple(Y.shape[:-2]):
        raise ValueError(f"tau must be a scalar or have shape {tuple(Y.shape[:-2])}, "
                         f"got {tuple(tau.shape)}")
    U, s, Vh = torch.linalg.svd(Y, full_matrices=False)
    s = (s - tau[..., None]).clamp(min=0)
    return (U * s[..., None, :]) @ Vh


# ----------------------------------------------------------------------------- soft-impute

class Factors(NamedTuple):
    r"""A low-rank matrix :math:`U\operatorname{diag}(s)V^\top`, kept as its factors.

    :func:`soft_impute` returns one for sparse input, so that no :math:`m\times n` array is
    formed; :meth:`dense` forms it when it fits in memory.

    Parameters
    ----------
    U : tensor of shape (m, r)
        Left factor (orthonormal columns for the output of :func:`soft_impute`).
    s : tensor of shape (r,)
        Nonnegative weights (the singular values of the matrix).
    V : tensor of shape (n, r)
        Right factor.

    Examples
    --------
    >>> import torch
    >>> F = Factors(torch.eye(3, 1), torch.tensor([2.0]), torch.ones(2, 1))
    >>> F.dense()
    tensor([[2., 2.],
            [0., 0.],
            [0., 0.]])
    >>> F.at(torch.tensor([0, 1]), torch.tensor([1, 1]))
    tensor([2., 0.])
    """

    U: torch.Tensor
    s: torch.Tensor
    V: torch.Tensor

    def dense(self) -> torch.Tensor:
        """The (m, n) matrix (only for matrices that fit in memory)."""
        return (self.U * self.s) @ self.V.mT

    def at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The entries at ``(rows[k], cols[k])``, without forming the matrix."""
        return ((self.U[rows] * self.s) * self.V[cols]).sum(-1)


def _soft_impute_kernel(rows, cols, y, shape, lam, U, s, V, k, tol, max_iter, check_every,
                        generator, residual_norm, screen=None, dense=False):
    r"""The part to copy: accelerated soft-impute on the observed entries ``y`` at
    ``(rows, cols)`` of an ``shape = (m, n)`` matrix,

    .. math:: \min_Z \tfrac12\|P_\Omega(Y - Z)\|_F^2 + \lambda\|Z\|_*,

    with :math:`Z = U\operatorname{diag}(s)V^\top` kept as factors (start: ``U, s, V``).
    A proximal-gradient step :math:`Z \leftarrow \operatorname{svt}(P_\Omega(Y) +
    P_\Omega^\perp(W), \lambda)` at the extrapolated point W (FISTA, momentum restarted
    when the objective rises), its SVT by one step of subspace iteration on ``k`` columns.
    ``residual_norm(r)`` bounds :math:`\|R\|_2` from above for the residual with values
    ``r`` on :math:`\Omega`, so that :math:`aR` with :math:`a = \min(1, \lambda/\|R\|_2)`
    is dual feasible; ``screen(r)``, if given, is a cheap estimate of it from below, used to
    skip the costly bound while the estimated gap is still above ``tol``. Stops when the
    duality gap is at most ``tol`` times the objective at zero. Returns ``(U, s, V, k,
    n_iter, gap / objective at zero)``, the gap computed with ``residual_norm``. Its
    momentum is not :func:`regref._core.fista`'s: that one updates dense columns, while
    here the iterate and the extrapolated point stay factors. With ``dense``, the residual
    :math:`P_\Omega(R)` is spread into an :math:`m \times n` matrix and the products are
    GEMMs (:math:`O(mnk)` flops at BLAS speed instead of :math:`O(|\Omega|k)` gathers):
    faster once a few percent of the entries are observed, at :math:`mn` memory.
    """
    (m, n), oversample = shape, 5
    if dense:
        flat = rows * n + cols
        def spread(r):  # P_Omega(R) as an (m, n) matrix, for the residual R with values r
            return r.new_zeros(m * n).index_put_((flat,), r).view(m, n)
        def at(U, s, V):  # the entries of U diag(s) V^T on Omega
            return ((U * s) @ V.mT).view(-1)[flat]
        def times(R, Q):  # P_Omega(R) @ Q
            return R @ Q
        def times_t(R, P):  # P_Omega(R)^T @ P
            return R.mT @ P
    else:  # P_Omega(R) kept as its values r on Omega
        def spread(r):
            return r
        def at(U, s, V):
            return ((U[rows] * s) * V[cols]).sum(-1)
        def times(r, Q):
            return Q.new_zeros(m, Q.shape[1]).index_add_(0, rows, r[:, None] * Q[cols])
        def times_t(r, P):
            return P.new_zeros(n, P.shape[1]).index_add_(0, cols, r[:, None] * P[rows])
    def dot(a, b):  # inner products in float64
        return float(a.double() @ b.double())
    def draw(j):  # random columns, drawn on the CPU
        return torch.randn(n, j, generator=generator, dtype=torch.float64).to(y)
    f0, r = 0.5 * dot(y, y), y - at(U, s, V)
    f_old, t, gap, n_iter = 0.5 * dot(r, r) + lam * float(s.sum()), 1.0, math.inf, 0
    Uw, sw, Vw = U, s, V  # the extrapolated point W
    B = torch.cat([V, draw(max(k - V.shape[1], 0))], 1)[:, :k]
    while n_iter < max_iter:
        n_iter += 1
        rw = spread(y - at(Uw, sw, Vw))  # the filled matrix is X = P_Omega(Y - W) + W
        Q = torch.linalg.qr(times(rw, B) + (Uw * sw) @ (Vw.mT @ B)).Q  # range of X B
        QtX = (times_t(rw, Q) + (Vw * sw) @ (Uw.mT @ Q)).mT
        Ub, sig, Vbt = torch.linalg.svd(QtX, full_matrices=False)
        keep = int((sig > lam).sum())
        U_new, s_new, V_new = Q @ Ub[:, :keep], sig[:keep] - lam, Vbt[:keep].mT
        k = min(2 * k, m, n) if keep == k else min(k, keep + oversample)  # grow or shrink
        B = torch.cat([Vbt.mT, draw(max(k - Vbt.shape[0], 0))], 1)[:, :k]
        r = y - at(U_new, s_new, V_new)
        f_new = 0.5 * dot(r, r) + lam * float(s_new.sum())
        t = 1.0 if f_new > f_old else t  # restart the momentum
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_new  # W = Z_new + beta (Z_new - Z), as factors
        Uw, Vw = torch.cat([U_new, U], 1), torch.cat([V_new, V], 1)
        sw = torch.cat([(1 + beta) * s_new, -beta * s])
        U, s, V, t, f_old = U_new, s_new, V_new, t_new, f_new
        if n_iter % check_every == 0 or n_iter == max_iter:
            for norm in (screen, residual_norm) if screen else (residual_norm,):
                a = min(1.0, lam / max(norm(r), 1e-300))  # theta = a R, dual feasible
                gap = f_new - (a * dot(y, r) - 0.5 * a * a * dot(r, r))
                if gap > tol * f0 and n_iter < max_iter:  # not yet: skip the costly bound
                    break
            if gap <= tol * f0 and norm is residual_norm:
                break
    return U, s, V, k, n_iter, gap / f0


def _matvec(rows, cols, r, v, size):
    """P_Omega(R) v (or its transpose, with rows and cols swapped) for a vector v."""
    return v.new_zeros(size).index_add_(0, rows, r * v[cols])


def _residual_matrix(rows, cols, r, shape):
    """The (m, n) matrix with values ``r`` at ``(rows, cols)`` and zeros elsewhere."""
    return r.new_zeros(shape).index_put_((rows, cols), r)


def _norm_exact(rows, cols, shape):
    """||R||_2 of the residual by a dense SVD in float64, inflated by 4 min(m, n) machine
    epsilons (relative) to cover the rounding of the SVD: an upper bound."""
    inflate = 1 + 4 * min(shape) * torch.finfo(torch.float64).eps

    def norm(r):
        R = _residual_matrix(rows, cols, r.double(), shape)
        return float(torch.linalg.matrix_norm(R, 2)) * inflate
    return norm


def _norm_gram(rows, cols, shape):
    r"""An upper bound on ||R||_2 by Gram iteration (Delattre et al., 2023), for residuals
    too large for a dense SVD: with :math:`G_0 = R^\top R` (the smaller Gram matrix, from
    the sparse residual) and :math:`G_{t+1} = G_t^2`,

    .. math:: \|R\|_2^2 = \|G_0\|_2 \le \|G_t\|_F^{1/2^t}
              = \|R\|_2^2\,\Big(\sum_i (\sigma_i/\sigma_1)^{2^{t+1}}\Big)^{1/2^{t+1}},

    which decreases to :math:`\|R\|_2^2` doubly exponentially once :math:`2^t` exceeds
    :math:`1/(1-\sigma_2/\sigma_1)`. Each iterate is divided by its Frobenius norm (the
    logarithms of the scales are kept) so nothing overflows. Memory :math:`\min(m, n)^2`,
    cost :math:`\min(m,n)^3` per squaring. Inflated like :func:`_norm_exact` to cover
    rounding."""
    m, n = shape
    side = 1 if n <= m else 0  # G is (n, n) when n <= m, else (m, m)
    inflate = 1 + 4 * min(shape) * torch.finfo(torch.float64).eps

    def norm(r):
        # indices validated by _observed: in range and without duplicates
        R = torch.sparse_coo_tensor(torch.stack([rows, cols]), r.double(), shape,
                                    check_invariants=False)
        with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice
            warnings.simplefilter("ignore", UserWarning)
            G = (R.t() @ R if side else R @ R.t()).to_dense()
        log_scale, best = 0.0, math.inf  # G_0^(2^t) = exp(log_scale) * G
        for t in range(_GRAM_STEPS):
            f = float(torch.linalg.matrix_norm(G))
            if f == 0.0:
                return 0.0
            bound = math.exp((log_scale + math.log(f)) / 2 ** (t + 1))  # >= ||R||_2
            if bound >= best * (1 - 1e-15):
                break
            best = bound
            G = G / f
            G = G @ G
            log_scale = 2 * (log_scale + math.log(f))
        return best * inflate
    return norm


def _norm_estimate(rows, cols, shape, generator, dense=False):
    """||R||_2 estimated from below by power iteration (large problems only); with ``dense``,
    on the residual spread into an (m, n) matrix (GEMVs instead of gathers)."""
    m, n = shape
    def norm(r):
        v = torch.randn(n, generator=generator, dtype=torch.float64).to(r)
        if dense:
            R = _residual_matrix(rows, cols, r, shape)
            gram = lambda v: R.mT @ (R @ v)  # noqa: E731
        else:
            gram = lambda v: _matvec(cols, rows, r, _matvec(rows, cols, r, v, m), n)  # noqa: E731
        theta, _ = power_iteration(gram, v, _POWER_STEPS)
        return math.sqrt(max(float(theta), 0.0))
    return norm


def _observed(Y, mask):
    """Validate the data of :func:`soft_impute`: ``(rows, cols, y, shape, dense)``."""
    if isinstance(Y, tuple):  # (rows, cols, values, shape)
        if mask is not None or len(Y) != 4:
            raise ValueError("Y as a tuple must be (rows, cols, values, shape), with mask=None")
        rows, cols, y, shape = Y
        y = check_finite(check_ndim(as_float_tensor(y, "Y values"), "Y values", (1,)),
                         "Y values")
        rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
        if rows.is_floating_point() or cols.is_floating_point() or rows.dtype == torch.bool:
            raise ValueError(f"Y rows and cols must be integer tensors, got {rows.dtype} "
                             f"and {cols.dtype}")
        rows, cols = rows.to(y.device).long(), cols.to(y.device).long()
        shape = tuple(int(v) for v in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"Y shape must be (m, n) with m, n >= 1, got {shape}")
        if rows.shape != y.shape or cols.shape != y.shape:
            raise ValueError("Y rows, cols and values must have the same length")
        if y.numel() and (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0]
                          or cols.max() >= shape[1]):
            raise ValueError(f"Y rows / cols out of range for shape {shape}")
        if torch.unique(rows * shape[1] + cols).numel() != rows.numel():
            raise ValueError("Y has duplicate (row, col) entries")
        return rows, cols, y, shape, False
    if isinstance(Y, torch.Tensor) and Y.layout == torch.sparse_coo:
        if mask is not None:
            raise ValueError("Y as a sparse tensor carries its own mask: pass mask=None")
        if Y.ndim != 2:
            raise ValueError(f"Y must be a 2-D sparse tensor, got shape {tuple(Y.shape)}")
        Y = Y.coalesce()
        return _observed((Y.indices()[0], Y.indices()[1], Y.values(), tuple(Y.shape)), None)
    Y = check_ndim(as_float_tensor(Y, "Y"), "Y", (2,))
    if min(Y.shape) == 0:
        raise ValueError(f"Y must be non-empty, got shape {tuple(Y.shape)}")
    if mask is None:
        raise ValueError("mask is required for a dense Y (bool, True = observed)")
    mask = torch.as_tensor(mask, device=Y.device)
    if mask.dtype != torch.bool or mask.shape != Y.shape:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(Y.shape)}, got "
                         f"{mask.dtype} of shape {tuple(mask.shape)}")
    rows, cols = mask.nonzero(as_tuple=True)
    return rows, cols, check_finite(Y[rows, cols], "Y (observed entries)"), tuple(Y.shape), True


def _impute_path(Y, mask, lams, lam_name, tol, max_iter, rank, generator):
    """Validate, then run the kernel from the largest strength down. Returns the result in
    the caller's order of ``lams`` and one Info (worst case over the path)."""
    rows, cols, y, shape, dense = _observed(Y, mask)
    tol = check_tol(tol, y.dtype, 1e-12, 1e-6)
    max_iter = check_positive_int(max_iter, "max_iter")
    rank = min(check_positive_int(rank, "rank"), *shape)
    generator = check_generator(generator)
    lams = check_strength(lams, lam_name, y, ndims=(0,) if lam_name == "lam" else (1,))
    lams = lams.reshape(-1)
    m, n = shape
    dense_residual = m * n <= _DENSE_MAX and len(y) >= _DENSE_OBSERVED * m * n
    estimate = _norm_estimate(rows, cols, shape, generator, dense_residual)
    if m * n <= _EXACT_MAX:
        norm = _norm_exact(rows, cols, shape)
    elif min(m, n) <= _GRAM_MAX:
        norm = _norm_gram(rows, cols, shape)
    else:
        norm = estimate
    screen = estimate if _SCREEN_MIN < m * n and norm is not estimate else None
    U, s, V = y.new_zeros(m, 0), y.new_zeros(0), y.new_zeros(n, 0)
    out: list = [None] * len(lams)
    k, worst_iter, worst_gap = rank, 0, 0.0
    for i in torch.argsort(lams, descending=True).tolist():
        if y.numel() == 0 or not bool(y.any()):  # P_Omega Y = 0: Z = 0 is optimal
            U, s, V, it, gap = y.new_zeros(m, 0), y.new_zeros(0), y.new_zeros(n, 0), 0, 0.0
        else:
            U, s, V, k, it, gap = _soft_impute_kernel(rows, cols, y, shape, float(lams[i]), U,
                                                      s, V, k, tol, max_iter, _CHECK_EVERY,
                                                      generator, norm, screen, dense_residual)
        out[i] = Factors(U, s, V)
        worst_iter, worst_gap = max(worst_iter, it), max(worst_gap, gap)
    info = Info(worst_iter, worst_gap <= tol, worst_gap)
    if not info.converged:
        warn_not_converged(f"soft_impute stopped at max_iter={max_iter} with relative duality "
                           f"gap {worst_gap:.2e} > tol={tol:.1e}")
    return (torch.stack([f.dense() for f in out]) if dense else out), info




def soft_impute(Y, mask, lam, *, tol=None, max_iter=5000, rank=10, generator=None,
                return_info=False):
    r"""Nuclear-norm matrix completion (soft-impute).

    .. math:: \min_Z\ \tfrac12\|P_\Omega(Y - Z)\|_F^2 + \lambda\|Z\|_*,

    :math:`\Omega` the observed entries. **Algorithm** (Mazumder, Hastie & Tibshirani,
    accelerated): proximal gradient with step 1, :math:`Z \leftarrow
    \operatorname{svt}(P_\Omega(Y) + P_\Omega^\perp(W), \lambda)` at an extrapolated point
    :math:`W` (FISTA, momentum restarted when the objective rises). The filled matrix is
    :math:`P_\Omega(Y - W) + W`, a sparse plus a low-rank matrix, so each SVT is computed
    inexactly by one step of subspace iteration warm-started from the previous right
    factor (rank grown while every computed singular value exceeds :math:`\lambda`). The
    method is an inexact proximal gradient; what proves the answer is the certificate.
    **Cost** per iteration, subspace size :math:`k`: :math:`O(|\Omega|k + (m + n)k^2)`;
    nothing of size :math:`mn` for sparse input, except the certificate of small problems.

    **Certificate**: the duality gap at the returned point. With :math:`R = P_\Omega(Y -
    Z)` and :math:`a = \min(1, \lambda/\|R\|_2)`, :math:`\theta = aR` is feasible for the
    dual :math:`\max_\theta \langle Y, \theta\rangle - \tfrac12\|\theta\|_F^2` s.t.
    :math:`\|\theta\|_2 \le \lambda`, :math:`\theta` supported on :math:`\Omega`, so
    primal minus dual bounds the suboptimality. :math:`\|R\|_2` is bounded from above (to
    rounding, so the certificate is a proof) by a dense SVD when :math:`mn \le 10^6`, and
    by Gram iteration on the smaller Gram matrix when :math:`\min(m, n) \le 8192`
    (memory :math:`\min(m,n)^2`, about a dozen :math:`\min(m,n)^3` squarings per check).
    Beyond both it is **estimated** by power iteration (from below), and the certificate
    is then an estimate, not a proof. Checked every 5 iterations.

    Parameters
    ----------
    Y : tensor of shape (m, n), sparse COO tensor, or tuple
        The data: a dense (m, n) tensor with ``mask``; or a 2-D sparse COO tensor, or a
        tuple ``(rows, cols, values, shape)`` of integer indices, values and the shape, with
        ``mask=None`` (the stored entries are the observed ones).
    mask : bool tensor of shape (m, n) or None
        True = observed, for a dense ``Y`` (moved to ``Y``'s device); None for sparse ``Y``.
    lam : float
        The strength :math:`\lambda \ge 0`.
    tol : float, optional
        Stop when the duality gap is at most ``tol`` times the objective at zero,
        :math:`\tfrac12\|P_\Omega Y\|_F^2`. Default 1e-12 in float64, 1e-6 in float32.
    max_iter : int, default 5000
        Most proximal-gradient iterations for each strength (each one SVT step).
    rank : int, default 10
        Initial number of columns of the subspace (grown as needed).
    generator : torch.Generator, optional
        CPU generator for the random columns of the subspace (drawn on the CPU, then moved
        to ``Y``'s device, so results do not depend on the device).
    return_info : bool, default False
        Also return a :class:`regref.Info`.

    Returns
    -------
    Z : tensor of shape (m, n) or Factors
        The minimizer: a dense tensor when ``Y`` is dense, :class:`Factors` ``(U, s, V)``
        when ``Y`` is sparse (COO tensor or tuple), so that no :math:`m\times n` array is
        formed; ``Factors.dense()`` gives the tensor. The return type follows the input
        type.
    info : Info
        With ``return_info=True``: ``n_iter`` iterations, ``certificate`` the duality gap
        divided by the objective at zero, ``converged == (certificate <= tol)``.

    Warns
    -----
    ConvergenceWarning
        If ``max_iter`` iterations do not bring the gap below ``tol``.

    Notes
    -----
    Derived in chapter 05 (soft-impute and its duality gap).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> g = torch.Generator().manual_seed(0)
    >>> truth = torch.randn(30, 2, generator=g, dtype=torch.float64) @ torch.randn(
    ...     2, 20, generator=g, dtype=torch.float64)
    >>> mask = torch.rand(30, 20, generator=g) < 0.6
    >>> Z, info = lowrank.soft_impute(truth, mask, 0.5, generator=g, return_info=True)
    >>> info.converged, int(torch.linalg.matrix_rank(Z))
    (True, 2)
    >>> round(float((Z - truth).norm() / truth.norm()), 2)
    0.06
    """
    res, info = _impute_path(Y, mask, lam, "lam", tol, max_iter, rank, generator)
    Z = res[0]
    return (Z, info) if return_info else Z


def soft_impute_path(Y, mask, lams, *, tol=None, max_iter=5000, rank=10, generator=None,
                     return_info=False):
    r""":func:`soft_impute` for each strength in ``lams``, warm-started from strong to weak.

    Solves :math:`\min_Z \tfrac12\|P_\Omega(Y - Z)\|_F^2 + \lambda\|Z\|_*` for every
    :math:`\lambda` in ``lams`` (in decreasing order internally, each solve started from
    the previous solution); rows of the result follow the caller's order. Cost: that of
    :func:`soft_impute` per strength, usually far less thanks to the warm starts.

    Parameters
    ----------
    Y : tensor of shape (m, n), sparse COO tensor, or tuple
        The data: a dense (m, n) tensor with ``mask``; or a 2-D sparse COO tensor, or a
        tuple ``(rows, cols, values, shape)`` of integer indices, values and the shape, with
        ``mask=None`` (the stored entries are the observed ones).
    mask : bool tensor of shape (m, n) or None
        True = observed, for a dense ``Y`` (moved to ``Y``'s device); None for sparse ``Y``.
    lams : sequence of float
        The strengths :math:`\lambda \ge 0`.
    tol : float, optional
        Stop when the duality gap is at most ``tol`` times the objective at zero,
        :math:`\tfrac12\|P_\Omega Y\|_F^2`. Default 1e-12 in float64, 1e-6 in float32.
    max_iter : int, default 5000
        Most proximal-gradient iterations for each strength (each one SVT step).
    rank : int, default 10
        Initial number of columns of the subspace (grown as needed).
    generator : torch.Generator, optional
        CPU generator for the random columns of the subspace (drawn on the CPU, then moved
        to ``Y``'s device, so results do not depend on the device).
    return_info : bool, default False
        Also return a :class:`regref.Info`.

    Returns
    -------
    Z : tensor of shape (L, m, n) or list of Factors
        One solution per strength: a tensor for dense ``Y``, a list of :class:`Factors`
        for sparse ``Y``.
    info : Info
        With ``return_info=True``, one Info for the whole path, worst case over the
        strengths: ``n_iter`` the largest number of iterations of one strength (what
        ``max_iter`` limits), ``certificate`` the largest relative duality gap,
        ``converged`` whether every strength converged.

    Warns
    -----
    ConvergenceWarning
        If some strength reaches ``max_iter`` before its gap is below ``tol``.

    Notes
    -----
    Derived in chapter 05 (rank against the strength).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> g = torch.Generator().manual_seed(0)
    >>> truth = torch.randn(30, 2, generator=g, dtype=torch.float64) @ torch.randn(
    ...     2, 20, generator=g, dtype=torch.float64)
    >>> mask = torch.rand(30, 20, generator=g) < 0.6
    >>> Zs, info = lowrank.soft_impute_path(truth, mask, [20.0, 5.0, 0.5], generator=g,
    ...                                     return_info=True)
    >>> [int(torch.linalg.matrix_rank(Z)) for Z in Zs], info.converged
    ([0, 2, 2], True)
    """
    res, info = _impute_path(Y, mask, lams, "lams", tol, max_iter, rank, generator)
    return (res, info) if return_info else res


# ----------------------------------------------------------------------------- spectral norms

def spectral_norm(W, *, tol=None, max_iter=1000, generator=None, return_vectors=False,
                  return_info=False):
    r"""Largest singular value :math:`\|W\|_2 = s_1(W)` by power iteration, batched.

    Iterates :math:`v \leftarrow W^\top W v/\|W^\top W v\|` from a random start on every
    matrix of the batch (..., m, n) at once and returns :math:`\|Wv\|`, an estimate from
    below. If :math:`s_1 > s_2` and the start has a component along the top right singular
    vector (almost surely for a random start), the vector converges at the rate
    :math:`(s_2/s_1)^2` per step and the estimate of :math:`s_1^2` at the rate
    :math:`(s_2/s_1)^4`. Cost: two matrix-vector products per step.

    Parameters
    ----------
    W : tensor of shape (..., m, n)
        A matrix or a batch of matrices.
    tol : float, optional
        Stop when the relative residual :math:`\|W^\top Wv - \theta v\|/\theta`,
        :math:`\theta = \|Wv\|^2`, is at most ``tol`` for every matrix of the batch.
        Default 1e-8 in float64, 1e-4 in float32.
    max_iter : int, default 1000
        Most power steps (products by :math:`W^\top W`); checked every 10 steps.
    generator : torch.Generator, optional
        CPU generator of the random start (drawn on the CPU, moved to ``W``'s device).
    return_vectors : bool, default False
        Also return the singular vectors ``u`` and ``v``.
    return_info : bool, default False
        Also return a :class:`regref.Info` (last).

    Returns
    -------
    sigma : tensor of shape ``W.shape[:-2]``
        The estimates of :math:`s_1`.
    u, v : tensors of shape (..., m) and (..., n)
        With ``return_vectors=True``: unit vectors with :math:`Wv = \sigma u`.
    info : Info
        With ``return_info=True``: ``n_iter`` power steps, ``certificate`` the largest
        relative residual over the batch. It proves that :math:`\sigma^2` is within
        ``certificate`` (relative) of **an** eigenvalue of :math:`W^\top W`; that it is the
        largest one is what the random start makes almost sure, not a proof.

    Warns
    -----
    ConvergenceWarning
        If ``max_iter`` steps do not bring the residual below ``tol``.

    Notes
    -----
    Derived in chapter 05 (spectral norms).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> W = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
    >>> sigma, info = lowrank.spectral_norm(W, generator=torch.Generator().manual_seed(0),
    ...                                     return_info=True)
    >>> round(float(sigma), 8), info.converged
    (3.0, True)
    """
    W = _batched_matrix(W, "W")
    tol = check_tol(tol, W.dtype, 1e-8, 1e-4)
    max_iter = check_positive_int(max_iter, "max_iter")
    v = randn(W.shape[:-2] + W.shape[-1:], check_generator(generator), W)
    tiny = torch.finfo(W.dtype).tiny

    def gram(v):
        return (W.mT @ (W @ v[..., None]))[..., 0]

    n_iter, cert = 0, math.inf
    while n_iter < max_iter:
        steps = min(_SPECTRAL_CHECK, max_iter - n_iter)
        theta, v = power_iteration(gram, v, steps)
        n_iter += steps
        resid = torch.linalg.vector_norm(gram(v) - theta[..., None] * v, dim=-1)
        rel = torch.where(resid == 0, resid, resid / theta.clamp(min=tiny))
        cert = float(rel.max()) if rel.numel() else 0.0
        if cert <= tol:
            break
    if cert > tol:
        warn_not_converged(f"spectral_norm stopped at max_iter={max_iter} with relative "
                           f"residual {cert:.2e} > tol={tol:.1e}")
    u = (W @ v[..., None])[..., 0]
    sigma = torch.linalg.vector_norm(u, dim=-1)
    out = (sigma, u / sigma[..., None].clamp(min=tiny), v) if return_vectors else (sigma,)
    if return_info:
        out = out + (Info(n_iter, cert <= tol, cert),)
    return out if len(out) > 1 else out[0]


def _grid(n) -> tuple[int, int]:
    n = (n, n) if not isinstance(n, (tuple, list)) else tuple(n)
    if len(n) != 2:
        raise ValueError(f"n must be an int or a pair (n1, n2), got {n}")
    return check_positive_int(n[0], "n"), check_positive_int(n[1], "n")


def conv_singular_values(kernel, n) -> torch.Tensor:
    r"""All singular values of a 2-D multi-channel convolution with circular padding.

    For a kernel (c_out, c_in, k1, k2) acting on n1 x n2 images with circular boundary, the
    operator is block-circulant: the 2-D DFT of the zero-padded kernel gives, at each
    frequency :math:`(p, q)`, a matrix :math:`\hat K_{pq} \in \mathbb C^{c_{out}\times c_{in}}`,
    and the singular values of the operator are those of all the :math:`\hat K_{pq}`
    (Sedghi, Gupta & Long, 2019). Cost: an FFT of :math:`c_{out}c_{in}n_1n_2` values and
    :math:`n_1n_2` small SVDs, instead of one SVD of size :math:`c n_1n_2`.

    Parameters
    ----------
    kernel : tensor of shape (..., c_out, c_in, k1, k2)
        Convolution kernels (batched over leading dimensions).
    n : int or (int, int)
        Image size n x n or n1 x n2 (at least the kernel size).

    Returns
    -------
    tensor of shape ``kernel.shape[:-4] + (n1, n2, min(c_out, c_in))``
        The singular values at each frequency, in decreasing order.

    Notes
    -----
    Derived in chapter 05 (spectral norms of convolutions).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> K = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    >>> K[0, 0, 1, 1], K[0, 0, 1, 2] = 1.0, 1.0      # x[i, j] + x[i, j + 1]
    >>> sv = lowrank.conv_singular_values(K, 4)
    >>> sv.shape, round(float(sv.max()), 6), round(float(sv.min()), 6)
    (torch.Size([4, 4, 1]), 2.0, 0.0)
    """
    K = check_finite(as_float_tensor(kernel, "kernel"), "kernel")
    if K.ndim < 4:
        raise ValueError(f"kernel must be (..., c_out, c_in, k1, k2), got shape {tuple(K.shape)}")
    if 0 in K.shape[-4:]:
        raise ValueError(f"kernel must have nonzero sizes, got shape {tuple(K.shape)}")
    n1, n2 = _grid(n)
    if K.shape[-2] > n1 or K.shape[-1] > n2:
        raise ValueError(f"kernel size {tuple(K.shape[-2:])} exceeds the grid {(n1, n2)}")
    Khat = torch.fft.fft2(K, s=(n1, n2))  # (..., c_out, c_in, n1, n2)
    return torch.linalg.svdvals(Khat.movedim((-4, -3), (-2, -1)))


def conv_spectral_norm(kernel, n, padding="circular") -> torch.Tensor:
    r"""Spectral norm of a 2-D convolution layer on n x n (or n1 x n2) images.

    ``padding="circular"``: exact, the largest of :func:`conv_singular_values`.
    ``padding="zeros"``: an **upper bound**. A zero-padded convolution (any padding,
    stride 1) is a restriction :math:`P\,C\,E` of the circular convolution :math:`C` on the
    larger grid :math:`(n_1 + k_1 - 1) \times (n_2 + k_2 - 1)`, where :math:`E` embeds the
    image with zeros and :math:`P` selects the output window, both of norm at most 1; so
    :math:`\|PCE\|_2 \le \|C\|_2`. Cost: that of :func:`conv_singular_values`.

    Parameters
    ----------
    kernel : tensor of shape (..., c_out, c_in, k1, k2)
        Convolution kernels (batched over leading dimensions).
    n : int or (int, int)
        Image size.
    padding : {"circular", "zeros"}, default "circular"
        Boundary condition of the layer.

    Returns
    -------
    tensor of shape ``kernel.shape[:-4]``
        The spectral norms (exact for circular padding, an upper bound for zeros).

    Notes
    -----
    Derived in chapter 05 (spectral norms of convolutions).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> K = torch.ones(1, 1, 3, 3, dtype=torch.float64) / 9     # a 3 x 3 box blur
    >>> round(float(lowrank.conv_spectral_norm(K, 8)), 6)
    1.0
    """
    n1, n2 = _grid(n)
    if padding == "zeros":
        K = as_float_tensor(kernel, "kernel")
        if K.ndim >= 4:
            n1, n2 = n1 + K.shape[-2] - 1, n2 + K.shape[-1] - 1
    elif padding != "circular":
        raise ValueError(f"padding must be 'circular' or 'zeros', got {padding!r}")
    return conv_singular_values(kernel, (n1, n2)).amax(dim=(-3, -2, -1))


# ----------------------------------------------------------------------------- orthogonality

_NS_COEFFS = {"cubic": (1.5, -0.5), "quintic": (15 / 8, -10 / 8, 3 / 8)}


def newton_schulz(W, steps=30, *, order="cubic") -> torch.Tensor:
    r"""Orthogonal polar factor :math:`UV^\top` of :math:`W = U\operatorname{diag}(s)V^\top`
    by Newton–Schulz.

    After scaling :math:`X_0 = W/\|W\|_F` (so every nonzero singular value lies in (0, 1]),
    iterate on :math:`A = X^\top X`

    .. math:: \text{cubic: } X \leftarrow X(\tfrac32 I - \tfrac12 A), \qquad
              \text{quintic: } X \leftarrow X(\tfrac{15}8 I - \tfrac{10}8 A + \tfrac38 A^2),

    which maps each singular value by a polynomial with fixed point 1 (quadratic, resp.
    cubic, convergence near 1); small singular values grow by a factor 1.5 (resp. 1.875)
    per step, so the steps needed grow like :math:`\log(\|W\|_F/s_{\min})`: the stable rank
    and the condition number set the accuracy of a fixed budget. For a rank-deficient
    :math:`W` the limit is the partial isometry :math:`U_rV_r^\top` (zero singular values
    stay zero). Only matrix products: no SVD. Batched over leading dimensions; a wide
    matrix is iterated through its transpose. Cost per step: :math:`O(mn\min(m, n))`.

    Parameters
    ----------
    W : tensor of shape (..., m, n)
        A matrix or a batch of matrices.
    steps : int, default 30
        Number of iterations (>= 0).
    order : {"cubic", "quintic"}, default "cubic"
        The polynomial.

    Returns
    -------
    tensor of shape (..., m, n)
        The approximate polar factor.

    Notes
    -----
    Derived in chapter 05 (Newton–Schulz).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> W = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    >>> torch.round(lowrank.newton_schulz(W, 30), decimals=6)
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    W = _batched_matrix(W, "W")
    if isinstance(steps, bool):
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    try:
        steps = operator.index(steps)
    except TypeError:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}") from None
    if steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps}")
    if order not in _NS_COEFFS:
        raise ValueError(f"order must be 'cubic' or 'quintic', got {order!r}")
    wide = W.shape[-2] < W.shape[-1]
    X = W.mT if wide else W
    norm = torch.linalg.matrix_norm(X, keepdim=True)
    X = X / norm.clamp(min=torch.finfo(W.dtype).tiny)
    c = _NS_COEFFS[order]
    for _ in range(steps):
        A = X.mT @ X
        P = c[1] * A + c[2] * A @ A if len(c) == 3 else c[1] * A
        X = c[0] * X + X @ P
    return X.mT if wide else X


def orthogonality_penalty(W, kind="frobenius") -> torch.Tensor:
    r"""Distance of ``W`` from having orthonormal columns (rows, if ``W`` is wide).

    With :math:`G = W^\top W` (or :math:`WW^\top` for a wide ``W``),

    * ``"frobenius"`` (soft orthogonality): :math:`\|G - I\|_F^2`, gradient
      :math:`4W(W^\top W - I)`;
    * ``"spectral"`` (spectral restricted isometry): :math:`\|G - I\|_2 =
      \max_i |s_i(W)^2 - 1|`.

    Differentiable. Cost: one Gram matrix, plus an SVD of it for ``"spectral"``.

    Parameters
    ----------
    W : tensor of shape (..., m, n)
        A matrix or a batch of matrices.
    kind : {"frobenius", "spectral"}, default "frobenius"
        Which norm of :math:`G - I`.

    Returns
    -------
    tensor of shape ``W.shape[:-2]``
        The penalty.

    Notes
    -----
    Derived in chapter 05 (orthogonality).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    >>> float(lowrank.orthogonality_penalty(W)), float(lowrank.orthogonality_penalty(
    ...     W, "spectral"))
    (9.0, 3.0)
    """
    W = _batched_matrix(W, "W")
    G = W.mT @ W if W.shape[-2] >= W.shape[-1] else W @ W.mT
    D = G - torch.eye(G.shape[-1], dtype=W.dtype, device=W.device)
    if kind == "frobenius":
        return (D * D).sum((-2, -1))
    if kind == "spectral":
        return torch.linalg.matrix_norm(D, ord=2)
    raise ValueError(f"kind must be 'frobenius' or 'spectral', got {kind!r}")


def hyperspherical_energy(W, s=1.0) -> torch.Tensor:
    r"""Hyperspherical energy of the rows of ``W`` (N, d), batched over leading dimensions.

    With :math:`\hat w_i = w_i/\|w_i\|`,

    .. math:: E_s = \sum_{i<j} \|\hat w_i - \hat w_j\|^{-s} \quad (s > 0), \qquad
              E_0 = \sum_{i<j} \log \frac1{\|\hat w_i - \hat w_j\|} .

    For N points on the sphere :math:`S^2` and :math:`s = 1` its minimum is the Thomson
    problem; as a regularizer it spreads the neurons (rows) of a layer (Liu et al., 2018).
    Differentiable; cost :math:`O(N^2 d)`.

    Parameters
    ----------
    W : tensor of shape (..., N, d)
        The points (rows), N >= 2, none zero and no two with the same direction (the
        energy would be infinite: a ``ValueError`` is raised instead).
    s : float, default 1.0
        The exponent, finite and >= 0 (0 = logarithmic energy).

    Returns
    -------
    tensor of shape ``W.shape[:-2]``
        The energy.

    Notes
    -----
    Derived in chapter 05 (minimum hyperspherical energy).

    Examples
    --------
    >>> import torch
    >>> from regref import lowrank
    >>> square = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float64)
    >>> round(float(lowrank.hyperspherical_energy(square)), 6)     # 4/sqrt(2) + 2/2
    3.828427
    """
    W = _batched_matrix(W, "W")
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise ValueError(f"s must be a finite number >= 0, got {s!r}") from None
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"s must be a finite number >= 0, got {s}")
    if W.shape[-2] < 2:
        raise ValueError(f"W must have at least two rows, got shape {tuple(W.shape)}")
    norms = torch.linalg.vector_norm(W, dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("W has a zero row (its direction is undefined)")
    Wn = W / norms
    i, j = torch.triu_indices(W.shape[-2], W.shape[-2], 1, device=W.device)
    dist = torch.linalg.vector_norm(Wn[..., i, :] - Wn[..., j, :], dim=-1)
    if bool((dist == 0).any()):
        raise ValueError("W has two rows with the same direction (infinite energy)")
    return -torch.log(dist).sum(-1) if s == 0 else dist.pow(-s).sum(-1)
