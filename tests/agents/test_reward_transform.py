"""The agents' reward transform (``reward_scale * r + reward_bias``) reaches every batch."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_rl.agents import make_agent
from embodied_rl.agents.calql import CalQLConfig
from embodied_rl.agents.data import AgentSampler, scale_rewards
from embodied_rl.agents.iql import IQLConfig
from embodied_rl.agents.losses import discounted_returns
from embodied_rl.agents.trainer import default_policy, make_sampler
from embodied_rl.datasets.samplers import SamplerConfig


def test_scale_rewards_is_affine_and_the_identity_by_default():
    r = np.array([0.0, 1.0, 0.5])
    np.testing.assert_array_equal(scale_rewards(r), r.astype(np.float32))
    np.testing.assert_allclose(scale_rewards(r, 10.0, -5.0), [-5.0, 5.0, 0.0])


def test_sampler_transforms_rewards_and_monte_carlo_returns(tiny_data):
    config = SamplerConfig(batch_size=64, seed=0)
    plain = AgentSampler(tiny_data, 0.9, config, mc_return=True)
    scaled = AgentSampler(
        tiny_data, 0.9, config, mc_return=True, reward_scale=10.0, reward_bias=-5.0
    )
    a, b = plain.sample(), scaled.sample()  # same seed: same indices
    np.testing.assert_array_equal(plain.last_indices, scaled.last_indices)
    np.testing.assert_allclose(b["reward"].numpy(), 10.0 * a["reward"].numpy() - 5.0, atol=1e-6)
    expected = discounted_returns(10.0 * tiny_data.rewards - 5.0, tiny_data.episode_starts, 0.9)
    np.testing.assert_allclose(
        b["mc_return"].numpy(), expected[scaled.last_indices], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("algo", "config"),
    [("iql", IQLConfig(reward_bias=-1.0)), ("calql", CalQLConfig(reward_scale=2.0))],
)
def test_make_sampler_reads_the_agent_config(tiny_data, algo, config):
    agent = make_agent(algo, default_policy(algo, tiny_data), config)
    batch = make_sampler(agent, tiny_data, batch_size=512, seed=0).sample()
    rewards = set(np.round(batch["reward"].numpy(), 5).tolist())
    raw = {0.0, 1.0}  # the synthetic dataset's rewards
    assert rewards <= {round(config.reward_scale * r + config.reward_bias, 5) for r in raw}
