"""Action chunking (ACT): chunk targets from the sampler, BC on chunks, temporal ensembling
when acting, and a clear refusal from the learners that score one action per step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embodied_rl.agents import BCConfig, IQLConfig, make_agent
from embodied_rl.agents.data import AgentSampler
from embodied_rl.agents.trainer import make_sampler
from embodied_rl.datasets import SamplerConfig
from embodied_rl.datasets.episode import EXPERT_ACTION
from embodied_rl.policies import VLAPolicy, vla_preset
from embodied_rl.policies.vla import temporal_ensemble

ACTION_DIM = 2


def _numbered(data):
    """``data`` with action ``j`` = ``(j, -j)`` (global transition index) and expert labels
    ``(1000 + r, 0)`` for observation row ``r``."""
    n = data.n_transitions
    actions = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32)
    rows = len(data.rewards) + len(data.episode_starts) - 1
    labels = np.stack([1000 + np.arange(rows), np.zeros(rows)], axis=1).astype(np.float32)
    return dataclasses.replace(data, actions=actions, infos={EXPERT_ACTION: labels})


@pytest.mark.parametrize("labels", ["action", "expert"])
def test_chunks_are_the_next_targets_held_at_the_episode_end(tiny_data, labels):
    data = _numbered(tiny_data)
    sampler = AgentSampler(
        data, config=SamplerConfig(batch_size=256, seed=0), labels=labels, action_chunk=3
    )
    batch = sampler.sample()
    i = sampler.last_indices
    last = data.episode_starts[data.episode_index[i] + 1] - 1
    steps = np.minimum(i[:, None] + np.arange(3), last[:, None])  # (B, 3)
    if labels == "action":
        expected = np.stack([steps, -steps], axis=2)
    else:
        rows = data.obs_index[steps]
        expected = np.stack([1000 + rows, np.zeros_like(rows)], axis=2)
    np.testing.assert_array_equal(batch["label"].numpy(), expected.reshape(len(i), 6))
    assert (steps[:, 2] == last).any()  # some windows ran past an episode's end
    np.testing.assert_array_equal(batch["action"].numpy()[:, 0], i)  # unchanged


def test_temporal_ensemble_weights_the_oldest_prediction_most():
    k, decay = 3, 0.5
    chunks = [np.full((k, 1), float(10 * j)) + np.arange(k)[:, None] for j in range(3)]
    # chunk j was predicted 2 - j steps ago; its entry for now is at offset 2 - j
    entries = np.array([chunks[0][2], chunks[1][1], chunks[2][0]])[:, 0]  # 2, 11, 20
    weights = np.exp(-decay * np.arange(3))
    expected = float(weights @ entries / weights.sum())
    assert temporal_ensemble(chunks, decay)[0] == pytest.approx(expected)
    assert temporal_ensemble(chunks[:1], decay)[0] == chunks[0][0, 0]  # the first step
    np.testing.assert_allclose(temporal_ensemble(chunks, 0.0), [np.mean(entries)], rtol=1e-6)


def _chunked_vla(chunk: int) -> VLAPolicy:
    torch.manual_seed(0)
    bounds = {"action_low": (-1.0,) * ACTION_DIM, "action_high": (1.0,) * ACTION_DIM}
    return VLAPolicy(
        vla_preset(
            "tiny", history=1, n_layers=1, dropout=0.0, image_size=32, head="deterministic",
            proprio_dim=0, random_shift=0, action_chunk=chunk, chunk_decay=0.1, **bounds,
        )
    )  # fmt: skip


def test_bc_fits_chunks_and_the_policy_acts_with_the_ensemble(tiny_image_data):
    policy = _chunked_vla(3)
    agent = make_agent("bc", policy, BCConfig(learning_rate=1e-3))
    sampler = make_sampler(agent, tiny_image_data, 16)
    batch = sampler.sample()
    assert batch["label"].shape == (16, 3 * ACTION_DIM)
    losses = [agent.update(sampler.sample())["bc_loss"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    policy.eval()
    obs = {"image": np.zeros((32, 32, 3), np.uint8), "instruction": "reach the block 1"}
    first = policy.act(obs)
    assert first.shape == (ACTION_DIM,)
    with torch.no_grad():
        chunk = policy.head.mode(policy(policy_batch(obs))[:, -1])[0].numpy().reshape(3, -1)
    np.testing.assert_allclose(first, chunk[0], atol=1e-6)  # nothing older to average
    second = policy.act(obs)  # the same frame again: the average of chunk[1] and chunk[0]
    np.testing.assert_allclose(second, temporal_ensemble([chunk, chunk], 0.1), atol=1e-6)
    policy.reset()
    np.testing.assert_allclose(policy.act(obs), first, atol=1e-6)


def policy_batch(obs):
    return {
        "images": torch.as_tensor(obs["image"])[None, None],
        "instructions": [obs["instruction"]],
    }


def test_one_action_learners_refuse_chunked_policies():
    from embodied_rl.agents.ppo import PPO
    from embodied_rl.envs import make

    with pytest.raises(ValueError, match="action_chunk=3"):
        make_agent("iql", _chunked_vla(3), IQLConfig(critic_obs_dim=6))
    with pytest.raises(ValueError, match="action_chunk=3"):
        PPO(_chunked_vla(3), make("tabletop/reach-v0", obs_mode="rgb", image_size=32))
    with pytest.raises(ValueError, match="action_chunk=0"):
        vla_preset("tiny", action_chunk=0)
