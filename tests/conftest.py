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


def load_kernel(func, *shared):
    """Re-create a copyable kernel from its source alone, in a namespace holding only
    ``torch``, ``math`` and the sources of the ``shared`` kernels it calls (``_core.fista``,
    ``_core.soft``: algorithms written once and pasted with it): the test that the kernel
    can be pasted into other code.

    Raises ``NameError`` when the kernel is called if it uses anything else from regref.
    """
    import inspect
    import math
    import textwrap

    namespace = {"torch": torch, "math": math}
    for f in (*shared, func):
        exec(textwrap.dedent(inspect.getsource(f)), namespace)  # noqa: S102
    return namespace[func.__name__]


def lightly_loss(name):
    """A loss class from lightly (a test-only oracle), e.g. ``lightly_loss("VICRegLoss")``.

    lightly is installed with ``--no-deps`` (requirements/nodeps.txt): its torchvision
    would replace our CPU torch. Its loss package imports torchvision at module level but
    the losses we compare against never call it, so when torchvision is missing an empty
    stand-in module is registered first.
    """
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules:

        class _Stub(types.ModuleType):
            def __getattr__(self, attr):
                if attr.startswith("__"):
                    raise AttributeError(attr)
                return type(attr, (), {"__init__": lambda self, *a, **k: None})

        class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, fullname, path, target=None):
                if fullname.split(".")[0] == "torchvision":
                    return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
                return None

            def create_module(self, spec):
                module = _Stub(spec.name)
                module.__path__ = []
                return module

            def exec_module(self, module):
                pass

        sys.meta_path.insert(0, _Finder())
    import lightly.loss

    return getattr(lightly.loss, name)


def run_distributed(worker, *args, world_size=2):
    """Run ``worker(rank, world_size, *args)`` in ``world_size`` CPU processes joined in a
    ``gloo`` process group (the data-parallel setting of the Part III chapters); return the list of
    what each rank returned (tensors, tuples or dicts of them), indexed by rank.

    ``worker`` must be a module-level function of a test file (spawned processes import
    it by name).
    """
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_distributed_entry, args=(worker, world_size, _free_port(), tmp, args),
                 nprocs=world_size, join=True)
        return [torch.load(f"{tmp}/{rank}.pt") for rank in range(world_size)]


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_entry(rank, worker, world_size, port, tmp, args):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(worker(rank, world_size, *args), f"{tmp}/{rank}.pt")
    finally:
        dist.destroy_process_group()


class DispatchCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Count the aten kernels a piece of code launches and the tensors it allocates.

    ``ops`` lists every aten op name called (views included, so filter with ``kernels``);
    ``allocations`` lists ``(op name, number of elements)`` for every output tensor that
    owns new storage (views and in-place results share their input's storage and are not
    counted). Use as ``with DispatchCounter() as c: fn()``; it sees what the dispatcher
    sees, so compiled (inductor) code shows as the few fused kernels it calls.
    """

    def __init__(self):
        super().__init__()
        self.ops, self.allocations = [], []

    def __enter__(self):  # Tensor.tolist reads memory without dispatching: count it here
        tolist, ops = torch.Tensor.tolist, self.ops

        def counted(t, *args, **kwargs):
            ops.append("tolist")
            return tolist(t, *args, **kwargs)

        self._tolist, torch.Tensor.tolist = tolist, counted
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def host_reads(self) -> int:
        """Reads of tensor values by the host (``item``, ``bool``, ``float``, ``tolist``):
        each one waits for the device, so a loop with none can be captured as a CUDA graph."""
        return sum(op in ("_local_scalar_dense", "tolist") for op in self.ops)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.ops.append(name)
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            if t.untyped_storage().data_ptr() not in inputs:
                self.allocations.append((name, t.numel()))
        return out

    def kernels(self) -> list[str]:
        """The ops that do work (not views, metadata or scalar reads)."""
        free = {"view", "_unsafe_view", "as_strided", "expand", "t", "transpose", "permute",
                "unsqueeze", "squeeze", "select", "slice", "alias", "detach", "_to_copy_meta",
                "lift_fresh", "_local_scalar_dense", "unbind", "split", "reshape", "tolist"}
        return [op for op in self.ops if op not in free]

    def allocated(self, at_least: int) -> list[tuple[str, int]]:
        """The allocations of ``at_least`` elements or more."""
        return [(op, n) for op, n in self.allocations if n >= at_least]


def _tensors(tree):
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]
