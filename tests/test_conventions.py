"""One rule per convention, checked across every iterative solver of the package.

For each solver, on a small problem: the certificate is on ``tol``'s scale
(``converged == (certificate <= tol)``) whether or not it converged, ``Info`` has the
documented types, ``max_iter`` must be a positive int, and the warning at ``max_iter``
points at the caller (this file), not at regref's internals.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import regref
from regref import (
    covariance,
    curvature,
    implicit,
    invariance,
    lowrank,
    ot,
    outputs,
    selection,
    sparse,
    tv,
)

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _regression(n=30, p=12, seed=0):
    g = _gen(seed)
    X = torch.randn(n, p, generator=g, dtype=F64)
    y = X[:, :3].sum(1) + 0.5 * torch.randn(n, generator=g, dtype=F64)
    return X, y


def _covariance(p=8, seed=0):
    g = _gen(seed)
    Z = torch.randn(3 * p, p, generator=g, dtype=F64)
    return torch.corrcoef(Z.T)


def _transport(n=12, m=10, seed=0):
    g = _gen(seed)
    x, y = torch.rand(n, 2, generator=g, dtype=F64), torch.rand(m, 2, generator=g, dtype=F64)
    a, b = torch.full((n,), 1 / n, dtype=F64), torch.full((m,), 1 / m, dtype=F64)
    return a, b, torch.cdist(x, y) ** 2, x, y


def _completion(seed=0):
    g = _gen(seed)
    Y = torch.randn(20, 3, generator=g, dtype=F64) @ torch.randn(3, 15, generator=g, dtype=F64)
    mask = torch.rand(20, 15, generator=g) < 0.5
    return Y, mask


def _image(seed=0):
    g = _gen(seed)
    u = torch.zeros(24, 24, dtype=F64)
    u[6:18, 6:18] = 1.0
    return u + 0.2 * torch.randn(24, 24, generator=g, dtype=F64)


def _blur_ops():
    kernel = torch.ones(3, 3, dtype=F64) / 9

    def A(u):
        return tv.blur_fft(u, kernel)

    return A, A  # a symmetric kernel: the periodic blur is self-adjoint


def _lasso(**kw):
    X, y = _regression()
    return sparse.lasso(X, y, 0.1 * sparse.lambda_max(X, y), **kw)


def _lasso_path(**kw):
    X, y = _regression()
    lams = sparse.lambda_max(X, y) * torch.tensor([1.0, 0.3, 0.05], dtype=F64)
    return sparse.lasso_path(X, y, lams, **kw)


def _elastic_net(**kw):
    X, y = _regression()
    return sparse.elastic_net(X, y, 0.1, 0.5, **kw)


def _group_lasso(**kw):
    X, y = _regression()
    return sparse.group_lasso(X, y, 0.05, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]], **kw)


def _glasso(**kw):
    return covariance.graphical_lasso(_covariance(), 0.1, **kw)


def _glasso_path(**kw):
    return covariance.graphical_lasso_path(_covariance(), torch.tensor([0.3, 0.1], dtype=F64),
                                           **kw)


def _mtp2(**kw):
    return covariance.mtp2_precision(_covariance(), 0.05, **kw)


def _soft_impute(**kw):
    Y, mask = _completion()
    return lowrank.soft_impute(Y, mask, 1.0, generator=_gen(), **kw)


def _soft_impute_path(**kw):
    Y, mask = _completion()
    return lowrank.soft_impute_path(Y, mask, torch.tensor([3.0, 1.0], dtype=F64),
                                    generator=_gen(), **kw)


def _sinkhorn(**kw):
    a, b, C, _, _ = _transport()
    return ot.sinkhorn(a, b, C, 0.05, **kw)


def _sinkhorn_potentials(**kw):
    a, b, C, _, _ = _transport()
    return ot.sinkhorn_potentials(a, b, C, 0.05, **kw)


def _sinkhorn_points(**kw):
    _, _, _, x, y = _transport()
    return ot.sinkhorn_points(x, y, 0.05, **kw)


def _quadratic_ot(**kw):
    a, b, C, _, _ = _transport()
    return ot.quadratic_ot(a, b, C, 0.1, **kw)


def _sparse_ot(**kw):
    a, b, C, _, _ = _transport()
    return ot.sparse_ot(a, b, C, 0.1, 3, **kw)


def _tv_denoise(**kw):
    return tv.tv_denoise(_image(), 0.1, **kw)


def _chambolle_pock(**kw):
    A, AT = _blur_ops()
    return tv.chambolle_pock(A, AT, _image(), 0.05, generator=_gen(), **kw)


def _evidence(**kw):
    X, y = _regression()
    return selection.evidence_ridge(X, y, **kw)


def _lbfgs(**kw):
    X, y = _regression()

    def fun(w):
        return 0.5 * ((X @ w - y) ** 2).mean() + 0.05 * (w ** 2).sum()

    return selection.lbfgs(fun, torch.zeros(12, dtype=F64), **kw)


def _hessian_top_eig(**kw):
    X, y = _regression()

    def loss(w):
        return 0.5 * ((torch.tanh(X @ w) - y) ** 2).mean()

    return curvature.hessian_top_eig(loss, 0.1 * torch.ones(12, dtype=F64), generator=_gen(),
                                     **kw)


def _temperature_scale(**kw):
    g = _gen()
    z = 3 * torch.randn(200, 5, generator=g, dtype=F64)
    y = torch.multinomial(torch.softmax(z / 2, -1), 1, generator=g).squeeze(-1)
    return outputs.temperature_scale(z, y, **kw)


def _gram_spectral_norm(**kw):
    W = torch.randn(3, 6, 4, generator=_gen(), dtype=F64)
    return curvature.gram_spectral_norm(W, **kw)


def _conv_spectral_bound(**kw):
    K = torch.randn(4, 3, 3, 3, generator=_gen(), dtype=F64)
    return curvature.conv_spectral_bound(K, 10, **kw)


def _inlp(**kw):
    X, _ = _regression()
    z = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    return invariance.inlp(X, z, **kw)


def _diagonal_net_flow(**kw):
    X, y = _regression(n=6, p=12)
    return implicit.diagonal_net_flow(X, y, torch.tensor([0.5, 2.0], dtype=F64), **kw)


def _diagonal_net_limit(**kw):
    X, y = _regression(n=6, p=12)
    return implicit.diagonal_net_limit(X, y, torch.tensor([1e-6, 2.0], dtype=F64), **kw)


def _sharpness(**kw):
    X, y = _regression()

    def loss(w):
        return 0.5 * ((torch.tanh(X @ w) - y) ** 2).mean()

    return implicit.sharpness(loss, 0.1 * torch.ones(12, dtype=F64), generator=_gen(), **kw)


SOLVERS = {
    "sparse.lasso": _lasso, "sparse.lasso_path": _lasso_path,
    "sparse.elastic_net": _elastic_net, "sparse.group_lasso": _group_lasso,
    "covariance.graphical_lasso": _glasso, "covariance.graphical_lasso_path": _glasso_path,
    "covariance.mtp2_precision": _mtp2,
    "lowrank.soft_impute": _soft_impute, "lowrank.soft_impute_path": _soft_impute_path,
    "ot.sinkhorn": _sinkhorn, "ot.sinkhorn_potentials": _sinkhorn_potentials,
    "ot.sinkhorn_points": _sinkhorn_points, "ot.quadratic_ot": _quadratic_ot,
    "ot.sparse_ot": _sparse_ot,
    "tv.tv_denoise": _tv_denoise, "tv.chambolle_pock": _chambolle_pock,
    "selection.evidence_ridge": _evidence, "selection.lbfgs": _lbfgs,
    "curvature.hessian_top_eig": _hessian_top_eig,
    "outputs.temperature_scale": _temperature_scale,
    "curvature.gram_spectral_norm": _gram_spectral_norm,
    "curvature.conv_spectral_bound": _conv_spectral_bound,
    "invariance.inlp": _inlp,
    "implicit.diagonal_net_flow": _diagonal_net_flow,
    "implicit.diagonal_net_limit": _diagonal_net_limit, "implicit.sharpness": _sharpness,
}


def _info(result):
    assert isinstance(result, tuple), "return_info=True returns (solution, info)"
    info = result[-1]
    assert isinstance(info, regref.Info), f"expected regref.Info, got {type(info).__name__}"
    assert isinstance(info.n_iter, int) and info.n_iter >= 0
    assert isinstance(info.converged, bool)
    assert isinstance(info.certificate, float)
    return info


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("tol", [1e-3, 1e-9])
def test_converged_iff_certificate_below_tol(name, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", regref.ConvergenceWarning)
        info = _info(SOLVERS[name](tol=tol, return_info=True))
    assert info.converged == (info.certificate <= tol), info


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_stopped_early_warns_at_the_caller_and_reports_it(name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = _info(SOLVERS[name](tol=1e-14, max_iter=1, return_info=True))
    assert not info.converged and info.certificate > 1e-14, info
    ours = [w for w in caught if issubclass(w.category, regref.ConvergenceWarning)]
    assert ours, "no ConvergenceWarning at max_iter"
    assert all(w.filename == __file__ for w in ours), [w.filename for w in ours]


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("bad", [0, -1, 1.5, 10.0, True, math.inf, math.nan, "10"])
def test_max_iter_must_be_a_positive_int(name, bad):
    with pytest.raises(ValueError, match="max_iter"):
        SOLVERS[name](max_iter=bad)
