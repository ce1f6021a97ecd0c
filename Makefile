# make help: the commands. The first `make run` or `make test` sets up .venv (torch first, see README).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: help setup run test lint bench clean
help:  ## list the commands
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)  # before the project: a bare `torch` would pull a multi-GB CUDA build
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv with torch and the project (editable)

run: setup  ## the authors' long run (spiral, DCE, 70 000 steps), offline W&B, CPU is fine
	$(PY) -m runner experiment=p1_long

test: setup  ## the test suite (2 workers)
	$(PY) -m pytest -n 2 tests

lint: setup  ## ruff
	$(VENV)/bin/ruff check src tests scripts

bench: setup  ## single-run speed (microseconds per step)
	$(PY) scripts/bench_single.py

clean:  ## remove outputs (not .venv)
	rm -rf outputs multirun
