# The README's two commands: `make demo` and `make test`. Each creates .venv
# when missing and (re)installs the project only when pyproject.toml changed.
# `make demo PORT=8090` serves the demo on another port when 8080 is taken.
PYTHON ?= python3
PORT ?= 8080
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench bench-load screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/panelbot demo --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# lint-imports checks the import contracts in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The quick benchmarks, one after another (a few minutes in all); bench/load.py, the long
# load test, runs on its own: `make bench-load`. See bench/README.md.
# The peers bench/weighting.py compares with (balance, weightipy) live in a venv of their own,
# made only for the benchmark: on Python 3.11 balance needs numpy < 2, which
# sortition-algorithms' cvxpy refuses. bench/requirements-peers.txt lists them.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed
$(PEERS_STAMP): bench/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -r bench/requirements-peers.txt
	touch $(PEERS_STAMP)

bench: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python bench/inbound.py
	$(BIN)/python bench/webhook.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/broadcast.py
	$(BIN)/python bench/weighting.py
	$(BIN)/python bench/evidence.py
	$(BIN)/python bench/selection.py

bench-load: $(STAMP)
	$(BIN)/python bench/load.py

# The dashboard's main pages on a throwaway demo, into docs/screenshots/ (headless Chromium
# at /usr/bin/chromium; see tools/screenshots.py).
screenshots: $(STAMP)
	$(BIN)/python tools/screenshots.py

clean:
	rm -rf $(VENV) $(PEERS) demo-data .pytest_cache
