"""Samplers: n-step returns by hand, history padding at episode starts, segments inside
episodes, several datasets at once, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_rl.datasets import (
    HistorySampler,
    OfflineDataset,
    SamplerConfig,
    SegmentSampler,
    TransitionSampler,
)


@pytest.fixture
def data(episodes, dataset_spaces) -> OfflineDataset:
    """Episodes of lengths 3 (terminated), 5 (truncated), 4 (terminated)."""
    return OfflineDataset.from_episodes(episodes, *dataset_spaces)


def test_n_step_returns_match_hand_computation(make_episode, dataset_spaces):
    # episode 0: rewards 1, 2, 3 then terminated; episode 1: rewards 11, 12 then truncated
    data = OfflineDataset.from_episodes(
        [make_episode(0, 3), make_episode(1, 2, terminated=False)], *dataset_spaces
    )
    sampler = TransitionSampler(data, n_step=2, gamma=0.5)
    expected_reward = [1 + 0.5 * 2, 2 + 0.5 * 3, 3, 11 + 0.5 * 12, 12]
    expected_discount = [0.25, 0.0, 0.0, 0.25, 0.5]  # terminal inside the window -> 0
    expected_next_step = [2, 3, 3, 2, 2]  # next_obs = the observation m steps later
    np.testing.assert_allclose(sampler.n_step_reward, expected_reward)
    np.testing.assert_allclose(sampler.discount, expected_discount)
    state = data.observations["state"]
    np.testing.assert_array_equal(state[sampler.next_obs_row, 1], expected_next_step)
    np.testing.assert_array_equal(state[sampler.next_obs_row, 0], [0, 0, 0, 1, 1])

    batch = TransitionSampler(
        data, n_step=2, gamma=0.5, config=SamplerConfig(batch_size=64)
    ).sample()
    step = batch["obs"]["state"][:, 1].long()
    episode = batch["obs"]["state"][:, 0].long()
    flat = torch.tensor([0, 3])[episode] + step  # flat transition index
    torch.testing.assert_close(
        batch["reward"], torch.tensor(expected_reward, dtype=torch.float32)[flat]
    )
    torch.testing.assert_close(batch["discount"], torch.tensor(expected_discount)[flat])
    assert batch["action"].shape == (64, 2) and batch["terminated"].dtype == torch.bool


def test_one_step_transitions(data):
    batch = TransitionSampler(data, config=SamplerConfig(batch_size=128, seed=1)).sample()
    obs, next_obs = batch["obs"]["state"], batch["next_obs"]["state"]
    torch.testing.assert_close(next_obs[:, 1], obs[:, 1] + 1)  # next step, same episode
    torch.testing.assert_close(next_obs[:, 0], obs[:, 0])
    torch.testing.assert_close(batch["reward"], obs[:, 1] + 1 + 10 * obs[:, 0])
    assert batch["obs"]["image"].dtype == torch.uint8  # frames stay uint8
    assert len(batch["obs"]["instruction"]) == 128 and isinstance(
        batch["obs"]["instruction"][0], str
    )


def test_history_padding_masks_at_episode_starts(data):
    k = 4
    sampler = HistorySampler(data, history=k, config=SamplerConfig(batch_size=256, seed=2))
    batch = sampler.sample()
    state, mask, timestep = batch["obs"]["state"], batch["mask"], batch["timestep"]
    assert batch["obs"]["image"].shape == (256, k, 32, 32, 3)
    assert batch["obs"]["image"].dtype == torch.uint8
    last_step = state[:, -1, 1].long()  # step of the sampled (newest) position
    wanted = last_step[:, None] + torch.arange(-(k - 1), 1)
    assert torch.equal(mask, wanted >= 0)
    assert torch.equal(timestep, wanted.clamp(min=0))
    assert torch.equal(state[..., 1].long(), wanted.clamp(min=0))  # padding repeats step 0
    assert torch.equal(state[..., 0], state[:, :1, 0].expand(-1, k))  # never another episode
    pixel = batch["obs"]["image"][..., 0, 0, 0].long()
    assert torch.equal(pixel, 10 * state[..., 0].long() + state[..., 1].long())
    # return-to-go: rewards 1..T (+10 per episode) summed from each step to the episode end
    episode, step = state[..., 0].long(), state[..., 1].long()
    length = torch.tensor([3, 5, 4])[episode]
    rtg = sum((step + 1 + j + 10 * episode) * (step + j < length) for j in range(5))
    torch.testing.assert_close(batch["return_to_go"], rtg.float())
    assert (~mask).any() and mask.all(dim=1).any()  # both cases occurred


def test_segments_never_cross_episode_ends(data):
    sampler = SegmentSampler(data, length=4, config=SamplerConfig(batch_size=200, seed=3))
    batch = sampler.sample()
    state = batch["obs"]["state"]
    assert state.shape == (200, 4, 3) and batch["action"].shape == (200, 4, 2)
    assert torch.equal(state[..., 0], state[:, :1, 0].expand(-1, 4))  # one episode each
    length = torch.tensor([3, 5, 4])[batch["episode"]]
    assert (batch["start"] + 4 <= length).all()
    assert set(batch["episode"].tolist()) == {1, 2}  # episode 0 is shorter than 4
    torch.testing.assert_close(batch["segment_return"], batch["reward"].sum(1))
    with pytest.raises(ValueError, match="length=6 exceeds every episode"):
        SegmentSampler(data, length=6)


def test_sampler_over_several_datasets_and_seeding(data, make_episode, dataset_spaces):
    other = OfflineDataset.from_episodes([make_episode(5, 6)], *dataset_spaces)
    sampler = TransitionSampler([data, other], config=SamplerConfig(batch_size=512, seed=4))
    episodes = set(sampler.sample()["obs"]["state"][:, 0].long().tolist())
    assert episodes == {0, 1, 2, 5}
    assert sampler.data.episode_metadata[-1]["source"] == 1
    a = TransitionSampler(data, config=SamplerConfig(seed=7)).sample()
    b = TransitionSampler(data, config=SamplerConfig(seed=7)).sample()
    assert torch.equal(a["obs"]["state"], b["obs"]["state"])


def test_obs_keys_selection_and_errors(data):
    batch = HistorySampler(data, history=2, config=SamplerConfig(obs_keys=("state",))).sample()
    assert set(batch["obs"]) == {"state"}
    with pytest.raises(ValueError, match=r"obs_keys \['depth'\] are not in the dataset"):
        TransitionSampler(data, config=SamplerConfig(obs_keys=("depth",)))
    with pytest.raises(ValueError, match="n_step=0"):
        TransitionSampler(data, n_step=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        SamplerConfig(batch_size=0)
