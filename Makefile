# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JOBS ?= 2  # pytest-xdist processes for `make test` (0: one process, as before)
RUN := runs/$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo compare book api-docs test test-fast lint lab clean regression-baseline

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks,book,test]"
	touch $@

# Runs every teaching notebook headless (papermill) on the demo data into runs/<timestamp>/: the executed
# notebooks, plus the figures (PNG) and metrics (JSON/CSV) each writes into its own sub-folder.
demo: setup
	$(PY) -m adnlib demo-data
	@echo "running the notebooks into $(RUN) (a failing notebook is reported, the others still run)"
	$(PY) -m adnlib notebooks --out $(RUN)
	@echo "done: executed notebooks, figures and metrics are in $(RUN)/"

# The course as an HTML book, from the executed notebooks of the last `make demo` (nothing is executed again):
# runs/book/html. Needs npm once, to take the widget JavaScript from the npm registry (pages load nothing from
# outside the site). Serve: python -m http.server --bind 127.0.0.1 --directory runs/book/html 8000
book: setup
	$(PY) tools/book.py

# The API reference, generated from the docstrings (Sphinx autodoc, offline): runs/api/html/index.html.
api-docs: setup
	$(PY) -m sphinx -b html -q docs/reference runs/api/html
	@echo "the API reference is in runs/api/html/index.html"

# Is the attention's gain larger than the noise? Every variant on both demo categories with 3 seeds (paired: one
# seed gives every variant the same flow initialisation, data order and angles), then mean ± std over seeds, the
# paired ΔAUROC with a 95% interval over seeds and test images, a Holm-corrected verdict (3 seeds at least) and
# DeLong's p given the models (docs/protocol.md §9). Cells are reused when run again.
compare: setup
	$(PY) -m adnlib demo-data
	$(PY) -m adnlib grid --data data/demo --preset demo --seeds 0 1 2 --out runs/compare

# Everything, notebooks and subprocess checks included (CI runs this). tools/browser.py first finds a Chromium for
# the browser tests or installs one (Playwright's download, else Debian's package as root), else says what to install.
# The test files are shared out over $(JOBS) processes, each file whole in one of them (--dist loadfile: a file's
# module fixtures, the built book or a Ray cluster, are made once).
test: setup
	$(PY) tools/browser.py
	ADNLIB_OFFLINE=1 $(PY) -m pytest -q --durations=15 -n $(JOBS) --dist loadfile

# Re-makes the committed regression baseline (docs/regression.md) after a change that moves its numbers on purpose,
# in the same commit as the change: the regression workflow's command without --baseline, its summaries copied over.
REGRESSION := --only 00_quickstart 04_auroc_evaluation -p preset '"smoke"' -p weights '"none"' -p device '"cpu"'
regression-baseline: setup
	rm -rf runs/baseline-smoke
	ADNLIB_OFFLINE=1 $(PY) -m adnlib notebooks --out runs/baseline-smoke $(REGRESSION)
	rm -f regression/baseline-smoke/*.summary.json
	cp runs/baseline-smoke/*.summary.json regression/baseline-smoke/
	@echo "regression/baseline-smoke re-made: commit it with the change that moved it"

# ruff (configured in pyproject.toml): the library, tests, benchmarks and notebooks.
lint: setup
	$(VENV)/bin/ruff check .

# The quick loop while developing (under a minute on 2 idle cores): everything not marked slow (no notebook runs,
# no CLI subprocesses, no test over 2 s), shared out test by test over $(JOBS) processes.
test-fast: setup
	ADNLIB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -n $(JOBS) --dist load

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
