"""CPL: per-step log-probs, the learner's phases, learning from preferences, the shared
training loop and checkpoints, and the tiny VLA policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from embodied_rl.agents import Trainer, TrainerConfig, load_checkpoint
from embodied_rl.datasets import Episode, OfflineDataset
from embodied_rl.datasets.samplers import SamplerConfig
from embodied_rl.policies import MLPConfig, MLPPolicy, VLAPolicy, vla_preset
from embodied_rl.preference.cpl import CPLConfig, CPLLearner, segment_log_probs
from embodied_rl.preference.data import (
    PreferenceDataset,
    PreferenceSampler,
    random_pairs,
    sample_segments,
)
from embodied_rl.preference.labelers import ScriptedTeacher


def _policy(seed: int = 0, head: str = "gaussian") -> MLPPolicy:
    torch.manual_seed(seed)
    config = MLPConfig(
        obs_dim=4, action_low=(-1, -1), action_high=(1, 1), hidden=(64, 64), head=head
    )
    return MLPPolicy(config)


def _prefs(data, n_segments=200, n_pairs=1_000, length=16) -> PreferenceDataset:
    segments = sample_segments(data, n_segments, length, seed=0)
    first, second = random_pairs(n_segments, n_pairs, seed=0)
    return ScriptedTeacher().label_pairs(segments, first, second)


def _learner(data, config: CPLConfig, seed: int = 0) -> CPLLearner:
    learner = CPLLearner(_policy(seed), config)
    learner.fit_observation_normalizers(data.observations)
    return learner


def test_segment_log_probs_score_every_step(toy_data):
    policy = _policy()
    batch = PreferenceSampler(_prefs(toy_data), SamplerConfig(3, 0)).sample()
    logp = segment_log_probs(policy, batch["obs_a"], batch["action_a"])
    assert logp.shape == (3, 16)
    step = {"state": batch["obs_a"]["state"][1, 5:6]}
    expected = policy.log_prob(step, batch["action_a"][1, 5:6])
    assert logp[1, 5].item() == pytest.approx(expected.item(), rel=1e-5)


def test_deterministic_policies_are_refused(toy_data):
    with pytest.raises(ValueError, match="head='gaussian' or head='tokens'"):
        CPLLearner(_policy(head="deterministic"))
    with pytest.raises(TypeError, match="needs a CPLConfig"):
        CPLLearner(_policy(), config={"alpha": 0.1})
    with pytest.raises(ValueError, match="conservative_lambda=1.5"):
        CPLConfig(conservative_lambda=1.5)


def test_bc_pretraining_then_cpl_with_regulariser(toy_data):
    learner = _learner(toy_data, CPLConfig(bc_steps=2, bc_weight=0.5))
    sampler = PreferenceSampler(_prefs(toy_data), SamplerConfig(8, 0))
    for step in range(3):
        batch = sampler.sample()
        expected = learner.losses(batch)  # before the step: the objective it will take
        metrics = learner.update(batch)
        assert sorted(metrics) == ["bc_loss", "cpl_loss", "loss"]
        assert metrics["loss"] == pytest.approx(expected["loss"].item())
        if step < 2:  # BC pre-training
            assert metrics["loss"] == pytest.approx(metrics["bc_loss"])
        else:
            assert metrics["loss"] == pytest.approx(metrics["cpl_loss"] + 0.5 * metrics["bc_loss"])
    assert learner.step == 3


def test_cpl_recovers_the_preferred_behaviour_better_than_bc(toy_data, good_action_fn):
    """Half the data is random: BC regresses toward the mixture, CPL toward the good action."""
    prefs = _prefs(toy_data)
    states = np.random.default_rng(9).normal(size=(500, 4)).astype(np.float32)

    def action_error(learner: CPLLearner) -> float:
        with torch.no_grad():
            mean = learner.policy({"state": torch.from_numpy(states)}).numpy()
        return float(np.abs(mean - good_action_fn(states)).mean())

    errors = {}
    for name, steps in (("bc", 200), ("cpl", 600)):
        learner = _learner(toy_data, CPLConfig(bc_steps=200, learning_rate=1e-3))
        sampler = PreferenceSampler(prefs, SamplerConfig(16, 0))
        for _ in range(steps):
            learner.update(sampler.sample())
        errors[name] = action_error(learner)
    assert errors["cpl"] < 0.8 * errors["bc"], errors
    held_out = PreferenceSampler(_prefs(toy_data), SamplerConfig(256, 1)).sample()
    assert learner.evaluate(held_out)["accuracy"] > 0.8


def test_shared_trainer_runs_cpl_and_checkpoints_round_trip(tmp_path, toy_data):
    prefs = _prefs(toy_data, n_pairs=200)
    config = TrainerConfig(
        steps=20, batch_size=8, log_every=10, eval_episodes=0, checkpoint_every=0,
        progress=False, tensorboard=False,
    )  # fmt: skip

    def run(out):
        learner = _learner(toy_data, CPLConfig(bc_steps=5))
        sampler = PreferenceSampler(prefs, SamplerConfig(8, seed=0))
        Trainer(learner, sampler, config, out).fit()
        return learner

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    for p, q in zip(first.policy.parameters(), second.policy.parameters(), strict=True):
        assert torch.equal(p, q)  # seeded runs reproduce
    metrics = (tmp_path / "a" / "metrics.csv").read_text()
    assert "train/cpl_loss" in metrics and "train/loss" in metrics
    fresh = CPLLearner(_policy(seed=1), CPLConfig(bc_steps=5))
    load_checkpoint(fresh, tmp_path / "a" / "checkpoints")
    assert fresh.step == 20
    obs = {"state": toy_data.observations["state"][3]}
    assert np.array_equal(fresh.act(obs), first.act(obs))
    saved = first.optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh.optimizer.state_dict()["state"][0]["exp_avg"], saved)


def _image_dataset(n_episodes: int = 4, length: int = 10) -> OfflineDataset:
    rng = np.random.default_rng(0)
    episodes = []
    for e in range(n_episodes):
        flags = np.eye(length, dtype=bool)[-1]
        episodes.append(
            Episode(
                observations={
                    "image": rng.integers(0, 255, (length + 1, 64, 64, 3), dtype=np.uint8),
                    "instruction": ["push the red block"] * (length + 1),
                },
                actions=rng.uniform(-1, 1, (length, 4)).astype(np.float32),
                rewards=np.full(length, float(e)),
                terminations=np.zeros(length, dtype=bool),
                truncations=flags,
            )
        )
    obs_space = spaces.Dict(
        {
            "image": spaces.Box(0, 255, (64, 64, 3), np.uint8),
            "instruction": spaces.Text(max_length=64),
        }
    )
    return OfflineDataset.from_episodes(
        episodes, obs_space, spaces.Box(-1.0, 1.0, (4,), np.float32)
    )


def test_cpl_trains_the_tiny_vla_and_lowers_its_loss():
    torch.manual_seed(0)
    data = _image_dataset()
    segments = sample_segments(data, 8, length=8, seed=0)
    first, second = random_pairs(8, 4, seed=0)
    prefs = ScriptedTeacher().label_pairs(segments, first, second)
    policy = VLAPolicy(vla_preset("tiny", dropout=0.0, proprio_dim=0, head="tokens"))
    batch = PreferenceSampler(prefs, SamplerConfig(2, 0)).sample()
    logp = segment_log_probs(policy, batch["obs_a"], batch["action_a"])
    assert logp.shape == (2, 8)  # 8 steps cut into chunks of history=6 (the last padded)
    learner = CPLLearner(policy, CPLConfig(learning_rate=1e-3))
    before = learner.evaluate(batch)["cpl_loss"]
    for _ in range(6):
        learner.update(batch)
    after = learner.evaluate(batch)["cpl_loss"]
    assert after < 0.9 * before, (before, after)
