# miStudio: the two commands that matter are `make demo` and `make test`.
# Each creates or updates the virtual environment in $(VENV) when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.mistudio-installed
# The CPU build of torch for machines without CUDA (PyPI's default Linux wheel is a multi-GB CUDA build).
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The JupyterLab extension (server extension + sidebar): its frontend is built from src/ with jlpm
# (Node, packages from the npm registry); the built labextension is linked into the venv.
LAB_EXT := extensions/mistudio_lab
LAB_BUILT := $(LAB_EXT)/mistudio_lab/labextension/package.json
LAB_SOURCES := $(wildcard $(LAB_EXT)/src/*.ts $(LAB_EXT)/style/*) $(LAB_EXT)/package.json $(LAB_EXT)/tsconfig.json
JLPM := PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/jlpm

.PHONY: help install demo test test-cluster test-fast lab up down status bench bench-peers clean docs-screenshots

help:
	@echo "make demo   set up, start Redis and workers, train an SAE on the bundled model, extract features"
	@echo "make test   run the test suite (real Redis, real workers, real models) and the notebooks"
	@echo "make test-cluster  the multi-device tests alone (hosts in network namespaces; needs root)"
	@echo "make lab    open JupyterLab on notebooks/, with the miStudio panel in the left sidebar"
	@echo "make bench  run the benchmarks"
	@echo "make bench-peers  SAE quality and speed against sparsify, SAELens, dictionary_learning (builds their venvs in .peers/)"
	@echo "make docs-screenshots  rerun the browser test and rewrite its screenshots in docs/ (needs chromium)"
	@echo "make down   stop what demo/up started"

install: $(STAMP) $(LAB_BUILT)

$(STAMP): pyproject.toml $(LAB_EXT)/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch: keeping $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "torch: CUDA found, installing the CUDA build"; $(PIP) install "torch>=2.2"; \
	else \
		echo "torch: no CUDA, installing the CPU build"; \
		$(PIP) install "torch==$(TORCH_VERSION)+cpu" || $(PIP) install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX); \
	fi
	$(PIP) install --quiet -e ".[dev]"
	@command -v node >/dev/null || { echo "mistudio-lab: building its JupyterLab frontend needs Node >= 20.19 (apt-get install nodejs, or conda install nodejs)"; exit 1; }
	@echo "mistudio-lab: building the JupyterLab extension (jlpm, npm registry; a few minutes the first time)"
	$(PIP) install --quiet --no-deps -e $(LAB_EXT)
	$(BIN)/jupyter builder develop --overwrite $(LAB_EXT)
	@touch $(STAMP)

# After editing the extension's TypeScript or CSS: rebuild it (the venv links to the build; reload the page).
$(LAB_BUILT): $(LAB_SOURCES) | $(STAMP)
	cd $(LAB_EXT) && $(JLPM) install && $(JLPM) build
	@touch $@

demo: $(STAMP)
	$(BIN)/mistudio demo

test: install
	$(BIN)/python -m pytest

# The multi-device tests alone: hosts in network namespaces (needs root and `ip netns`).
test-cluster: install
	MISTUDIO_REQUIRE_CLUSTER=1 $(BIN)/python -m pytest tests/cluster -q

lab: install
	$(BIN)/mistudio up
	$(BIN)/jupyter lab notebooks/ $$(test "$$(id -u)" = 0 && echo --allow-root)

up: $(STAMP)
	$(BIN)/mistudio up

down: $(STAMP)
	$(BIN)/mistudio down

status: $(STAMP)
	$(BIN)/mistudio status

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do \
		case $$b in *bench_vs_peers.py) continue;; esac; \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Peer libraries, each in its own venv under $(PEERS_DIR) with our CPU torch (built once; see
# benchmarks/peers/setup_venvs.sh), then the side-by-side table. Not part of `make bench` (an hour
# or more on a 2-core CPU). BENCH_PEERS_ARGS, e.g. "--budgets short --archs topk".
PEERS_DIR ?= .peers
BENCH_PEERS_ARGS ?=
bench-peers: $(STAMP)
	PEERS_DIR=$(PEERS_DIR) TORCH_VERSION=$(TORCH_VERSION) TORCH_CPU_INDEX=$(TORCH_CPU_INDEX) \
		bash benchmarks/peers/setup_venvs.sh $(PYTHON)
	$(BIN)/python benchmarks/bench_vs_peers.py --peers-dir $(PEERS_DIR) $(BENCH_PEERS_ARGS)

# The browser test (JupyterLab in Chromium) writes what it sees into docs/: the monitor mid-run and at
# the end, a feature card. CI runs the same test without rewriting docs/.
docs-screenshots: $(STAMP)
	MISTUDIO_SCREENSHOTS=$(CURDIR)/docs MISTUDIO_REQUIRE_BROWSER=1 $(BIN)/python -m pytest tests/browser -q  # MISTUDIO_SCREENSHOT_MODEL=folder: the SteeringPanel on that causal LM

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
