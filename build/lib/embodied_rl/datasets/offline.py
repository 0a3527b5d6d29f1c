"""A whole dataset in memory as flat, contiguous numpy arrays.

Episodes are laid end to end. Transition arrays (``actions``, ``rewards``, ...) hold
``N = sum(T_e)`` rows; observation and info arrays hold ``N + E`` rows because every
episode keeps its final observation. Transition ``i`` of episode ``e`` observes row
``i + e`` and leads to row ``i + e + 1`` (:attr:`OfflineDataset.obs_index`). Samplers
gather from these arrays with fancy indexing, never with per-item Python loops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from gymnasium import spaces

from embodied_rl.datasets.episode import DatasetSchemaError, Episode

OBS_KEY = "observation"  # key of the observation array when the space is not a Dict


@dataclass
class OfflineDataset:
    """Flat arrays of a dataset (see the module docstring for the row layout)."""

    observations: dict[str, np.ndarray]  # key -> (N + E, ...); text keys: object arrays of str
    actions: np.ndarray  # (N, *action_shape)
    rewards: np.ndarray  # (N,)
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    episode_starts: np.ndarray  # (E + 1,) int64 offsets into the transition arrays
    observation_space: spaces.Space
    action_space: spaces.Space
    infos: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (N + E, ...)
    episode_metadata: list[dict[str, Any]] = field(default_factory=list)  # one per episode
    metadata: dict[str, Any] = field(default_factory=dict)  # the dataset's metadata.json

    def __post_init__(self) -> None:
        starts = np.asarray(self.episode_starts, dtype=np.int64)
        if starts.ndim != 1 or len(starts) < 2 or starts[0] != 0 or np.any(np.diff(starts) < 1):
            raise DatasetSchemaError(
                f"episode_starts={starts[:8]}... must start at 0 and increase strictly "
                "(every episode needs at least one step)"
            )
        self.episode_starts = starts
        n, e = int(starts[-1]), len(starts) - 1
        for name in ("actions", "rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != n:
                raise DatasetSchemaError(
                    f"{name} has {len(getattr(self, name))} rows; episode_starts says {n}"
                )
        for group, arrays in (("observations", self.observations), ("infos", self.infos)):
            for key, array in arrays.items():
                if len(array) != n + e:
                    raise DatasetSchemaError(
                        f"{group}[{key!r}] has {len(array)} rows; expected N + E = {n + e}"
                    )
        if not self.episode_metadata:
            self.episode_metadata = [{} for _ in range(e)]
        if len(self.episode_metadata) != e:
            raise DatasetSchemaError(
                f"episode_metadata has {len(self.episode_metadata)} entries for {e} episodes"
            )

    # ------------------------------------------------------------------ sizes and indices
    @property
    def dict_obs(self) -> bool:
        """Whether observations come from a Dict space (else one array under ``OBS_KEY``)."""
        return isinstance(self.observation_space, spaces.Dict)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def n_transitions(self) -> int:
        return int(self.episode_starts[-1])

    @property
    def episode_lengths(self) -> np.ndarray:
        """``(E,)`` steps per episode."""
        return np.diff(self.episode_starts)

    @cached_property
    def episode_index(self) -> np.ndarray:
        """``(N,)`` episode of each transition."""
        return np.repeat(np.arange(self.n_episodes), self.episode_lengths)

    @cached_property
    def obs_index(self) -> np.ndarray:
        """``(N,)`` observation row of each transition (its next observation is ``+ 1``)."""
        return np.arange(self.n_transitions) + self.episode_index

    @cached_property
    def step_in_episode(self) -> np.ndarray:
        """``(N,)`` position of each transition within its episode (0 at reset)."""
        return np.arange(self.n_transitions) - self.episode_starts[self.episode_index]

    def episode_returns(self) -> np.ndarray:
        """``(E,)`` undiscounted return of each episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts[:-1])

    # ------------------------------------------------------------------ episodes
    def episode(self, index: int) -> Episode:
        """Episode ``index`` as views into the flat arrays."""
        if not 0 <= index < self.n_episodes:
            raise IndexError(f"episode {index} out of range; the dataset has {self.n_episodes}")
        a, b = int(self.episode_starts[index]), int(self.episode_starts[index + 1])
        rows = slice(a + index, b + index + 1)
        obs = {k: _rows(v, rows) for k, v in self.observations.items()}
        return Episode(
            observations=obs if self.dict_obs else obs[OBS_KEY],
            actions=self.actions[a:b],
            rewards=self.rewards[a:b],
            terminations=self.terminations[a:b],
            truncations=self.truncations[a:b],
            infos={k: v[rows] for k, v in self.infos.items()},
            metadata=dict(self.episode_metadata[index]),
        )

    def episodes(self) -> Iterator[Episode]:
        for index in range(self.n_episodes):
            yield self.episode(index)

    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[Episode],
        observation_space: spaces.Space,
        action_space: spaces.Space,
        metadata: dict[str, Any] | None = None,
    ) -> OfflineDataset:
        """Concatenate episodes into flat arrays."""
        if not episodes:
            raise ValueError("from_episodes needs at least one episode")
        obs_of = [
            e.observations if isinstance(e.observations, dict) else {OBS_KEY: e.observations}
            for e in episodes
        ]
        info_keys = set.intersection(*(set(e.infos) for e in episodes))
        return cls(
            observations={k: _concat([o[k] for o in obs_of]) for k in obs_of[0]},
            actions=np.concatenate([e.actions for e in episodes]),
            rewards=np.concatenate([e.rewards for e in episodes]),
            terminations=np.concatenate([e.terminations for e in episodes]).astype(bool),
            truncations=np.concatenate([e.truncations for e in episodes]).astype(bool),
            episode_starts=np.concatenate([[0], np.cumsum([len(e) for e in episodes])]),
            observation_space=observation_space,
            action_space=action_space,
            infos={k: np.concatenate([e.infos[k] for e in episodes]) for k in sorted(info_keys)},
            episode_metadata=[dict(e.metadata) for e in episodes],
            metadata=dict(metadata or {}),
        )


