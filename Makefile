# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN := runs/$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks,test]"
	touch $@

demo: setup
	$(PY) -m adnlib demo-data
	$(PY) -m adnlib grid --data data/demo --preset demo --out $(RUN)

test: setup
	ADNLIB_OFFLINE=1 $(PY) -m pytest -q

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
