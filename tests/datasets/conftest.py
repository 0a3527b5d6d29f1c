"""Fixtures of the dataset tests: synthetic episodes with known values, a small collection."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from embodied_rl.datasets import Episode, collect

IMAGE = 32
CHARSET = "abcdefghijklmnopqrstuvwxyz "


def synthetic_spaces() -> tuple[spaces.Dict, spaces.Box]:
    obs = spaces.Dict(
        {
            "state": spaces.Box(-np.inf, np.inf, (3,), np.float32),
            "image": spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8),
            "instruction": spaces.Text(max_length=40, min_length=1, charset=CHARSET),
        }
    )
    return obs, spaces.Box(-1.0, 1.0, (2,), np.float32)


def synthetic_episode(episode: int, length: int, terminated: bool = True) -> Episode:
    """Observations encode (episode, step): ``state = [episode, step, 100 * episode + step]``
    and every pixel of image ``t`` equals ``(10 * episode + t) % 256``."""
    steps = np.arange(length + 1)
    state = np.stack([np.full(length + 1, episode), steps, 100 * episode + steps], axis=1)
    image = np.broadcast_to(
        ((10 * episode + steps) % 256).astype(np.uint8)[:, None, None, None],
        (length + 1, IMAGE, IMAGE, 3),
    ).copy()
    flags = np.zeros(length, dtype=bool)
    flags[-1] = True
    return Episode(
        observations={
            "state": state.astype(np.float32),
            "image": image,
            "instruction": [f"task number {'abcdefgh'[episode % 8]}"] * (length + 1),
        },
        actions=np.stack([np.full(length, 0.1 * episode), np.linspace(-1, 1, length)], 1).astype(
            np.float32
        ),
        rewards=np.arange(1, length + 1, dtype=np.float64) + 10 * episode,
        terminations=flags if terminated else np.zeros(length, dtype=bool),
        truncations=np.zeros(length, dtype=bool) if terminated else flags,
        infos={"success": np.eye(length + 1, dtype=bool)[-1] & terminated},
        metadata={
            "seed": episode,
            "instruction": f"task {episode}",
            "domain": {"friction": 1.0 + episode},
        },
    )


@pytest.fixture
def episodes() -> list[Episode]:
    """Three episodes of lengths 3, 5 (truncated) and 4."""
    return [
        synthetic_episode(0, 3),
        synthetic_episode(1, 5, terminated=False),
        synthetic_episode(2, 4),
    ]


@pytest.fixture(scope="session")
def collected(tmp_path_factory):
    """A small image dataset collected with the reach expert (2 reference episodes)."""
    root = tmp_path_factory.mktemp("collected")
    result = collect(
        "tabletop/reach-v0",
        "expert",
        episodes=3,
        out=root,
        dataset_id="tests/reach-expert-v0",
        env_kwargs={"obs_mode": "rgb+state", "image_size": IMAGE, "horizon": 20},
        reference_episodes=2,
        progress=False,
    )
    return root, result


@pytest.fixture
def make_episode():
    """:func:`synthetic_episode` (test modules cannot import conftest by name)."""
    return synthetic_episode


@pytest.fixture
def dataset_spaces() -> tuple[spaces.Dict, spaces.Box]:
    return synthetic_spaces()
