"""The offline-to-online replay buffer: exact mixing, ring wrap-around, Monte-Carlo returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_rl.agents.replay import ReplayBuffer

OBS_DIM, ACTION_DIM = 6, 2  # the synthetic dataset's sizes (conftest.synthetic_dataset)
ONLINE_STATE = 100.0  # online observations are >= this; the synthetic data's are N(0, 1)


def add_steps(buffer: ReplayBuffer, rewards, terminal_at: int | None = None, start: int = 0):
    """Online transitions whose state is ONLINE_STATE + their index and reward ``rewards[i]``;
    the one at ``terminal_at`` terminates the episode."""
    for i, reward in enumerate(rewards):
        value = ONLINE_STATE + start + i
        obs = {"state": np.full(OBS_DIM, value, np.float32)}
        next_obs = {"state": np.full(OBS_DIM, value + 0.5, np.float32)}
        buffer.add(
            obs, np.full(ACTION_DIM, 0.5, np.float32), reward, next_obs, i == terminal_at, False
        )


@pytest.mark.parametrize(("ratio", "batch", "n_offline"), [(0.25, 16, 4), (0.5, 7, 4), (1.0, 8, 8)])
def test_mixing_ratio_gives_exact_proportions(tiny_data, ratio, batch, n_offline):
    buffer = ReplayBuffer(tiny_data, ["state"], 32, batch_size=batch, mixing_ratio=ratio)
    add_steps(buffer, [0.0] * 5)
    for _ in range(20):
        b = buffer.sample()
        online = b["online"].numpy()
        assert (~online).sum() == n_offline  # round(ratio * B), halves rounded up
        state = b["obs"]["state"].numpy()
        assert (state[online] >= ONLINE_STATE).all()  # flags tell the truth
        assert (np.abs(state[~online]) < 10).all()
        np.testing.assert_array_equal(b["next_obs"]["state"][online], state[online] + 0.5)
        assert b["action"].shape == (batch, ACTION_DIM)


def test_empty_online_part_gives_offline_batches_and_offline_rows_are_transitions(tiny_data):
    buffer = ReplayBuffer(tiny_data, ["state"], 8, gamma=0.9, batch_size=64, mixing_ratio=0.5)
    b = buffer.sample()
    assert not b["online"].any()
    # every offline row is a real transition: its next observation follows its observation
    obs, next_obs = b["obs"]["state"].numpy(), b["next_obs"]["state"].numpy()
    data_obs = tiny_data.observations["state"]
    rows = [int(np.flatnonzero((data_obs == o).all(1))[0]) for o in obs]
    np.testing.assert_array_equal(next_obs, data_obs[np.asarray(rows) + 1])
    expected = np.where(b["terminated"].numpy(), 0.0, 0.9)
    np.testing.assert_allclose(b["discount"].numpy(), expected)


def test_no_ratio_samples_the_union_uniformly(tiny_data):
    buffer = ReplayBuffer(tiny_data, ["state"], 200, batch_size=256, mixing_ratio=None)
    add_steps(buffer, [0.0] * 24)
    fraction = np.mean([buffer.sample()["online"].float().mean().item() for _ in range(40)])
    expected = 24 / (tiny_data.n_transitions + 24)  # 24 / 96
    assert fraction == pytest.approx(expected, abs=0.02)


def test_ring_overwrites_the_oldest_online_transitions(tiny_data):
    buffer = ReplayBuffer(tiny_data, ["state"], 4, batch_size=64, mixing_ratio=0.0)
    add_steps(buffer, [float(i) for i in range(6)])
    assert (buffer.size, buffer.pointer, buffer.n_added) == (4, 2, 6)
    b = buffer.sample()
    assert b["online"].all()
    assert set(b["reward"].tolist()) == {2.0, 3.0, 4.0, 5.0}
    # observation and reward of a slot stay together after the wrap
    np.testing.assert_array_equal(b["obs"]["state"][:, 0] - ONLINE_STATE, b["reward"])


def test_calql_monte_carlo_returns_of_online_episodes_match_hand_computation(tiny_data):
    buffer = ReplayBuffer(tiny_data, ["state"], 16, gamma=0.9, mixing_ratio=0.0, mc_return=True)
    add_steps(buffer, [0.0, 1.0, 2.0])  # still running: no bound yet
    assert np.isneginf(buffer._on["mc_return"][:3]).all()
    buffer.end_episode()  # e.g. truncated: the return stops at the episode end
    # 0 + 0.9 * 1 + 0.81 * 2 = 2.52; 1 + 0.9 * 2 = 2.8; 2
    np.testing.assert_allclose(buffer._on["mc_return"][:3], [2.52, 2.8, 2.0], rtol=1e-6)
    add_steps(buffer, [1.0, 1.0], terminal_at=1, start=3)  # a terminated second episode
    np.testing.assert_allclose(buffer._on["mc_return"][3:5], [1.9, 1.0], rtol=1e-6)
    assert buffer.n_episodes == 2
    b = buffer.sample()
    by_reward = dict(zip(b["obs"]["state"][:, 0].tolist(), b["mc_return"].tolist(), strict=True))
    assert by_reward[ONLINE_STATE + 1] == pytest.approx(2.8)


def test_monte_carlo_returns_survive_a_wrap_within_an_episode(tiny_data):
    buffer = ReplayBuffer(tiny_data, ["state"], 2, gamma=0.5, mixing_ratio=0.0, mc_return=True)
    add_steps(buffer, [4.0, 2.0, 8.0], terminal_at=2)  # the first step was overwritten
    by_reward = dict(
        zip(buffer._on["reward"].tolist(), buffer._on["mc_return"].tolist(), strict=True)
    )
    assert by_reward == {2.0: 2.0 + 0.5 * 8.0, 8.0: 8.0}


def test_offline_monte_carlo_returns_stop_at_episode_ends(tiny_data):
    buffer = ReplayBuffer(tiny_data, ["state"], 4, gamma=0.5, mixing_ratio=1.0, mc_return=True)
    ends = tiny_data.episode_starts[1:] - 1
    np.testing.assert_allclose(buffer._off["mc_return"][ends], tiny_data.rewards[ends])


def test_save_and_load_round_trip(tiny_data, tmp_path):
    buffer = ReplayBuffer(tiny_data, ["state"], 4, mixing_ratio=0.0, mc_return=True, seed=3)
    add_steps(buffer, [1.0, 0.0, 1.0, 0.0, 1.0], terminal_at=2)
    buffer.save(tmp_path / "replay.safetensors")
    restored = ReplayBuffer(tiny_data, ["state"], 4, mixing_ratio=0.0, mc_return=True, seed=3)
    restored.load(tmp_path / "replay.safetensors")
    for key, value in buffer.online_arrays().items():
        np.testing.assert_array_equal(restored.online_arrays()[key], value)
    a, b = buffer.sample(), restored.sample()
    assert all(torch.equal(a[k], b[k]) for k in ("action", "reward", "mc_return", "online"))
    other = ReplayBuffer(tiny_data, ["state"], 8, mixing_ratio=0.0, mc_return=True)
    with pytest.raises(ValueError, match="capacity=4"):
        other.load(tmp_path / "replay.safetensors")
    plain = ReplayBuffer(tiny_data, ["state"], 4)
    with pytest.raises(ValueError, match="mc_return"):
        plain.load(tmp_path / "replay.safetensors")


def test_errors_name_the_bad_value(tiny_data):
    with pytest.raises(ValueError, match="mixing_ratio=1.5"):
        ReplayBuffer(tiny_data, ["state"], 4, mixing_ratio=1.5)
    with pytest.raises(KeyError, match="'image'"):
        ReplayBuffer(tiny_data, ["image"], 4)
    with pytest.raises(ValueError, match="capacity=0"):
        ReplayBuffer(tiny_data, ["state"], 0)


def test_reward_transform_applies_to_offline_online_rewards_and_their_returns(tiny_data):
    buffer = ReplayBuffer(
        tiny_data, ["state"], 8, gamma=0.5, mixing_ratio=0.0, mc_return=True,
        reward_scale=2.0, reward_bias=-1.0,
    )  # fmt: skip
    np.testing.assert_allclose(buffer._off["reward"], 2.0 * tiny_data.rewards - 1.0)
    ends = tiny_data.episode_starts[1:] - 1  # the returns of last steps are their rewards
    np.testing.assert_allclose(buffer._off["mc_return"][ends], 2.0 * tiny_data.rewards[ends] - 1)
    add_steps(buffer, [0.0, 1.0], terminal_at=1)
    # rewards -1, 1; returns -1 + 0.5 * 1 = -0.5 and 1
    np.testing.assert_allclose(buffer._on["reward"][:2], [-1.0, 1.0])
    np.testing.assert_allclose(buffer._on["mc_return"][:2], [-0.5, 1.0])
