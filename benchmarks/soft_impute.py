"""Benchmark suite (stub, being written)."""

NAME = "soft_impute"
NOTE = ""


def cases(quick: bool = False) -> list:
    return []
