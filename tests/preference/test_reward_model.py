"""The Bradley-Terry reward model, relabelling, persistence and P-IQL's hand-off to IQL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodied_rl.agents import IQLConfig, TrainerConfig, train
from embodied_rl.preference.data import random_pairs, sample_segments
from embodied_rl.preference.labelers import ScriptedTeacher
from embodied_rl.preference.reward_model import (
    RewardModelConfig,
    TransitionRewardModel,
    fit_reward_model,
    predict_rewards,
    preference_loss,
    relabel_rewards,
)


@pytest.fixture(scope="module")
def fitted(toy_data):
    segments = sample_segments(toy_data, 200, length=16, seed=0)
    first, second = random_pairs(200, 1_000, seed=0)
    prefs = ScriptedTeacher().label_pairs(segments, first, second)
    config = RewardModelConfig(obs_dim=4, action_dim=2, hidden=(64, 64), steps=300, batch_size=32)
    return fit_reward_model(prefs, config)


def test_soft_label_loss_hand_computed():
    ra, rb = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 0.0])
    labels = torch.tensor([1.0, 0.0, 0.5])
    a_wins, b_wins = math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))
    expected = (a_wins + b_wins + math.log(2)) / 3
    assert preference_loss(ra, rb, labels).item() == pytest.approx(expected)


def test_reward_model_learns_the_true_reward_ranking(fitted, toy_data):
    model, metrics = fitted
    assert metrics["accuracy"] > 0.9
    predicted = predict_rewards(model, toy_data)
    # rank correlation of predicted and true returns of segments the model never compared
    held_out = sample_segments(toy_data, 300, length=16, seed=7).transitions
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    returns = predicted[held_out].sum(1), toy_data.rewards[held_out].sum(1)
    corr = np.corrcoef(rank(returns[0]), rank(returns[1]))[0, 1]
    assert corr > 0.8, corr


@pytest.mark.parametrize("scaling", ["minmax", "standard", "none"])
def test_relabel_replaces_only_the_rewards(fitted, toy_data, scaling):
    model, _ = fitted
    relabelled = relabel_rewards(toy_data, model, scaling=scaling)
    assert relabelled.rewards.shape == toy_data.rewards.shape
    assert relabelled.actions is toy_data.actions
    assert relabelled.metadata["reward_model_scaling"] == scaling
    if scaling == "minmax":
        assert relabelled.rewards.min() == 0.0 and relabelled.rewards.max() == 1.0
    if scaling == "standard":
        assert abs(relabelled.rewards.mean()) < 1e-9
    with pytest.raises(ValueError, match="scaling='log'"):
        relabel_rewards(toy_data, model, scaling="log")


def test_save_and_load_give_the_same_rewards(tmp_path, fitted, toy_data):
    model, _ = fitted
    model.save(tmp_path / "rm")
    assert sorted(p.name for p in (tmp_path / "rm").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = TransitionRewardModel.load(tmp_path / "rm")
    assert np.array_equal(predict_rewards(loaded, toy_data), predict_rewards(model, toy_data))
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        TransitionRewardModel.load(tmp_path)


def test_p_iql_trains_iql_on_the_relabelled_data(tmp_path, fitted, toy_data):
    model, _ = fitted
    relabelled = relabel_rewards(toy_data, model)
    config = TrainerConfig(
        steps=30, batch_size=32, log_every=10, eval_episodes=0, checkpoint_every=0,
        progress=False, tensorboard=False,
    )  # fmt: skip
    agent, _ = train("iql", relabelled, tmp_path, IQLConfig(hidden=(32, 32)), config)
    assert agent.step == 30
    assert "train/critic_loss" in (tmp_path / "metrics.csv").read_text()


def test_fit_reward_model_logs_through_the_training_loop(tmp_path, toy_data):
    """With ``out``, the reward model's loss and accuracy go to the one metrics log."""
    from embodied_rl.preference import ScriptedTeacher, random_pairs, sample_segments
    from embodied_rl.preference.reward_model import RewardModelConfig, fit_reward_model

    segments = sample_segments(toy_data, n_segments=20, length=4, seed=0)
    first, second = random_pairs(len(segments), 60, seed=0)
    prefs = ScriptedTeacher().label_pairs(segments, first, second)
    state = toy_data.observations["state"]
    config = RewardModelConfig(
        obs_dim=state.shape[-1], action_dim=toy_data.actions.shape[-1], steps=20, batch_size=8
    )
    _, metrics = fit_reward_model(prefs, config, out=tmp_path, log_every=10)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,name,value,wall_s"
    assert {r.split(",")[1] for r in rows[1:]} == {"train/reward_model_loss", "train/accuracy"}
    assert {r.split(",")[0] for r in rows[1:]} == {"10", "20"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
