r"""Spectral helpers shared by :mod:`regref.ridge` and :mod:`regref.selection` (private).

Every ridge quantity is a *filter* of the singular values of :math:`X`: with the thin SVD
:math:`X = U\operatorname{diag}(s)V^\top`, the solution is
:math:`w_\lambda = V\operatorname{diag}\bigl(s/(s^2+\lambda)\bigr)U^\top y` and the hat
matrix is :math:`H_\lambda = U\operatorname{diag}\bigl(s^2/(s^2+\lambda)\bigr)U^\top`, so
one factorization serves every strength. These functions do no validation: callers pass
finite floating tensors of matching device and dtype.
"""

from __future__ import annotations

import torch


def _svd(X: torch.Tensor):
    """Thin SVD ``U, s, Vh`` of ``X`` and the mask ``keep`` of numerically nonzero ``s``.

    A singular value counts as zero below ``max(n, p) * eps * s[0]``, numpy's ``lstsq``
    cutoff, so that rank-deficient designs give the minimum-norm solution at ``lam = 0``.
    """
    U, s, Vh = torch.linalg.svd(X, full_matrices=False)
    keep = s > max(X.shape) * torch.finfo(X.dtype).eps * s[0]
    return U, s, Vh, keep


def _left_spectrum(X: torch.Tensor):
    """Left singular vectors ``U`` and squared singular values ``s2`` of ``X``, descending.

    The hat matrix ``H = U diag(s2/(s2+lam)) U^T`` needs nothing else. When ``n < p`` they
    come from the eigendecomposition of the ``n x n`` Gram matrix ``X X^T``, which costs
    ``O(n^2 p + n^3)`` instead of a full SVD and loses no accuracy in ``s2``. Returns
    ``(U, s2, keep)`` with ``keep`` the mask of numerically nonzero ``s2``.
    """
    n, p = X.shape
    if n >= p:
        U, s, _, keep = _svd(X)
        return U, s**2, keep
    s2, U = torch.linalg.eigh(X @ X.mT)
    s2, U = s2.flip(0).clamp(min=0), U.flip(1)
    keep = s2 > max(n, p) * torch.finfo(X.dtype).eps * s2[0]
    return U, s2, keep


def _batched_matmul(M: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``M @ C[l]`` for every ``l`` as one 2-D product: M (a, r), C (L, r, k) -> (L, a, k).

    Broadcasting ``M @ C`` would copy ``M`` L times; stacking the columns of ``C`` does not.
    """
    L, r, k = C.shape
    out = M @ C.permute(1, 0, 2).reshape(r, L * k)
    return out.reshape(M.shape[0], L, k).permute(1, 0, 2)


def _filters(num, s2, keep, lams) -> torch.Tensor:
    """Filter factors ``num/(s2 + lam)``, shape (L, r), zero on numerically null directions.

    ``num = s`` gives the solution filter ``s/(s^2+lam)``; ``num = s2`` the hat-matrix
    filter ``s^2/(s^2+lam)``. ``lams`` has shape (L,), ``s2`` and ``keep`` shape (r,).
    """
    f = num / (s2 + lams[:, None])
    return torch.where(keep, f, torch.zeros_like(f))


def _fits(X, y, lams):
    """Ridge fits for every strength from one spectrum of ``X``.

    ``y`` is (n,) or (n, k), ``lams`` is (L,). Returns ``(resid, leverage, df)``: the
    residuals ``y - H y`` of shape (L, n, k), the leverages ``diag(H)`` of shape (L, n, 1)
    and the degrees of freedom ``tr(H)`` of shape (L,).
    """
    U, s2, keep = _left_spectrum(X)
    Y = y.reshape(y.shape[0], -1)
    g = _filters(s2, s2, keep, lams)  # (L, r)
    resid = Y - _batched_matmul(U, g[:, :, None] * (U.mT @ Y))
    leverage = (U**2) @ g.mT  # (n, L)
    return resid, leverage.mT.unsqueeze(-1), g.sum(-1)
