"""Benchmark suite (stub, being written)."""

NAME = "tv_denoise"
NOTE = ""


def cases(quick: bool = False) -> list:
    return []
