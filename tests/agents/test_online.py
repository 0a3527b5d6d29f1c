"""Online fine-tuning: transitions reach the buffer, Cal-QL bounds of online episodes, exact
resume after Ctrl-C, and the checks on agents and configs."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.numpy import load_file

from embodied_rl.agents import CalQLConfig, CQLConfig, IQLConfig, load_agent, make_agent
from embodied_rl.agents.checkpoint import latest_checkpoint, save_checkpoint
from embodied_rl.agents.losses import discounted_returns
from embodied_rl.agents.online import (
    OnlineConfig,
    check_online_agent,
    episode_seed,
    finetune_online,
    regret,
)
from embodied_rl.agents.trainer import default_policy, make_sampler, seed_everything
from embodied_rl.evaluation.rollout import HELD_OUT_SEED

CONFIGS = {"iql": IQLConfig, "cql": CQLConfig, "calql": CalQLConfig}


class PointEnv(gym.Env):
    """A 2-D point that must come within 0.3 of a goal: the 6-D state of the synthetic dataset
    (position, goal, difference), 2-D actions, sparse reward, 12-step horizon. Training
    episodes (reset with the loop's seeds; evaluations use the held-out block from
    ``HELD_OUT_SEED``) are recorded in
    ``log``, and the step with index ``interrupt_at`` raises KeyboardInterrupt (a Ctrl-C)."""

    observation_space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (6,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    log: list[dict] = []
    interrupt_at: int | None = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        evaluation = seed is not None and HELD_OUT_SEED <= seed < HELD_OUT_SEED + 1_000_000
        self.training = seed is not None and not evaluation
        self.pos, self.goal = self.np_random.uniform(-1, 1, (2, 2))
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return {"state": np.concatenate([self.pos, self.goal, self.goal - self.pos]).astype("f4")}

    def step(self, action):
        if self.training and len(PointEnv.log) == PointEnv.interrupt_at:
            raise KeyboardInterrupt
        obs = self._obs()
        self.pos = self.pos + 0.3 * np.asarray(action, np.float64)
        self.t += 1
        success = bool(np.linalg.norm(self.pos - self.goal) < 0.3)
        truncated = self.t >= 12 and not success
        if self.training:
            PointEnv.log.append(
                {"obs": obs["state"], "action": np.array(action), "reward": float(success),
                 "ended": success or truncated}
            )  # fmt: skip
        return self._obs(), float(success), success, truncated, {"success": success}


@pytest.fixture(autouse=True)
def fresh_log():
    PointEnv.log, PointEnv.interrupt_at = [], None
    yield
    PointEnv.log, PointEnv.interrupt_at = [], None


def offline_checkpoint(algo, data, path, steps=5):
    """A tiny offline-trained agent saved as a checkpoint (what load_agent reads)."""
    seed_everything(0)
    policy = default_policy(algo, data, hidden=(16,))
    agent = make_agent(algo, policy, CONFIGS[algo](hidden=(16,), **_small(algo)))
    agent.fit_observation_normalizers(data.observations)
    sampler = make_sampler(agent, data, 16)
    for _ in range(steps):
        agent.update(sampler.sample())
    save_checkpoint(agent, path)
    return path


def _small(algo):
    return {"n_actions": 2} if algo != "iql" else {}


def quick(**overrides):
    values = dict(
        env_steps=40, batch_size=16, eval_every=20, eval_episodes=2, checkpoint_every=10,
        log_every=10, progress=False, tensorboard=False,
    )  # fmt: skip
    return OnlineConfig(**{**values, **overrides})


def replay_of(run):
    path = latest_checkpoint(run / "checkpoints")
    return load_file(run / "checkpoints" / f"replay_{path.name[5:]}.safetensors")


def test_online_transitions_enter_the_buffer(tiny_data, tmp_path):
    agent = load_agent(offline_checkpoint("iql", tiny_data, tmp_path / "offline"))
    start = agent.step
    result = finetune_online(agent, tiny_data, PointEnv, quick(), tmp_path / "online")
    assert result.env_steps == 40 and result.gradient_steps == start + 40
    replay = replay_of(tmp_path / "online")
    assert int(replay["size"][0]) == int(replay["n_added"][0]) == 40
    np.testing.assert_array_equal(replay["obs.state"], [s["obs"] for s in PointEnv.log])
    np.testing.assert_array_equal(replay["action"], [s["action"] for s in PointEnv.log])
    np.testing.assert_array_equal(replay["reward"], [s["reward"] for s in PointEnv.log])
    assert (np.abs(replay["action"]) <= 1).all()  # sampled actions are clipped to the space
    # evaluations at 0 (the offline policy), 20 and 40; one episode record per finished episode
    assert [e["env_step"] for e in result.evaluations] == [0, 20, 40]
    finished = sum(s["ended"] for s in PointEnv.log)
    assert len(result.episodes) == finished
    assert result.regret == pytest.approx(1 - np.mean([e["success"] for e in result.episodes]))
    saved = json.loads((tmp_path / "online" / "result.json").read_text())
    assert saved["env_steps"] == 40
    rows = (tmp_path / "online" / "metrics.csv").read_text().splitlines()
    names = {row.split(",")[1] for row in rows[1:]}
    assert {"train/value_loss", "eval/normalized_score", "online/regret"} <= names


def test_calql_bounds_online_episodes_with_their_monte_carlo_returns(tiny_data, tmp_path):
    agent = load_agent(offline_checkpoint("calql", tiny_data, tmp_path / "offline"))
    finetune_online(agent, tiny_data, PointEnv, quick(env_steps=30), tmp_path / "online")
    replay = replay_of(tmp_path / "online")
    rewards = np.array([s["reward"] for s in PointEnv.log])
    ends = [i + 1 for i, s in enumerate(PointEnv.log) if s["ended"]]
    if ends[-1] != len(rewards):
        ends.append(len(rewards))  # the run's end truncates the last episode
    expected = discounted_returns(rewards, np.array([0, *ends]), 0.99)
    np.testing.assert_allclose(replay["mc_return"], expected, rtol=1e-6)


def test_resume_after_ctrl_c_reproduces_the_uninterrupted_run(tiny_data, tmp_path):
    offline = offline_checkpoint("calql", tiny_data, tmp_path / "offline")
    whole = load_agent(offline)
    expected = finetune_online(whole, tiny_data, PointEnv, quick(), tmp_path / "whole")
    full_log = PointEnv.log

    PointEnv.log, PointEnv.interrupt_at = [], 27  # Ctrl-C during environment step 28
    with pytest.raises(KeyboardInterrupt):
        finetune_online(load_agent(offline), tiny_data, PointEnv, quick(), tmp_path / "cut")
    kept = json.loads(
        (latest_checkpoint(tmp_path / "cut" / "checkpoints") / "state.json").read_text()
    )
    assert 10 <= kept["online"]["env_steps"] <= 27  # a checkpoint at an episode end survived
    PointEnv.interrupt_at = None
    resumed = load_agent(offline)
    result = finetune_online(resumed, tiny_data, PointEnv, quick(), tmp_path / "cut", resume=True)

    assert result.episodes == expected.episodes
    assert result.evaluations == expected.evaluations
    for name, module in whole.modules().items():
        for (key, a), b in zip(
            module.state_dict().items(), resumed.modules()[name].state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), f"{name}.{key} differs after resume"
    np.testing.assert_array_equal(
        replay_of(tmp_path / "cut")["obs.state"], replay_of(tmp_path / "whole")["obs.state"]
    )
    # the resumed run redid the steps after its checkpoint exactly
    redone = PointEnv.log[-(40 - kept["online"]["env_steps"]) :]
    np.testing.assert_array_equal(
        [s["action"] for s in redone], [s["action"] for s in full_log[-len(redone) :]]
    )
    rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows if r.split(",")[1] == "train/critic_loss"]
    assert steps == [10, 20, 30, 40]  # rows of the interrupted tail were not duplicated


def test_resume_refuses_other_settings_and_fresh_runs_refuse_to_overwrite(tiny_data, tmp_path):
    offline = offline_checkpoint("iql", tiny_data, tmp_path / "offline")
    finetune_online(load_agent(offline), tiny_data, PointEnv, quick(env_steps=20), tmp_path / "run")
    with pytest.raises(ValueError, match=r"\['mixing_ratio'\] differ"):
        finetune_online(
            load_agent(offline), tiny_data, PointEnv, quick(mixing_ratio=None), tmp_path / "run",
            resume=True,
        )  # fmt: skip
    with pytest.raises(FileExistsError, match="resume=True"):
        finetune_online(load_agent(offline), tiny_data, PointEnv, quick(), tmp_path / "run")
    offline_run = tmp_path / "offline_run"  # a run directory holding an offline checkpoint
    offline_checkpoint("iql", tiny_data, offline_run / "checkpoints")
    with pytest.raises(ValueError, match="not an online fine-tuning checkpoint"):
        finetune_online(
            load_agent(offline),
            tiny_data,
            PointEnv,
            quick(),
            offline_run,
            resume=True,
        )


def test_only_flat_critic_agents_can_go_online(tiny_data):
    bc = make_agent("bc", default_policy("bc", tiny_data, hidden=(8,)))
    with pytest.raises(ValueError, match=r"supports \('iql', 'cql', 'calql'\); got agent 'bc'"):
        check_online_agent(bc)
    with pytest.raises(ValueError, match="mixing_ratio=-0.1"):
        OnlineConfig(mixing_ratio=-0.1)
    with pytest.raises(ValueError, match="updates_per_step=0"):
        OnlineConfig(updates_per_step=0)


def test_regret_is_corls_mean_of_one_minus_success():
    episodes = [{"success": 1.0}, {"success": 0.0}, {"success": 0.0}, {"success": 1.0}]
    assert regret(episodes) == pytest.approx(0.5)
    assert regret([{"normalized_return": 25.0}, {"normalized_return": 150.0}]) == pytest.approx(
        0.375
    )  # no success signal: 1 - clip(score / 100, 0, 1)
    assert np.isnan(regret([]))


def test_episode_seeds_depend_on_seed_and_index_only():
    assert episode_seed(0, 5) == episode_seed(0, 5)
    assert len({episode_seed(s, i) for s in range(3) for i in range(50)}) == 150
