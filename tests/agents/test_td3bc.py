"""TD3+BC: the actor loss matches its formula, the actor learns, bad settings are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_rl.agents import TD3BCConfig, make_agent
from embodied_rl.agents.losses import td3bc_actor_loss
from embodied_rl.agents.trainer import default_policy, make_sampler, seed_everything


def test_actor_loss_is_the_papers_formula():
    q = torch.tensor([2.0, -4.0, 6.0])  # mean |Q| = 4
    pi = torch.tensor([[0.5, 0.0], [0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    data = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    loss = td3bc_actor_loss(q, pi, data, alpha=2.5)
    bc = (0.25 + 1.0 + 1.0) / 6  # a mean over batch and action dimensions, as mse_loss
    assert loss.item() == pytest.approx(-(2.5 / 4.0) * (4.0 / 3.0) + bc)
    loss.backward()  # lambda carries no gradient: d/dpi is the BC term's only
    torch.testing.assert_close(pi.grad, 2 * (pi - data).detach() / 6)


def expert_data(n_episodes: int = 10, length: int = 30):
    """States at random; the data's action is the best one, ``a*(s) = 0.8 tanh(s_0 - s_1,
    s_2)``, and the reward is ``-||a - a*(s)||^2`` (0 in the data)."""
    from gymnasium import spaces

    from embodied_rl.datasets import Episode, OfflineDataset

    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(n_episodes):
        s = rng.normal(size=(length + 1, 6)).astype(np.float32)
        a = 0.8 * np.tanh(np.stack([s[:-1, 0] - s[:-1, 1], s[:-1, 2]], -1)).astype(np.float32)
        done = np.r_[np.zeros(length - 1, bool), True]
        episodes.append(
            Episode(observations={"state": s}, actions=a, rewards=np.zeros(length),
                    terminations=np.zeros(length, bool), truncations=done, infos={}, metadata={})
        )  # fmt: skip
    return OfflineDataset.from_episodes(
        episodes, spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (6,), np.float32)}),
        spaces.Box(-1.0, 1.0, (2,), np.float32),
    )  # fmt: skip


def test_the_actor_learns_the_data_and_the_critic_fits():
    data = expert_data()
    seed_everything(0)
    agent = make_agent(
        "td3bc", default_policy("td3bc", data, hidden=(64, 64)),
        TD3BCConfig(hidden=(64, 64), actor_learning_rate=1e-3, critic_learning_rate=1e-3),
    )  # fmt: skip
    agent.fit_observation_normalizers(data.observations)
    sampler = make_sampler(agent, data, batch_size=32, seed=0)
    metrics = [agent.update(sampler.sample()) for _ in range(400)]
    first = [m for m in metrics[:20] if "bc_mse" in m]
    last = [m for m in metrics[-20:] if "bc_mse" in m]
    assert len(first) == 10  # the actor steps every policy_delay = 2 critic steps
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "bc_mse") < 0.5 * mean(first, "bc_mse")
    assert mean(metrics[-20:], "critic_loss") < mean(metrics[:20], "critic_loss")


def test_bad_settings_and_a_stochastic_actor_are_named(tiny_data):
    with pytest.raises(ValueError, match="policy_delay=0"):
        TD3BCConfig(policy_delay=0)
    with pytest.raises(ValueError, match="alpha=-1"):
        TD3BCConfig(alpha=-1)
    with pytest.raises(ValueError, match="head='deterministic'"):
        make_agent("td3bc", default_policy("iql", tiny_data))
