"""Segments, pairs, the preference sampler and the preference file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embodied_rl.datasets.samplers import SamplerConfig
from embodied_rl.preference.data import (
    PreferenceDataset,
    PreferenceSampler,
    Segments,
    all_pairs,
    append_preference,
    preferences_from_records,
    random_pairs,
    read_preferences,
    records_from_preferences,
    sample_segments,
    valid_starts,
)


def test_segments_stay_inside_their_episode(toy_data):
    segments = sample_segments(toy_data, 200, length=16, seed=1)
    assert len(set(segments.starts.tolist())) == 200  # distinct windows
    episode_of_each_step = toy_data.episode_index[segments.transitions]  # (S, L)
    assert (episode_of_each_step == segments.episodes[:, None]).all()
    assert segments.steps.max() <= 40 - 16
    assert segments.rewards().shape == (200, 16)
    assert np.allclose(segments.returns(), segments.rewards().sum(1))
    # the observation of step t of a segment is the state the t-th action saw
    state = segments.observations("state")
    first = int(segments.starts[0])
    assert np.array_equal(
        state[0, 3], toy_data.observations["state"][toy_data.obs_index[first + 3]]
    )


def test_sample_segments_is_seeded_and_checks_sizes(toy_data):
    a = sample_segments(toy_data, 50, length=8, seed=3)
    b = sample_segments(toy_data, 50, length=8, seed=3)
    assert np.array_equal(a.starts, b.starts)
    n_valid = len(valid_starts(toy_data, 8))
    assert n_valid == 20 * (40 - 8 + 1)
    with pytest.raises(ValueError, match=r"n_segments=100000 must lie in \[1, 660\]"):
        sample_segments(toy_data, 100_000, length=8)
    with pytest.raises(ValueError, match="length=41 exceeds every episode"):
        sample_segments(toy_data, 1, length=41)
    with pytest.raises(ValueError, match="do not leave 8 steps"):
        Segments(toy_data, np.array([35]), length=8)


def test_pairs():
    first, second = random_pairs(5, 1_000, seed=0)
    assert (first != second).all() and first.max() == 4 and second.min() == 0
    first, second = all_pairs(4)
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == [
        (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least 2 segments"):
        random_pairs(1, 3)


def test_preference_dataset_validates_and_drops_skips(toy_data):
    segments = sample_segments(toy_data, 4, length=8)
    prefs = PreferenceDataset(segments, [0, 1, 2], [1, 2, 3], [1.0, np.nan, 0.5])
    assert prefs.summary() == {
        "pairs": 3.0, "first": 1.0, "second": 0.0, "equal": 1.0, "skipped": 1.0,
    }  # fmt: skip
    assert len(prefs.labelled()) == 2
    with pytest.raises(ValueError, match="labels \\[0.3"):
        PreferenceDataset(segments, [0], [1], [0.3])
    with pytest.raises(ValueError, match="second indexes segments outside"):
        PreferenceDataset(segments, [0], [4], [1.0])
    with pytest.raises(ValueError, match="must match"):
        PreferenceDataset(segments, [0, 1], [1], [1.0])


def test_sampler_returns_the_pairs_windows(toy_data):
    segments = sample_segments(toy_data, 10, length=8, seed=0)
    prefs = PreferenceDataset(segments, [0, 2], [1, 3], [1.0, np.nan])  # the skip is dropped
    batch = PreferenceSampler(prefs, SamplerConfig(batch_size=6, seed=0)).sample()
    assert batch["obs_a"]["state"].shape == (6, 8, 4)
    assert batch["action_b"].shape == (6, 8, 2)
    assert torch.equal(batch["label"], torch.ones(6))  # only pair 0 is labelled
    start_a, start_b = segments.starts[0], segments.starts[1]
    expected_a = toy_data.actions[start_a : start_a + 8]
    expected_obs_b = segments.observations("state")[1]
    for row in range(6):
        assert np.array_equal(batch["action_a"][row].numpy(), expected_a)
        assert np.array_equal(batch["obs_b"]["state"][row].numpy(), expected_obs_b)
    assert start_a != start_b
    with pytest.raises(ValueError, match="no labelled pairs"):
        PreferenceSampler(PreferenceDataset(segments, [0], [1], [np.nan]))


def test_preference_file_round_trip(tmp_path, toy_data):
    segments = sample_segments(toy_data, 6, length=8, seed=2)
    prefs = PreferenceDataset(segments, [0, 2, 4, 1], [1, 3, 5, 0], [1.0, 0.0, 0.5, np.nan])
    path = tmp_path / "prefs.jsonl"
    for record in records_from_preferences(prefs, labeler="teacher"):
        append_preference(path, record)
    records = read_preferences(path)
    assert [r["choice"] for r in records] == ["a", "b", "equal", "skip"]
    back = preferences_from_records(toy_data, records)
    assert np.array_equal(back.labels, prefs.labels, equal_nan=True)
    assert np.array_equal(back.segments.starts[back.first], segments.starts[prefs.first])
    assert np.array_equal(back.segments.starts[back.second], segments.starts[prefs.second])


def test_later_record_relabels_a_pair(tmp_path, toy_data):
    pair = {
        "a": {"episode": 0, "start": 0, "length": 8},
        "b": {"episode": 1, "start": 4, "length": 8},
    }
    path = tmp_path / "prefs.jsonl"
    append_preference(path, {**pair, "choice": "a"})
    append_preference(path, {**pair, "choice": "b"})
    prefs = preferences_from_records(toy_data, read_preferences(path))
    assert prefs.labels.tolist() == [0.0]


def test_preference_file_errors(tmp_path):
    path = tmp_path / "prefs.jsonl"
    with pytest.raises(ValueError, match="choice='maybe'"):
        append_preference(path, {"choice": "maybe"})
    assert not path.exists()  # nothing written
    path.write_text(json.dumps({"choice": "a"}) + "\n{broken\n")
    with pytest.raises(ValueError, match="prefs.jsonl:2 is not valid JSON"):
        read_preferences(path)


def test_segments_from_rollouts_need_long_enough_episodes(make_toy_dataset):
    short = make_toy_dataset(n_episodes=2, length=10)
    with pytest.raises(ValueError, match="terminate_on_success=False"):
        sample_segments(short, 1, length=64)
