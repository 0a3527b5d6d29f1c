"""Every loss against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodied_rl.agents.bc import BCConfig
from embodied_rl.agents.losses import (
    awr_weights,
    calql_lower_bound,
    cql_lagrange,
    cql_penalty,
    discounted_returns,
    expectile_loss,
    masked_mse,
    return_to_go,
    temperature_loss,
    uniform_log_density,
)


def test_expectile_loss_weights_positive_and_negative_errors():
    # diff = [2, -1]: 0.7 * 4 and 0.3 * 1 -> mean (2.8 + 0.3) / 2 = 1.55
    loss = expectile_loss(torch.tensor([2.0, -1.0]), 0.7)
    assert loss.item() == pytest.approx(1.55)
    # expectile 0.5 is half the plain MSE
    diff = torch.tensor([0.3, -2.0, 1.5])
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * diff.square().mean().item())


def test_awr_weights_exponentiate_and_clip():
    weights = awr_weights(torch.tensor([0.0, 1.0, 10.0]), temperature=3.0, max_weight=100.0)
    assert weights.tolist() == pytest.approx([1.0, math.exp(3.0), 100.0])


def test_cql_penalty_hand_computed():
    # one critic, one state, two sampled actions with Q = [1, 2], log-densities [0, log 2],
    # dataset Q = 0.5: log(e^1 + e^(2 - log 2)) - 0.5 = log(e + e^2 / 2) - 0.5
    q = torch.tensor([[[1.0, 2.0]]])
    log_density = torch.tensor([[0.0, math.log(2.0)]])
    gap = cql_penalty(q, log_density, torch.tensor([[0.5]]))
    assert gap.tolist() == pytest.approx([math.log(math.e + math.e**2 / 2) - 0.5])


def test_cql_penalty_is_zero_when_data_action_dominates_a_single_sample():
    q = torch.tensor([[[3.0]], [[1.0]]])  # two critics, one sample each
    gap = cql_penalty(q, torch.zeros(1, 1), torch.tensor([[3.0], [1.0]]))
    assert gap.tolist() == pytest.approx([0.0, 0.0])


def test_cql_lagrange_signs_and_values():
    log_alpha = torch.tensor(math.log(2.0), requires_grad=True)
    gap = torch.tensor([12.0, 9.0], requires_grad=True)
    critic_term, alpha_loss, alpha = cql_lagrange(gap, log_alpha, target_gap=10.0)
    # critic: 2 * ((12 - 10) + (9 - 10)) = 2; alpha: -2 * 1 = -2
    assert critic_term.item() == pytest.approx(2.0)
    assert alpha_loss.item() == pytest.approx(-2.0)
    assert alpha.item() == pytest.approx(2.0)
    alpha_loss.backward()
    assert log_alpha.grad.item() == pytest.approx(-2.0)  # gap above target: alpha grows
    assert gap.grad is None or torch.all(gap.grad == 0)  # alpha's loss does not move Q


def test_uniform_log_density_of_the_unit_box():
    low, high = -torch.ones(4), torch.ones(4)
    assert uniform_log_density(low, high) == pytest.approx(-4 * math.log(2.0))


def test_calql_lower_bound_takes_the_maximum():
    q = torch.tensor([[[0.1, 2.0], [-1.0, -3.0]]])  # (E=1, B=2, N=2)
    bounded = calql_lower_bound(q, torch.tensor([1.0, -2.0]))
    assert bounded.tolist() == [[[1.0, 2.0], [-1.0, -2.0]]]


def test_discounted_returns_restart_at_episode_boundaries():
    rewards = np.array([0.0, 0.0, 1.0, 2.0, 0.0])
    out = discounted_returns(rewards, np.array([0, 3, 5]), gamma=0.5)
    # episode 1: [0.25, 0.5, 1]; episode 2: [2, 0]
    assert out.tolist() == pytest.approx([0.25, 0.5, 1.0, 2.0, 0.0])


def test_return_to_go_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    assert return_to_go(rewards).tolist() == [[3.0, 2.0, 2.0]]
    assert return_to_go(rewards, gamma=0.5).tolist() == [[1.5, 1.0, 2.0]]


def test_return_to_go_matches_the_history_sampler(tiny_data):
    from embodied_rl.datasets.samplers import HistorySampler

    sampler = HistorySampler(tiny_data, history=4)
    first = slice(0, int(tiny_data.episode_starts[1]))
    expected = return_to_go(torch.tensor(tiny_data.rewards[first], dtype=torch.float32)[None])
    assert sampler.return_to_go[first].tolist() == pytest.approx(expected[0].tolist())


def test_masked_mse_ignores_padding():
    pred = torch.tensor([[[1.0], [5.0]]])
    target = torch.zeros(1, 2, 1)
    assert masked_mse(pred, target, torch.tensor([[True, False]])).item() == pytest.approx(1.0)


def test_temperature_loss_gradient_raises_alpha_when_entropy_is_low():
    log_alpha = torch.zeros((), requires_grad=True)
    # log pi = 1 > -target_entropy = 0.5: entropy too low -> alpha should grow
    temperature_loss(log_alpha, torch.tensor([1.0]), target_entropy=-0.5).backward()
    assert log_alpha.grad.item() < 0


def test_bc_learning_rate_schedule_warms_up_then_decays_by_cosine():
    from embodied_rl.agents.bc import scheduled_lr

    assert [scheduled_lr(s, 1.0, warmup_steps=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert scheduled_lr(4, 1.0, 4, 12) == 1.0  # the decay starts after the warm-up
    assert scheduled_lr(8, 1.0, 4, 12) == pytest.approx(0.5)  # half-way: cos(pi / 2)
    assert scheduled_lr(12, 1.0, 4, 12) == pytest.approx(0.0)
    assert scheduled_lr(50, 1.0, 4, 12) == pytest.approx(0.0)
    assert scheduled_lr(3, 2e-4) == 2e-4  # no schedule: constant
    with pytest.raises(ValueError, match="decay_steps=4 must exceed warmup_steps=4"):
        BCConfig(warmup_steps=4, decay_steps=4)


def test_bc_applies_its_schedule_to_the_optimizer(tiny_data):
    from embodied_rl.agents import make_agent
    from embodied_rl.agents.trainer import default_policy, make_sampler

    agent = make_agent(
        "bc", default_policy("bc", tiny_data), BCConfig(learning_rate=1e-3, warmup_steps=10)
    )
    sampler = make_sampler(agent, tiny_data, 8)
    rates = [agent.update(sampler.sample())["lr"] for _ in range(3)]
    assert rates == pytest.approx([1e-4, 2e-4, 3e-4])
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
