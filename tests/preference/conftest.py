"""A toy dataset where preferences carry information BC cannot see.

States are i.i.d. Gaussian; half the episodes act with the "good" action
``a*(s) = 0.8 tanh(s[:2])`` plus small noise, the other half uniformly at random. The reward
``-|a - a*(s)|^2`` ranks segments of good episodes above bad ones, so a preference learner
should recover ``a*`` while behaviour cloning on everything regresses toward the mixture.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from embodied_rl.datasets import Episode, OfflineDataset

OBS_DIM, ACTION_DIM = 4, 2


def good_action(state: np.ndarray) -> np.ndarray:
    return 0.8 * np.tanh(state[..., :ACTION_DIM])


def toy_dataset(n_episodes: int = 20, length: int = 40, seed: int = 0) -> OfflineDataset:
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(n_episodes):
        state = rng.normal(size=(length + 1, OBS_DIM)).astype(np.float32)
        target = good_action(state[:-1])
        if e % 2 == 0:
            actions = target + rng.normal(0, 0.05, size=target.shape)
        else:
            actions = rng.uniform(-1, 1, size=target.shape)
        actions = np.clip(actions, -1, 1).astype(np.float32)
        flags = np.zeros(length, dtype=bool)
        flags[-1] = True
        episodes.append(
            Episode(
                observations={"state": state},
                actions=actions,
                rewards=-np.square(actions - target).sum(-1).astype(np.float64),
                terminations=np.zeros(length, dtype=bool),
                truncations=flags,
                metadata={"instruction": "act well", "good": e % 2 == 0},
            )
        )
    obs_space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)})
    act_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
    return OfflineDataset.from_episodes(episodes, obs_space, act_space)


@pytest.fixture(scope="session")
def toy_data() -> OfflineDataset:
    return toy_dataset()


@pytest.fixture
def make_toy_dataset():
    """:func:`toy_dataset` (test modules cannot import conftest by name)."""
    return toy_dataset


@pytest.fixture
def good_action_fn():
    """:func:`good_action`, the action the good episodes take."""
    return good_action
