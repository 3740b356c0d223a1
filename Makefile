# dicelab: `make demo` runs the main job, `make test` runs the test suite. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Stamps record what was installed; they are remade when pyproject.toml changes.
$(VENV)/.core: $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet -e ".[dev]"
	touch $(VENV)/.core $@

# The main job: a quick PSO study on the bundled digits (2 workers), its analysis with re-runs on 5 fresh
# seeds, and the HTML report. Running it again resumes the stored study instead of starting over.
demo: $(VENV)/.core
	$(PY) -m dicelab.cli study run examples/quick_digits.toml --workers 2
	$(PY) -m dicelab.cli study analyze --study digits-quick --seeds 5 --workers 2
	$(PY) -m dicelab.cli study report --study digits-quick

test: $(VENV)/.dev
	$(PY) -m pytest -q --durations=15

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.core   # the quick overhead ratios; the other scripts in benchmarks/ run for minutes to an hour
	$(PY) benchmarks/engine_overhead.py
	$(PY) benchmarks/technique_overhead.py --quick
	$(PY) benchmarks/rsgd_step_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
