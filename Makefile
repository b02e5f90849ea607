# minituner: `make main` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup main test lint bench clean

setup: $(STAMP)

# torch is installed first and pinned: a CPU build of exactly 2.13.0 is available offline,
# while letting another package pull "torch" would fetch several GB of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: pretrain the base (cached under outputs/bases/), then LoRA-fine-tune it on
# the irregular-verb subset. Results land in outputs/runs/<date>_<time>_lora/.
main: setup
	$(BIN)/minituner-train regime=lora

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/pretrain_time.py
	$(BIN)/python benchmarks/compare_regimes.py
	$(BIN)/python benchmarks/quant_throughput.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
