"""Exact PPO resume: interrupted + resumed == uninterrupted (parameters, optimizer, metrics),
with episodes running across the checkpoint, domain randomization and ADR."""

from __future__ import annotations

import csv

import pytest
import torch

from embodied_rl.agents.checkpoint import CheckpointError, latest_checkpoint
from embodied_rl.agents.ppo import PPO, PPOConfig, default_ppo_policy
from embodied_rl.agents.ppo_rollout import make_vec_env

# 2 copies x 32 steps a rollout; Pendulum's 200-step episodes run across every checkpoint
CONFIG = PPOConfig(n_steps=32, batch_size=32, n_epochs=2, anneal_lr=True, ent_coef=0.01, seed=3)
TOTAL, EVERY = 320, 128  # 5 rollouts; checkpoints after rollouts 2 and 4, and 5 (the end)
ENVS = {
    "pendulum": ("Pendulum-v1", {}),
    "tabletop-adr": (
        "tabletop/reach-v0",
        {"randomization": "default", "adr": True, "horizon": 24, "instruction_mode": "none"},
    ),
}


def build(kind: str, log_dir=None) -> PPO:
    task, kwargs = ENVS[kind]
    envs = make_vec_env(task, 2, **kwargs)
    torch.manual_seed(0)
    return PPO(default_ppo_policy(envs), envs, CONFIG, log_dir=log_dir)


def interrupt_update(monkeypatch, at_call: int) -> None:
    calls = {"n": 0}
    real = PPO.update

    def update(self):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(PPO, "update", update)


def metric_rows(path) -> list[tuple[str, str, str]]:
    """``(step, name, value)`` of every logged metric but the timing ones."""
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        return [(r["step"], r["name"], r["value"]) for r in rows if r["name"] != "steps_per_s"]


