"""Write student versions of book notebooks: every solution removed (``make student``).

Solutions use sphinx-exercise's gated form: a markdown cell opening with
``{solution-start}``, any number of cells, and a markdown cell with ``{solution-end}``.
Everything from the start cell to the end cell is dropped; outputs of the remaining
code cells are cleared so the student runs the notebook themselves. Exercises stay.
The output keeps the book's folder layout.
"""

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

START, END = "{solution-start}", "{solution-end}"


def strip_solutions(nb):
    """Return a copy of ``nb`` without solution cells; raise on unbalanced markers."""
    cells, inside = [], False
    for cell in nb.cells:
        src = cell.source if cell.cell_type == "markdown" else ""
        if START in src:
            if inside:
                raise ValueError("nested {solution-start}")
            inside = True
        if not inside:
            if cell.cell_type == "code":
                blank = {"outputs": [], "execution_count": None}
                cell = nbformat.from_dict({**cell, **blank})
            cells.append(cell)
        if END in src:
            if not inside:
                raise ValueError("{solution-end} without {solution-start}")
            inside = False
    if inside:
        raise ValueError("{solution-start} without {solution-end}")
    out = nbformat.from_dict(dict(nb))
    out.cells = cells
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks:
        nb = strip_solutions(nbformat.read(path, as_version=4))
        target = args.out / path.parent.name / path.name  # same layout as book/
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        print(target)
    # The chapters load the book's plot style by a relative path.
    style = Path(__file__).parents[1] / "regref.mplstyle"
    shutil.copy(style, args.out / "regref.mplstyle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
