"""The contract every agent keeps: finite float metrics, exact checkpoint round trips, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodied_rl.agents import (
    list_agents,
    load_agent,
    load_checkpoint,
    make_agent,
    save_checkpoint,
)
from embodied_rl.agents.trainer import default_policy, make_sampler, seed_everything

ALGOS = list_agents()  # every registered agent keeps the contract
SMALL = {"hidden": (32, 32)}
POLICY = {  # small policies; an agent registered without an entry fails the tests below
    "bc": {"hidden": (32, 32)},
    "iql": {"hidden": (32, 32)},
    "cql": {"hidden": (32, 32)},
    "calql": {"hidden": (32, 32)},
    "dt": {"context": 4, "embed_dim": 16, "n_layers": 1, "dropout": 0.0},
    "cpl": {"hidden": (32, 32)},
    "td3bc": {"hidden": (32, 32)},
}


def build(algo: str, data, seed: int = 0):
    from embodied_rl.agents.base import agent_class

    seed_everything(seed)
    cls = agent_class(algo)
    fields = cls.config_class.__dataclass_fields__
    config = cls.config_class(**{k: v for k, v in SMALL.items() if k in fields})
    agent = make_agent(algo, default_policy(algo, data, **POLICY[algo]), config)
    prefs = None
    if cls.needs_preferences:  # labelled pairs of 4-step segments by the scripted teacher
        from embodied_rl.preference import load_preferences

        prefs = load_preferences("scripted:pairs=40,segments=20,length=4", data, seed=seed)
    return agent, make_sampler(agent, data, batch_size=16, seed=seed, preferences=prefs)


def run(agent, sampler, steps: int) -> list[dict[str, float]]:
    return [agent.update(sampler.sample()) for _ in range(steps)]


def obs_of(data, row: int = 0) -> dict:
    return {k: v[row] for k, v in data.observations.items()}


@pytest.mark.parametrize("algo", ALGOS)
def test_update_returns_finite_float_metrics(algo, tiny_data):
    agent, sampler = build(algo, tiny_data)
    for metrics in run(agent, sampler, 3):
        assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert agent.step == 3


@pytest.mark.parametrize("algo", ALGOS)
def test_checkpoint_round_trip_restores_actions_and_optimizer(algo, tiny_data, tmp_path):
    agent, sampler = build(algo, tiny_data)
    run(agent, sampler, 3)
    agent.train_mode(False)
    path = save_checkpoint(agent, tmp_path, sampler)
    for name in ("model.safetensors", "optimizer.safetensors", "config.json", "state.json"):
        assert (path / name).is_file()
    restored = load_agent(tmp_path)
    restored.train_mode(False)
    assert restored.step == agent.step == 3
    for row in (0, 5):
        agent.policy.reset()
        restored.policy.reset()
        np.testing.assert_array_equal(
            agent.act(obs_of(tiny_data, row)), restored.act(obs_of(tiny_data, row))
        )
    for name, optimizer in agent.optimizers().items():
        a, b = optimizer.state_dict(), restored.optimizers()[name].state_dict()
        assert a["param_groups"] == b["param_groups"]
        for pid, fields in a["state"].items():
            for key, value in fields.items():
                torch.testing.assert_close(b["state"][pid][key], value, rtol=0, atol=0)


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_reproduces_parameters(algo, tiny_data):
    params = []
    for _ in range(2):
        agent, sampler = build(algo, tiny_data, seed=3)
        run(agent, sampler, 4)
        params.append(torch.cat([p.detach().flatten() for p in agent.policy.parameters()]))
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)
    other, sampler = build(algo, tiny_data, seed=4)
    run(other, sampler, 4)
    assert not torch.equal(
        params[0], torch.cat([p.detach().flatten() for p in other.policy.parameters()])
    )


def test_resume_continues_identically(tiny_data, tmp_path):
    """Checkpoint after 3 steps, run 3 more; loading and running 3 more gives the same weights."""
    agent, sampler = build("iql", tiny_data, seed=1)
    run(agent, sampler, 3)
    save_checkpoint(agent, tmp_path, sampler)
    run(agent, sampler, 3)
    resumed, sampler2 = build("iql", tiny_data, seed=9)
    load_checkpoint(resumed, tmp_path, sampler2)
    run(resumed, sampler2, 3)
    for a, b in zip(agent.critic.parameters(), resumed.critic.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_loading_another_architecture_names_the_keys(tiny_data, tmp_path):
    agent, _ = build("iql", tiny_data)
    save_checkpoint(agent, tmp_path)
    seed_everything(0)
    from embodied_rl.agents import IQLConfig

    other = make_agent(
        "iql", default_policy("iql", tiny_data, hidden=(32, 32)), IQLConfig(hidden=(16, 16))
    )
    with pytest.raises(
        ValueError, match=r"\[critic\].*weights\.0.*\(2, 32, 32\) vs model \(2, 16, 16\)"
    ):
        load_checkpoint(other, tmp_path)
    bigger = make_agent(
        "iql", default_policy("iql", tiny_data, hidden=(32, 32, 32)), IQLConfig(hidden=(32, 32))
    )
    with pytest.raises(ValueError, match=r"\[policy\].*missing \['trunk\.4\.bias'"):
        load_checkpoint(bigger, tmp_path)


def test_unknown_agent_and_wrong_config_are_named(tiny_data):
    from embodied_rl.agents import BCConfig

    with pytest.raises(KeyError, match="'sac'.*bc"):
        make_agent("sac", default_policy("bc", tiny_data))
    with pytest.raises(TypeError, match="IQLConfig.*BCConfig"):
        make_agent("iql", default_policy("iql", tiny_data), BCConfig())
    with pytest.raises(ValueError, match="head='deterministic'"):
        make_agent("cql", default_policy("bc", tiny_data))
