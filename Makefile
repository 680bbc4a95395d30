# Two commands on a fresh machine: `make book` and `make test` (README).
# Both create .venv from requirements/lock.txt when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -not -path '*/_build/*' \
                 -not -path 'book/assignments/*' | sort)

# Kernels started by nbval and `make notebooks` must resolve to the venv's python.
export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0
# Stored notebook outputs must not depend on the machine (README, "Reproducible outputs"):
# `make notebooks` writes them with 2 threads and nbval checks them with 1, so every run of
# `make test` is also a cross-environment check. No MKL_CBWR or other pinning.
NB_WRITE_ENV := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
NB_CHECK_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

.PHONY: env test lint unit nbval book browser serve mathjax notebooks student assignments \
        grade bench clean

env: $(STAMP)

$(STAMP): requirements/lock.txt requirements/nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade-strategy only-if-needed -r requirements/lock.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements/nodeps.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# pytest exits 5 when it collects nothing: every target below must collect something, so
# that is a failure like any other.
PYTEST = $(BIN)/python -m pytest -p no:cacheprovider

test: env lint unit nbval book browser grade
	@echo "make test: all checks passed"

# The second pass: code a reader sees on a page (the notebooks) fits in 88 columns.
lint: env
	$(BIN)/ruff check regref tests benchmarks book
	$(BIN)/ruff check --select E501 --line-length 88 --config 'lint.per-file-ignores={}' $(NOTEBOOKS) \
	    book/assignments

# Unit, property and oracle tests, plus every docstring's Examples run as a doctest.
unit: env
	$(PYTEST) -q tests --doctest-modules regref --ignore=tests/test_site_browser.py

nbval: env
	$(NB_CHECK_ENV) $(PYTEST) -q --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	    $(NOTEBOOKS)

# The full build, warnings as errors, no incremental state (CONTRIBUTING.md).
book: env
	$(BIN)/jupyter-book build . --all -W --keep-going
	@echo "open the book: make serve  (or open _build/html/index.html)"

# The built site in a real headless Chromium (Debian's `chromium`; .ci/run installs it):
# every page, console errors, offline math, images, links, search, dropdowns; chapter
# screenshots in _build/screenshots/. Needs `make book` first. Without a Chromium it says so
# loudly and passes, so that `make test` still works on a machine without one.
CHROMIUM ?= $(shell command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null)
browser: env
	@if [ -z "$(CHROMIUM)" ] || [ ! -x "$(CHROMIUM)" ]; then \
	    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	    echo "BROWSER TEST SKIPPED: no chromium (apt-get install chromium, or CHROMIUM=/path)"; \
	    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	else \
	    CHROMIUM="$(CHROMIUM)" $(PYTEST) -q -rs tests/test_site_browser.py; \
	fi

# Serve the built book on http://127.0.0.1:$(PORT)/ (Ctrl-C to stop).
PORT ?= 8000
serve:
	@test -f _build/html/index.html || { echo "no _build/html: run make book first"; exit 1; }
	@echo "serving the book on http://127.0.0.1:$(PORT)/"
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

# Refresh the MathJax copy the site serves itself (book/_static/mathjax/) from npm.
MATHJAX_VERSION ?= 3.2.2
mathjax:
	book/_tools/vendor_mathjax.sh $(MATHJAX_VERSION)

# Re-execute every book notebook in place, top to bottom, to refresh stored outputs.
notebooks: env
	$(NB_WRITE_ENV) $(BIN)/python book/_tools/execute_notebooks.py $(NOTEBOOKS)

# The course assignments (book/assignments/, otter-grader): `make assignments` writes each
# one's student notebook and autograder into _build/assignments/<name>/; `make grade` also
# grades, locally with `otter run`, the reference solution (full marks) and a wrong one
# (one mistake per question, from mistakes.json: zero on every question), and scans the
# student files for solutions and hidden tests.
assignments: env
	$(BIN)/python book/_tools/assignments.py assign

grade: env
	$(BIN)/python book/_tools/assignments.py grade

# Student versions (solutions removed) into _build/student/.
student: env
	$(BIN)/python book/_tools/student_version.py --out _build/student $(NOTEBOOKS)

# make bench: every suite, regref against its peers (tens of minutes on 2 cores), writing
# benchmarks/results/<suite>.json and, rendered from it, <suite>.md (the appendix's table)
# and <suite>.svg (its figure). A progress bar per suite shows the case running and an ETA
# (tqdm, from requirements/bench.txt; without it a line per case).
#   make bench SUITE=sinkhorn          one suite (SUITE="a b": several); the others are left as they are
#   make bench CASE=sinkhorn_div       only the cases whose name contains the text; prints
#                                      the table, writes nothing (a partial table never
#                                      replaces a full one)
#   make bench RESUME=1                skip suites already measured at this (committed)
#                                      regref revision, and in a suite that was interrupted
#                                      the cases already measured (benchmarks/results/.partial/)
#   make bench RENDER=1                measure nothing: re-render tables and figures from the JSON
bench: env
	$(BIN)/python -m pip install -q --no-deps -r requirements/bench.txt
	$(BIN)/python -m benchmarks.run --out benchmarks/results $(foreach s,$(SUITE),--suite $(s)) \
	    $(if $(CASE),--case "$(CASE)") $(if $(RESUME),--resume) $(if $(RENDER),--render-only)

clean:
	rm -rf _build
