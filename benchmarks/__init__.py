"""Benchmarks: ``regref`` against the library a user would pick instead (DESIGN §7).

Run ``python -m benchmarks.run``; results land in ``benchmarks/results/``.
"""
