"""GPU shape of the Sinkhorn iterations, measured on the CPU.

A GPU runs an iteration at the speed of the passes it makes over memory and the kernels it
launches. ``conftest.DispatchCounter`` records the aten ops the code dispatches and the
tensors they allocate; counting a run of ``k`` iterations and one of ``2k`` from the same
start, with the same number of convergence checks, and differencing the two leaves exactly
``k`` iterations, setup and checks cancelled. The counter sees ops as dispatched: the
temporaries a C++ kernel makes internally (``logsumexp`` takes a max, then sums
exponentials) are invisible to it, so the streamed kernel's count below is a lower bound on
its passes over a chunk, not the number of its passes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from conftest import DispatchCounter

from regref import ot

B, N, M, K_ITERS = 3, 40, 30, 20


def dense_problem():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((B, N, 2)), rng.standard_normal((B, M, 2)) + 0.5
    a, b = rng.uniform(0.1, 1, (B, N)), rng.uniform(0.1, 1, (B, M))
    a, b = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
    C = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    a, b, C = (torch.as_tensor(t) for t in (a, b, C))
    return a, b, C, 0.1 * float(C.median())


def counted(fn):
    with DispatchCounter() as counter:
        fn()
    return counter


def test_dense_iteration_is_two_matvecs_and_allocates_no_plan():
    a, b, C, eps = dense_problem()
    g = torch.zeros_like(b)

    def run(k):  # tol = 0: never converged, so exactly k iterations in one block, one check
        return counted(lambda: ot._sinkhorn_kernel(a, b, C, eps, g, 0.0, k, k))

    short, long = run(K_ITERS), run(2 * K_ITERS)
    extra = Counter(long.kernels())
    extra.subtract(Counter(short.kernels()))
    # per iteration: baddbmm (s^T K by row blocks, + 1 at zero weights), sum (of the blocks,
    # a B m vector), div, baddbmm (K t), div
    assert +extra == Counter({"baddbmm": 2 * K_ITERS, "sum": K_ITERS, "div": 2 * K_ITERS}), +extra
    # nothing of the size of the plan is written per iteration: the B n m allocations are
    # the same in both runs (the setup: -C / eps, the row shift, K)
    assert long.allocated(B * N * M) == short.allocated(B * N * M)
    sizes = Counter(n for _, n in long.allocations)
    sizes.subtract(Counter(n for _, n in short.allocations))
    assert max(+sizes) <= B * max(N, M), +sizes  # per iteration: vectors only
    # and no host read between two checks: a block of iterations can be one CUDA graph
    assert long.host_reads() == short.host_reads() > 0


def test_dense_checks_read_the_host_once_per_block():
    a, b, C, eps = dense_problem()
    g = torch.zeros_like(b)
    one_block = counted(lambda: ot._sinkhorn_kernel(a, b, C, eps, g, 0.0, 10, 10))
    four_blocks = counted(lambda: ot._sinkhorn_kernel(a, b, C, eps, g, 0.0, 40, 10))
    assert four_blocks.host_reads() == 4 * one_block.host_reads() == 4


def test_streamed_iteration_holds_at_most_one_chunk():
    rng = np.random.default_rng(1)
    n, m, chunk = 64, 48, 16
    x, y = (torch.as_tensor(rng.standard_normal((k, 2))) for k in (n, m))
    a, b = torch.full((n,), 1 / n, dtype=torch.float64), torch.full((m,), 1 / m,
                                                                      dtype=torch.float64)
    g = torch.zeros_like(b)

    def run(k):
        return counted(lambda: ot._sinkhorn_points_kernel(x, y, a, b, 0.5, g, 0.0, k, k,
                                                          chunk))

    short, long = run(K_ITERS), run(2 * K_ITERS)
    block = chunk * max(n, m)
    # never more than one chunk of the cost at a time, setup included
    assert max(size for _, size in long.allocations) <= block
    # per iteration, one chunk-sized intermediate per block of rows (or columns): the
    # (chunk, m) block of x y^T, scaled and shifted by one addmm, then its logsumexp
    big = Counter(op for op, size in long.allocations if size >= chunk * min(n, m))
    big.subtract(Counter(op for op, size in short.allocations if size >= chunk * min(n, m)))
    blocks_per_iter = n // chunk + m // chunk
    assert +big == Counter({"addmm": K_ITERS * blocks_per_iter}), +big


def test_dense_kernel_splits_one_problem_into_row_blocks_on_the_cpu():
    """A single CPU problem runs as R = gcd(n, threads) blocks of rows, so that the batched
    products use every thread (MKL runs one matrix-vector product on one thread); the
    answer is the unsplit one up to the order of the additions."""
    a, b, C, eps = dense_problem()
    a, b, C = a[:1], b[:1], C[:1]  # n = 40: R = 4 at 4 threads
    g, threads = torch.zeros_like(b), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        f1, g1, n1, err1 = ot._sinkhorn_kernel(a, b, C, eps, g, 1e-12, 10_000, 10)
        torch.set_num_threads(4)
        with DispatchCounter() as counter:
            f4, g4, n4, err4 = ot._sinkhorn_kernel(a, b, C, eps, g, 1e-12, 10_000, 10)
    finally:
        torch.set_num_threads(threads)
    # the block products: (4, 1, M) rows s^T K, summed to one; (4, N / 4, 1) columns K t
    assert ("baddbmm", 4 * M) in counter.allocations, counter.allocations[:20]
    assert n4 == n1
    # each product sums N or M terms in another order: relative differences of order
    # N u per product, not amplified by the (contracting) iteration; the potentials are
    # eps * log of the scalings
    u = torch.finfo(torch.float64).eps
    torch.testing.assert_close(f4, f1, rtol=0, atol=100 * N * u * eps)
    torch.testing.assert_close(g4, g1, rtol=0, atol=100 * N * u * eps)
