"""Benchmark suite (stub, being written)."""

NAME = "graphical_lasso"
NOTE = ""


def cases(quick: bool = False) -> list:
    return []
