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

.PHONY: help install demo test test-fast lab up down status bench clean docs-screenshots

help:
	@echo "make demo   set up, start Redis and workers, train an SAE on the bundled model, extract features"
	@echo "make test   run the test suite (real Redis, real workers, real models) and the notebooks"
	@echo "make lab    open JupyterLab on notebooks/"
	@echo "make bench  run the benchmarks"
	@echo "make docs-screenshots  rerun the browser test and rewrite its screenshots in docs/ (needs chromium)"
	@echo "make down   stop what demo/up started"

install: $(STAMP)

$(STAMP): pyproject.toml
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
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mistudio demo

test: $(STAMP)
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/mistudio up
	$(BIN)/jupyter lab notebooks/ $$(test "$$(id -u)" = 0 && echo --allow-root)

up: $(STAMP)
	$(BIN)/mistudio up

down: $(STAMP)
	$(BIN)/mistudio down

status: $(STAMP)
	$(BIN)/mistudio status

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The browser test (JupyterLab in Chromium) writes what it sees into docs/: the monitor mid-run and at
# the end, a feature card. CI runs the same test without rewriting docs/.
docs-screenshots: $(STAMP)
	MISTUDIO_SCREENSHOTS=$(CURDIR)/docs MISTUDIO_REQUIRE_BROWSER=1 $(BIN)/python -m pytest tests/browser -q  # MISTUDIO_SCREENSHOT_MODEL=folder: the SteeringPanel on that causal LM

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
