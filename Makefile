# The two quick-start commands, `make demo` and `make test`, work on a fresh machine with
# python3 (3.10+), venv and a C compiler. Everything else is installed into .venv here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-out
DEMO_TRIALS ?= 64

.PHONY: demo test lint install install-test system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# The farm tests restart a Redis server of their own; install it where it is missing.
system-deps:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Tune and compile a small generated CNN on this CPU: prints where model.so and manifest.json are.
## Its records go to demo-out/tuning.db, so a clone's first demo tunes; `make clean` resets it.
demo: $(VENV)/.installed
	$(BIN)/tunefarm sample-model $(DEMO_DIR)/tiny_cnn.onnx
	$(BIN)/tunefarm compile $(DEMO_DIR)/tiny_cnn.onnx --target llvm --trials $(DEMO_TRIALS) --out $(DEMO_DIR) \
		--db sqlite:///$(abspath $(DEMO_DIR))/tuning.db

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Install what the tests need, lint, type-check and run every test (SQLite and PostgreSQL).
test: system-deps lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
