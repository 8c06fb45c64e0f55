# tamp: every target installs what it needs first (a fresh virtual environment in .venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install demo run test test-slow test-all lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch and torchvision together from PyPI (never the machine's local CPU-only torch wheel)
	$(PIP) install -q -c constraints.txt torch torchvision
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install tamp with its dev tools

demo: install  ## the default job: an offline pruning run on a tiny model
	$(PY) -m tamp.run

run: demo

test: install  ## the default test run (CPU, fast; slow tests excluded)
	$(PY) -m pytest -q

test-slow: install  ## only the slow tests
	$(PY) -m pytest -q -m slow

test-all: install  ## every test
	$(PY) -m pytest -q -m "slow or not slow"

lint: install  ## ruff
	$(VENV)/bin/ruff check .

bench: install  ## benchmarks (numbers, not tests)
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_amia.py

clean:  ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache outputs/*/ multirun
