"""Exact resume of the offline trainer: interrupted + resumed == uninterrupted, bit for bit."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from embodied_rl.agents import TrainerConfig, load_agent, train
from embodied_rl.agents.checkpoint import CheckpointError, latest_checkpoint
from embodied_rl.datasets import samplers

QUIET = {"progress": False, "tensorboard": False, "batch_size": 8}
CONFIG = TrainerConfig(
    steps=12, log_every=3, checkpoint_every=4, eval_every=4, eval_episodes=1, **QUIET
)


class ToyEnv(gym.Env):
    """Random states shaped like ``tiny_data``'s, reward -|action|, 5 steps an episode: an
    evaluation target."""

    def __init__(self, obs_dim: int = 6, action_dim: int = 2) -> None:
        box = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.observation_space = spaces.Dict({"state": box})
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        shape = self.observation_space["state"].shape
        return {"state": self.np_random.normal(size=shape).astype(np.float32)}

    def step(self, action):
        self.t += 1
        return self._obs(), -float(np.abs(action).sum()), False, self.t >= 5, {"success": False}


def interrupt_sampling_after(monkeypatch, n_calls: int) -> None:
    """Every sampler raises KeyboardInterrupt at its ``n_calls + 1``-th batch (a Ctrl-C)."""
    calls = {"n": 0}
    for cls in (samplers.TransitionSampler, samplers.HistorySampler):
        real = cls.sample

        def sample(self, real=real):
            calls["n"] += 1
            if calls["n"] > n_calls:
                raise KeyboardInterrupt
            return real(self)

        monkeypatch.setattr(cls, "sample", sample)


def rows(path) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        return [(r["step"], r["name"], r["value"]) for r in csv.DictReader(f)]


def assert_same_agent(a, b) -> None:
    for name, module in a.modules().items():
        other = b.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, other[key]), f"{name}.{key}"
    for name, optimizer in a.optimizers().items():
        saved, other = optimizer.state_dict()["state"], b.optimizers()[name].state_dict()["state"]
        for pid, fields in saved.items():
            for field, value in fields.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(other[pid][field]))


@pytest.mark.parametrize("algo", ["bc", "iql", "cql", "dt"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(
    algo, tiny_data, tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    straight, _ = train(algo, tiny_data, tmp_path / "straight", None, CONFIG, eval_env=ToyEnv)
    with monkeypatch.context() as patch:
        interrupt_sampling_after(patch, 10)  # steps 9 and 10 are lost with the interruption
        with pytest.raises(KeyboardInterrupt):
            train(algo, tiny_data, tmp_path / "run", None, CONFIG, eval_env=ToyEnv)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_000000008"
    resumed, result = train(
        algo, tiny_data, tmp_path / "run", None, CONFIG, eval_env=ToyEnv, resume=True
    )
    assert resumed.step == straight.step == 12
    assert_same_agent(straight, resumed)
    assert rows(tmp_path / "run" / "metrics.csv") == rows(tmp_path / "straight" / "metrics.csv")
    state = json.loads(
        (latest_checkpoint(tmp_path / "run" / "checkpoints") / "state.json").read_text()
    )
    assert [e["step"] for e in state["evaluations"]] == [4, 8, 12]
    assert result and set(result) >= {"eval/mean_return", "eval/success_rate"}


def test_checkpoint_stores_the_resolved_run_config(tiny_data, tmp_path):
    train("bc", tiny_data, tmp_path, None, TrainerConfig(steps=2, eval_episodes=0, **QUIET))
    config = json.loads((latest_checkpoint(tmp_path / "checkpoints") / "config.json").read_text())
    assert config["run"]["algo"] == "bc" and config["run"]["trainer"]["steps"] == 2
    assert config["agent"]["type"] == "bc" and config["policy"]["type"] == "mlp"
    state = json.loads((latest_checkpoint(tmp_path / "checkpoints") / "state.json").read_text())
    assert {"step", "rng", "env", "replay_buffer", "evaluations", "log_sums"} <= set(state)


def test_resume_refuses_other_settings_and_extends_steps(tiny_data, tmp_path):
    config = TrainerConfig(steps=4, checkpoint_every=2, eval_episodes=0, **QUIET)
    train("iql", tiny_data, tmp_path, None, config)
    with pytest.raises(CheckpointError, match=r"run\.trainer\.seed: 0 -> 1"):
        train(
            "iql",
            tiny_data,
            tmp_path,
            None,
            TrainerConfig(**{**vars(config), "seed": 1}),
            resume=True,
        )
    from embodied_rl.agents import IQLConfig

    with pytest.raises(CheckpointError, match=r"agent\.config\.expectile: 0\.7 -> 0\.8"):
        train("iql", tiny_data, tmp_path, IQLConfig(expectile=0.8), config, resume=True)
    longer = TrainerConfig(**{**vars(config), "steps": 6})
    agent, _ = train("iql", tiny_data, tmp_path, None, longer, resume=True)
    assert agent.step == 6 and load_agent(tmp_path / "checkpoints").step == 6
    logged = [r[:2] for r in rows(tmp_path / "metrics.csv")]
    assert len(logged) == len(set(logged))  # no (step, metric) twice
    assert sorted({int(step) for step, _ in logged}) == [4, 6]  # log_every > steps: the last


def test_resume_reads_fields_added_since_the_checkpoint_as_their_defaults(tiny_data, tmp_path):
    """A checkpoint of an older version lacks the config fields added since; it was trained
    with their defaults, so it resumes, unless the new run sets such a field otherwise."""
    import json

    from embodied_rl.agents import BCConfig
    from embodied_rl.agents.trainer import default_policy

    config = TrainerConfig(steps=2, checkpoint_every=2, eval_episodes=0, **QUIET)
    train("bc", tiny_data, tmp_path, None, config)
    saved = tmp_path / "checkpoints" / "step_000000002" / "config.json"
    meta = json.loads(saved.read_text())
    del meta["agent"]["config"]["labels"], meta["policy"]["config"]["hidden"]
    saved.write_text(json.dumps(meta))
    longer = TrainerConfig(**{**vars(config), "steps": 4})
    other = default_policy("bc", tiny_data, hidden=(32,))
    with pytest.raises(CheckpointError, match=r"policy\.config\.hidden: \[256, 256\] -> \[32\]"):
        train("bc", tiny_data, tmp_path, BCConfig(), longer, policy=other, resume=True)
    agent, _ = train("bc", tiny_data, tmp_path, None, longer, resume=True)
    assert agent.step == 4


def test_resume_of_a_finished_run_changes_nothing(tiny_data, tmp_path):
    config = TrainerConfig(steps=4, checkpoint_every=2, eval_episodes=0, **QUIET)
    first, _ = train("bc", tiny_data, tmp_path, None, config)
    before = (tmp_path / "metrics.csv").read_text()
    again, _ = train("bc", tiny_data, tmp_path, None, config, resume=True)
    assert again.step == 4
    assert_same_agent(first, again)
    assert rows(tmp_path / "metrics.csv") == [
        tuple(r.split(",")[:3]) for r in before.splitlines()[1:]
    ]


def test_resume_without_a_checkpoint_starts_from_zero(tiny_data, tmp_path, caplog):
    config = TrainerConfig(steps=2, eval_episodes=0, **QUIET)
    agent, _ = train("bc", tiny_data, tmp_path, None, config, resume=True)
    assert agent.step == 2 and "starts from step 0" in caplog.text


def test_resume_from_a_named_earlier_checkpoint_after_corruption(tiny_data, tmp_path):
    """``last`` names a corrupt checkpoint: the error says how to go back, and resuming from
    the earlier one gives the parameters of the uninterrupted run."""
    config = TrainerConfig(steps=4, checkpoint_every=2, eval_episodes=0, **QUIET)
    straight, _ = train("bc", tiny_data, tmp_path / "straight", None, config)
    train("bc", tiny_data, tmp_path / "run", None, config)
    weights = tmp_path / "run" / "checkpoints" / "step_000000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="--resume-from <checkpoints>/step_N"):
        train("bc", tiny_data, tmp_path / "run", None, config, resume=True)
    earlier = tmp_path / "run" / "checkpoints" / "step_000000002"
    agent, _ = train("bc", tiny_data, tmp_path / "run", None, config, resume=earlier)
    for (name, p), q in zip(
        agent.policy.named_parameters(), straight.policy.parameters(), strict=True
    ):
        assert torch.equal(p, q), name
