"""Random-access batch samplers over one or more loaded datasets.

All three samplers precompute their index arrays once, then draw a batch with one
``Generator.integers`` call and numpy fancy indexing, and hand the arrays to torch with
``torch.from_numpy`` (no copy). Images stay uint8; text observations come back as lists.

- :class:`TransitionSampler`: ``(s, a, R^(n), s', discount)`` with n-step returns that
  stop at episode ends and bootstrap through truncations, not terminations.
- :class:`HistorySampler`: the last ``k`` observations and actions before each sampled
  step, padded at episode starts (``mask`` False) for transformer policies.
- :class:`SegmentSampler`: length-``L`` windows inside one episode (preference learning).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from embodied_rl.datasets.offline import OBS_KEY, OfflineDataset, concatenate

Batch = dict[str, Any]


@dataclass(frozen=True)
class SamplerConfig:
    """Options shared by the samplers."""

    batch_size: int = 256
    seed: int = 0
    obs_keys: tuple[str, ...] | None = None  # observation keys to return; None: all

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")


class _Sampler(ABC):
    """Shared state: the flat dataset, the key selection and the random generator."""

    def __init__(self, data: OfflineDataset | Sequence[OfflineDataset], config: SamplerConfig):
        self.data = concatenate(data) if isinstance(data, Sequence) else data
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        keys = config.obs_keys if config.obs_keys is not None else tuple(self.data.observations)
        unknown = sorted(set(keys) - set(self.data.observations))
        if unknown:
            raise ValueError(
                f"obs_keys {unknown} are not in the dataset; it has {sorted(self.data.observations)}"
            )
        self.obs = {k: self.data.observations[k] for k in keys}
        self.actions = np.ascontiguousarray(self.data.actions)
        self.rewards = self.data.rewards.astype(np.float32)
        self._block = np.empty(0, dtype=np.int64)
        self.dict_obs = self.data.dict_obs

    def _indices(self, high: int) -> np.ndarray:
        """``batch_size`` uniform integers in ``[0, high)``, drawn 64 batches at a time (the
        generator's per-call overhead would otherwise cost as much as the gathering)."""
        batch = self.config.batch_size
        if len(self._block) < batch:
            self._block = self.rng.integers(0, high, 64 * batch)
        out, self._block = self._block[:batch], self._block[batch:]
        return out

    def _gather_obs(self, rows: np.ndarray) -> Any:
        """Observations at ``rows`` (any shape) as tensors (text keys as nested lists)."""
        return self._pack({k: _take(v, rows) for k, v in self.obs.items()})

    def _pack(self, arrays: dict[str, np.ndarray]) -> Any:
        out = {k: _to_torch(v) for k, v in arrays.items()}
        return out if self.dict_obs else out[OBS_KEY]

    @abstractmethod
    def sample(self) -> Batch:
        """One batch of tensors (see the subclass for its keys and shapes)."""

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.sample()


def _take(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    flat = array.take(rows.ravel(), axis=0)
    return flat.reshape(*rows.shape, *array.shape[1:])


def _to_torch(array: np.ndarray) -> Any:
    return array.tolist() if array.dtype == object else torch.from_numpy(array)


class TransitionSampler(_Sampler):
    """Uniform transitions with ``n_step`` returns.

    ``reward`` is ``sum_{k<m} gamma^k r_{t+k}`` with ``m = min(n_step, steps left in the
    episode)``; ``next_obs`` is the observation ``m`` steps later and ``discount`` is
    ``gamma^m``, or 0 when the episode terminated within the window (a truncation keeps
    ``gamma^m`` so the critic bootstraps from the final observation).
    """

    def __init__(
        self,
        data: OfflineDataset | Sequence[OfflineDataset],
        n_step: int = 1,
        gamma: float = 0.99,
        config: SamplerConfig | None = None,
    ) -> None:
        super().__init__(data, config or SamplerConfig())
        if n_step < 1:
            raise ValueError(f"n_step={n_step} must be >= 1")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma={gamma} must lie in [0, 1]")
        self.n_step, self.gamma = n_step, gamma
        d = self.data
        n = d.n_transitions
        steps_left = d.episode_starts[d.episode_index + 1] - np.arange(n)  # >= 1
        m = np.minimum(n_step, steps_left)
        returns = np.zeros(n, dtype=np.float64)
        for k in range(n_step):
            inside = k < m
            idx = np.minimum(np.arange(n) + k, n - 1)
            returns += np.where(inside, gamma**k * d.rewards[idx], 0.0)
        terminated = d.terminations[np.arange(n) + m - 1]
        self.n_step_reward = returns.astype(np.float32)
        self.discount = np.where(terminated, 0.0, gamma ** m.astype(np.float64)).astype(np.float32)
        self.terminated = terminated
        self.obs_row = d.obs_index
        self.next_obs_row = d.obs_index + m
        self._row_pairs = np.stack([self.obs_row, self.next_obs_row])  # (2, N): one take

    def sample(self) -> Batch:
        """``obs``, ``action`` ``(B, A)``, ``reward`` ``(B,)``, ``next_obs``, ``discount``
        ``(B,)``, ``terminated`` ``(B,)`` bool."""
        i = self._indices(self.data.n_transitions)
        rows = self._row_pairs.take(i, axis=1).ravel()  # (2B,) obs rows then next_obs rows
        obs = {k: _take(v, rows) for k, v in self.obs.items()}  # obs and next_obs at once
        b = len(i)
        return {
            "obs": self._pack({k: v[:b] for k, v in obs.items()}),
            "action": torch.from_numpy(self.actions.take(i, axis=0)),
            "reward": torch.from_numpy(self.n_step_reward.take(i)),
            "next_obs": self._pack({k: v[b:] for k, v in obs.items()}),
            "discount": torch.from_numpy(self.discount.take(i)),
            "terminated": torch.from_numpy(self.terminated.take(i)),
        }


class HistorySampler(_Sampler):
    """Windows of the ``history`` latest steps ending at a uniformly sampled step.

    Position ``j`` of a window ending at step ``t`` holds step ``t - (history - 1) + j``;
    positions before the episode's first step repeat that first step and have
    ``mask = False``. ``timestep`` is the step within the episode (0 for padding).
    """

    def __init__(
        self,
        data: OfflineDataset | Sequence[OfflineDataset],
        history: int = 6,
        config: SamplerConfig | None = None,
    ) -> None:
        super().__init__(data, config or SamplerConfig(batch_size=32))
        if history < 1:
            raise ValueError(f"history={history} must be >= 1")
        self.history = history
        self.offsets = np.arange(-(history - 1), 1)  # (k,)
        d = self.data
        self.step = d.step_in_episode
        self.obs_row = d.obs_index
        rtg = np.cumsum(self.rewards[::-1], dtype=np.float64)[::-1]  # suffix sums over all data
        ends = d.episode_starts[d.episode_index + 1]
        self.return_to_go = (rtg - np.append(rtg, 0.0)[ends]).astype(np.float32)

    def sample(self) -> Batch:
        """``obs`` ``(B, k, ...)``, ``action`` ``(B, k, A)``, ``reward``/``return_to_go``
        ``(B, k)``, ``timestep`` ``(B, k)`` int64, ``mask`` ``(B, k)`` bool."""
        i = self._indices(self.data.n_transitions)
        pos = self.step.take(i)[:, None] + self.offsets  # (B, k) step within the episode
        mask = pos >= 0
        shift = np.maximum(pos, 0) - pos[:, -1:]  # (B, k) <= 0: clamped to the first step
        transition = i[:, None] + shift  # (B, k)
        return {
            "obs": self._gather_obs(self.obs_row.take(i)[:, None] + shift),
            "action": torch.from_numpy(_take(self.actions, transition)),
            "reward": torch.from_numpy(self.rewards.take(transition)),
            "return_to_go": torch.from_numpy(self.return_to_go.take(transition)),
            "timestep": torch.from_numpy(np.maximum(pos, 0)),
            "mask": torch.from_numpy(mask),
        }


class SegmentSampler(_Sampler):
    """Windows of ``length`` consecutive steps that never cross an episode end."""

    def __init__(
        self,
        data: OfflineDataset | Sequence[OfflineDataset],
        length: int = 64,
        config: SamplerConfig | None = None,
    ) -> None:
        super().__init__(data, config or SamplerConfig(batch_size=32))
        if length < 1:
            raise ValueError(f"length={length} must be >= 1")
        d = self.data
        ends = d.episode_starts[d.episode_index + 1]
        self.starts = np.flatnonzero(np.arange(d.n_transitions) + length <= ends)
        if len(self.starts) == 0:
            raise ValueError(
                f"length={length} exceeds every episode (longest: "
                f"{int(d.episode_lengths.max())} steps); lower the segment length"
            )
        self.length = length
        self.window = np.arange(length)

    def sample(self) -> Batch:
        """``obs`` ``(B, L, ...)``, ``action`` ``(B, L, A)``, ``reward`` ``(B, L)``,
        ``segment_return`` ``(B,)``, ``episode`` ``(B,)`` and ``start`` ``(B,)`` step."""
        start = self.starts.take(self._indices(len(self.starts)))
        transition = start[:, None] + self.window  # (B, L)
        rewards = self.rewards.take(transition)
        return {
            "obs": self._gather_obs(self.data.obs_index.take(start)[:, None] + self.window),
            "action": torch.from_numpy(_take(self.actions, transition)),
            "reward": torch.from_numpy(rewards),
            "segment_return": torch.from_numpy(rewards.sum(axis=1)),
            "episode": torch.from_numpy(self.data.episode_index.take(start)),
            "start": torch.from_numpy(self.data.step_in_episode.take(start)),
        }
