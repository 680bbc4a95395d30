r"""Sparse regression: the lasso, the elastic net and the group lasso, with certificates.

Objectives (the scikit-learn conventions, no intercept; :math:`n` = rows of :math:`X`):

.. math::

    \text{lasso:}\quad & \min_w \tfrac1{2n}\|y - Xw\|_2^2 + \lambda\|w\|_1, \\
    \text{elastic net:}\quad & \min_w \tfrac1{2n}\|y - Xw\|_2^2 + \lambda\rho\|w\|_1
        + \tfrac{\lambda(1-\rho)}2\|w\|_2^2, \\
    \text{group lasso:}\quad & \min_w \tfrac1{2n}\|y - Xw\|_2^2
        + \lambda\textstyle\sum_g \omega_g\|w_g\|_2 .

Every solver stops on the **duality gap**, never on an iteration count: the dual point is
the residual rescaled into the dual feasible set (:func:`dual_point`), the gap
:func:`duality_gap` bounds the distance to the optimal objective, and ``tol`` is relative
to the objective at zero, :math:`P(0) = \|y\|^2/2n`. The path solver batches every
(strength, target) pair as one column of a matrix, so its products are matrix-matrix and
run on a GPU unchanged (:func:`lasso_path`).
Derivations: chapter 04.
"""

from __future__ import annotations

import math

import torch

from ._core import (
    Info,
    as_float_tensor,
    check_data,
    check_finite,
    check_positive_int,
    check_strength,
    check_tol,
    fista,
    gram,
    power_iteration,
    soft,
    warn_not_converged,
)

__all__ = [
    "lambda_max",
    "lasso",
    "lasso_path",
    "elastic_net",
    "group_lasso",
    "dual_point",
    "duality_gap",
    "kkt_violation",
]

_CHECK_EVERY = 10  # inner iterations between two (cheap, Gram-mode) restricted gap checks
_POLISH_TOL = 1e-8  # tolerances this tight end with an exact solve on the support
_NEWTON_STEPS = 10  # active-set Newton steps tried first in Gram mode
_NEWTON_BATCH = 2**24  # Gram mode solves all strengths at once while L * k * p^2 is below it
_SMALL_GRAM = 2**24  # n p^2 below which the Gram cache starts with all of H
_FOLD_NESTED = 64  # union supports from which _fold_paths solves fold by fold
_STALL = 30  # checks without a 1% better gap after which a column is considered stalled


# ----------------------------------------------------------------------------- validation

def _tol(tol, X: torch.Tensor) -> float:
    """The documented default: a relative duality gap of 1e-10 in float64, 1e-5 else."""
    return check_tol(tol, X.dtype, 1e-10, 1e-5)


def _l1_ratio(l1_ratio) -> float:
    try:
        r = float(l1_ratio)
    except (TypeError, ValueError) as err:
        raise ValueError(f"l1_ratio must be a number in (0, 1], got {l1_ratio!r}") from err
    if not (0 < r <= 1):
        raise ValueError(f"l1_ratio must be in (0, 1], got {l1_ratio}")
    return r


