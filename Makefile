# The two commands of the README. Both set up everything on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cvlm-installed

.PHONY: demo test test-fast test-slow lint format setup clean

setup: $(STAMP)

# torch first: torch==2.13.0 is the CPU build on this machine class. A torch that is already
# importable in the venv (a user's CUDA build, say) is left alone.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cvlm demo --out runs/demo
	@echo "Open runs/demo/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# The quick checks alone, and the slow job alone (kill / resume in subprocesses, determinism across
# thread counts, accelerate launch, the browser): together they are `make test`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache
