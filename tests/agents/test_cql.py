"""CQL's sampled actions: the default policy is SAC's squashed Gaussian, so every action the
conservative penalty and the actor see lies inside the action box (with unsquashed samples,
the penalty pushed down Q outside the box and the policy collapsed on Hopper)."""

from __future__ import annotations

import pytest
import torch

from embodied_rl.agents import CQLConfig, make_agent
from embodied_rl.agents.trainer import default_policy, make_sampler, seed_everything


@pytest.mark.parametrize("algo", ["cql", "calql"])
def test_cql_penalty_and_actor_only_see_actions_inside_the_box(algo, tiny_data):
    seed_everything(0)
    policy = default_policy(algo, tiny_data, hidden=(32, 32))
    assert policy.head.kind == "tanh_gaussian"
    agent = make_agent(algo, policy)
    seen: list[torch.Tensor] = []
    forward = agent.critic.forward

    def recording(obs, actions, *args, **kwargs):
        seen.append(actions.detach().clone())
        return forward(obs, actions, *args, **kwargs)

    agent.critic.forward = recording
    with torch.no_grad():  # a wide policy: without the squash most samples leave the box
        policy.head.proj.bias[policy.head.action_dim :].fill_(1.0)
    sampler = make_sampler(agent, tiny_data, batch_size=32, seed=0)
    for _ in range(3):
        agent.update(sampler.sample())
    low, high = policy.head.low, policy.head.high
    actions = torch.cat([a.reshape(-1, a.shape[-1]) for a in seen])
    assert actions.shape[0] >= 3 * 32 * 31  # data, uniform and 2 x n policy actions per state
    assert bool(((actions >= low) & (actions <= high)).all())


def test_cql_still_trains_an_unsquashed_gaussian(tiny_data):
    """``head="gaussian"`` (the default before 2026-12-04) remains accepted."""
    seed_everything(0)
    policy = default_policy("cql", tiny_data, hidden=(32, 32), head="gaussian")
    agent = make_agent("cql", policy, CQLConfig(hidden=(32, 32)))
    metrics = agent.update(make_sampler(agent, tiny_data, batch_size=32, seed=0).sample())
    assert set(metrics) >= {"critic_loss", "actor_loss", "cql_gap"}


def test_calql_logs_how_often_its_lower_bound_replaced_the_policy_q(tiny_data):
    """``bound_share``: 1 when every Monte-Carlo return is above the critic's values (no
    gradient reaches the policy actions' Q), 0 when every one is below; CQL has no bound."""
    seed_everything(0)
    shares = {}
    for mc in (1e6, -1e6):
        agent = make_agent("calql", default_policy("calql", tiny_data, hidden=(32, 32)))
        batch = make_sampler(agent, tiny_data, batch_size=32, seed=0).sample()
        shares[mc] = agent.update({**batch, "mc_return": torch.full_like(batch["mc_return"], mc)})[
            "bound_share"
        ]
    assert shares == {1e6: 1.0, -1e6: 0.0}
    cql = make_agent("cql", default_policy("cql", tiny_data, hidden=(32, 32)))
    assert "bound_share" not in cql.update(make_sampler(cql, tiny_data, 32, seed=0).sample())