def _weights_like(w, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w = check_finite(as_float_tensor(w, "w", like=X), "w")
    want = (X.shape[1],) + tuple(y.shape[1:])
    if tuple(w.shape) != want:
        raise ValueError(f"w must have shape {want}, got {tuple(w.shape)}")
    return w


# ----------------------------------------------------------------------------- certificates

def lambda_max(X, y, l1_ratio=1.0) -> torch.Tensor:
    r"""Smallest strength for which :math:`w = 0` is optimal.

    .. math:: \lambda_{\max} = \frac{\|X^\top y\|_\infty}{n\rho}

    (:math:`\rho` = ``l1_ratio``, 1 for the lasso). Zero solves the lasso exactly when
    :math:`\lambda \ge \lambda_{\max}`, because :math:`0 \in -X^\top y/n + \lambda\rho\,[-1, 1]^p`.
    Cost: one product :math:`X^\top y`, :math:`2npk` flops. Derivation: chapter 04.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        Response(s), converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    l1_ratio : float
        :math:`\rho \in (0, 1]`; 1 (default) is the lasso.

    Returns
    -------
    tensor of shape () for ``y`` of shape (n,), (k,) for (n, k)

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> round(float(sparse.lambda_max(X, y)), 4)
    1.6667
    """
    X, y = check_data(X, y)
    rho = _l1_ratio(l1_ratio)
    return (X.mT @ y).abs().amax(dim=0) / (X.shape[0] * rho)


def _primal_dual(X, y, w, l1, l2):
    """Primal value, dual value and the dual scaling ``s`` (in 1/n units), per column."""
    n = X.shape[0]
    r = y - X @ w
    g = X.mT @ r / n - l2 * w
    s = torch.maximum(l1 * torch.ones_like(g[:1]), g.abs().amax(dim=0, keepdim=True))[0]
    s = s.clamp(min=torch.finfo(X.dtype).tiny)
    a = l1 / s
    rr = (r * r).sum(0) / (2 * n)
    ww = (w * w).sum(0)
    primal = rr + l1 * w.abs().sum(0) + l2 / 2 * ww
    dual = ((y * y).sum(0) - ((y - a * r) ** 2).sum(0)) / (2 * n) - a * a * l2 / 2 * ww
    return primal, dual, s, r


def _certificate_args(X, y, w, lam, l1_ratio):
    """Validate the arguments of the certificates; ``y``, ``w`` as (n, k), (p, k) columns.

    Returns ``(X, Y, W, l1, l2, shape)``; ``shape`` turns a last dimension of size k back
    into ``y``'s trailing dimensions (none for a 1-D ``y``).
    """
    X, y = check_data(X, y)
    w = _weights_like(w, X, y)
    lam = check_strength(lam, "lam", X, positive=True)
    rho = _l1_ratio(l1_ratio)
    k_shape = tuple(y.shape[1:])
    Y, W = y.reshape(y.shape[0], -1), w.reshape(w.shape[0], -1)
    return X, Y, W, lam * rho, lam * (1 - rho), (lambda t: t.reshape(t.shape[:-1] + k_shape))


def dual_point(X, y, w, lam, l1_ratio=1.0) -> torch.Tensor:
    r"""Dual-feasible point built from the residual of ``w``.

    .. math:: \theta = \frac{r}{\max\bigl(n\lambda_1,\ \|X^\top r - n\lambda_2 w\|_\infty\bigr)},
              \qquad r = y - Xw,

    with :math:`\lambda_1 = \lambda\rho`, :math:`\lambda_2 = \lambda(1-\rho)`. It satisfies
    the dual constraint :math:`\|X^\top\theta - \lambda_2 n\,w/s\|_\infty \le 1` (for the lasso
    simply :math:`\|X^\top\theta\|_\infty \le 1`) and equals :math:`r^\star/(n\lambda)` at the
    optimum. Cost: two products with :math:`X`. Derivation: chapter 04.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        Response(s), converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    w : tensor of shape (p,) or (p, k)
        Coefficients (any point, not only a solution), like ``y``'s trailing shape.
    lam : float
        Strength ``> 0``.
    l1_ratio : float
        :math:`\rho \in (0, 1]`; 1 (default) is the lasso.

    Returns
    -------
    theta : tensor of shape (n,) or (n, k), like ``y``

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> theta = sparse.dual_point(X, y, torch.zeros(2, dtype=torch.float64), 0.5)
    >>> round(float((X.T @ theta).abs().max()), 4)  # dual feasible
    1.0
    """
    X, Y, W, l1, l2, shape = _certificate_args(X, y, w, lam, l1_ratio)
    _, _, s, r = _primal_dual(X, Y, W, l1, l2)
    return shape(r / (X.shape[0] * s))


def duality_gap(X, y, w, lam, l1_ratio=1.0) -> torch.Tensor:
    r"""Duality gap :math:`P(w) - D(\theta(w)) \ge 0` of the lasso / elastic net.

    With :math:`r = y - Xw`, :math:`s = \max(\lambda_1, \|X^\top r/n - \lambda_2 w\|_\infty)`
    and :math:`a = \lambda_1/s`,

    .. math:: P(w) &= \tfrac1{2n}\|r\|^2 + \lambda_1\|w\|_1 + \tfrac{\lambda_2}2\|w\|^2, \\
              D &= \tfrac1{2n}\bigl(\|y\|^2 - \|y - a r\|^2\bigr) - \tfrac{a^2\lambda_2}2\|w\|^2 .

    :math:`D` is the dual objective at :func:`dual_point` (the elastic net is a lasso on
    the augmented data :math:`[X; \sqrt{n\lambda_2}I]`, :math:`[y; 0]`), so
    :math:`P(w) - P(w^\star) \le` gap, and the gap is 0 exactly at the optimum. Cost:
    two products with :math:`X`. Derivation: chapter 04.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        Response(s), converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    w : tensor of shape (p,) or (p, k)
        Coefficients (any point, not only a solution), like ``y``'s trailing shape.
    lam : float
        Strength ``> 0``.
    l1_ratio : float
        :math:`\rho \in (0, 1]`; 1 (default) is the lasso.

    Returns
    -------
    tensor of shape () or (k,)
        The gap, absolute (divide by :math:`\|y\|^2/2n` for the solvers' relative scale).

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> w = sparse.lasso(X, y, 0.5)
    >>> round(float(sparse.duality_gap(X, y, w, 0.5)), 10)
    0.0
    """
    X, Y, W, l1, l2, shape = _certificate_args(X, y, w, lam, l1_ratio)
    primal, dual, _, _ = _primal_dual(X, Y, W, l1, l2)
    return shape(primal - dual)


def kkt_violation(X, y, w, lam, l1_ratio=1.0) -> torch.Tensor:
    r"""Largest violation of the lasso / elastic-net optimality conditions.

    With :math:`g = X^\top(y - Xw)/n - \lambda_2 w` (minus the smooth gradient), ``w`` is
    optimal iff :math:`g_j = \lambda_1\operatorname{sign}(w_j)` where :math:`w_j \ne 0` and
    :math:`|g_j| \le \lambda_1` where :math:`w_j = 0`. Returns
    :math:`\max_j \operatorname{dist}(g_j, \lambda_1\partial|w_j|)`. Cost: two products
    with :math:`X`. Derivation: chapter 04.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        Response(s), converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    w : tensor of shape (p,) or (p, k)
        Coefficients (any point, not only a solution), like ``y``'s trailing shape.
    lam : float
        Strength ``> 0``.
    l1_ratio : float
        :math:`\rho \in (0, 1]`; 1 (default) is the lasso.

    Returns
    -------
    tensor of shape () or (k,)

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> round(float(sparse.kkt_violation(X, y, torch.zeros(2, dtype=torch.float64), 0.5)), 4)
    1.1667
    """
    X, Y, W, l1, l2, shape = _certificate_args(X, y, w, lam, l1_ratio)
    g = X.mT @ (Y - X @ W) / X.shape[0] - l2 * W
    viol = torch.where(W != 0, (g - l1 * torch.sign(W)).abs(), (g.abs() - l1).clamp(min=0))
    return shape(viol.amax(dim=0))


# ----------------------------------------------------------------------------- the solver

def _lipschitz(H: torch.Tensor, v: torch.Tensor | None = None):
    """Largest eigenvalue of the PSD matrix ``H`` by power iteration, plus 5% (a step of
    ``1/L`` then stays stable); warm-started from ``v``, else from a ramp, which is not
    orthogonal to the top eigenvector of a Gram matrix. Returns ``(L, vector)``."""
    m = H.shape[0]
    ramp = 1 + torch.arange(m, dtype=H.dtype, device=H.device) / (7.0 * m)
    v = ramp if v is None else v + 1e-3 * ramp / math.sqrt(m)
    top, v = power_iteration(H.__matmul__, v, 30 if v is ramp else 8)
    return 1.05 * top.clamp(min=torch.finfo(H.dtype).tiny), v


def _gram_gap_from(HW, C, yy, W, l1, l2):
    """Primal-dual gap of the problem restricted to the features of ``H``, in Gram form,
    and the smooth part's minus gradient ``G = C - HW - l2 W``.

    ``HW = H W`` with ``H = X_S^T X_S / n``, ``C = X_S^T Y / n``, ``yy = ||y||^2 / 2n`` per
    column. With ``rr = ||r||^2/2n = yy - c^T w + w^T H w / 2``, the dual scaling
    ``a = l1 / max(l1, ||G||_inf)`` and ``y^T r / n = 2 yy - c^T w``, the gap of
    :func:`duality_gap` is ``(1 + a^2)(rr + l2 ||w||^2/2) + l1 ||w||_1 - a (2 yy - c^T w)``;
    the sums are accumulated in float64, so float32 solves can certify gaps near their
    rounding level. Returns ``(gap, G)``.
    """
    dtype = HW.dtype
    if dtype != torch.float64:
        HW, C, W, yy, l1, l2 = (t.to(torch.float64) for t in (HW, C, W, yy, l1, l2))
    G = C - HW - l2 * W
    a = l1 / torch.maximum(l1, G.abs().amax(dim=0)).clamp(min=torch.finfo(torch.float64).tiny)
    cw = (C * W).sum(0)
    rr = yy - cw + (W * (HW + l2 * W)).sum(0) / 2  # plus l2 ||w||^2 / 2
    return (1 + a * a) * rr + l1 * W.abs().sum(0) - a * (2 * yy - cw), G.to(dtype)


def _inner_solve(H, C, yy, W, l1, l2, target, max_iter, lip):
    r"""Batched FISTA with restart (:func:`regref._core.fista`) on the elastic nets
    restricted to a working set, in Gram form: :math:`\tfrac12 w^\top Hw - c^\top w
    + \tfrac{\lambda_2}2\|w\|^2 + \lambda_1\|w\|_1` per column, stopped on the restricted
    duality gap. Cost per step: one ``(m, m) @ (m, B)`` product. Returns ``(W, n_iter)``.
    """
    def gradient(Z):
        return H @ Z - C + l2 * Z

    def prox(V, step):
        return soft(V, step * l1)

    def gap(V):
        return _gram_gap_from(H @ V, C, yy, V, l1, l2)[0]

    W, _, n_iter = fista(gradient, prox, gap, W, 1 / (lip + l2), target, max_iter,
                         _CHECK_EVERY, _STALL)
    return W, n_iter


class _GramCache:
    r"""Products with :math:`H = X^\top X / n` for a growing set :math:`K` of features (the
    union of the working sets so far), in one of two layouts chosen by cost (:func:`_path`).

    - **Columns** (``columns=True``, for :math:`p \le n`): whole rows :math:`H_{K,:}`, so
      the full gradient :math:`X^\top r/n = c - H_{:,A} w_A` costs :math:`p|A|` per column
      and no product with :math:`X`. Adding features :math:`N` costs one pass over
      :math:`X` (:math:`2np|N|` flops), so blocks grow geometrically, completed by the
      features ranked next (``rank``, smaller first): a path whose working sets end with
      :math:`|K|` features costs about :math:`2np|K|` flops, below the :math:`np^2` of the
      whole Gram matrix while :math:`|K| < p/2`, and a few passes over :math:`X`. Small
      problems (:math:`np^2 \le 2^{24}`) start with all of :math:`H` (one product).
    - **Block** (``columns=False``, for :math:`p > n`): only :math:`H_{KK}`, from
      :math:`X^\top` (``XT``, contiguous, features as rows); adding features :math:`N`
      costs :math:`2n|N|(|K|+|N|)`, and the full gradient two products with :math:`X` on
      the support.
    """

    def __init__(self, X: torch.Tensor, columns: bool):
        self.columns, self.n, self.p = columns, X.shape[0], X.shape[1]
        # block layout: features as rows, so that gathering features is contiguous (the
        # columns layout gathers a few columns of X per block instead of copying all of X)
        self.X, self.XT = X, None if columns else X.mT.contiguous()
        self.m, self.v, self.norm2 = 0, None, None
        self.pos = torch.full((self.p,), -1, dtype=torch.long, device=X.device)
        self.K = torch.empty(0, dtype=torch.long, device=X.device)
        self.buf = X.new_zeros(0, self.p if columns else 0)
        if columns and self.n * self.p**2 <= _SMALL_GRAM:  # cheaper than a few lazy blocks
            self._complete()

    def col_norm2(self) -> torch.Tensor:
        r""":math:`\|x_j\|^2/n` for every feature (the diagonal of :math:`H`), computed once,
        when first needed (a pass over :math:`X` unless all of :math:`H` is there)."""
        if self.norm2 is None:
            self.norm2 = self.buf.diagonal().clone() if self.m == self.p and self.columns \
                else (self.X * self.X).sum(0) / self.n
        return self.norm2

    def diagonal(self) -> torch.Tensor:
        """The diagonal of :math:`H` on the features computed so far (columns layout), 1 on
        the others: enough for a Newton step, whose iterates are zero off those features."""
        if self.m == self.p:
            return self.buf.diagonal()
        if self.m == 0:
            return self.buf.new_ones(self.p)
        feats = torch.arange(self.p, device=self.pos.device)
        return torch.where(self.pos >= 0, self.buf[self.pos.clamp(min=0), feats], 1)

    def _add(self, Si: torch.Tensor, rank: torch.Tensor | None) -> None:
        new = Si[self.pos[Si] < 0]
        if not new.numel():
            return
        m, n, p = self.m, self.n, self.p
        if self.columns and m + len(new) > p // 2:  # the rest at once: cheaper from here
            self._complete()
            return
        if self.columns and rank is not None:  # complete the block with the next-ranked
            width = min(p // 2 - m, max(len(new), 16, m // 4))
            if width > len(new):
                free = torch.where(self.pos < 0, rank, torch.inf)
                free[new] = -torch.inf
                top = torch.topk(free, width, largest=False)
                new = top.indices[torch.isfinite(top.values) | (top.values < 0)]
        cap = self.buf.shape[0]
        if m + len(new) > cap:  # grow the buffer geometrically
            cap = min(p, max(2 * cap, m + len(new), 64))
            buf = self.buf.new_zeros(cap, p if self.columns else cap)
            buf[:m, :self.buf.shape[1]] = self.buf[:m]
            self.buf = buf
        self.K = torch.cat([self.K, new])
        if self.columns:  # rows H[N, :], one pass over X
            self.buf[m:m + len(new)] = self.X.mT.index_select(0, new) @ self.X / n
        else:
            XN = self.XT[new]
            block = self.XT[self.K] @ XN.mT / n  # (m + |N|, |N|)
            self.buf[:m + len(new), m:m + len(new)] = block
            self.buf[m:m + len(new), :m] = block[:m].mT
        self.pos[new] = torch.arange(m, m + len(new), device=Si.device)
        self.m = m + len(new)

    def _complete(self) -> None:
        """All of :math:`H`: the rows still missing, :math:`R`, from :math:`H_{RK} =
        H_{KR}^\top` and one symmetric product :math:`X_R^\top X_R` (:func:`_gram`)."""
        if self.m < self.p // 4:  # little to reuse: one symmetric product
            H = gram(self.X) / self.n
        else:
            R, K = (self.pos < 0).nonzero().squeeze(1), self.K
            H = self.X.new_empty(self.p, self.p)
            H[K] = self.buf[:self.m]
            H[R[:, None], K] = self.buf[:self.m, R].mT
            H[R[:, None], R] = gram(self.X[:, R]) / self.n
        self.buf, self.m = H, self.p
        self.K = torch.arange(self.p, device=H.device)
        self.pos = self.K.clone()

    def gram(self, Si: torch.Tensor, rank: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`H_{SS}` for the features ``Si`` (computing what is missing)."""
        if self.m == self.p and self.columns:  # all of H, in feature order
            return self.buf[Si[:, None], Si]
        self._add(Si, rank)
        k = self.pos[Si]
        return self.buf[k][:, Si] if self.columns else self.buf[k][:, k]

    def apply(self, W: torch.Tensor) -> torch.Tensor:
        """:math:`HW` for a (p, B) ``W``, on its support :math:`A` only."""
        if self.columns and self.m == self.p:  # all of H, in feature order
            return self.buf @ W
        supp = (W != 0).any(1).nonzero().squeeze(1)
        if self.columns:
            self._add(supp, None)
            return self.buf[self.pos[supp]].mT @ W[supp]
        return self.XT @ (self.XT[supp].mT @ W[supp]) / self.n


def _working_set(G, gap, W, l1, l2, col_norm2, gram_mode):
    r"""The features the next inner solve works on, for a batch of columns: the union over
    columns of the support plus the features closest to their dual constraint, minus
    those the gap-safe rule proves zero.

    ``G`` (p, B) is :math:`X^\top r/n - \lambda_2 w` per column, ``gap`` the duality gaps.
    With the dual point :math:`\theta = r/(n s)`, :math:`s = \max(\lambda_1,
    \|G\|_\infty)`, the optimum :math:`\theta^\star` is within :math:`\sqrt{2\,gap}/
    \lambda_1` (strong concavity of the dual), so feature :math:`j` is zero at the optimum
    when its slack :math:`(1 - |G_j|/s)/\sqrt{\|x_j\|^2/n + \lambda_2}` exceeds that
    radius. Grows by 10% of the support (at least 10), or by the support plus 10 when the
    Gram matrix is kept by columns (new features are then cheap). Also returns every
    feature's rank for the next working sets (its smallest slack over the columns; the
    support first, screened features last).
    """
    p = G.shape[0]
    tiny = torch.finfo(G.dtype).tiny
    s = torch.maximum(l1, G.abs().amax(0)).clamp(min=tiny)
    slack = (1 - G.abs() / s) / torch.sqrt(col_norm2[:, None] + l2)
    safe = slack > torch.sqrt(2 * gap.clamp(min=0)) / l1
    nnz = (W != 0).sum(0)
    size = torch.clamp(nnz + (nnz + 10 if gram_mode else torch.clamp(nnz // 10, min=10)),
                       max=p)
    order = torch.where(W != 0, -torch.inf, torch.where(safe, torch.inf, slack))
    idx = torch.topk(order, int(size.max()), dim=0, largest=False).indices  # (k, B)
    pick = (torch.arange(idx.shape[0], device=G.device)[:, None] < size) \
        & ~torch.gather(safe, 0, idx)
    chosen = torch.zeros(p, dtype=torch.bool, device=G.device)
    chosen[idx[pick]] = True
    return (chosen | (W != 0).any(1)).nonzero().squeeze(1), order.amin(1)


def _enet_columns(C, yy, l1, l2, W, tol, max_iter, cache):
    r"""Solve ``B`` elastic nets at once; column ``b`` has ``C[:, b] = X^T y_b / n``,
    ``yy[b] = ||y_b||^2 / 2n`` and strengths ``l1[b]``, ``l2[b]``; ``W`` (p, B) is the warm
    start. Returns ``(W, gaps, n_iter)``.

    Outer loop (working sets): the full gradient for the batch, :math:`X^\top X W/n`
    (two GEMMs on the support, at most :math:`2npB` flops; :math:`p|A|B` in Gram mode),
    the exact gap per column, gap-safe screening, and a working set of the features closest
    to their dual constraint. Inner loop: batched FISTA on the working set in Gram mode.
    """
    p = W.shape[0]
    tiny = torch.finfo(W.dtype).tiny
    target = tol * yy.clamp(min=tiny)
    live = torch.arange(W.shape[1], device=W.device)
    gaps = torch.full_like(yy, torch.inf, dtype=torch.float64)
    stalled = torch.zeros_like(yy, dtype=torch.long)  # outer iterations without progress
    polish = tol <= _POLISH_TOL
    n_iter = 0
    if cache.columns:  # Gram mode: exact solves on predicted supports first
        W, n_iter, gaps = _newton(cache, C, yy, W, l1, l2, target,
                                  min(_NEWTON_STEPS, max_iter))
        if not polish and bool((gaps <= target).all()):  # all certified: nothing left
            return W, gaps, n_iter
    sign = torch.sign(W)
    while True:
        W_live, l1_live, l2_live = W[:, live], l1[live], l2[live]
        gap, G = _full_gap(cache, C[:, live], yy[live], W_live, l1_live, l2_live)
        # Columns whose support and signs survived the last inner solve: try the exact solve.
        stable = (gap > target[live]) & (torch.sign(W_live) == sign[:, live]).all(0) \
            & (W_live != 0).any(0)
        if polish and n_iter and bool(stable.any()):
            W_live[:, stable], gap[stable], G[:, stable] = _polish_columns(
                C[:, live[stable]], yy[live[stable]], W_live[:, stable], l1_live[stable],
                l2_live[stable], cache, gap[stable], G[:, stable])
            W[:, live] = W_live
        sign[:, live] = torch.sign(W_live)
        stalled[live] = torch.where(gap < 0.99 * gaps[live], 0, stalled[live] + 1)
        gaps[live] = gap
        todo = (gap > target[live]) & (stalled[live] < 3)
        if not bool(todo.any()) or n_iter >= max_iter:
            break
        live, gap, G = live[todo], gap[todo], G[:, todo]
        W_live, l1_live, l2_live = W_live[:, todo], l1_live[todo], l2_live[todo]
        Si, rank = _working_set(G, gap, W_live, l1_live, l2_live, cache.col_norm2(),
                                cache.columns)
        # inner solves need not be much tighter than the current outer gap
        inner_target = torch.maximum(0.3 * gap, 0.5 * target[live])
        H = cache.gram(Si, rank)
        lip, v = _lipschitz(H, cache.v[Si] if cache.v is not None else None)
        cache.v = torch.zeros(p, dtype=H.dtype, device=H.device).index_copy_(0, Si, v)
        WS, it = _inner_solve(H, C[Si][:, live], yy[live], W_live[Si], l1_live, l2_live,
                              inner_target, max_iter - n_iter, lip)
        n_iter += it
        W_live = torch.zeros_like(W_live)
        W_live[Si] = WS
        W[:, live] = W_live
    # Finish with an exact solve on each support; keep it where it certifies better. Only
    # for tight tolerances: a gap of tol only bounds the coefficient error by sqrt(tol).
    if polish and bool((W != 0).any()):
        W, gaps, _ = _polish_columns(C, yy, W, l1, l2, cache, gaps,
                                     torch.empty_like(W))
    return W, gaps, n_iter


def _solve_on_support(H, C, A, S, l1, l2):
    r"""Exact elastic nets on given supports and signs, one per column: with
    :math:`A` = ``A[:, b]`` and :math:`s` = ``S[:, b]``,
    :math:`(H_{AA} + \lambda_2 I)\,w_A = c_A - \lambda_1 s_A` and :math:`w = 0` off
    :math:`A`. ``C``, ``A``, ``S`` are (m, *batch) and ``H`` broadcasts to
    (*batch, m, m) (one matrix for all columns, or one per problem). Each column's support
    is listed first and padded to the largest one, :math:`k`; padding slot :math:`t`
    points at row :math:`m + t` of :math:`\operatorname{diag}(H, I_k)`, so one gather
    builds every padded system (the identity on the padding) and it costs one batched
    Cholesky, :math:`O(Bk^3)` for B columns; nested supports on one matrix take
    :func:`_solve_nested` instead. Returns the solutions and, per column, whether its
    factorization succeeded.
    """
    if H.ndim == 2 and A.ndim == 2:
        nested = _solve_nested(H, C, A, S, l1, l2)
        if nested is not None:
            return nested
    m, k = A.shape[0], int(A.sum(0).max())
    idx = torch.argsort(A.to(torch.int8), dim=0, descending=True, stable=True)[:k]
    pad = m + torch.arange(k, device=A.device).reshape((k,) + (1,) * (A.ndim - 1))
    idx = torch.where(torch.gather(A, 0, idx), idx, pad)  # (k, *batch)
    Hp = H.new_zeros(H.shape[:-2] + (m + k, m + k))
    Hp[..., :m, :m] = H
    Hp[..., m:, m:].diagonal(dim1=-2, dim2=-1).fill_(1)
    Hp = Hp.reshape(-1, m + k)  # the rows of every problem's matrix, one after the other
    ib = idx.movedim(0, -1)  # (*batch, k)
    first = (m + k) * torch.arange(len(Hp) // (m + k), device=H.device).reshape(
        H.shape[:-2] + (1,))  # each problem's first row
    rows = Hp.index_select(0, (first + ib).flatten()).reshape(ib.shape + (m + k,))
    M = torch.gather(rows, -1, ib[..., None, :].expand(ib.shape + (k,)))
    M.diagonal(dim1=-2, dim2=-1).add_(torch.where(ib < m, l2[..., None], 0))
    rhs = torch.cat([C - l1 * S, C.new_zeros((k,) + A.shape[1:])])
    factor, info = torch.linalg.cholesky_ex(M)
    z = torch.cholesky_solve(torch.gather(rhs, 0, idx).movedim(0, -1)[..., None], factor)
    Z = torch.zeros_like(rhs).scatter_(0, idx, z[..., 0].movedim(-1, 0))
    return Z[:m], info == 0


def _solve_nested(H, C, A, S, l1, l2):
    r""":func:`_solve_on_support` when the supports are nested, as along a path: list the
    features by how many columns hold them; if every column's support is a leading block
    :math:`1..k_b` of that list (and :math:`\lambda_2` is the same for all), the Cholesky
    factor of each column's system is the leading :math:`k_b \times k_b` block of the
    factor :math:`L` of the largest one. So: one factorization, one forward triangular solve
    with every right-hand side, each column's entries past :math:`k_b` set to zero, one
    backward solve; :math:`O(k^3/3 + k^2B)` instead of :math:`O(Bk^3/3)`. ``H`` (m, m),
    ``C``, ``A``, ``S`` (m, B). Returns ``(Z, ok)`` as :func:`_solve_on_support` does, or
    ``None`` when the supports are not nested.
    """
    m, size = A.shape[0], A.sum(0)
    order = torch.argsort(A.sum(1), descending=True, stable=True)
    lead = torch.arange(m, device=A.device)[:, None] < size  # (m, B): the leading blocks
    nested = (A[order] == lead).all() & (l2 == l2[0]).all()
    ok, k = torch.stack([nested.to(size.dtype), size.max()]).tolist()
    if not ok:
        return None
    o, lead = order[:k], lead[:k]
    M = H[o[:, None], o] + l2[0] * torch.eye(k, dtype=H.dtype, device=H.device)
    L, info = torch.linalg.cholesky_ex(M)
    Y = torch.linalg.solve_triangular(L, torch.where(lead, (C - l1 * S)[o], 0), upper=False)
    Z = torch.linalg.solve_triangular(L.mT, torch.where(lead, Y, 0), upper=True)
    # potrf's info: the first leading block that is not positive definite (0: none)
    return (torch.zeros(m, A.shape[1], dtype=H.dtype, device=H.device).index_copy_(0, o, Z),
            (info == 0) | (size < info))


def _active_set_solve(H, C, A, S, l1, l2):
    r"""The exact solves of :func:`_solve_on_support`, as a Newton step's prediction:
    entries whose sign contradicts :math:`s` are set to zero (the prediction was wrong
    there), and a column whose factorization fails comes back zero."""
    Z, ok = _solve_on_support(H, C, A, S, l1, l2)
    return torch.where(A & ok & (Z * S > 0), Z, 0)


def _predict_support(W, G, d, l1, todo):
    r"""A semismooth Newton step's prediction of the support (:func:`_newton`): from
    :math:`u = w + g/d`, the features with :math:`|u| > \lambda_1/d` (``score`` =
    :math:`|u|d/\lambda_1 > 1`) in the columns still ``todo``, signs :math:`\operatorname{sign}
    (u)`. At most :math:`\operatorname{nnz}(w) + 10` features enter a column in one step,
    those of largest score: from a warm start at a larger strength many features violate
    their constraint at first, and most of those leave again (each costs a row of
    :math:`H` and a larger system). ``W``, ``G``, ``d`` are (p, *batch). Returns
    ``(U, A, score)``.
    """
    U = W + G / d
    score = U.abs() * d / l1
    A = (score > 1) & todo
    enter = torch.where(A & (W == 0), score, 0)
    cap = (W != 0).sum(0, keepdim=True) + 10
    top = torch.topk(enter, min(int(cap.max()), len(enter)), dim=0).values
    return U, A & ((W != 0) | (enter >= top.gather(0, (cap - 1).clamp(max=len(top) - 1)))), \
        score


def _newton(cache, C, yy, W, l1, l2, target, steps):
    r"""Semismooth Newton steps (a primal-dual active set method) on the batch, in Gram mode.

    A solution is a fixed point of :math:`w = \operatorname{soft}(w + g/d,\ \lambda_1/d)`
    with :math:`g = c - Hw - \lambda_2 w` and :math:`d = \operatorname{diag}(H) +
    \lambda_2`. Each step predicts the support :math:`A = \{|w + g/d| > \lambda_1/d\}`
    and its signs from the current point and solves the KKT conditions on them exactly
    (:func:`_active_set_solve`); once the prediction is right, the step lands on the
    solution to rounding. Certified columns leave the batch. Fast (a few steps, even from
    zero, since at most nnz + 10 features enter a column per step: :func:`_predict_support`)
    but not globally convergent, so each column keeps its point of smallest duality gap,
    and the working-set loop of :func:`_enet_columns` finishes any column not certified
    here. Cost per step: :math:`p|A|B` for the gaps, plus the exact solves (one Cholesky
    for nested supports). Returns ``(W, steps, gaps)``.
    """
    best, best_gap = W.clone(), torch.full_like(yy, torch.inf, dtype=torch.float64)
    cols = torch.arange(W.shape[1], device=W.device)  # the columns not yet certified
    live = C, yy, l1, l2, target  # their data
    for step in range(steps + 1):
        Cc, yc, l1c, l2c, tc = live
        gap, G = _full_gap(cache, Cc, yc, W, l1c, l2c)
        old = best_gap[cols]
        better = gap < old
        best[:, cols] = torch.where(better, W, best[:, cols])
        best_gap[cols] = old = torch.where(better, gap, old)
        todo = old > tc
        if step == steps or not bool(todo.any()):
            return best, step, best_gap
        if not bool(todo.all()):  # certified columns leave the batch
            keep = todo.nonzero().squeeze(1)
            cols, W, G = cols[keep], W[:, keep], G[:, keep]
            live = tuple(t.index_select(-1, keep) for t in live)
            Cc, yc, l1c, l2c, tc = live
        U, A, score = _predict_support(W, G, cache.diagonal()[:, None] + l2c, l1c, True)
        Si = A.any(1).nonzero().squeeze(1)
        W = torch.zeros_like(W)
        rank = -score.amax(1)  # likeliest to be active next: computed with Si
        W[Si] = _active_set_solve(cache.gram(Si, rank), Cc[Si], A[Si], torch.sign(U[Si]), l1c,
                                  l2c)
    return best, steps, best_gap


def _fold_paths(X, y, lams, folds, tol, max_iter: int = _NEWTON_STEPS * 4):
    r"""Lasso paths of the K problems "all rows but fold :math:`f`", batched over the folds,
    for :math:`p \le n - \max_f n_f` (Gram mode). Used by
    :func:`regref.selection.kfold_path_score`; no validation.

    The folds share the design, so one Gram matrix per fold,
    :math:`G_f = X_f^\top X_f`, gives every training Gram matrix
    :math:`H_{-f} = (\sum_g G_g - G_f)/n_{-f}` (and the same for :math:`X^\top y`), about
    :math:`np^2` flops for all of them. The K paths then run as one batch: columns
    (fold, :math:`\lambda`), strengths in chunks of 10 from the largest, each chunk
    warm-started from the last solution and solved by the Newton steps of
    :func:`_newton` (per-fold Gram matrices, (K, p, p) products; the exact solves in one
    padded batch for small supports, fold by fold from 64 features so that nested supports
    share one factorization), certified by each column's Gram-form duality gap. Returns
    ``(W, rel_gaps)``, W of shape (K, L, p), rows in the order of ``lams``; ``rel_gaps``
    (K, L) so the caller can redo a fold whose gaps exceed ``tol`` (Newton steps are not
    globally convergent).
    """
    labels = int(folds.max()) + 1
    n, p = X.shape
    Gs = torch.stack([gram(X[folds == f]) for f in range(labels)])  # (K, p, p)
    Cs = torch.stack([X[folds == f].mT @ y[folds == f] for f in range(labels)])  # (K, p)
    Ys = torch.stack([(y[folds == f] ** 2).sum() for f in range(labels)])
    n_tr = (n - torch.bincount(folds, minlength=labels)).to(X.dtype)  # (K,)
    H = (Gs.sum(0) - Gs) / n_tr[:, None, None]
    C = ((Cs.sum(0) - Cs) / n_tr[:, None]).mT[:, :, None]  # (p, K, 1)
    yy = ((Ys.sum() - Ys) / (2 * n_tr))[:, None]  # (K, 1)
    diag = H.diagonal(dim1=1, dim2=2).mT[:, :, None]  # (p, K, 1)

    def gram_apply(W):  # H_{-f} W per fold, W of shape (p, K, b)
        return (H @ W.movedim(0, 1).contiguous()).movedim(1, 0)

    order = torch.argsort(lams, descending=True)
    out = X.new_zeros(labels, len(lams), p)
    rel = torch.zeros(labels, len(lams), dtype=torch.float64, device=X.device)
    W = X.new_zeros(p, labels, 1)
    for start in range(0, len(lams), 10):
        chunk = order[start:start + 10]
        l1 = lams[chunk][None, :]  # (1, b)
        l2 = torch.zeros_like(l1)
        W = W[:, :, -1:].expand(-1, -1, len(chunk)).clone()
        best, best_gap = W, torch.full((labels, len(chunk)), torch.inf, dtype=torch.float64,
                                       device=X.device)
        target = tol * yy.clamp(min=torch.finfo(X.dtype).tiny)
        for step in range(max_iter + 1):
            HW = gram_apply(W)
            gap, G = _gram_gap_from(HW, C, yy, W, l1, l2)
            better = gap < best_gap
            best, best_gap = torch.where(better, W, best), torch.where(better, gap, best_gap)
            todo = best_gap > target
            if step == max_iter or not bool(todo.any()):
                break
            U, A, _ = _predict_support(W, G, diag, l1, todo)
            Si = A.flatten(1).any(1).nonzero().squeeze(1)
            W = torch.zeros_like(W)
            HSS = H.index_select(1, Si).index_select(2, Si)
            Cs, As, Ss = C[Si].expand_as(A[Si]), A[Si], torch.sign(U[Si])
            if len(Si) < _FOLD_NESTED:  # small systems: one padded batch for all folds
                W[Si] = _active_set_solve(HSS[:, None], Cs, As, Ss, l1, l2)
            else:  # fold by fold, so that nested supports share one factorization
                W[Si] = torch.stack([_active_set_solve(HSS[f], Cs[:, f], As[:, f], Ss[:, f],
                                                       l1[0], l2[0])
                                     for f in range(labels)], 1)
        W = best
        out[:, chunk] = W.permute(1, 2, 0)
        rel[:, chunk] = best_gap / yy.to(torch.float64).clamp(min=torch.finfo(X.dtype).tiny)
    return out, rel


def _polish_columns(C, yy, W, l1, l2, cache, gap, G):
    """:func:`_polish` every column on the union of the supports; keep the exact solve where
    its full duality gap is smaller. Returns the updated ``(W, gap, G)``."""
    supp = (W != 0).any(1).nonzero().squeeze(1)
    P = torch.zeros_like(W)
    P[supp] = _polish(cache.gram(supp), C[supp], W[supp], l1, l2)
    gap_p, G_p = _full_gap(cache, C, yy, P, l1, l2)
    better = gap_p <= gap
    return (torch.where(better, P, W), torch.where(better, gap_p, gap),
            torch.where(better, G_p, G))


def _full_gap(cache, C, yy, W, l1, l2):
    r"""Duality gap of every column on all features, and the smooth part's minus gradient
    :math:`X^\top(y - Xw)/n - \lambda_2 w`, from :math:`HW` on the support (two GEMMs with
    :math:`X`, or one with the rows of :math:`H` in Gram mode)."""
    HW = cache.apply(W)
    return _gram_gap_from(HW, C, yy, W, l1, l2)


def _polish(H, C, W, l1, l2):
    r"""Exact solve on each column's support :math:`A` with its signs :math:`\sigma`:
    :math:`(H_{AA} + \lambda_2 I) z_A = c_A - \lambda_1\sigma_A`, :math:`z = 0` off :math:`A`
    (:func:`_solve_on_support`).

    Once the support and signs are the optimal ones, the KKT conditions are linear and
    this *is* the solution, exact to rounding (a duality gap only bounds the coefficient
    error by :math:`\sqrt{2\,\text{gap}/\mu}`). A column whose factorization fails is
    returned unchanged.
    """
    Z, ok = _solve_on_support(H, C, W != 0, torch.sign(W), l1, l2)
    return torch.where(ok & torch.isfinite(Z).all(0), Z, W)


def _path(X, y, lams, l1_ratio, tol, max_iter, batch_size):
    """Elastic-net path for every ``lams[l]`` and every column of ``y``: (L, p, k), Info."""
    n, p = X.shape
    Y = y.reshape(n, -1)
    k, L = Y.shape[1], len(lams)
    tol = _tol(tol, X)
    max_iter = check_positive_int(max_iter, "max_iter")
    out = torch.zeros(L, p, k, dtype=X.dtype, device=X.device)
    if k == 0:  # no targets: nothing to solve
        return out, Info(n_iter=0, converged=True, certificate=0.0)
    C = X.mT @ Y / n
    yy = (Y * Y).sum(0) / (2 * n)
    gram_mode = p <= n  # rows of X^T X / n as needed; else products with X on the support
    cache = _GramCache(X, gram_mode)
    order = torch.argsort(lams, descending=True)  # solve from the sparsest end
    if batch_size is None:  # see lasso_path: all on a GPU; on a CPU, all while the padded
        # Newton systems (at most batch * k of size p x p) stay small, else 10 for warm starts
        batch_size = L if X.is_cuda or (gram_mode and k * p * p * L <= _NEWTON_BATCH) else 10
    W_prev = torch.zeros(p, k, dtype=X.dtype, device=X.device)
    worst, n_iter = 0.0, 0
    for start in range(0, L, batch_size):
        chunk = order[start:start + batch_size]
        b = len(chunk)
        lam_cols = lams[chunk].repeat_interleave(k)  # column j: lambda chunk[j // k], target j % k
        Wc, gaps, it = _enet_columns(C.repeat(1, b), yy.repeat(b), lam_cols * l1_ratio,
                                     lam_cols * (1 - l1_ratio), W_prev.repeat(1, b), tol,
                                     max_iter, cache)
        n_iter = max(n_iter, it)
        # the certificate: the duality gap of the returned point, relative to P(0)
        rel = gaps / yy.repeat(b).to(gaps.dtype).clamp(min=torch.finfo(X.dtype).tiny)
        worst = max(worst, float(rel.amax()))
        out[chunk] = Wc.reshape(p, b, k).permute(1, 0, 2)
        W_prev = out[chunk[-1]]  # warm start for the next batch
    converged = worst <= tol
    if not converged:
        why = (f"in {max_iter} proximal-gradient steps; increase max_iter"
               if n_iter >= max_iter else
               "before it stalled (rounding errors of the dtype; try float64 or a larger tol)")
        warn_not_converged(f"lasso/elastic-net path did not reach a relative duality gap of "
                           f"{tol:g} {why} (reached {worst:.3g})")
    return out, Info(n_iter=n_iter, converged=converged, certificate=worst)


def _finish(W, y, info, return_info):
    W = W.reshape(W.shape[:2] + tuple(y.shape[1:]))
    return (W, info) if return_info else W


def lasso_path(X, y, lams, *, tol=None, max_iter: int = 100_000, batch_size: int | None = None,
               return_info: bool = False):
    r"""Lasso solutions for many strengths, batched, certified by the duality gap.

    .. math:: w_\lambda = \arg\min_w \tfrac1{2n}\|y - Xw\|_2^2 + \lambda\|w\|_1

    for every :math:`\lambda` in ``lams`` and every column of ``y`` (no intercept; the
    scikit-learn ``lasso_path`` scaling).

    Algorithm. The strengths are sorted decreasingly and solved ``batch_size`` at a time,
    each batch warm-started from the previous batch's last solution; every
    (:math:`\lambda`, target) pair is one column of a matrix :math:`W`, so all products are
    matrix-matrix. For a batch of :math:`B` columns, each outer iteration computes the
    residuals and the full gradient :math:`X^\top R` (one GEMM, :math:`2npB` flops), the
    exact duality gap of every column, the gap-safe screening rule, and a working set
    :math:`S` (the support plus the features closest to their dual constraint). Then batched
    FISTA with gradient restart runs on :math:`S` in Gram mode, at :math:`|S|^2B` flops per
    step, until each column's gap on :math:`S` is below a fraction of its outer gap.
    Columns whose full gap is below ``tol`` leave the batch. Stops on the duality gap only.
    With ``tol <= 1e-8`` (the float64 default) each batch ends with an exact solve on each
    column's support and signs (one batched Cholesky), kept where its gap is smaller: the
    gap bounds the objective, but the coefficients only to :math:`\sqrt{\text{gap}}`.

    Tall designs (:math:`p \le n`, Gram mode) never touch :math:`X` inside the loops: with
    :math:`H = X^\top X/n`, :math:`c = X^\top y/n`, :math:`r = y - Xw`,

    .. math:: \tfrac1n\|r\|^2 = \tfrac1n\|y\|^2 - 2c^\top w + w^\top Hw, \qquad
              X^\top r/n = c - Hw,

    so the gap and the dual point need only :math:`H_{:,A}w_A` on the support :math:`A`.
    Rows of :math:`H` are formed as features first enter (one pass over :math:`X` per
    block, all of :math:`H` once half of it is needed, or at once for small
    :math:`np^2`), and each batch starts with semismooth Newton steps: predict each
    column's support and signs from :math:`w + (c - Hw)/\operatorname{diag}(H)` (at most
    :math:`\operatorname{nnz}(w) + 10` new features a step) and solve the KKT conditions
    on them exactly; supports nested as along a path share one Cholesky factor (the
    factor of a leading block is the leading block of the factor), others take one
    batched Cholesky. A few steps land on the solution to rounding, certified columns
    leave the batch, and on a CPU the whole path is one batch while
    :math:`Lkp^2 \le 2^{24}`, so that it costs a few dozen kernels per step, not per
    strength. Columns the Newton steps do not certify go on to the working-set loop.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        ``k`` independent targets (not the multi-task lasso); ``k = 0`` gives an empty
        result. Converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    lams : tensor of shape (L,)
        Strengths ``> 0`` in any order; row ``l`` of the result is for ``lams[l]``.
    tol : float, optional
        Stop when every duality gap is ``<= tol * ||y||^2 / (2n)`` (the objective at 0).
        Default ``1e-10`` in float64, ``1e-5`` in other dtypes.
    max_iter : int
        Budget of proximal-gradient (FISTA) steps per batch of strengths, summed over
        the working sets, Newton steps included (a positive int). Running out of it, or
        stalling on rounding errors first, warns :class:`regref.ConvergenceWarning` (the
        message says which).
    batch_size : int, optional
        Strengths solved together. Default: all of them on a GPU, and on a CPU in Gram
        mode (:math:`p \le n`) while :math:`Lkp^2 \le 2^{24}` (the Newton steps then cost a
        few batched operations for the whole path, instead of a few per batch); else 10
        (warm starts between batches are then worth more than wider products).
    return_info : bool
        Also return :class:`regref.Info`: ``certificate`` is the largest relative duality
        gap (gap over :math:`\|y\|^2/2n`) of the returned coefficients over the path and
        the targets, ``converged`` is ``certificate <= tol``, and ``n_iter`` the most
        FISTA (and Newton) steps one batch took.

    Returns
    -------
    W : tensor of shape (L, p) or (L, p, k)
        Row ``l`` solves the lasso at ``lams[l]``.
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> W, info = sparse.lasso_path(X, y, [1.0, 0.1], return_info=True)
    >>> torch.round(W, decimals=4)
    tensor([[0.0000, 1.0000],
            [0.9000, 1.9000]], dtype=torch.float64)
    >>> info.converged
    True
    """
    X, y = check_data(X, y)
    lams = check_strength(lams, "lams", X, positive=True, ndims=(1,))
    W, info = _path(X, y, lams, 1.0, tol, max_iter,
                    None if batch_size is None else check_positive_int(batch_size, "batch_size"))
    return _finish(W, y, info, return_info)


def _single(result, return_info):
    W, info = result
    return (W[0], info) if return_info else W[0]


def lasso(X, y, lam, *, tol=None, max_iter: int = 100_000, return_info: bool = False):
    r"""The lasso for one strength (see :func:`lasso_path` for the algorithm).

    .. math:: \arg\min_w \tfrac1{2n}\|y - Xw\|_2^2 + \lambda\|w\|_1

    Matches scikit-learn ``Lasso(alpha=lam, fit_intercept=False)``. Derivation and
    cost: chapter 04 and :func:`lasso_path`.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        Response(s), converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    lam : float
        Strength ``> 0``.
    tol : float, optional
        Relative duality gap to reach (gap over :math:`\|y\|^2/2n`); default ``1e-10`` in
        float64, ``1e-5`` in other dtypes.
    max_iter : int
        Budget of FISTA steps, as in :func:`lasso_path`.
    return_info : bool
        Also return :class:`regref.Info` (certificate: the relative duality gap of ``w``;
        ``converged`` is ``certificate <= tol``).

    Returns
    -------
    w : tensor of shape (p,) or (p, k)
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> torch.round(sparse.lasso(X, y, 0.1), decimals=4)
    tensor([0.9000, 1.9000], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    lam = check_strength(lam, "lam", X, positive=True).reshape(1)
    W, info = _path(X, y, lam, 1.0, tol, max_iter, 1)
    return _single(_finish(W, y, info, True), return_info)


def elastic_net(X, y, lam, l1_ratio=0.5, *, tol=None, max_iter: int = 100_000,
                return_info: bool = False):
    r"""The elastic net for one strength (same solver as :func:`lasso_path`).

    .. math:: \arg\min_w \tfrac1{2n}\|y - Xw\|_2^2 + \lambda\rho\|w\|_1
              + \tfrac{\lambda(1-\rho)}2\|w\|_2^2, \qquad \rho = \texttt{l1\_ratio} \in (0, 1].

    Matches scikit-learn ``ElasticNet(alpha=lam, l1_ratio=l1_ratio, fit_intercept=False)``.
    The quadratic term is part of the smooth part (its Lipschitz constant adds
    :math:`\lambda(1-\rho)`), and the certificate is the duality gap of the equivalent lasso
    on :math:`[X; \sqrt{n\lambda(1-\rho)}I]`. Derivation and cost: chapter 04 and
    :func:`lasso_path`.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        Response(s), converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    lam : float
        Strength ``> 0``.
    l1_ratio : float
        :math:`\rho \in (0, 1]`; 1 is the lasso.
    tol, max_iter, return_info
        As in :func:`lasso`; the certificate is the relative duality gap of the
        equivalent lasso.

    Returns
    -------
    w : tensor of shape (p,) or (p, k)
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> torch.round(sparse.elastic_net(X, y, 0.1, 0.5), decimals=4)
    tensor([0.9462, 1.8157], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    lam = check_strength(lam, "lam", X, positive=True).reshape(1)
    rho = _l1_ratio(l1_ratio)
    W, info = _path(X, y, lam, rho, tol, max_iter, 1)
    return _single(_finish(W, y, info, True), return_info)


def _groups(groups, p: int, X: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Validate a partition of ``range(p)``; return the group id of every feature."""
    try:
        parts = [[int(j) for j in g] for g in groups]
        exact = all(j == k for g, part in zip(groups, parts, strict=True)
                    for j, k in zip(g, part, strict=True))
    except (TypeError, ValueError) as err:
        raise ValueError("groups must be a list of lists of feature indices") from err
    if not exact:
        raise ValueError("groups must hold integer feature indices, got a non-integer one")
    if any(len(g) == 0 for g in parts):
        raise ValueError("groups must not contain an empty group")
    flat = [j for g in parts for j in g]
    if any(j < 0 or j >= p for j in flat):
        raise ValueError(f"groups must hold feature indices in [0, {p}), "
                         f"got {min(flat)}..{max(flat)}")
    if len(flat) != len(set(flat)) or len(flat) != p:
        raise ValueError(f"groups must partition the {p} features: every index exactly once "
                         f"(got {len(flat)} indices, {len(set(flat))} distinct)")
    gid = torch.empty(p, dtype=torch.long)
    for i, g in enumerate(parts):
        gid[g] = i
    return gid.to(X.device), len(parts)


def _group_norms(w: torch.Tensor, gid: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Euclidean norm of every group, per column: (p, k) -> (G, k)."""
    sq = torch.zeros((n_groups,) + w.shape[1:], dtype=w.dtype, device=w.device)
    return sq.index_add_(0, gid, w * w).sqrt()


def group_lasso(X, y, lam, groups, *, weights=None, tol=None, max_iter: int = 100_000,
                return_info: bool = False):
    r"""The group lasso, by FISTA with restart, certified by the duality gap.

    .. math:: \arg\min_w \tfrac1{2n}\|y - Xw\|_2^2 + \lambda\sum_g \omega_g\|w_g\|_2

    The prox is block soft thresholding,
    :math:`w_g \leftarrow \max(1 - t\lambda\omega_g/\|v_g\|, 0)\,v_g`. The dual point is
    :math:`\theta = r/\max(n\lambda, \max_g \|X_g^\top r\|/\omega_g)` and
    :math:`D(\theta) = \tfrac1{2n}(\|y\|^2 - \|y - n\lambda\theta\|^2)`; the solver stops
    when :math:`P(w) - D(\theta) \le` ``tol`` :math:`\cdot\|y\|^2/2n` for every target,
    checked every 10 steps. Cost per step: :math:`p^2k` with the Gram matrix
    (:math:`p \le n`), else :math:`2npk`. :math:`w = 0` is optimal iff
    :math:`\lambda \ge \max_g \|X_g^\top y\|/(n\omega_g)`. Derivation: chapter 04.

    Parameters
    ----------
    X : tensor of shape (n, p)
        Design matrix, finite, non-empty.
    y : tensor of shape (n,) or (n, k)
        Response(s), converted to ``X``'s dtype and device (mixed inputs follow ``X``).
    lam : float
        Strength ``> 0``.
    groups : list of lists of int
        A partition of ``range(p)`` (every feature in exactly one group).
    weights : tensor of shape (G,), optional
        :math:`\omega_g > 0`; default :math:`\sqrt{|g|}`.
    tol, max_iter, return_info
        As in :func:`lasso_path` (``max_iter`` counts FISTA steps); the certificate is the
        largest relative duality gap of the returned ``w`` over the targets.

    Returns
    -------
    w : tensor of shape (p,) or (p, k)
    info : regref.Info
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from regref import sparse
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> torch.round(sparse.group_lasso(X, y, 0.1, [[0, 1]]), decimals=4)
    tensor([0.9891, 1.8191], dtype=torch.float64)
    """
    X, y = check_data(X, y)
    n, p = X.shape
    lam = check_strength(lam, "lam", X, positive=True)
    gid, n_groups = _groups(groups, p, X)
    if weights is None:
        weights = torch.bincount(gid, minlength=n_groups).to(X.dtype).sqrt()
    else:
        weights = check_strength(weights, "weights", X, positive=True, ndims=(1,))
        if len(weights) != n_groups:
            raise ValueError(f"weights must have one entry per group ({n_groups}), "
                             f"got {len(weights)}")
    tol, max_iter = _tol(tol, X), check_positive_int(max_iter, "max_iter")
    Y = y.reshape(n, -1)
    if Y.shape[1] == 0:  # no targets: nothing to solve
        W = X.new_zeros((p,) + tuple(y.shape[1:]))
        return (W, Info(n_iter=0, converged=True, certificate=0.0)) if return_info else W
    H = gram(X) / n if p <= n else None
    C = X.mT @ Y / n
    yy = (Y * Y).sum(0) / (2 * n)
    tiny = torch.finfo(X.dtype).tiny
    wcol = weights[:, None]

    def gram_apply(V):  # X^T X V / n
        return H @ V if H is not None else X.mT @ (X @ V) / n

    def gradient(V):  # of the squared loss, X^T (X V - Y) / n
        return gram_apply(V) - C

    def prox(V, step):  # block soft thresholding, group by group
        norms = _group_norms(V, gid, n_groups).clamp(min=tiny)
        return torch.clamp(1 - step * lam * wcol / norms, min=0)[gid] * V

    def gaps(V):
        R = Y - X @ V
        s = torch.maximum(lam, (_group_norms(X.mT @ R / n, gid, n_groups) / wcol).amax(0))
        primal = (R * R).sum(0) / (2 * n) + lam * (wcol * _group_norms(V, gid, n_groups)).sum(0)
        dual = yy - ((Y - lam / s * R) ** 2).sum(0) / (2 * n)
        return primal - dual

    ramp = 1 + torch.arange(p, dtype=X.dtype, device=X.device) / (7.0 * p)
    step = 1 / (1.05 * power_iteration(gram_apply, ramp, 30)[0])
    W0 = torch.zeros(p, Y.shape[1], dtype=X.dtype, device=X.device)
    W, g, n_iter = fista(gradient, prox, gaps, W0, step, tol * yy.clamp(min=tiny), max_iter,
                         _CHECK_EVERY, _STALL)
    rel = float((g / yy.clamp(min=tiny)).amax())
    converged = rel <= tol
    if not converged:
        why = (f"in {max_iter} proximal-gradient steps; increase max_iter"
               if n_iter >= max_iter else
               "before it stalled (rounding errors of the dtype; try float64 or a larger tol)")
        warn_not_converged(f"group_lasso did not reach a relative duality gap of {tol:g} "
                           f"{why} (reached {rel:.3g})")
    W = W.reshape((p,) + tuple(y.shape[1:]))
    return (W, Info(n_iter=n_iter, converged=converged, certificate=rel)) if return_info else W
