"""Truncated or corrupt checkpoints give errors naming the file; a crash while writing one
keeps the previous checkpoint and ``last`` pointer, and the run resumes from it; nothing is
ever loaded with pickle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from embodied_rl.agents import TrainerConfig, load_agent, train
from embodied_rl.agents import checkpoint as checkpoint_module
from embodied_rl.agents.checkpoint import CheckpointError, latest_checkpoint
from embodied_rl.agents.ppo import PPO, PPOConfig, default_ppo_policy
from embodied_rl.agents.ppo_rollout import make_vec_env
from embodied_rl.datasets import load_dataset

CONFIG = TrainerConfig(
    steps=12, batch_size=16, checkpoint_every=4, log_every=4, eval_episodes=0,
    progress=False, tensorboard=False,
)  # fmt: skip
PACKAGE = Path(__file__).resolve().parents[2] / "embodied_rl"


@pytest.fixture(scope="module")
def data(reach_dataset):
    return load_dataset(reach_dataset, obs_keys=["state"])


def params(agent) -> list[torch.Tensor]:
    return [t for m in agent.modules().values() for t in m.state_dict().values()]


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"]
)
def test_truncated_checkpoint_file_is_named(name, data, tmp_path, truncate):
    train("iql", data, tmp_path, None, CONFIG)
    path = latest_checkpoint(tmp_path / "checkpoints") / name
    truncate(path)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*(truncated|corrupt)"):
        train("iql", data, tmp_path, None, CONFIG, resume=True)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_agent(tmp_path / "checkpoints")


def test_crash_while_writing_keeps_last_and_the_run_resumes_from_it(data, tmp_path, monkeypatch):
    straight, _ = train("bc", data, tmp_path / "straight", None, CONFIG)
    real_save = checkpoint_module.save_file
    calls = []

    def crash_in_the_second_checkpoint(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # checkpoint 2 (step 8): weights written, optimizer write fails
            raise OSError("No space left on device")
        return real_save(tensors, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "save_file", crash_in_the_second_checkpoint)
        with pytest.raises(OSError, match="No space left"):
            train("bc", data, tmp_path / "run", None, CONFIG)
    root = tmp_path / "run" / "checkpoints"
    assert (root / "last").read_text().strip() == "step_000000004"
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_000000004"]  # no debris
    assert load_agent(root).step == 4
    resumed, _ = train("bc", data, tmp_path / "run", None, CONFIG, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(params(straight), params(resumed), strict=True))


def test_loading_into_another_architecture_names_the_keys(data, tmp_path):
    train("bc", data, tmp_path, None, CONFIG)
    from embodied_rl.agents import make_agent
    from embodied_rl.agents.checkpoint import load_checkpoint
    from embodied_rl.agents.trainer import default_policy as offline_policy

    wider = make_agent("bc", offline_policy("bc", data, hidden=(64, 64)))
    with pytest.raises(ValueError, match=r"\[policy\].*shape mismatches.*trunk\.0\.weight"):
        load_checkpoint(wider, tmp_path / "checkpoints")


def test_truncated_ppo_checkpoint_is_named(tmp_path, truncate):
    envs = make_vec_env("Pendulum-v1", 2)
    agent = PPO(default_ppo_policy(envs), envs, PPOConfig(n_steps=16, batch_size=16, n_epochs=1))
    agent.learn(32, checkpoint_dir=tmp_path)
    last = latest_checkpoint(tmp_path)
    for name in (
        "state.safetensors", "optimizer.safetensors", "model.safetensors", "config.json",
        "state.json",
    ):  # fmt: skip
        truncate(last / name)
        with pytest.raises(CheckpointError, match=re.escape(str(last / name))):
            PPO.resume(tmp_path, make_vec_env("Pendulum-v1", 2))
        (last / name).unlink()  # the next file is checked on a checkpoint missing this one
        with pytest.raises((CheckpointError, FileNotFoundError), match=re.escape(name)):
            PPO.resume(tmp_path, make_vec_env("Pendulum-v1", 2))
        agent.checkpoint(tmp_path)  # rewrite a complete one


def test_nothing_is_loaded_with_pickle():
    """safetensors and JSON only: no torch.load without weights_only, no pickle.load."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for pattern in (
            r"torch\.load\((?![^)]*weights_only=True)",
            r"pickle\.loads?\(",
            "weights_only=False",
        ):
            offenders += [f"{path.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert offenders == []
