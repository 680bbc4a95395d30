"""The bad inputs the code review listed as crashes, silent results or confusing messages
(section 5 of the review), each with what it gets now: a ValueError/TypeError naming the
argument, or a documented result. One row per finding, so a regression names it."""

from __future__ import annotations

import warnings

import pytest
import torch

from regref import covariance, lowrank, ot, prox, sparse, tv

F64 = torch.float64
_g = torch.Generator().manual_seed(0)
X, y = torch.randn(20, 5, dtype=F64, generator=_g), torch.randn(20, dtype=F64, generator=_g)
a, b = torch.full((6,), 1 / 6, dtype=F64), torch.full((4,), 1 / 4, dtype=F64)
C = torch.rand(6, 4, dtype=F64, generator=_g)
S = torch.corrcoef(torch.randn(5, 12, dtype=F64, generator=_g))
W_tied = torch.randn(3, 4, dtype=F64, generator=_g)
W_tied[1] = W_tied[0]
Y, mask = torch.randn(6, 5, dtype=F64, generator=_g), torch.rand(6, 5, generator=_g) < 0.6
u_nan = torch.rand(5, 5, dtype=F64, generator=_g)
u_nan[0, 0] = float("nan")
lams = torch.tensor([0.1], dtype=F64)

# (finding, call, expected): expected is (exception, regex naming the argument) or a
# predicate on the result (a documented, non-error outcome).
ROWS = [
    ("sinkhorn, empty batch", lambda: ot.sinkhorn(torch.empty(0, 6, dtype=F64),
     torch.empty(0, 4, dtype=F64), torch.empty(0, 6, 4, dtype=F64), 0.1),
     lambda P: P.shape == (0, 6, 4)),
    ("graphical_lasso, empty batch", lambda: covariance.graphical_lasso(
        torch.empty(0, 4, 4, dtype=F64), 0.1), lambda T: T.shape == (0, 4, 4)),
    ("lasso_path, y with 0 columns", lambda: sparse.lasso_path(
        X, torch.empty(20, 0, dtype=F64), lams), lambda W: W.shape == (1, 5, 0)),
    ("max_iter=inf", lambda: sparse.lasso(X, y, 0.1, max_iter=float("inf")),
     (ValueError, "max_iter")),
    ("max_iter=nan", lambda: sparse.lasso(X, y, 0.1, max_iter=float("nan")),
     (ValueError, "max_iter")),
    ("max_iter=None", lambda: sparse.lasso(X, y, 0.1, max_iter=None), (ValueError, "max_iter")),
    ("max_iter=True", lambda: sparse.lasso(X, y, 0.1, max_iter=True), (ValueError, "max_iter")),
    ("duality_gap at a singular Theta (documented: +inf, Theta is infeasible)",
     lambda: covariance.duality_gap(S, torch.zeros(5, 5, dtype=F64), 0.1),
     lambda gap: bool(torch.isinf(gap))),
    ("components of a non-square S", lambda: covariance.components(
        torch.rand(3, 4, dtype=F64), 0.1), (ValueError, "S must be a square")),
    ("prox_l2 with a bad dim", lambda: prox.prox_l2(torch.rand(3, dtype=F64), 0.1, dim=5),
     (ValueError, "dim")),
    ("hyperspherical_energy with two equal rows", lambda: lowrank.hyperspherical_energy(W_tied),
     (ValueError, "W has two rows")),
    ("grad2d with NaN", lambda: tv.grad2d(u_nan), (ValueError, "u contains NaN")),
    ("div2d with NaN", lambda: tv.div2d(torch.stack([u_nan, u_nan])),
     (ValueError, "p contains NaN")),
    ("group_lasso with a non-integer index", lambda: sparse.group_lasso(
        X, y, 0.1, [[0.7, 1], [2, 3, 4]]), (ValueError, "groups")),
    ("soft_impute with float indices", lambda: lowrank.soft_impute(
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), torch.tensor([1.0, 2.0], dtype=F64),
         (3, 3)), None, 0.1), (ValueError, "Y rows and cols")),
    ("newton_schulz with steps=2.5", lambda: lowrank.newton_schulz(
        torch.randn(4, 3, dtype=F64), steps=2.5), (ValueError, "steps")),
    ("mixed dtypes (documented: y follows X)", lambda: sparse.lasso(X.float(), y, 0.1),
     lambda w: w.dtype == torch.float32),
    ("sinkhorn eps=None", lambda: ot.sinkhorn(a, b, C, None), (ValueError, "eps")),
    ("tol='x'", lambda: sparse.lasso(X, y, 0.1, tol="x"), (ValueError, "tol")),
    ("l1_ratio='a'", lambda: sparse.elastic_net(X, y, 0.1, "a"), (ValueError, "l1_ratio")),
    ("sinkhorn with one eps per problem", lambda: ot.sinkhorn(
        a.expand(2, 6), b.expand(2, 4), C.expand(2, 6, 4), torch.tensor([0.1, 0.2])),
     (ValueError, "eps must be one positive number for the whole batch")),
    ("soft_impute lam=-1", lambda: lowrank.soft_impute(Y, mask, -1.0), (ValueError, "lam must")),
    ("soft_impute lam=[0.1, 0.2]", lambda: lowrank.soft_impute(Y, mask, [0.1, 0.2]),
     (ValueError, "lam must be 0-D")),
    ("sinkhorn_cost(return_info=True)", lambda: ot.sinkhorn_cost(a, b, C, 0.1, return_info=True),
     lambda r: isinstance(r, tuple) and len(r) == 2),
    ("sinkhorn_divergence(return_info=True)", lambda: ot.sinkhorn_divergence(
        torch.rand(6, 2, dtype=F64, generator=_g), torch.rand(4, 2, dtype=F64, generator=_g),
        0.1, return_info=True), lambda r: isinstance(r, tuple) and len(r) == 2),
    ("sinkhorn with C transposed", lambda: ot.sinkhorn(a, b, C.T, 0.1),
     (ValueError, "C has shape")),
    ("sinkhorn with +inf costs (design: forbid by a large finite cost)", lambda: ot.sinkhorn(
        a, b, C.masked_fill(C > 0.9, float("inf")), 0.1), (ValueError, "C contains")),
]


@pytest.mark.parametrize("finding, call, expected", ROWS, ids=[r[0] for r in ROWS])
def test_review_bad_input(finding, call, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(expected, tuple):
            with pytest.raises(expected[0], match=expected[1]):
                call()
        else:
            assert expected(call()), finding
