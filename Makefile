# tamp: every target installs what it needs first (a fresh virtual environment in .venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install demo toy-demo quick test test-slow test-all lint bench clean

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

ifndef DEMO_DIR  # fixed once per make call: the sweep and its report use the same folder
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
endif

demo: install  ## the default job: build the toy zoo model once, prune it 9 ways, score with lmms-eval, Rel.% table
	$(PY) -m tamp.zoo build
	WANDB_SILENT=true $(PY) -m tamp.run -m +experiment=toy_demo hydra.sweep.dir=$(DEMO_DIR)  # the offline W&B runs stay in each cell folder
	$(PY) -m tamp.report $(DEMO_DIR)

toy-demo: demo

quick: install  ## one pruning run (wanda, 50%) on a tiny random LLaVA-NeXT, in seconds
	$(PY) -m tamp.run

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
