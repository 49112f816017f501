# Set-up and checks. Everything goes into a virtual environment in .venv.
#   make demo   install, then judge a solution end to end (on the CPU when there is no GPU)
#   make test   install with the dev tools, then run the test suite
#   make lint   run every pre-commit hook on every file

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# a torch that is already installed (e.g. a CUDA build) is kept; otherwise this one is installed
TORCH ?= torch==2.13.0

.PHONY: install install-dev demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[triton,jax]"

install-dev: install
	$(BIN)/pip install --quiet -e ".[triton,jax,cute,mojo,ray,dev]"

demo: install
	$(BIN)/python run_challenge.py 96 --action submit \
		--solution solutions/96_int8_kv_cache_attention/solution.pytorch.py

test: install-dev
	$(BIN)/python -m pytest

lint: install-dev
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pre-commit run --all-files --show-diff-on-failure

clean:
	rm -rf $(VENV) .pytest_cache
