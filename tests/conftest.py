"""Shared fixtures for the regref tests: dtypes with tolerances, seeded RNGs, the gpu marker."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings

# Deterministic property tests: same examples on every run, no example database written
# into the repository, no per-example deadline (the first torch call is slow to warm up).
# HYPOTHESIS_PROFILE=thorough runs many more (random) examples when hunting for bugs.
settings.register_profile("regref", max_examples=60, deadline=None, database=None,
                          derandomize=True)
settings.register_profile("thorough", max_examples=2000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "regref"))


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``@pytest.mark.gpu`` when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype."""
    return torch.finfo(dtype).eps


def tol(dtype: torch.dtype, scale: float = 1.0, factor: float = 64.0) -> float:
    """An absolute tolerance for a few dozen rounding errors on values of size ``scale``."""
    return factor * eps(dtype) * max(float(scale), 1.0)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    """Both floating dtypes every public function must preserve."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator (a fresh one per test, so tests are order-independent)."""
    return np.random.default_rng(20240607)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded torch generator for regref's ``generator=`` arguments."""
    return torch.Generator().manual_seed(1234)


def load_kernel(func):
    """Re-create a copyable kernel from its source alone, in a namespace holding only
    ``torch`` and ``math``: the test that the kernel can be pasted into other code.

    Raises ``NameError`` when the kernel is called if it uses anything else from regref.
    """
    import inspect
    import math
    import textwrap

    namespace = {"torch": torch, "math": math}
    exec(textwrap.dedent(inspect.getsource(func)), namespace)  # noqa: S102
    return namespace[func.__name__]
