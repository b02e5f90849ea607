# minituner: `make main` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup main test lint bench bench-seeds bench-qlora-gap shipped clean

setup: $(STAMP)

# torch is installed first and pinned: a CPU build of exactly 2.13.0 is available offline,
# while letting another package pull "torch" would fetch several GB of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: the QLoRA preview. Pretrains the base and trains the reference LoRA adapter
# when they are missing (cached under outputs/), then writes outputs/preview/<date>_<time>/REPORT.md.
main: setup
	$(BIN)/minituner-preview

# Two workers (pytest-xdist): most of the suite is processes that import Lightning and train a tiny
# model, so two at a time use both cores; workers steal tests from each other to finish together.
# --durations lists the slowest tests at the end: where the suite's time goes.
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=15

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/pretrain_time.py --write
	$(BIN)/python benchmarks/generate_speed.py --write
	$(BIN)/python benchmarks/compare_regimes.py --write
	$(BIN)/python benchmarks/quant_throughput.py --write
	$(BIN)/python benchmarks/quant_layer.py --write
	$(BIN)/python benchmarks/train_throughput.py --models minigpt_100m --regimes full lora qlora --rounds 2 --write
	$(BIN)/python benchmarks/memory_scale.py --write
	$(BIN)/python benchmarks/scaling.py --write
	$(BIN)/python benchmarks/cpu_determinism.py --write
	$(BIN)/python benchmarks/your_data.py --write

# The seed statistics behind the README's headline table and the frontier figure (about 35 min
# on 2 cores): 3 bases x 3 seeds of LoRA and QLoRA, then 7 recipes per base.
bench-seeds: setup
	$(BIN)/python benchmarks/seed_robustness.py --jobs 2 --json-out benchmarks/results/seed_robustness.json
	$(BIN)/python benchmarks/frontier.py --jobs 2 --write

# The QLoRA-gap study (benchmarks/qlora_gap.py): 10 LoRA variants x 3 bases x 3 seeds at the short budget
# (about 45 min on 2 cores), then the recipe's budget (about 2 h; finished cells are read, not rerun).
bench-qlora-gap: setup
	$(BIN)/python benchmarks/qlora_gap.py --budgets short --jobs 2 --write
	$(BIN)/python benchmarks/qlora_gap.py --budgets default --jobs 2 --write --name qlora_gap_default

# Rebuild the base and the reference adapter that ship in minituner/shipped/ (about 5 min on 2 cores):
# pretrained and trained from scratch in outputs/shipping/, then copied with their provenance.
# tests/test_shipped.py names this target when the default config's keys no longer match them.
shipped: setup
	rm -rf outputs/shipping
	$(BIN)/python -m minituner.apps.ship --outputs-dir outputs/shipping

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
