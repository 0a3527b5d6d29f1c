"""Noise-injected demonstrations (DART): the collector stores the expert's clean action beside
the executed one, and BC with ``labels="expert"`` imitates the clean one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embodied_rl.agents import BCConfig, TrainerConfig, train
from embodied_rl.agents.trainer import default_policy, make_sampler, seed_everything
from embodied_rl.datasets import OfflineDataset, collect, load_dataset
from embodied_rl.datasets.collect_worker import record_episode
from embodied_rl.datasets.episode import EXPERT_ACTION
from embodied_rl.envs import make, make_expert

QUIET = {"progress": False, "tensorboard": False, "eval_episodes": 0, "checkpoint_every": 0}


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_labels_are_the_clean_expert_action_of_the_visited_states(noise):
    """Replaying the executed actions revisits the same states, where the noise-free expert
    must give exactly the stored labels; at noise 0 labels and actions coincide."""
    env = make("tabletop/push-v0", horizon=25)
    episode = record_episode(
        env, lambda task: (make_expert(env, noise=noise, seed=1), "expert", noise), seed=7
    )
    labels = episode.infos[EXPERT_ACTION]
    assert labels.shape == (len(episode) + 1, 4)
    if noise == 0:
        np.testing.assert_array_equal(labels[:-1], episode.actions)
    else:
        assert np.abs(labels[:-1] - episode.actions).mean() > 0.1  # the noise was executed
    clean = make_expert(env)
    env.reset(seed=7)
    for t, action in enumerate(episode.actions):
        np.testing.assert_allclose(clean.act(), labels[t], atol=1e-6, err_msg=f"step {t}")
        env.step(action)
    env.close()


def test_collected_dataset_keeps_the_labels(tmp_path):
    result = collect(
        "tabletop/reach-v0", "expert", episodes=2, out=tmp_path, dataset_id="tests/dart-v0",
        noise=0.2, reference_episodes=1, progress=False, env_kwargs={"horizon": 10},
    )  # fmt: skip
    data = load_dataset(result.path)
    assert data.infos[EXPERT_ACTION].shape == (data.n_transitions + 2, 4)
    agent, _ = train(
        "bc", data, tmp_path / "run", BCConfig(labels="expert"),
        TrainerConfig(steps=2, batch_size=8, **QUIET), policy=default_policy("bc", data),
    )  # fmt: skip
    batch = make_sampler(agent, data, batch_size=64).sample()
    assert not torch.equal(batch["label"], batch["action"])


def _with_labels(data: OfflineDataset, labels: np.ndarray) -> OfflineDataset:
    return dataclasses.replace(data, infos={**data.infos, EXPERT_ACTION: labels})


def test_bc_on_expert_labels_fits_the_labels_not_the_actions(tiny_data, tmp_path):
    """Actions are noise; the labels are a smooth function of the state. Trained on the
    labels, BC recovers that function; trained on the actions, it cannot."""
    rows = tiny_data.observations["state"]
    weights = np.random.default_rng(3).normal(size=(rows.shape[1], 2)) * 0.3
    data = _with_labels(tiny_data, np.tanh(rows @ weights).astype(np.float32))
    errors = {}
    for labels in ("expert", "action"):
        seed_everything(0)
        agent, _ = train(
            "bc", data, tmp_path / labels, BCConfig(learning_rate=1e-3, labels=labels),
            TrainerConfig(steps=600, batch_size=64, **QUIET), policy=default_policy("bc", data),
        )  # fmt: skip
        with torch.no_grad():
            out = agent.policy({"state": torch.from_numpy(rows)})
            predicted = agent.policy.head.mode(out).numpy()
        errors[labels] = float(np.square(predicted - data.infos[EXPERT_ACTION]).mean())
    assert errors["expert"] < 0.2 * errors["action"], errors


def test_expert_labels_need_them_in_the_dataset(tiny_data, tmp_path):
    data = tiny_data
    with pytest.raises(ValueError, match="infos/expert_action"):
        train(
            "bc", data, tmp_path, BCConfig(labels="expert"),
            TrainerConfig(steps=1, **QUIET), policy=default_policy("bc", data),
        )  # fmt: skip
    with pytest.raises(ValueError, match="labels='teacher'"):
        BCConfig(labels="teacher")
