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


def test_convergence_warning_is_a_user_warning():
    assert issubclass(ConvergenceWarning, UserWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("stopped at max_iter", ConvergenceWarning, stacklevel=1)
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)


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
