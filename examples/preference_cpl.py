"""Learn a Meta-World policy from segment preferences: scripted labels, a judge, CPL and P-IQL.

python examples/preference_cpl.py

Collects a mixed dataset of Meta-World reach, labels random pairs of 64-step segments with
the B-Pref scripted teacher, checks a (rule-based) judge against it, then trains CPL with the
shared training loop and P-IQL (reward model + IQL), and prints their success rates. A few
minutes on one core; swap `judge` for a local model from `embodied_rl.llm` to get RLAIF labels.
"""

from __future__ import annotations

import re

import torch

from embodied_rl.agents import IQLConfig, Trainer, TrainerConfig, default_policy, train
from embodied_rl.datasets import collect, load_dataset
from embodied_rl.datasets.samplers import SamplerConfig
from embodied_rl.envs import make
from embodied_rl.preference import (
    AIFeedbackLabeler,
    CPLConfig,
    CPLLearner,
    PreferenceSampler,
    RewardModelConfig,
    ScriptedTeacher,
    agreement,
    fit_reward_model,
    random_pairs,
    relabel_rewards,
    sample_segments,
)

TASK, HORIZON = "metaworld/reach-v3", 150


def judge(prompt: str) -> str:
    """A stand-in judge: prefers the candidate that ends nearer the goal."""
    ends = [
        float(x)
        for x in re.findall(r"Hand-to-goal distance: [\d.]+ cm at the start, ([\d.]+)", prompt)
    ]
    return f"Preference: {'A' if ends[0] <= ends[1] else 'B'}\nRationale: it ends nearer the goal."


def main() -> None:
    torch.set_num_threads(1)
    result = collect(
        TASK, "mixed", episodes=30, out="outputs/datasets", dataset_id="examples/mw-reach-pref-v0",
        env_kwargs={"reward_type": "dense", "terminate_on_success": False, "horizon": HORIZON},
        reference_episodes=2, overwrite=True,
    )  # fmt: skip
    data = load_dataset(result.path, obs_keys=["state"])
    segments = sample_segments(data, n_segments=500, length=64, seed=0)
    first, second = random_pairs(len(segments), n_pairs=2000, seed=0)
    prefs = ScriptedTeacher().label_pairs(segments, first, second)
    print("labels:", prefs.summary())

    ai, _ = AIFeedbackLabeler(judge).label_pairs(segments, first[:100], second[:100])
    print("judge vs teacher:", agreement(ai.labels, prefs.labels[:100]))

    def eval_env():
        return make(TASK, horizon=HORIZON)  # success ends the episode

    config = TrainerConfig(steps=600, batch_size=8, eval_episodes=10, checkpoint_every=0)
    learner = CPLLearner(default_policy("cpl", data), CPLConfig(bc_steps=200, learning_rate=3e-4))
    learner.fit_observation_normalizers(data.observations)
    sampler = PreferenceSampler(prefs, SamplerConfig(batch_size=8, seed=0))
    scores = Trainer(learner, sampler, config, "outputs/cpl", eval_env).fit()
    print(f"CPL success: {scores['eval/success_rate']:.0%}")

    model, metrics = fit_reward_model(prefs, RewardModelConfig(steps=300, batch_size=16))
    print("reward model:", metrics)
    iql_config = TrainerConfig(steps=600, eval_episodes=10, checkpoint_every=0)
    _, scores = train(
        "iql", relabel_rewards(data, model), "outputs/p-iql", IQLConfig(), iql_config,
        eval_env=eval_env,
    )  # fmt: skip
    print(f"P-IQL success: {scores['eval/success_rate']:.0%}")


if __name__ == "__main__":
    main()
