"""GPU shape of the TV iteration, measured on the CPU (issue #16).

Per iteration of ``tv._rof_kernel`` we count the aten kernels launched and the image-sized
tensors allocated, as the difference between runs of ``K`` and ``2K`` iterations (so the
setup and the one gap check per run cancel). Eager: ``DispatchCounter`` (a
``TorchDispatchMode``) sees every op. Compiled: ``torch.compile`` refuses to run under a
dispatch mode, and inductor's CPU kernels are C++ loops that no mode would see anyway, so
the compiled path is measured in the code inductor generates for the three steps of an
iteration: the number of kernels it generated (``torch._inductor.metrics``) and the buffers
its wrapper allocates per call (``empty_strided`` lines). Compiling costs 10-20 s here, so
it happens once per session, on a small image, with the FX graph cache off (a cache hit
would generate no code to inspect).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import DispatchCounter

from regref import tv

F64 = torch.float64
B, H, W, K = 2, 24, 20, 12


@pytest.fixture(scope="module")
def problem():
    f = torch.rand(B, H, W, dtype=F64, generator=torch.Generator().manual_seed(0))
    return f, torch.tensor([0.1, 0.3], dtype=F64).reshape(B, 1, 1)


def _per_iteration(f, radius, isotropic):
    """(kernels, image-sized allocations) per eager iteration."""
    counts = []
    for k in (K, 2 * K):
        with DispatchCounter() as c:
            tv._rof_kernel(f, radius, isotropic, 0.0, k, k)
        counts.append((len(c.kernels()), len(c.allocated(H * W)), c.host_reads()))
    return [(b - a) / K for a, b in zip(*counts, strict=True)]


@pytest.mark.parametrize("isotropic, kernels", [(True, 17), (False, 14)])
def test_eager_iteration_in_place(problem, isotropic, kernels):
    """Before #16: 28 kernels and 16 image-sized allocations per (isotropic) iteration."""
    per_kernels, per_allocs, per_reads = _per_iteration(*problem, isotropic)
    assert per_kernels == kernels
    assert per_allocs == 0
    assert per_reads == 0  # no host read between checks: a block can be one CUDA graph


@pytest.fixture(scope="module")
def compiled(problem):
    """The compiled kernel run for K iterations, with the code inductor generated."""
    from torch._inductor import config, metrics
    from torch._inductor.utils import run_and_get_code

    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    metrics.reset()
    with config.patch(fx_graph_cache=False):
        try:
            out, codes = run_and_get_code(tv._rof_kernel, *problem, True, 0.0, K, K,
                                          compile=True)
        except torch._dynamo.exc.TorchDynamoException as err:  # e.g. no C++ compiler
            pytest.skip(f"torch.compile unavailable: {type(err).__name__}")
    return out, codes, metrics.generated_kernel_count


def test_compiled_iteration_is_fused(compiled):
    """Target of #16: at most 6 kernels and no image-sized temporary per iteration."""
    _, codes, n_kernels = compiled
    assert len(codes) == 3          # ascent, projection, primal update: one graph each
    assert n_kernels <= 6           # measured: 4 (2 + 1 + 1)
    shapes = [[int(n) for n in shape.split(",") if n.strip()] for code in codes
              for shape in re.findall(r"empty_strided\w*\(\(([^)]*)\)", code)]
    assert [s for s in shapes if math.prod(s) >= H * W] == []


def test_compiled_matches_eager_to_rounding(problem, compiled):
    """Same iterates as eager up to rounding: each iteration evaluates the same formulas in
    a different order (fused, contracted), an error of a few ulps of the iterates (|u|,
    |p| <= max(|f|, lam) <= 1 here), and the K iterations add them up, so
    |u_compiled - u_eager| <= K * 16 * eps."""
    (u_c, cert_c, n_c), _, _ = compiled
    u_e, cert_e, n_e = tv._rof_kernel(*problem, True, 0.0, K, K)
    bound = K * 16 * torch.finfo(F64).eps
    assert n_c == n_e == K
    assert float((u_c - u_e).abs().max()) <= bound
    assert float((cert_c - cert_e).abs().max()) <= bound
    # and the compiled path is reused by tv_denoise (no recompilation for the same shape)
    u, info = tv.tv_denoise(problem[0], problem[1].flatten(), tol=0.5, check_every=K,
                            compile=True, return_info=True)
    ref, info_ref = tv.tv_denoise(problem[0], problem[1].flatten(), tol=0.5, check_every=K,
                                  compile=False, return_info=True)
    assert info.n_iter == info_ref.n_iter
    assert float((u - ref).abs().max()) <= info.n_iter * 16 * torch.finfo(F64).eps