def assert_same(a: PPO, b: PPO) -> None:
    for (name, p), q in zip(
        a.policy.state_dict().items(), b.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    for i, slot in a.optimizer.state_dict()["state"].items():
        for field, value in slot.items():
            assert torch.equal(value, b.optimizer.state_dict()["state"][i][field]), field
    assert a.num_steps == b.num_steps and list(a.episode_returns) == list(b.episode_returns)


@pytest.mark.parametrize("kind", list(ENVS))
def test_interrupted_and_resumed_ppo_equals_the_uninterrupted_run(kind, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    straight = build(kind, tmp_path / "straight")
    straight.learn(TOTAL, checkpoint_dir=tmp_path / "straight" / "ckpt", checkpoint_every=EVERY)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_update(patch, at_call=4)  # checkpoint after rollout 2; 3 and 4 are lost
        with pytest.raises(KeyboardInterrupt):
            build(kind, run).learn(TOTAL, checkpoint_dir=run / "ckpt", checkpoint_every=EVERY)
    assert latest_checkpoint(run / "ckpt").name == f"step_{128:09d}"
    task, kwargs = ENVS[kind]
    resumed = PPO.resume(run / "ckpt", make_vec_env(task, 2, **kwargs), log_dir=run)
    assert resumed.num_steps == 128
    resumed.learn(TOTAL, checkpoint_dir=run / "ckpt", checkpoint_every=EVERY)
    assert_same(straight, resumed)
    assert metric_rows(run / "metrics.csv") == metric_rows(tmp_path / "straight" / "metrics.csv")
    if kind == "tabletop-adr":
        adr = [e.get_wrapper_attr("adr") for e in (straight.envs.envs[0], resumed.envs.envs[0])]
        assert adr[0].state_dict() == adr[1].state_dict()
    finished = PPO.resume(run / "ckpt", make_vec_env(task, 2, **kwargs))
    assert finished.learn(TOTAL) == {}  # the checkpointed call is complete: nothing left
    assert_same(straight, finished)


def test_resume_on_other_environments_is_refused(tmp_path):
    agent = PPO(
        default_ppo_policy(make_vec_env("Pendulum-v1", 2)), make_vec_env("Pendulum-v1", 2), CONFIG
    )
    agent.learn(64, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="did not reproduce the checkpoint's observation"):
        PPO.resume(tmp_path, make_vec_env("Pendulum-v1", 2, g=5.0))


def test_a_resumed_unfinished_call_needs_its_total(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_update(patch, at_call=2)
        with pytest.raises(KeyboardInterrupt):
            build("pendulum").learn(TOTAL, checkpoint_dir=tmp_path, checkpoint_every=64)
    resumed = PPO.resume(tmp_path, make_vec_env("Pendulum-v1", 2))
    with pytest.raises(ValueError, match=r"learn\(total_steps=320\).*after 1 of 5 rollouts"):
        resumed.learn(1000)


def test_erl_ppo_resume_after_ctrl_c(tmp_path, monkeypatch):
    from embodied_rl.agents.ppo_checkpoint import load_ppo
    from embodied_rl.cli import main

    config = tmp_path / "ppo.yaml"
    config.write_text("n_steps: 16\nbatch_size: 32\nn_epochs: 1\n")

    def erl(out, *extra):
        return main(
            ["ppo", "--task", "Pendulum-v1", "--env-steps", "128", "--n-envs", "2", "--config",
             str(config), "--checkpoint-every", "32", "--out", str(out), "--no-progress", *extra]
        )  # fmt: skip

    assert erl(tmp_path / "straight") == 0
    with monkeypatch.context() as patch:
        interrupt_update(patch, at_call=3)
        assert erl(tmp_path / "run") == 130  # Ctrl-C: the CLI's exit status
    assert erl(tmp_path / "run", "--resume") == 0
    envs = make_vec_env("Pendulum-v1", 2)
    a, b = (load_ppo(PPO, tmp_path / run / "agent", envs, None) for run in ("straight", "run"))
    assert a.num_steps == b.num_steps == 128
    assert all(
        torch.equal(p, q) for p, q in zip(a.policy.parameters(), b.policy.parameters(), strict=True)
    )


def test_load_policy_reads_a_ppo_run_and_its_checkpoints(tmp_path):
    from embodied_rl.policies import load_policy

    agent = build("pendulum")
    agent.learn(64, checkpoint_dir=tmp_path / "checkpoints", checkpoint_every=64)
    agent.save(tmp_path / "agent")
    for path in (tmp_path, tmp_path / "checkpoints"):
        loaded = load_policy(path)
        for (name, p), q in zip(loaded.named_parameters(), agent.policy.parameters(), strict=True):
            assert torch.equal(p, q), (path, name)


def test_ppo_checkpoints_are_the_agents_format(tiny_data, tmp_path):
    """One checkpoint format: PPO's holds every file a BC checkpoint holds, with its resume
    state added; each loader refuses the other's checkpoint with a pointer to the right one."""
    from embodied_rl.agents import TrainerConfig, load_agent, train
    from embodied_rl.agents.checkpoint import read_checkpoint_config

    config = TrainerConfig(steps=2, batch_size=8, eval_episodes=0, progress=False)
    train("bc", tiny_data, tmp_path / "bc", None, config)
    bc_checkpoint = tmp_path / "bc" / "checkpoints"
    agent = build("pendulum")
    agent.learn(64, checkpoint_dir=tmp_path / "checkpoints", checkpoint_every=64)
    ppo_files = {p.name for p in latest_checkpoint(tmp_path / "checkpoints").iterdir()}
    bc_files = {p.name for p in latest_checkpoint(bc_checkpoint).iterdir()}
    assert ppo_files == bc_files | {"state.safetensors"}
    _, meta = read_checkpoint_config(tmp_path / "checkpoints")
    assert meta["agent"]["type"] == "ppo" and meta["agent"]["config"]["n_steps"] == CONFIG.n_steps
    with pytest.raises(CheckpointError, match=r"PPO checkpoint.*PPO\.load\(path, envs\)"):
        load_agent(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match=r"'bc' checkpoint, not PPO's.*load_agent"):
        PPO.load(bc_checkpoint, make_vec_env("Pendulum-v1", 2))
    agent.save(tmp_path / "agent")
    with pytest.raises(CheckpointError, match=r"saved agent, not a training checkpoint"):
        PPO.resume(tmp_path / "agent", make_vec_env("Pendulum-v1", 2))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "ppo.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"older layout \(ppo\.json"):
        PPO.load(tmp_path / "old", make_vec_env("Pendulum-v1", 2))
