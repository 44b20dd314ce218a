# Two commands for a fresh machine: `make train` and `make test`. Both create .venv if missing
# and install the pinned dependencies (requirements.lock) plus dlx itself (editable).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: train test test-slow lint bench clean-venv browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/dlx train $(ARGS)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

# tests/test_report.py loads `dlx report` pages in headless Chromium (Debian's package; the
# playwright package drives it, its own browser download is never used). Installed once when
# missing, non-interactively (sudo when not root); instant when present.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-dejavu-core </dev/null >/dev/null || \
	  echo "warning: chromium not installed: the browser tests will skip (fail under CI)"; }

test-slow: $(STAMP) browser
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dlx tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/step_overhead.py

clean-venv:
	rm -rf $(VENV)
