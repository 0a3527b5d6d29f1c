# embodied-rl: `make test` and `make demo` set everything up on a fresh machine.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MUJOCO_GL ?= egl
export LP_NUM_THREADS ?= 0

.PHONY: setup test test-slow lint format demo bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The fast test suite (slow tests are opt-in: `make test-slow`).
test: lint
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

## The main job: scripted episodes on a tabletop task -> rollout video + success table.
demo: $(STAMP)
	$(BIN)/erl demo --out outputs/demo

bench: $(STAMP)
	$(BIN)/python benchmarks/env_throughput.py --out benchmarks/results/env_throughput.md
	$(BIN)/python benchmarks/expert_success.py --out benchmarks/results/expert_success.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs
