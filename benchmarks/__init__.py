"""Benchmarks: ``regref`` against the library a user would pick instead, on the same problem
with the same stopping rule, in one process (protocol: book/appendices/benchmarks.md).

Run ``python -m benchmarks.run``; results land in ``benchmarks/results/``.
"""
