"""Execute book notebooks in place, top to bottom, on the CPU (``make notebooks``).

Each notebook runs in a fresh kernel with its own folder as working directory, the
way nbval runs it in CI; the stored outputs are then exactly what nbval compares.
Prints the wall time of each notebook and fails if one exceeds the 60 s budget
(CONTRIBUTING.md) or raises.
"""

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

BUDGET_S = 60.0


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # timing metadata would make every re-run a diff
        cell.metadata.pop("execution", None)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    slow = []
    for path in args.notebooks:
        elapsed = execute(path)
        print(f"{path}: {elapsed:.1f} s")
        if elapsed > BUDGET_S:
            slow.append(path)
    if slow:
        names = ", ".join(map(str, slow))
        print(f"over the {BUDGET_S:.0f} s budget: {names}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