def _rows(array: np.ndarray, rows: slice) -> Any:
    """Rows of an observation array; text (object) arrays come back as lists of str."""
    part = array[rows]
    return part.tolist() if part.dtype == object else part


def _concat(parts: list[Any]) -> np.ndarray:
    if isinstance(parts[0], list | tuple):  # text observations
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        out[:] = [s for p in parts for s in p]
        return out
    return np.concatenate(parts)


def concatenate(datasets: Sequence[OfflineDataset]) -> OfflineDataset:
    """One dataset from several with the same spaces and keys (episode metadata records
    the ``source`` dataset index and id)."""
    if not datasets:
        raise ValueError("concatenate needs at least one dataset")
    if len(datasets) == 1:
        return datasets[0]
    first = datasets[0]
    for i, d in enumerate(datasets[1:], start=1):
        if d.observation_space != first.observation_space or d.action_space != first.action_space:
            raise ValueError(
                f"dataset {i} ({d.metadata.get('dataset_id', '?')}) has spaces "
                f"{d.observation_space} / {d.action_space}; dataset 0 has "
                f"{first.observation_space} / {first.action_space}"
            )
        if set(d.observations) != set(first.observations):
            raise ValueError(
                f"dataset {i} has observation keys {sorted(d.observations)}; dataset 0 has "
                f"{sorted(first.observations)} (load both with the same obs_keys)"
            )
    info_keys = set.intersection(*(set(d.infos) for d in datasets))
    lengths = np.concatenate([d.episode_lengths for d in datasets])
    episode_metadata = [
        {**m, "source": i, "source_id": d.metadata.get("dataset_id", "")}
        for i, d in enumerate(datasets)
        for m in d.episode_metadata
    ]
    return OfflineDataset(
        observations={
            k: np.concatenate([d.observations[k] for d in datasets]) for k in first.observations
        },
        actions=np.concatenate([d.actions for d in datasets]),
        rewards=np.concatenate([d.rewards for d in datasets]),
        terminations=np.concatenate([d.terminations for d in datasets]),
        truncations=np.concatenate([d.truncations for d in datasets]),
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]),
        observation_space=first.observation_space,
        action_space=first.action_space,
        infos={k: np.concatenate([d.infos[k] for d in datasets]) for k in sorted(info_keys)},
        episode_metadata=episode_metadata,
        metadata={"combined_datasets": [d.metadata.get("dataset_id", "") for d in datasets]},
    )
