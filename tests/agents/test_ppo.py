"""PPO: losses on hand-computed numbers, the KL controllers, rollouts (truncation, autoreset
modes, Dict observations under domain randomization), learning, persistence and seeding."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from embodied_rl.agents.ppo import PPO, PPOConfig, default_ppo_policy, head_and_value
from embodied_rl.agents.ppo_rollout import make_vec_env, take
from embodied_rl.config import load_config
from embodied_rl.policies import MLPConfig, MLPPolicy
from embodied_rl.policies.actor_critic import ActorCriticConfig, ActorCriticPolicy
from embodied_rl.rl.ppo import (
    AdaptiveKLController,
    FixedKLController,
    clipped_surrogate_loss,
    gae,
    kl_penalty,
    value_loss,
)


class PointGoal(gym.Env):
    """Move a point to a goal in the plane: reward -distance, terminated within 0.1 of the goal,
    truncated after ``horizon`` steps. PPO solves it in a few thousand steps."""

    def __init__(self, horizon: int = 20):
        self.observation_space = spaces.Box(-2.0, 2.0, (4,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.horizon = horizon

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.concatenate([self.pos, self.goal]).astype(np.float32)

    def step(self, action):
        self.pos = np.clip(self.pos + 0.2 * np.asarray(action), -2, 2)
        self.t += 1
        distance = float(np.linalg.norm(self.pos - self.goal))
        terminated = distance < 0.1
        return self._obs(), -distance, terminated, self.t >= self.horizon, {}


def point_envs(n_envs: int = 2, mode: AutoresetMode = AutoresetMode.SAME_STEP, horizon: int = 20):
    return SyncVectorEnv([lambda: PointGoal(horizon)] * n_envs, autoreset_mode=mode)


def point_policy(seed: int = 0, head: str = "gaussian") -> ActorCriticPolicy:
    torch.manual_seed(seed)
    return ActorCriticPolicy(
        ActorCriticConfig(obs_dim=4, action_low=(-1.0,) * 2, action_high=(1.0,) * 2, head=head)
    )


def evaluate(policy, episodes: int = 20) -> float:
    env, total = PointGoal(), 0.0
    for i in range(episodes):
        obs, _ = env.reset(seed=1000 + i)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act({"state": obs}))
            total += reward
            done = terminated or truncated
    return total / episodes


SMALL = PPOConfig(n_steps=64, batch_size=32, n_epochs=4)


# ---------------------------------------------------------------------------- losses
def test_gae_matches_hand_computation_with_truncation_and_termination():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    next_values = torch.tensor([[1.0], [4.0], [2.0]])  # step 1: V(final obs); step 2: bootstrap
    no = torch.zeros(3, 1, dtype=torch.bool)
    ended = torch.tensor([[False], [True], [False]])
    # truncated at step 1: delta = (1.0, 3.0, 2.5); A2 = 2.5, A1 = 3.0, A0 = 1 + 0.25 * 3 = 1.75
    truncated = gae(rewards, values, next_values, no, ended, gamma=0.5, gae_lambda=0.5)
    assert truncated[:, 0].tolist() == pytest.approx([1.75, 3.0, 2.5])
    # terminated at step 1: no bootstrap, delta1 = 2 - 1 = 1; A0 = 1 + 0.25 * 1 = 1.25
    terminated = gae(rewards, values, next_values, ended, ended, gamma=0.5, gae_lambda=0.5)
    assert terminated[:, 0].tolist() == pytest.approx([1.25, 1.0, 2.5])
    # lambda = 1, gamma = 1, no ends: advantages are returns-to-go + bootstrap - value
    consistent = torch.tensor([[1.0], [1.5], [2.0]])  # V(s_{t+1}) = values[t + 1]
    full = gae(rewards, values, consistent, no, no, gamma=1.0, gae_lambda=1.0)
    assert full[:, 0].tolist() == pytest.approx([6 + 2 - 0.5, 5 + 2 - 1.0, 3 + 2 - 1.5])


def test_clipped_surrogate_on_hand_numbers():
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.5])
    advantages = torch.tensor([1.0, 1.0, -2.0, -1.0])
    loss, clip_fraction = clipped_surrogate_loss(ratios.log(), torch.zeros(4), advantages, 0.2)
    # min(r A, clip(r) A) = 1.2, 0.5, -2.2, -0.8 -> mean -0.325
    assert loss.item() == pytest.approx(0.325)
    assert clip_fraction.item() == pytest.approx(0.75)


def test_value_loss_plain_and_clipped():
    values, returns, old = (
        torch.tensor([1.0, 3.0]),
        torch.tensor([2.0, 2.0]),
        torch.tensor([0.5, 2.5]),
    )
    assert value_loss(values, returns).item() == pytest.approx(1.0)
    # clipped predictions 0.7 and 2.7 -> errors 1.69 and 0.49; max with 1, 1 -> mean 1.345
    assert value_loss(values, returns, old, clip_range=0.2).item() == pytest.approx(1.345)
    with pytest.raises(ValueError, match="old_values"):
        value_loss(values, returns, clip_range=0.2)


def test_kl_penalty_zero_against_itself_and_positive_otherwise():
    torch.manual_seed(0)
    mean, ref_mean, std = torch.zeros(20_000), torch.full((20_000,), 0.5), torch.ones(20_000)
    actions = torch.normal(mean, std)
    log_probs = torch.distributions.Normal(mean, std).log_prob(actions)
    ref_log_probs = torch.distributions.Normal(ref_mean, std).log_prob(actions)
    for estimator in ("k1", "k3"):
        assert kl_penalty(log_probs, log_probs, estimator).abs().max().item() == 0.0
        estimate = kl_penalty(log_probs, ref_log_probs, estimator).mean().item()
        assert estimate == pytest.approx(0.125, abs=0.02)  # KL = (0.5)^2 / 2
    assert (kl_penalty(log_probs, ref_log_probs, "k3") >= 0).all()
    with pytest.raises(ValueError, match="estimator='k2'"):
        kl_penalty(log_probs, ref_log_probs, "k2")


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    controller = AdaptiveKLController(coef=0.1, target=0.01, horizon=1000)
    controller.update(kl=0.05, n_steps=100)  # too far from ref: error clipped to +0.2
    assert controller.coef == pytest.approx(0.1 * 1.02)
    controller.update(kl=0.0, n_steps=100)  # too close: error -0.2
    assert controller.coef == pytest.approx(0.1 * 1.02 * 0.98)
    controller.update(kl=0.01, n_steps=100)  # on target: unchanged
    assert controller.coef == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = FixedKLController(0.3)
    fixed.update(kl=1.0, n_steps=100)
    assert fixed.coef == 0.3


def test_config_errors_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="clip_range=0"):
        PPOConfig(clip_range=0)
    with pytest.raises(ValueError, match="kl_target=0.01 needs kl_coef"):
        PPOConfig(kl_target=0.01)
    path = tmp_path / "ppo.yaml"
    path.write_text("n_steps: 128\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_config(PPOConfig, path)
    path.write_text("n_steps: 128\n")
    assert load_config(PPOConfig, path).n_steps == 128


# ---------------------------------------------------------------------------- rollouts
def test_numpy_acting_matches_the_torch_policy():
    policy = point_policy()
    obs = torch.randn(5, 4)
    mean, value = policy.numpy_actor()(obs.numpy())
    torch_mean, torch_value = policy.forward_with_value({"state": obs})
    np.testing.assert_allclose(mean, torch_mean.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(value, torch_value.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("head", ["gaussian", "tokens"])
def test_stored_log_probs_and_values_match_the_policy(head):
    """The first minibatch of an update starts at ratio 1: acting (numpy for the Gaussian MLP,
    torch for tokens) and training compute the same log-probabilities and values."""
    agent = PPO(point_policy(head=head), point_envs(), SMALL)
    agent.collect_rollout()
    batch = take(agent.buffer.flat(), torch.arange(2 * SMALL.n_steps))
    with torch.no_grad():
        out, values = head_and_value(agent.policy, batch)
        log_probs = agent.head.log_prob(out, batch["actions"])
    torch.testing.assert_close(log_probs, batch["log_probs"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(values, batch["values"], atol=1e-5, rtol=1e-5)


def test_truncated_steps_bootstrap_from_the_final_observation():
    agent = PPO(point_policy(), point_envs(horizon=8), SMALL)
    agent.collect_rollout()
    buf = agent.buffer
    assert buf.truncated.any()
    t, i = map(int, np.argwhere(buf.truncated)[0])
    assert buf.final_values[t, i] != 0.0
    # the advantage of a truncated step uses V(final obs), not V(next episode's first obs)
    expected = buf.rewards[t, i] + 0.99 * buf.final_values[t, i] - buf.values[t, i]
    assert buf.advantages[t, i] == pytest.approx(expected, abs=1e-5)


def test_next_step_autoreset_masks_the_reset_steps():
    agent = PPO(point_policy(), point_envs(mode=AutoresetMode.NEXT_STEP, horizon=8), SMALL)
    agent.collect_rollout()
    buf = agent.buffer
    ended = buf.terminated | buf.truncated
    # the step after every episode end only resets: stored, never trained on
    np.testing.assert_array_equal(~buf.valid[1:], ended[:-1])
    assert buf.valid[0].all()
    metrics = agent.update()
    assert metrics["n_minibatches"] == SMALL.n_epochs * math.ceil(buf.valid.sum() / 32)
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("head", ["gaussian", "tokens"])
def test_learns_point_goal(head):
    policy = point_policy(head=head)
    before = evaluate(policy)
    config = PPOConfig(
        n_steps=256, batch_size=64, n_epochs=10, ent_coef=0.0 if head == "gaussian" else 0.001
    )
    agent = PPO(policy, point_envs(n_envs=4), config)
    metrics = agent.learn(24_000 if head == "gaussian" else 16_000)
    after = evaluate(policy)
    assert after > before + 3.0, (before, after, metrics)


def test_dict_observations_under_randomization_with_tokens_head(tmp_path):
    envs = make_vec_env(
        "tabletop/reach-v0",
        n_envs=2,
        randomization="light",
        reward_type="dense",
        horizon=16,
        seed=0,
    )
    torch.manual_seed(0)
    policy = MLPPolicy(MLPConfig(obs_dim=96, hidden=(32, 32), head="tokens", value_head=True))
    agent = PPO(policy, envs, PPOConfig(n_steps=32, batch_size=32, n_epochs=2), log_dir=tmp_path)
    metrics = agent.learn(128)
    envs.close()
    assert isinstance(agent.buffer.obs["instruction"][0, 0], str)
    assert all(isinstance(v, float) for v in metrics.values())
    assert math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["episode_return"])
    rows = [r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines()]
    assert rows[0] == ["step", "name", "value", "wall_s"]  # the one metrics layout
    assert {r[0] for r in rows[1:]} == {"64", "128"}  # one set of rows per rollout
    assert {"steps_per_s", "explained_variance"} <= {r[1] for r in rows[1:]}


def test_kl_penalty_to_reference_keeps_the_policy_close():
    reference = point_policy()
    runs = {}
    for coef in (0.0, 2.0):
        policy = point_policy()
        config = PPOConfig(n_steps=128, batch_size=64, n_epochs=4, kl_coef=coef, learning_rate=1e-3)
        agent = PPO(policy, point_envs(), config, reference=reference)
        agent.learn(1024)
        runs[coef] = agent.learn(256)["ref_kl"]
    assert runs[0.0] > 0 and runs[2.0] < runs[0.0]
    adaptive = PPO(
        point_policy(seed=1),
        point_envs(),
        PPOConfig(n_steps=64, kl_coef=0.1, kl_target=1e-6),
        reference=reference,
    )
    adaptive.learn(256)
    assert adaptive.kl_controller.coef > 0.1  # KL above a tiny target: beta grows


def test_save_load_round_trip_gives_identical_actions(tmp_path):
    agent = PPO(point_policy(), point_envs(), SMALL, reference=point_policy(seed=1))
    agent.learn(128)
    agent.save(tmp_path / "run")
    loaded = PPO.load(tmp_path / "run", point_envs())
    obs = np.random.default_rng(0).uniform(-1, 1, (10, 4)).astype(np.float32)
    for o in obs:
        np.testing.assert_array_equal(
            agent.policy.act({"state": o}), loaded.policy.act({"state": o})
        )
    assert loaded.num_steps == agent.num_steps and loaded.config == agent.config
    saved, restored = agent.optimizer.state_dict(), loaded.optimizer.state_dict()
    for i, slot in saved["state"].items():
        for name, value in slot.items():
            assert torch.equal(value, restored["state"][i][name]), name
    assert loaded.reference is not None


def test_seeded_runs_reproduce_identical_parameters():
    params = []
    for _ in range(2):
        agent = PPO(
            point_policy(seed=3),
            point_envs(),
            PPOConfig(n_steps=64, batch_size=32, n_epochs=2, seed=5),
        )
        agent.learn(256)
        params.append([p.detach().clone() for p in agent.policy.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*params, strict=True))
    other = PPO(
        point_policy(seed=3), point_envs(), PPOConfig(n_steps=64, batch_size=32, n_epochs=2, seed=6)
    )
    other.learn(256)
    assert not all(
        torch.equal(a, b) for a, b in zip(params[0], other.policy.parameters(), strict=True)
    )


def test_rejects_a_policy_without_value_or_with_wrong_actions():
    with pytest.raises(ValueError, match="value_head=True"):
        PPO(
            MLPPolicy(MLPConfig(obs_dim=4, action_low=(-1.0,) * 2, action_high=(1.0,) * 2)),
            point_envs(),
        )
    three_d = ActorCriticPolicy(
        ActorCriticConfig(obs_dim=4, action_low=(-1.0,) * 3, action_high=(1.0,) * 3)
    )
    with pytest.raises(ValueError, match="3-D"):
        PPO(three_d, point_envs())


def test_cli_trains_on_a_randomized_tabletop_task(tmp_path, capsys):
    from embodied_rl.cli import main

    config = tmp_path / "ppo.yaml"
    config.write_text("n_steps: 32\nbatch_size: 32\nn_epochs: 1\n")
    out = tmp_path / "run"
    argv = ["ppo", "--task", "tabletop/reach-v0", "--env-steps", "64", "--config", str(config)]
    argv += ["--randomization", "light", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "64 steps" in capsys.readouterr().out
    assert (out / "metrics.csv").is_file() and (
        out / "agent" / "policy" / "model.safetensors"
    ).is_file()


def test_adr_is_shared_by_every_copy_and_rejected_for_async():
    envs = make_vec_env("tabletop/reach-v0", n_envs=2, randomization="default", adr=True)
    adrs = [env.get_wrapper_attr("adr") for env in envs.envs]
    envs.close()
    assert adrs[0] is not None and adrs[0] is adrs[1]
    with pytest.raises(ValueError, match="async"):
        make_vec_env("tabletop/reach-v0", vectorization="async", randomization="default", adr=True)


def test_async_vector_env_keeps_instruction_text():
    envs = make_vec_env("tabletop/reach-v0", n_envs=2, vectorization="async", horizon=8)
    agent = PPO(default_ppo_policy(envs), envs, PPOConfig(n_steps=16, batch_size=16, n_epochs=1))
    agent.learn(32)
    envs.close()
    instruction = agent.buffer.obs["instruction"][0, 0]
    assert " " in instruction and not set(instruction) <= {"a"}


def test_async_vector_env_of_a_factory_keeps_instruction_text():
    """The same through a callable factory (gymnasium's shared memory garbles Text)."""
    from embodied_rl.envs import make

    envs = make_vec_env(
        lambda: make("tabletop/reach-v0", horizon=8), n_envs=2, vectorization="async"
    )
    obs, _ = envs.reset(seed=0)
    envs.close()
    assert all(" " in text and not set(text) <= {"a"} for text in obs["instruction"])
