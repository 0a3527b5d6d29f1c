"""A non-finite loss stops the run with an error naming the loss and the step; the last
good checkpoint stays intact, loadable and finite, and no NaN checkpoint is ever written."""

from __future__ import annotations

import pytest
import torch

from embodied_rl.agents import NonFiniteLossError, TrainerConfig, load_agent, train
from embodied_rl.agents import iql as iql_module
from embodied_rl.agents import ppo as ppo_module
from embodied_rl.agents.checkpoint import NonFiniteStateError, latest_checkpoint, save_checkpoint
from embodied_rl.agents.ppo import PPO, PPOConfig, default_ppo_policy
from embodied_rl.agents.ppo_rollout import make_vec_env
from embodied_rl.datasets import load_dataset

CONFIG = TrainerConfig(
    steps=20, batch_size=16, checkpoint_every=5, log_every=5, eval_episodes=0,
    progress=False, tensorboard=False,
)  # fmt: skip


def nan_after(real, n_calls: int):
    """``real`` until it has been called ``n_calls`` times, then NaN of the same shape."""
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > n_calls else out

    return poisoned


def finite(module_tensors) -> bool:
    return all(torch.isfinite(t).all() for t in module_tensors if t.is_floating_point())


def test_offline_nan_loss_names_loss_and_step_and_keeps_the_last_good_checkpoint(
    reach_dataset, tmp_path, monkeypatch
):
    data = load_dataset(reach_dataset, obs_keys=["state"])
    with monkeypatch.context() as patch:
        patch.setattr(iql_module, "expectile_loss", nan_after(iql_module.expectile_loss, 12))
        with pytest.raises(NonFiniteLossError, match=r"'value_loss' is nan at step 12") as error:
            train("iql", data, tmp_path, None, CONFIG)
    root = tmp_path / "checkpoints"
    assert "step_000000010" in str(error.value.__cause__)  # the message chain names it
    assert latest_checkpoint(root).name == "step_000000010"
    kept = load_agent(root)
    assert kept.step == 10 and finite(
        t for m in kept.modules().values() for t in m.state_dict().values()
    )
    agent, _ = train("iql", data, tmp_path, None, CONFIG, resume=True)  # the cause fixed
    assert agent.step == 20


def test_nan_weights_are_never_checkpointed(reach_dataset, tmp_path):
    data = load_dataset(reach_dataset, obs_keys=["state"])
    agent, _ = train("bc", data, tmp_path, None, CONFIG)
    with torch.no_grad():
        next(agent.policy.parameters())[0, 0] = float("nan")
    agent.step += 1
    with pytest.raises(NonFiniteStateError, match=r"policy\.trunk\.0\.weight.*not written"):
        save_checkpoint(agent, tmp_path / "checkpoints")
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_000000020"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "step_000000020"


def test_ppo_nan_loss_stops_before_the_optimizer_step(tmp_path, monkeypatch):
    envs = make_vec_env("Pendulum-v1", 2)
    config = PPOConfig(n_steps=16, batch_size=32, n_epochs=1)
    agent = PPO(default_ppo_policy(envs), envs, config)
    # 1 minibatch per rollout: rollouts 1 and 2 are fine (checkpointed), rollout 3 is NaN
    monkeypatch.setattr(ppo_module, "value_loss", nan_after(ppo_module.value_loss, 2))
    with pytest.raises(NonFiniteLossError, match=r"'value_loss' is nan at step 96") as error:
        agent.learn(320, checkpoint_dir=tmp_path, checkpoint_every=32)
    assert "step_000000064" in str(error.value.__cause__)
    assert finite(agent.policy.state_dict().values())  # the optimiser never took the NaN step
    monkeypatch.undo()
    resumed = PPO.resume(tmp_path, make_vec_env("Pendulum-v1", 2))
    assert resumed.num_steps == 64 and finite(resumed.policy.state_dict().values())
    resumed.learn(320)
    assert resumed.num_steps == 320
