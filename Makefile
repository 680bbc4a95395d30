# Two commands on a fresh machine: `make book` and `make test` (README).
# Both create .venv from requirements/lock.txt when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -not -path '*/_build/*' | sort)

# Kernels started by nbval and `make notebooks` must resolve to the venv's python.
export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0
# Stored notebook outputs must not depend on the machine: fixed thread count and MKL's
# conditional numerical reproducibility (same results on any x86 CPU).
NB_ENV := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 MKL_CBWR=COMPATIBLE

.PHONY: env test lint unit nbval book notebooks student bench clean

env: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade-strategy only-if-needed -r requirements/lock.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# pytest exits 5 when it collects nothing: that is not a failure of the code.
PYTEST = $(BIN)/python -m pytest -p no:cacheprovider

test: env lint unit nbval book
	@echo "make test: all checks passed"

lint: env
	$(BIN)/ruff check regref tests benchmarks book

unit: env
	$(PYTEST) -q tests || test $$? -eq 5

nbval: env
	$(NB_ENV) $(PYTEST) -q --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	    $(NOTEBOOKS) || test $$? -eq 5

# The full build, warnings as errors, no incremental state (DESIGN §6).
book: env
	$(BIN)/jupyter-book build . --all -W --keep-going
	@echo "open _build/html/index.html"

# Re-execute every book notebook in place, top to bottom, to refresh stored outputs.
notebooks: env
	$(NB_ENV) $(BIN)/python book/_tools/execute_notebooks.py $(NOTEBOOKS)

# Student versions (solutions removed) into _build/student/.
student: env
	$(BIN)/python book/_tools/student_version.py --out _build/student $(NOTEBOOKS)

bench: env
	$(BIN)/python -m pip install -q --no-deps -r requirements/bench.txt
	$(BIN)/python -m benchmarks.run --out benchmarks/results

clean:
	rm -rf _build
