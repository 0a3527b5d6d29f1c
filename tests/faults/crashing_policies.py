"""Policies that make the tabletop env's ``step`` raise (it rejects NaN actions), for worker
processes. Kept apart from the test modules so a spawned worker imports only numpy here."""

from __future__ import annotations

import numpy as np

NAN_ACTION = np.full(4, np.nan, dtype=np.float32)


class NaNFromEpisode:
    """Policy factory: zero actions, NaN ones in episodes with index >= ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self, env, seed: int):
        index = env.unwrapped.np_random_seed  # collect(seed=0): the reset seed is the index
        return Constant(NAN_ACTION if index >= self.at else np.zeros(4, np.float32))


class Constant:
    def __init__(self, action: np.ndarray) -> None:
        self.action = action

    def act(self, obs) -> np.ndarray:
        return self.action


def nan_policy(obs) -> np.ndarray:
    return NAN_ACTION
