"""Benchmarks: ``regref`` against the library a user would pick instead, on the same problem
with the same stopping rule, in one process (protocol: book/appendices/benchmarks.md).

Run ``make bench`` (or ``python -m benchmarks.run``); each suite's results land in
``benchmarks/results/<suite>.json``, with the table (``.md``) and the figure (``.svg``)
rendered from it.
"""
