"""Tiny in-memory datasets for the agent tests (no collection, no disk)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from embodied_rl.datasets import Episode, OfflineDataset

OBS_DIM, ACTION_DIM = 6, 2


def synthetic_dataset(
    n_episodes: int = 6, length: int = 12, image: int = 0, seed: int = 0
) -> OfflineDataset:
    """Episodes with random states; reward 1 at the end of every other episode (terminated),
    the others truncated. ``image > 0`` adds uint8 images and text instructions."""
    rng = np.random.default_rng(seed)
    obs_space = {"state": spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)}
    if image:
        obs_space["image"] = spaces.Box(0, 255, (image, image, 3), np.uint8)
        obs_space["instruction"] = spaces.Text(max_length=40, min_length=1)
    episodes = []
    for e in range(n_episodes):
        success = e % 2 == 0
        obs = {"state": rng.normal(size=(length + 1, OBS_DIM)).astype(np.float32)}
        if image:
            obs["image"] = rng.integers(0, 256, (length + 1, image, image, 3), dtype=np.uint8)
            obs["instruction"] = [f"reach the block {e % 3}"] * (length + 1)
        flags = np.zeros(length, dtype=bool)
        flags[-1] = True
        rewards = np.zeros(length)
        rewards[-1] = float(success)
        episodes.append(
            Episode(
                observations=obs,
                actions=rng.uniform(-1, 1, (length, ACTION_DIM)).astype(np.float32),
                rewards=rewards,
                terminations=flags & success,
                truncations=flags & (not success),
                infos={},
                metadata={},
            )
        )
    return OfflineDataset.from_episodes(
        episodes,
        spaces.Dict(obs_space),
        spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32),
        metadata={"ref_min_score": 0.0, "ref_max_score": 1.0},
    )


@pytest.fixture(scope="session")
def tiny_data() -> OfflineDataset:
    return synthetic_dataset()


@pytest.fixture(scope="session")
def tiny_image_data() -> OfflineDataset:
    """:func:`synthetic_dataset` with 32 x 32 images and instructions (VLA policies)."""
    return synthetic_dataset(image=32)
