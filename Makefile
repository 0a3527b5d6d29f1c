# embodied-rl: `make test` and `make demo` set everything up on a fresh machine.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MUJOCO_GL ?= egl
export LP_NUM_THREADS ?= 0

.PHONY: setup test test-slow wheel-smoke lint format demo bench clean

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

## Build the wheel, install it in a fresh venv outside the checkout, run a CLI smoke (~30 s).
wheel-smoke: $(STAMP)
	VENV=$(VENV) bash scripts/wheel_smoke.sh

## The main job (about 7 min on 2 idle CPU cores): demonstrations -> BC (tiny VLA) -> offline IQL
## -> PPO fine-tuning with a KL penalty -> transfer evaluation -> outputs/demo/report/report.html.
## Rerunning continues an interrupted run (finished stages are skipped).
demo: $(STAMP)
	$(BIN)/erl demo

## Benchmarks write benchmarks/results/*.md; run them on a quiet machine (one at a time).
bench: $(STAMP)
	$(BIN)/python benchmarks/env_throughput.py --out benchmarks/results/env_throughput.md
	$(BIN)/python benchmarks/expert_success.py --out benchmarks/results/expert_success.md
	$(BIN)/python benchmarks/expert_success_pybullet.py --out benchmarks/results/backend_twin.md
	$(BIN)/python benchmarks/transfer_experts.py --episodes 30 --workers 2 --out benchmarks/results/transfer_experts.md
	$(BIN)/python benchmarks/dataset_sampling.py --out benchmarks/results/dataset_sampling.md
	$(BIN)/python benchmarks/vla_speed.py --out benchmarks/results/vla_speed.md
	$(BIN)/python benchmarks/ppo_vs_sb3.py --out benchmarks/results/ppo_vs_sb3.md
# offline_speed.py and offline_learning.py compare with d3rlpy, which lives in its own venv:
# see docs/agents.md.

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs
