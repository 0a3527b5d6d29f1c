"""Collect a small mixed-quality reach dataset, train IQL on it, evaluate and reload.

python examples/train_offline.py
"""

from __future__ import annotations

from embodied_rl.agents import IQLConfig, TrainerConfig, load_agent, train
from embodied_rl.datasets import collect, load_dataset


def main() -> None:
    result = collect(
        "tabletop/reach-v0", "mixed", episodes=60, out="outputs/datasets",
        dataset_id="examples/reach-mixed-v0", reference_episodes=5, overwrite=True,
    )  # fmt: skip
    data = load_dataset(result.path, obs_keys=["state"])
    config = TrainerConfig(steps=5_000, eval_every=2_500, eval_episodes=10, checkpoint_every=2_500)
    agent, scores = train("iql", data, "outputs/iql", IQLConfig(), config)
    print(f"IQL after {agent.step} steps: {scores}")
    restored = load_agent("outputs/iql/checkpoints")  # model, optimiser, RNG states
    print(f"reloaded the checkpoint at step {restored.step}")


if __name__ == "__main__":
    main()
