r"""Low rank, spectra and orthogonality: nuclear norm, SVT, soft-impute, spectral norms.

* :func:`nuclear_norm` and its prox :func:`svt` (singular value thresholding), batched;
* :func:`soft_impute` / :func:`soft_impute_path`: nuclear-norm matrix completion

  .. math:: \min_Z \tfrac12\|P_\Omega(Y - Z)\|_F^2 + \lambda\|Z\|_*,

  with the iterate kept as factors :math:`U\operatorname{diag}(d)V^\top` and the observed
  entries as a sparse matrix, so that no dense :math:`m\times n` array is ever formed
  for sparse input; certified by a duality gap;
* :func:`spectral_norm` (batched power iteration), :func:`conv_singular_values` and
  :func:`conv_spectral_norm` (exact for circular padding, an upper bound for zero padding);
* :func:`newton_schulz` (the orthogonal polar factor without an SVD),
  :func:`orthogonality_penalty` and :func:`hyperspherical_energy`.

Derivations: chapter 05.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from ._core import (
    ConvergenceWarning,
    Info,
    as_float_tensor,
    check_finite,
    check_ndim,
    check_positive_int,
    check_strength,
    check_tol,
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

_CHECK_EVERY = 5  # soft-impute iterations between two duality-gap checks (host syncs)
_OVERSAMPLE = 5  # extra columns kept in the subspace beyond the current rank
_POWER_STEPS = 12  # block power steps that estimate ||R||_2 for the certificate


def _batched_matrix(W, name: str) -> torch.Tensor:
    W = check_finite(as_float_tensor(W, name), name)
    if W.ndim < 2 or min(W.shape[-2:]) == 0:
        raise ValueError(f"{name} must be a non-empty matrix or a batch of matrices (..., m, n), "
                         f"got shape {tuple(W.shape)}")
    return W


# ----------------------------------------------------------------------------- nuclear norm, SVT

def nuclear_norm(W) -> torch.Tensor:
    r"""Nuclear norm :math:`\|W\|_* = \sum_i \sigma_i(W)`, batched over leading dimensions.

    It is the convex envelope of the rank on the spectral-norm unit ball and equals
    :math:`\min_{AB = W} \tfrac12(\|A\|_F^2 + \|B\|_F^2)` (chapter 05). Cost: one SVD.

    Returns
    -------
    tensor of shape ``W.shape[:-2]``
    """
    return torch.linalg.svdvals(_batched_matrix(W, "W")).sum(-1)


def svt(Y, tau) -> torch.Tensor:
    r"""Singular value thresholding, the prox of :math:`\tau\|\cdot\|_*`.

    .. math:: \operatorname{svt}(Y, \tau) = \arg\min_Z \tfrac12\|Z - Y\|_F^2 + \tau\|Z\|_*
              = U\operatorname{diag}\bigl((\sigma_i - \tau)_+\bigr)V^\top

    for :math:`Y = U\operatorname{diag}(\sigma)V^\top`. ``Y`` is (m, n) or a batch
    (..., m, n); ``tau`` is a scalar or has shape ``Y.shape[:-2]`` (one strength per
    matrix). Cost: one (batched) thin SVD. Derived in chapter 05.
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
    r"""A low-rank matrix :math:`U\operatorname{diag}(s)V^\top`.

    ``U`` (m, r), ``s`` (r,), ``V`` (n, r).
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


class _Observed(NamedTuple):
    """Observed entries of an (m, n) matrix, sorted by row, with CSR structures for the
    sparse matrix and its transpose (the values change every iteration, the pattern not)."""

    rows: torch.Tensor
    cols: torch.Tensor
    y: torch.Tensor
    shape: tuple[int, int]
    crow: torch.Tensor
    ccol: torch.Tensor  # column pointers of the transpose
    tperm: torch.Tensor  # order of the entries sorted by column

    @classmethod
    def build(cls, rows, cols, y, shape):
        m, n = shape
        order = torch.argsort(rows * n + cols)
        rows, cols, y = rows[order], cols[order], y[order]
        tperm = torch.argsort(cols * m + rows)
        count = lambda idx, k: torch.cat([idx.new_zeros(1),  # noqa: E731
                                          torch.bincount(idx, minlength=k).cumsum(0)])
        return cls(rows, cols, y, (m, n), count(rows, m), count(cols, n), tperm)

    def matmul(self, vals, Q):
        """S @ Q for the sparse S with values ``vals`` on the pattern; Q (n, k)."""
        return _csr(self.crow, self.cols, vals, self.shape) @ Q

    def rmatmul(self, vals, P):
        """S^T @ P; P (m, k)."""
        return _csr(self.ccol, self.rows[self.tperm], vals[self.tperm], self.shape[::-1]) @ P


def _csr(crow, col, vals, shape):
    with warnings.catch_warnings():  # "sparse CSR support is in beta" (a one-time notice)
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, vals, shape, check_invariants=False)


def _observed(Y, mask) -> tuple[_Observed, bool]:
    """Validate the data of :func:`soft_impute`; returns the observed entries and whether the
    input was dense."""
    if isinstance(Y, tuple):  # (rows, cols, values, shape)
        if mask is not None or len(Y) != 4:
            raise ValueError("Y as a tuple must be (rows, cols, values, shape), with mask=None")
        rows, cols, y, shape = Y
        y = check_finite(check_ndim(as_float_tensor(y, "Y values"), "Y values", (1,)), "Y values")
        rows = torch.as_tensor(rows, device=y.device).long()
        cols = torch.as_tensor(cols, device=y.device).long()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"Y shape must be (m, n) with m, n >= 1, got {shape}")
        if rows.shape != y.shape or cols.shape != y.shape:
            raise ValueError("Y rows, cols and values must have the same length")
        if y.numel() and (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0]
                          or cols.max() >= shape[1]):
            raise ValueError(f"Y rows / cols out of range for shape {shape}")
        if torch.unique(rows * shape[1] + cols).numel() != rows.numel():
            raise ValueError("Y has duplicate (row, col) entries")
        dense = False
    elif isinstance(Y, torch.Tensor) and Y.layout == torch.sparse_coo:
        if mask is not None:
            raise ValueError("Y as a sparse tensor carries its own mask: pass mask=None")
        Y = Y.coalesce()
        (rows, cols), y, shape = Y.indices(), Y.values(), tuple(Y.shape)
        return _observed((rows, cols, y, shape), None)
    else:
        Y = as_float_tensor(Y, "Y")
        check_ndim(Y, "Y", (2,))
        if min(Y.shape) == 0:
            raise ValueError(f"Y must be non-empty, got shape {tuple(Y.shape)}")
        if mask is None:
            raise ValueError("mask is required for a dense Y (bool, True = observed)")
        mask = torch.as_tensor(mask, device=Y.device)
        if mask.dtype != torch.bool or mask.shape != Y.shape:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(Y.shape)}, got "
                             f"{mask.dtype} of shape {tuple(mask.shape)}")
        rows, cols = mask.nonzero(as_tuple=True)
        y = check_finite(Y[rows, cols], "Y (observed entries)")
        shape = tuple(Y.shape)
        dense = True
    if not y.is_floating_point():
        y = y.double()
    return _Observed.build(rows, cols, y, shape), dense


def _orth(A):
    return torch.linalg.qr(A).Q


def _spectral_norm_sparse(obs, r, V0):
    """Estimate ||R||_2 of the sparse residual R by block power iteration from V0 (n, k)."""
    V = _orth(V0)
    for _ in range(_POWER_STEPS):
        V = _orth(obs.rmatmul(r, obs.matmul(r, V)))
    return torch.linalg.svdvals(obs.matmul(r, V))[0]


def _gap(obs, r, nuc, lam, norm_R):
    """Primal, dual and gap of soft-impute (module docstring of chapter 05): the dual point is
    theta = a R with a = min(1, lam / ||R||_2). Sums in float64."""
    r64, y64 = r.double(), obs.y.double()
    rr = (r64 * r64).sum()
    primal = 0.5 * rr + lam * float(nuc)
    a = min(1.0, lam / max(float(norm_R), 1e-300))
    dual = a * float(y64 @ r64) - 0.5 * a * a * float(rr)
    return float(primal), float(primal - dual)


def _combine(*terms) -> Factors:
    """The factors of sum_i c_i F_i, for pairs (c_i, F_i), by concatenation."""
    return Factors(torch.cat([F.U for _, F in terms], 1), torch.cat([c * F.s for c, F in terms]),
                   torch.cat([F.V for _, F in terms], 1))


def _inner(F: Factors, G: Factors) -> float:
    """<F, G>_F of two factored matrices in O((m + n) r_F r_G)."""
    return float(((F.U.mT @ G.U) * (F.V.mT @ G.V) * F.s[:, None] * G.s[None, :]).sum())


def _solve_one(obs, lam, Z, k, tol, max_iter, generator):
    """Accelerated soft-impute from the factors Z with a subspace of k columns: a proximal
    gradient step Z <- svt(S + W, lam) at the extrapolated point W (FISTA, with gradient
    restart), whose SVT is one QB step of subspace iteration on the filled matrix
    S + W = P_Omega(Y) + P_Omega^perp(W). Returns (factors, k, n_iter, converged, gap)."""
    m, n = obs.shape
    kmax = min(m, n)
    y = obs.y
    p0 = 0.5 * float((y.double() ** 2).sum())
    rand = lambda j: torch.randn(n, j, dtype=y.dtype, device=y.device,  # noqa: E731
                                 generator=generator)
    Vb = torch.cat([Z.V, rand(max(k - Z.V.shape[1], 0))], 1)[:, :k]
    W, t, gap, n_iter = Z, 1.0, math.inf, 0
    while n_iter < max_iter:
        n_iter += 1
        r = y - W.at(obs.rows, obs.cols)  # S = P_Omega(Y - W): values on Omega only
        Q = _orth(obs.matmul(r, Vb) + (W.U * W.s) @ (W.V.mT @ Vb))  # range of X V
        B = obs.rmatmul(r, Q) + (W.V * W.s) @ (W.U.mT @ Q)  # (Q^T X)^T, n x k
        Ub, sig, Vbt = torch.linalg.svd(B.mT, full_matrices=False)
        r_new = int((sig > lam).sum())
        Z_new = Factors(Q @ Ub[:, :r_new], sig[:r_new] - lam, Vbt[:r_new].mT)
        Vb = Vbt.mT
        if r_new == k and k < kmax:  # every computed value survives: the rank may be larger
            k = min(2 * k, kmax)
            Vb = torch.cat([Vb, rand(k - Vb.shape[1])], 1)
        elif k > r_new + _OVERSAMPLE:
            k = r_new + _OVERSAMPLE
            Vb = Vb[:, :k]
        step = _combine((1.0, Z_new), (-1.0, Z))
        if _inner(_combine((1.0, W), (-1.0, Z_new)), step) > 0:  # restart the momentum
            t = 1.0
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        W = _combine((1.0, Z_new), ((t - 1) / t_new, step))
        Z, t = Z_new, t_new
        if n_iter % _CHECK_EVERY == 0 or n_iter == max_iter:
            r = y - Z.at(obs.rows, obs.cols)
            probe = torch.cat([Z.V, rand(_OVERSAMPLE)], 1)[:, :kmax]
            _, gap = _gap(obs, r, Z.s.sum(), lam, _spectral_norm_sparse(obs, r, probe))
            if gap <= tol * p0:
                return Z, k, n_iter, True, gap
    return Z, k, n_iter, False, gap


def _impute_args(Y, mask, tol, max_iter, rank):
    obs, dense = _observed(Y, mask)
    tol = check_tol(tol, obs.y.dtype, 1e-12, 1e-6)
    max_iter = check_positive_int(max_iter, "max_iter")
    rank = min(check_positive_int(rank, "rank"), *obs.shape)
    return obs, dense, tol, max_iter, rank


def _empty(obs) -> Factors:
    (m, n), y = obs.shape, obs.y
    return Factors(y.new_zeros(m, 0), y.new_zeros(0), y.new_zeros(n, 0))


def soft_impute(Y, mask, lam, *, tol=None, max_iter=5000, rank=10, generator=None,
                return_info=False):
    r"""Nuclear-norm matrix completion (soft-impute).

    .. math:: \min_Z\ \tfrac12\|P_\Omega(Y - Z)\|_F^2 + \lambda\|Z\|_*,

    :math:`\Omega` the observed entries. **Algorithm** (Mazumder, Hastie & Tibshirani):
    proximal gradient with step 1, :math:`Z \leftarrow \operatorname{svt}(P_\Omega(Y) +
    P_\Omega^\perp(Z), \lambda)`. The filled matrix is :math:`S + U\operatorname{diag}(s)V^\top`
    with :math:`S = P_\Omega(Y - Z)` sparse, so its SVT is computed by one step of subspace
    iteration warm-started from the previous right factor (rank grown while every computed
    singular value exceeds :math:`\lambda`). **Cost** per iteration, rank :math:`k`:
    :math:`O(|\Omega|k + (m + n)k^2)`; nothing of size :math:`mn` unless ``Y`` is dense.

    **Certificate**: the duality gap. With :math:`R = P_\Omega(Y - Z)` and
    :math:`a = \min(1, \lambda/\|R\|_2)` the point :math:`\theta = aR` is feasible for the
    dual :math:`\max_\theta \langle Y, \theta\rangle - \tfrac12\|\theta\|^2` s.t.
    :math:`\|\theta\|_2 \le \lambda`, :math:`\theta` supported on :math:`\Omega`, and
    ``gap`` = primal - dual bounds the suboptimality. :math:`\|R\|_2` is estimated by block
    power iteration. Stops when gap :math:`\le` ``tol`` :math:`\cdot\tfrac12\|P_\Omega Y\|^2`
    (the objective at :math:`Z = 0`), checked every few iterations.

    Parameters
    ----------
    Y : (m, n) tensor with ``mask``; or a sparse COO tensor, or a tuple
        ``(rows, cols, values, shape)``, with ``mask=None`` (the pattern is the mask).
    mask : (m, n) bool tensor, True = observed; None for sparse ``Y``.
    lam : float >= 0
    tol : float, default 1e-12 (float64) or 1e-6 (float32)
    max_iter : int
    rank : int, initial size of the subspace (grown as needed)
    generator : torch.Generator, optional, for the random columns of the subspace.
    return_info : bool

    Returns
    -------
    Z : (m, n) tensor for dense ``Y``, :class:`Factors` ``(U, s, V)`` for sparse ``Y``;
    info : :class:`regref.Info` (with ``return_info=True``), ``certificate`` = duality gap
        relative to the objective at zero.

    Derived in chapter 05.
    """
    Z, info = soft_impute_path(Y, mask, [lam], tol=tol, max_iter=max_iter, rank=rank,
                               generator=generator, return_info=True)
    Z = Z[0]
    return (Z, info) if return_info else Z


def soft_impute_path(Y, mask, lams, *, tol=None, max_iter=5000, rank=10, generator=None,
                     return_info=False):
    r""":func:`soft_impute` for each strength in ``lams``, warm-started from strong to weak.

    Rows of the result follow the caller's order of ``lams``. Returns an (L, m, n) tensor for
    dense ``Y`` and a list of L :class:`Factors` for sparse ``Y``; ``info`` reports the
    total iterations and the worst relative gap. Derived in chapter 05.
    """
    obs, dense, tol, max_iter, rank = _impute_args(Y, mask, tol, max_iter, rank)
    lams = check_strength(lams, "lams", obs.y, ndims=(1,))
    p0 = max(0.5 * float((obs.y.double() ** 2).sum()), 1e-300)
    out: list[Factors | None] = [None] * len(lams)
    F, k, total, worst, ok = _empty(obs), rank, 0, 0.0, True
    for i in torch.argsort(lams, descending=True).tolist():
        F, k, it, conv, gap = _solve_one(obs, float(lams[i]), F, k, tol, max_iter, generator)
        out[i], total, worst, ok = F, total + it, max(worst, gap / p0), ok and conv
    if not ok:
        warnings.warn(f"soft_impute stopped at max_iter={max_iter} with relative duality gap "
                      f"{worst:.2e} > tol={tol:.1e}", ConvergenceWarning, stacklevel=2)
    res = torch.stack([f.dense() for f in out]) if dense else out
    return (res, Info(total, ok, worst)) if return_info else res


# ----------------------------------------------------------------------------- spectral norms

def spectral_norm(W, *, tol=None, max_iter=1000, generator=None, return_vectors=False):
    r"""Largest singular value :math:`\|W\|_2 = \sigma_1(W)` by power iteration, batched.

    Iterates :math:`v \leftarrow W^\top W v/\|W^\top W v\|` from a random start (``generator``)
    on every matrix of the batch (..., m, n) at once, and returns :math:`\|Wv\|`, a lower
    bound that converges to :math:`\sigma_1` at the rate :math:`(\sigma_2/\sigma_1)^{2}` per
    step. Stops when no estimate changed by more than ``tol`` (relative; default 1e-12 in
    float64, 1e-6 in float32) over 10 steps. Cost: two matrix-vector products per step.
    Derived in chapter 05.

    Returns
    -------
    sigma : tensor of shape ``W.shape[:-2]``; with ``return_vectors=True`` also ``u`` (..., m)
        and ``v`` (..., n), unit vectors with :math:`Wv = \sigma u`.
    """
    W = _batched_matrix(W, "W")
    tol = check_tol(tol, W.dtype, 1e-12, 1e-6)
    max_iter = check_positive_int(max_iter, "max_iter")
    v = torch.randn(W.shape[:-2] + W.shape[-1:], dtype=W.dtype, generator=generator,
                    device="cpu").to(W.device)
    tiny = torch.finfo(W.dtype).tiny
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    sigma, n_iter = torch.zeros(W.shape[:-2], dtype=W.dtype, device=W.device), 0
    while True:
        old = sigma
        for _ in range(10):
            u = (W @ v[..., None])[..., 0]
            v = (W.mT @ u[..., None])[..., 0]
            v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp(min=tiny)
        n_iter += 10
        u = (W @ v[..., None])[..., 0]
        sigma = torch.linalg.vector_norm(u, dim=-1)
        if bool(((sigma - old).abs() <= tol * sigma).all()):
            break
        if n_iter >= max_iter:
            warnings.warn(f"spectral_norm stopped at max_iter={max_iter}", ConvergenceWarning,
                          stacklevel=2)
            break
    if return_vectors:
        return sigma, u / sigma[..., None].clamp(min=tiny), v
    return sigma


def _grid(n) -> tuple[int, int]:
    n = (n, n) if isinstance(n, int) else tuple(n)
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
    :math:`n_1n_2` small SVDs, instead of one SVD of size :math:`c n_1n_2`. Batched over
    leading dimensions of ``kernel``. Derived in chapter 05.

    Returns
    -------
    tensor of shape ``kernel.shape[:-4] + (n1, n2, min(c_out, c_in))``
    """
    K = check_finite(as_float_tensor(kernel, "kernel"), "kernel")
    if K.ndim < 4:
        raise ValueError(f"kernel must be (..., c_out, c_in, k1, k2), got shape {tuple(K.shape)}")
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
    :math:`\|PCE\|_2 \le \|C\|_2`. Derived in chapter 05.

    Returns
    -------
    tensor of shape ``kernel.shape[:-4]``
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
    r"""Orthogonal polar factor :math:`UV^\top` of :math:`W = U\Sigma V^\top` by Newton–Schulz.

    After scaling :math:`X_0 = W/\|W\|_F` (so every singular value lies in (0, 1]), iterate
    on :math:`A = X^\top X`

    .. math:: \text{cubic: } X \leftarrow X(\tfrac32 I - \tfrac12 A), \qquad
              \text{quintic: } X \leftarrow X(\tfrac{15}8 I - \tfrac{10}8 A + \tfrac38 A^2),

    which maps each singular value :math:`\sigma` by a polynomial with fixed point 1
    (quadratic, resp. cubic, convergence near 1); small singular values grow by a factor
    1.5 (resp. 1.875) per step, so the steps needed grow like
    :math:`\log(\|W\|_F/\sigma_{\min})`: the stable rank and the condition number set the
    accuracy of a fixed budget. Only matrix products: no SVD. Batched over leading
    dimensions; a wide matrix is iterated through its transpose. Cost per step:
    :math:`O(mn\min(m, n))`. Derived in chapter 05.
    """
    W = _batched_matrix(W, "W")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
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
      \max_i |\sigma_i(W)^2 - 1|`.

    Differentiable, batched over leading dimensions. Derived in chapter 05.
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
    Differentiable; cost :math:`O(N^2 d)`. Derived in chapter 05.

    Returns
    -------
    tensor of shape ``W.shape[:-2]``
    """
    W = _batched_matrix(W, "W")
    s = float(s)
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
    return -torch.log(dist).sum(-1) if s == 0 else dist.pow(-s).sum(-1)
