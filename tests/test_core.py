"""Tests of regref._core: Info, ConvergenceWarning, conversion and validation helpers."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import regref
from regref._core import (
    ConvergenceWarning,
    Info,
    as_float_tensor,
    check_data,
    check_finite,
    check_ndim,
    check_strength,
    check_symmetric,
)

# --- Info and ConvergenceWarning -------------------------------------------------------


def test_info_is_frozen_with_the_documented_fields():
    info = Info(n_iter=3, converged=True, certificate=1e-12)
    assert (info.n_iter, info.converged, info.certificate) == (3, True, 1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.n_iter = 4
    names = {f.name for f in dataclasses.fields(Info)}
    assert {"n_iter", "converged", "certificate"} <= names


def test_public_names_are_the_core_ones():
    assert regref.Info is Info
    assert regref.ConvergenceWarning is ConvergenceWarning


def test_warn_not_converged_points_at_the_caller():
    from regref._core import warn_not_converged

    assert issubclass(ConvergenceWarning, UserWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_not_converged("stopped at max_iter")
    assert len(caught) == 1 and caught[0].category is ConvergenceWarning
    assert caught[0].filename == __file__  # this test, not regref/_core.py


# --- as_float_tensor -------------------------------------------------------------------


@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
def test_floating_tensors_pass_through_untouched(dt):
    x = torch.arange(6, dtype=dt).reshape(2, 3)
    t = as_float_tensor(x, "x")
    assert t.dtype == dt and t.device == x.device
    assert t.data_ptr() == x.data_ptr()  # no copy


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_numpy_floats_keep_their_dtype(dt):
    a = np.linspace(-1, 1, 5).astype(dt)
    t = as_float_tensor(a, "x")
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.from_numpy(a).dtype
    np.testing.assert_array_equal(t.numpy(), a)


@pytest.mark.parametrize(
    "value",
    [0.1, 3, True, [0.1, 0.2], [1, 2, 3], [[1.5, 2.0], [3.0, 4.0]], (1, 2.5),
     np.arange(4), torch.arange(4), torch.tensor([True, False])],
    ids=["float", "int", "bool", "list-float", "list-int", "nested", "tuple", "np-int",
         "torch-int", "torch-bool"],
)
def test_python_numbers_and_integers_become_float64(value):
    t = as_float_tensor(value, "x")
    assert t.dtype == torch.float64  # never torch's default float32
    np.testing.assert_array_equal(t.numpy(), np.asarray(value, dtype=np.float64))


def test_python_float_is_not_rounded_to_float32():
    t = as_float_tensor(0.1, "x")
    assert float(t) == 0.1  # 0.1 is not representable in float32


@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
def test_like_sets_dtype_and_device(dt):
    like = torch.zeros(2, dtype=dt)
    for value in (0.1, [1, 2], np.ones(3), torch.ones(3, dtype=torch.float64)):
        t = as_float_tensor(value, "x", like=like)
        assert t.dtype == dt and t.device == like.device


@pytest.mark.parametrize(
    "value",
    [1j, [1 + 2j, 3.0], np.ones(3, dtype=np.complex128), torch.ones(2, dtype=torch.complex64)],
    ids=["py-complex", "list-complex", "np-complex", "torch-complex"],
)
def test_complex_is_rejected_with_type_error_naming_the_argument(value):
    with pytest.raises(TypeError, match="my_arg"):
        as_float_tensor(value, "my_arg")


@pytest.mark.parametrize("value", ["abc", ["a", "b"], [1, "b"], None, {"a": 1}, object()],
                         ids=["str", "list-str", "mixed", "None", "dict", "object"])
def test_non_numbers_are_rejected_with_type_error_naming_the_argument(value):
    with pytest.raises(TypeError, match="my_arg"):
        as_float_tensor(value, "my_arg")


# --- validation helpers ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_names_the_argument(bad):
    t = torch.tensor([1.0, bad, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="my_arg"):
        check_finite(t, "my_arg")
    ok = torch.ones(3)
    assert check_finite(ok, "my_arg") is ok


def test_check_ndim_names_the_argument_and_the_shape():
    with pytest.raises(ValueError, match=r"my_arg must be 2-D.*\(2, 3, 4\)"):
        check_ndim(torch.zeros(2, 3, 4), "my_arg", (2,))
    with pytest.raises(ValueError, match="my_arg must be 1-D or 2-D"):
        check_ndim(torch.zeros(()), "my_arg", (1, 2))
    assert check_ndim(torch.zeros(3), "my_arg", (1, 2)).shape == (3,)


@pytest.mark.parametrize(
    "value, kwargs, match",
    [
        (-1.0, {}, "my_lam must be >= 0"),
        (float("nan"), {}, "my_lam contains NaN"),
        (float("inf"), {}, "my_lam contains NaN or infinite"),
        (0.0, {"positive": True}, "my_lam must be > 0"),
        ([1.0, -2.0], {"ndims": (1,)}, "my_lam must be >= 0"),
        ([], {"ndims": (1,)}, "my_lam must not be empty"),
        ([1.0, 2.0], {}, "my_lam must be 0-D"),
        (1.0, {"ndims": (1,)}, "my_lam must be 1-D"),
    ],
    ids=["negative", "nan", "inf", "zero-positive", "negative-in-list", "empty", "list-as-scalar",
         "scalar-as-list"],
)
def test_check_strength_rejects_bad_values_naming_the_argument(value, kwargs, match):
    like = torch.zeros(2, dtype=torch.float32)
    with pytest.raises(ValueError, match=match):
        check_strength(value, "my_lam", like, **kwargs)


def test_check_strength_returns_like_dtype():
    like = torch.zeros(2, dtype=torch.float32)
    t = check_strength(0.5, "lam", like)
    assert t.dtype == torch.float32 and float(t) == 0.5
    t = check_strength([0.0, 2.0], "lams", like, ndims=(1,))
    assert t.dtype == torch.float32 and t.tolist() == [0.0, 2.0]


def test_check_data_validates_and_converts():
    X = torch.randn(4, 3, dtype=torch.float32)
    Xc, yc = check_data(X, [1, 2, 3, 4], X_name="A", y_name="b")
    assert yc.dtype == torch.float32 and Xc is X
    with pytest.raises(ValueError, match=r"b must have 4 rows"):
        check_data(X, torch.ones(3), X_name="A", y_name="b")
    with pytest.raises(ValueError, match=r"A must be 2-D"):
        check_data(torch.ones(4), torch.ones(4), X_name="A", y_name="b")
    with pytest.raises(ValueError, match=r"A must be non-empty"):
        check_data(torch.ones(0, 3), torch.ones(0), X_name="A", y_name="b")
    with pytest.raises(ValueError, match=r"b must be 1-D or 2-D"):
        check_data(X, torch.ones(4, 1, 1), X_name="A", y_name="b")
    bad = X.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"A contains NaN"):
        check_data(bad, torch.ones(4), X_name="A", y_name="b")
    with pytest.raises(ValueError, match=r"b contains NaN"):
        check_data(X, torch.tensor([1.0, float("inf"), 0.0, 0.0]), X_name="A", y_name="b")


def test_check_symmetric():
    rng = np.random.default_rng(0)
    B = torch.as_tensor(rng.standard_normal((5, 5)))
    S = B @ B.mT
    assert check_symmetric(S, "my_mat") is S
    # one rounding error of asymmetry is tolerated ...
    S2 = S.clone()
    S2[0, 1] = S2[0, 1] * (1 + torch.finfo(S.dtype).eps)
    check_symmetric(S2, "my_mat")
    # ... a real one is not
    with pytest.raises(ValueError, match="my_mat must be symmetric"):
        check_symmetric(B, "my_mat")
    with pytest.raises(ValueError, match="my_mat must be a square matrix"):
        check_symmetric(torch.zeros(3, 4), "my_mat")
    with pytest.raises(ValueError, match="my_mat must be a square matrix"):
        check_symmetric(torch.zeros(3), "my_mat")


def test_check_tol_defaults_by_dtype_and_rejects_nonpositive():
    from regref._core import check_loop_options, check_tol

    assert check_tol(None, torch.float64, 1e-10, 1e-5) == 1e-10
    assert check_tol(None, torch.float32, 1e-10, 1e-5) == 1e-5
    assert check_tol(3e-4, torch.float32, 1e-10, 1e-5) == 3e-4
    for bad in (0.0, -1e-8, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tol"):
            check_tol(bad, torch.float64, 1e-10, 1e-5)
    assert check_loop_options(None, 100, 10, torch.float64, 1e-9, 1e-5) == (1e-9, 100, 10)
    with pytest.raises(ValueError, match="check_every"):
        check_loop_options(None, 100, 0, torch.float64, 1e-9, 1e-5)


# --- the shared algorithms: soft thresholding, power iteration, FISTA ----------------------


def test_soft_is_the_validated_soft_threshold():
    from regref._core import soft

    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    expected = torch.sign(x) * torch.clamp(x.abs() - 1.25, min=0)
    assert torch.equal(soft(x, 1.25), expected)
    assert torch.equal(regref.prox.soft_threshold(x, 1.25), expected)


def test_power_iteration_batched_top_eigenvalue():
    from regref._core import power_iteration

    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)
    S = A @ A.mT  # three PSD matrices
    top, v = power_iteration(lambda V: (S @ V[..., None])[..., 0],
                             torch.ones(3, 8, dtype=torch.float64), 500)
    exact = torch.linalg.eigvalsh(S)[:, -1]
    # the Rayleigh quotient is a lower bound; after 500 steps it is exact to rounding
    assert torch.all(top <= exact * (1 + 1e-12))
    torch.testing.assert_close(top, exact, rtol=1e-8, atol=0)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("bad", [True, 1.5, 10.0, float("inf"), float("nan"), 0, -3, None])
def test_check_positive_int_rejects_non_integers(bad):
    from regref._core import check_positive_int

    with pytest.raises(ValueError, match="max_iter"):
        check_positive_int(bad, "max_iter")


def _lasso_closures(X, y, lam):
    """gradient, prox and duality gap of (1/2n)||y - Xw||^2 + lam ||w||_1, batched columns."""
    n = X.shape[0]

    def gradient(W):
        return X.mT @ (X @ W - y[:, None]) / n

    def prox(V, step):
        return torch.sign(V) * torch.clamp(V.abs() - step * lam, min=0)

    def gap(W):
        r = y[:, None] - X @ W
        s = torch.clamp((X.mT @ r / n).abs().amax(0), min=lam)
        primal = (r * r).sum(0) / (2 * n) + lam * W.abs().sum(0)
        dual = ((y * y).sum() - ((y[:, None] - lam / s * r) ** 2).sum(0)) / (2 * n)
        return primal - dual

    return gradient, prox, gap


def test_fista_kernel_runs_from_its_own_source_and_solves_the_lasso():
    from conftest import load_kernel

    from regref import sparse
    from regref._core import fista

    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 15, generator=g, dtype=torch.float64)
    y = X[:, :3] @ torch.tensor([2.0, -1.0, 1.5], dtype=torch.float64) \
        + 0.3 * torch.randn(40, generator=g, dtype=torch.float64)
    lam = 0.1 * float(sparse.lambda_max(X, y))
    P0 = float((y * y).sum() / 80)
    step = 1 / float(torch.linalg.matrix_norm(X, 2) ** 2 / 40)
    kernel = load_kernel(fista)  # only torch and math in its namespace
    W, gaps, n_iter = kernel(*_lasso_closures(X, y, lam), torch.zeros(15, 1, dtype=X.dtype),
                             step, torch.tensor([1e-12 * P0], dtype=X.dtype), 10_000)
    assert gaps.shape == (1,) and 0 <= float(gaps[0]) <= 1e-12 * P0 and n_iter % 10 == 0
    ref = sparse.lasso(X, y, lam)
    # both within a relative gap of 1e-10 or less: coefficients agree to about 1e-6
    assert float((W[:, 0] - ref).norm() / ref.norm()) < 1e-6
    assert float(sparse.duality_gap(X, y, W[:, 0], lam)) <= 1e-12 * P0 + 1e-15


def test_fista_stops_at_max_iter_and_reports_the_gap_of_the_returned_point():
    from regref._core import fista

    g = torch.Generator().manual_seed(4)
    X = torch.randn(30, 60, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    gradient, prox, gap = _lasso_closures(X, y, 0.01)
    step = 1 / float(torch.linalg.matrix_norm(X, 2) ** 2 / 30)
    W, gaps, n_iter = fista(gradient, prox, gap, torch.zeros(60, 1, dtype=X.dtype), step,
                            torch.tensor([0.0], dtype=X.dtype), 20)
    assert n_iter == 20 and float(gaps[0]) > 0
    assert torch.equal(gaps, gap(W))
