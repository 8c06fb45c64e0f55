# tamp: every target installs what it needs first (a fresh virtual environment in .venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

comma := ,

.PHONY: help install system-deps lock demo toy-demo ablations quick test test-fast test-slow test-all lint bench bench-peers docs docs-build clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

LOCK := requirements.lock
UV := $(VENV)/bin/uv
# uv installs and regenerates the lock; its own version is the one the lock holds
UV_VERSION := $(shell sed -n 's/^uv==\([^ ;]*\).*/\1/p' $(LOCK))

$(UV): $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q uv==$(UV_VERSION)
	touch $@

# exactly the lock (uv pip sync removes anything else), then tamp itself, editable, without deps;
# bytecode compiled at install: with PYTHONDONTWRITEBYTECODE set (as on these machines) nothing is
# cached at import, and every process would compile lmms-eval, transformers and torch anew (~14 s)
$(VENV)/.installed: $(LOCK) pyproject.toml | $(UV)
	$(UV) pip sync -q --compile-bytecode --python $(PY) $(LOCK)
	$(UV) pip install -q --compile-bytecode --python $(PY) --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed  ## create .venv and install exactly requirements.lock, then tamp (editable)

# torchcodec (datasets' Audio()/Video() decoder) loads the system's FFmpeg libraries; no wheel has them
system-deps:  ## FFmpeg's shared libraries via apt-get, if missing (root; for the audio benchmarks)
	@if ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so\.'; then echo "FFmpeg's shared libraries: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null \
	  && echo "FFmpeg's shared libraries: installed"; } || echo "apt-get could not install ffmpeg: the audio tests will skip"; \
	else echo "FFmpeg's shared libraries are missing: apt-get install ffmpeg (as root), conda install ffmpeg or module load ffmpeg"; fi

# regenerate the lock from pyproject.toml; versions already locked stay unless UPGRADE=pkg[,pkg] (or UPGRADE=all)
lock: | $(UV)  ## re-lock with uv (UPGRADE=transformers to move one package, UPGRADE=all for everything)
	$(UV) pip compile -q pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command "make lock" -o $(LOCK) \
	  $(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(subst $(comma), ,$(UPGRADE)),--upgrade-package $(p)))

ifndef DEMO_DIR  # fixed once per make call: the sweep and its report use the same folder
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
endif

demo: install  ## the default job: build the toy zoo model once, prune it 9 ways, score with lmms-eval, Rel.% table
	$(PY) -m tamp.zoo build
	# one thread: the zoo model's matrices are 128 wide, where a second OpenMP thread only adds
	# synchronisation (12x slower linears measured with another process on the other core)
	OMP_NUM_THREADS=1 WANDB_SILENT=true $(PY) -m tamp.run -m +experiment=toy_demo hydra.sweep.dir=$(DEMO_DIR)
	$(PY) -m tamp.report $(DEMO_DIR)

toy-demo: demo

ifndef ABLATIONS_DIR
ABLATIONS_DIR := outputs/ablations/$(shell date +%Y-%m-%d_%H-%M-%S)
endif

ablations: install  ## the paper's Table 4 on the toy zoo: 13 methods and dense at 50% and 60%, Rel.% table
	$(PY) -m tamp.zoo build
	OMP_NUM_THREADS=1 WANDB_SILENT=true $(PY) -m tamp.run -m +experiment=toy_ablations hydra.sweep.dir=$(ABLATIONS_DIR)
	$(PY) -m tamp.report $(ABLATIONS_DIR)

quick: install  ## one pruning run (wanda, 50%) on a tiny random LLaVA-NeXT, in seconds
	$(PY) -m tamp.run

# pytest-xdist: one worker process per core (-n auto: at most 4, tests/conftest.py); with loadgroup the
# tests that share a module's fixture (a sweep, a trained model) stay on one worker, the others go to
# whichever is free. TEST_WORKERS=0 runs every test in the one pytest process (as `pytest` alone does).
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS) --dist loadgroup

test: install  ## the default test run (CPU, on every core; slow tests excluded)
	$(PY) -m pytest -q $(XDIST)

# only the files of the unit tier are collected, less their tests marked `integration` (each says why):
# no model, no subprocess, no lmms-eval import
FAST_TESTS = $(shell grep -l '^pytestmark = pytest.mark.fast' tests/test_*.py)
test-fast: install  ## the unit tier: the math against the official code, config composition (< 1 min)
	$(PY) -m pytest -q $(XDIST) -m "fast and not integration" $(FAST_TESTS)

test-slow: install  ## only the slow tests
	$(PY) -m pytest -q -m slow

test-all: install  ## every test
	$(PY) -m pytest -q -m "slow or not slow"

lint: install  ## ruff
	$(VENV)/bin/ruff check .

bench: install  ## benchmarks (numbers, not tests)
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_amia.py
	$(PY) benchmarks/bench_ecoflap_precision.py
	$(PY) benchmarks/bench_video_decode.py
	$(PY) benchmarks/bench_offload.py
	$(PY) benchmarks/bench_cli.py

# the peer, llm-compressor, in its own environment: it pins its own torch (<= 2.14) and transformers, so it
# never enters requirements.lock; only its own version is pinned here, its dependencies are what pip resolves
PEERS_VENV ?= .venv-peers
LLMCOMPRESSOR_VERSION := 0.14.0.1
$(PEERS_VENV)/.installed-$(LLMCOMPRESSOR_VERSION):
	test -x $(PEERS_VENV)/bin/python || python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q llmcompressor==$(LLMCOMPRESSOR_VERSION)
	rm -f $(PEERS_VENV)/.installed-*
	touch $@

bench-peers: install $(PEERS_VENV)/.installed-$(LLMCOMPRESSOR_VERSION)  ## tamp vs llm-compressor: Wanda, 2:4, SparseGPT wall time and mask agreement (BENCH_PEERS_ARGS=...)
	$(PY) benchmarks/bench_peers.py --peer-python $(PEERS_VENV)/bin/python $(BENCH_PEERS_ARGS)

# the documentation site (mkdocs.yml, docs/): served with live reload, or built strictly into build/site
export NO_MKDOCS_2_WARNING ?= 1
docs: install  ## build and serve the documentation site at http://127.0.0.1:8000 (DOCS_ADDR=host:port)
	$(VENV)/bin/mkdocs serve --dev-addr $(or $(DOCS_ADDR),127.0.0.1:8000)

docs-build: install  ## build the documentation site strictly (a broken link fails) into build/site
	$(VENV)/bin/mkdocs build --strict

clean:  ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache outputs/*/ multirun
