"""The replay buffer of offline-to-online fine-tuning: the offline dataset plus a ring of online
transitions.

The offline part is the dataset itself, read at the rows of each transition and never
overwritten. Online transitions go into preallocated numpy arrays used as a ring of ``capacity``
rows: once it is full, each new transition overwrites the oldest online one. A batch mixes the
two parts:

- ``mixing_ratio=r``: exactly ``round(r * batch_size)`` offline transitions (halves rounded up)
  and the rest online, each part drawn uniformly. ``r=0.5`` is Cal-QL's symmetric sampling
  (Nakamoto et al. 2023, arXiv:2303.05479, sec. 6; Ball et al. 2023, RLPD). While no online
  transition exists yet the whole batch is offline.
- ``mixing_ratio=None``: uniform over the union, as the IQL paper fine-tunes (Kostrikov et al.
  2021, sec. 5.3: online transitions are appended to the offline buffer).

Batches have the keys and shapes of :class:`~embodied_rl.agents.data.AgentSampler`'s (one-step
transitions) plus ``online`` ``(B,)`` bool. With ``mc_return=True`` (Cal-QL) they carry the
discounted Monte-Carlo return ``mc_return`` ``(B,)``: the offline part's is computed once, an
online episode's when the episode ends (terminated or truncated: the return stops there, as
for the dataset). Until then the transitions of the running episode carry ``-inf``, i.e. no
lower bound: Cal-QL's ``max(Q, V_mu)`` leaves their Q as plain CQL would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from embodied_rl.agents.data import scale_rewards
from embodied_rl.agents.losses import discounted_returns
from embodied_rl.datasets.offline import OBS_KEY, OfflineDataset
from embodied_rl.utils.io import atomic_path

_SCALARS = ("pointer", "size", "n_added", "episode_start", "n_episodes")


class ReplayBuffer:
    """The offline dataset (fixed) and a numpy ring of ``capacity`` online transitions.

    ``obs_keys``: the observation keys batches carry (numeric arrays only: the flat state the
    policy and critics read). ``gamma``: the discount of ``discount`` and ``mc_return``.
    """

    def __init__(
        self,
        data: OfflineDataset,
        obs_keys: Sequence[str],
        capacity: int,
        gamma: float = 0.99,
        batch_size: int = 256,
        mixing_ratio: float | None = 0.5,
        mc_return: bool = False,
        seed: int = 0,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError(f"capacity={capacity} and batch_size={batch_size} must be >= 1")
        if mixing_ratio is not None and not 0.0 <= mixing_ratio <= 1.0:
            raise ValueError(
                f"mixing_ratio={mixing_ratio} must lie in [0, 1] (the offline fraction of a "
                "batch; 0.5 is Cal-QL's) or be None (uniform over offline and online data)"
            )
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma={gamma} must lie in [0, 1]")
        self._check_keys(data, obs_keys)
        self.obs_keys, self.dict_obs = tuple(obs_keys), data.dict_obs
        self.capacity, self.gamma, self.batch_size = capacity, gamma, batch_size
        self.mixing_ratio = mixing_ratio
        self.rng = np.random.default_rng(seed)
        self.reward_scale, self.reward_bias = float(reward_scale), float(reward_bias)

        # offline part: the dataset's arrays, read at each transition's observation rows
        self.n_offline = data.n_transitions
        self._off_obs = {k: data.observations[k] for k in self.obs_keys}
        self._off_rows = data.obs_index
        self._off = {
            "action": np.ascontiguousarray(data.actions, dtype=np.float32),
            "reward": scale_rewards(data.rewards, reward_scale, reward_bias),
            "discount": np.where(data.terminations, 0.0, gamma).astype(np.float32),
            "terminated": data.terminations.astype(bool),
        }
        if mc_return:
            rewards = self._off["reward"]
            self._off["mc_return"] = discounted_returns(rewards, data.episode_starts, gamma)

        # online part: a ring of preallocated rows
        self._obs = {k: _empty(capacity, self._off_obs[k]) for k in self.obs_keys}
        self._next_obs = {k: _empty(capacity, self._off_obs[k]) for k in self.obs_keys}
        self._on = {key: _empty(capacity, value) for key, value in self._off.items()}
        self.pointer = 0  # the slot the next transition goes to
        self.size = 0  # filled slots
        self.n_added = 0  # online transitions ever added
        self.episode_start = 0  # n_added when the running episode began
        self.n_episodes = 0  # finished online episodes

    @staticmethod
    def _check_keys(data: OfflineDataset, obs_keys: Sequence[str]) -> None:
        if not obs_keys:
            raise ValueError("obs_keys must name at least one observation key")
        for key in obs_keys:
            if key not in data.observations:
                raise KeyError(
                    f"observation {key!r} is not in the dataset (keys: {sorted(data.observations)})"
                )
            if data.observations[key].dtype == object:
                raise ValueError(
                    f"observation {key!r} is text; the replay buffer stores numeric arrays only"
                )

    @property
    def mc_return(self) -> bool:
        return "mc_return" in self._off

    # ------------------------------------------------------------------ adding
    def add(
        self,
        obs: Any,
        action: np.ndarray,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Append one environment transition (raw env observations); an episode that ends here
        (``terminated`` or ``truncated``) gets its Monte-Carlo returns."""
        obs, next_obs = _as_dict(obs), _as_dict(next_obs)
        i = self.pointer
        for key in self.obs_keys:
            self._obs[key][i] = obs[key]
            self._next_obs[key][i] = next_obs[key]
        on = self._on
        on["action"][i] = action
        on["reward"][i] = self.reward_scale * reward + self.reward_bias
        on["discount"][i] = 0.0 if terminated else self.gamma
        on["terminated"][i] = terminated
        if self.mc_return:
            on["mc_return"][i] = -np.inf  # unknown until the episode ends
        self.pointer = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.n_added += 1
        if terminated or truncated:
            self.end_episode()

    def end_episode(self) -> None:
        """Close the running episode: fill its Monte-Carlo returns (Cal-QL) from the rewards
        still in the ring (a return needs only later rewards, which are never overwritten
        before earlier ones)."""
        count = self.n_added - self.episode_start
        if count == 0:
            return
        if self.mc_return:
            kept = min(count, self.capacity)
            slots = (self.pointer - kept + np.arange(kept)) % self.capacity
            rewards = self._on["reward"][slots]
            self._on["mc_return"][slots] = discounted_returns(
                rewards, np.array([0, kept]), self.gamma
            )
        self.episode_start = self.n_added
        self.n_episodes += 1

    # ------------------------------------------------------------------ sampling
    def _split(self) -> tuple[np.ndarray, np.ndarray]:
        """Offline transition indices and online ring slots of the next batch."""
        b = self.batch_size
        if self.mixing_ratio is None:
            index = self.rng.integers(0, self.n_offline + self.size, b)
            online = index >= self.n_offline
            return index[~online], index[online] - self.n_offline
        n_offline = b if self.size == 0 else int(np.floor(self.mixing_ratio * b + 0.5))
        offline = self.rng.integers(0, self.n_offline, n_offline)
        return offline, self.rng.integers(0, max(self.size, 1), b - n_offline)

    def sample(self) -> dict[str, Any]:
        """``obs``, ``action`` ``(B, A)``, ``reward``, ``next_obs``, ``discount``,
        ``terminated``, ``online`` ``(B,)`` (and ``mc_return`` ``(B,)``): offline rows first."""
        offline, online = self._split()
        rows = self._off_rows.take(offline)
        obs = {
            k: np.concatenate([self._off_obs[k].take(rows, axis=0), self._obs[k].take(online, 0)])
            for k in self.obs_keys
        }
        next_obs = {
            k: np.concatenate(
                [self._off_obs[k].take(rows + 1, axis=0), self._next_obs[k].take(online, 0)]
            )
            for k in self.obs_keys
        }
        batch: dict[str, Any] = {"obs": self._pack(obs), "next_obs": self._pack(next_obs)}
        for key, values in self._off.items():
            part = np.concatenate([values.take(offline, axis=0), self._on[key].take(online, 0)])
            batch[key] = torch.from_numpy(part)
        flags = np.zeros(len(offline) + len(online), dtype=bool)
        flags[len(offline) :] = True
        batch["online"] = torch.from_numpy(flags)
        return batch

    def _pack(self, arrays: dict[str, np.ndarray]) -> Any:
        out = {k: torch.from_numpy(v) for k, v in arrays.items()}
        return out if self.dict_obs else out[OBS_KEY]

    # ------------------------------------------------------------------ persistence
    def online_arrays(self) -> dict[str, np.ndarray]:
        """The filled online slots (ring order kept) and the counters, as named arrays."""
        n = self.size
        arrays = {f"obs.{k}": v[:n] for k, v in self._obs.items()}
        arrays.update({f"next_obs.{k}": v[:n] for k, v in self._next_obs.items()})
        arrays.update({key: value[:n] for key, value in self._on.items()})
        arrays.update({name: np.array([getattr(self, name)], np.int64) for name in _SCALARS})
        arrays["capacity"] = np.array([self.capacity], np.int64)
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the online part to a safetensors file atomically (the offline part is the
        dataset, loaded again on resume)."""
        with atomic_path(path) as tmp:
            save_file(self.online_arrays(), str(tmp))
        return Path(path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore the online part written by :meth:`save` into this (empty) buffer."""
        arrays = load_file(str(path))
        expected = set(self.online_arrays())
        if set(arrays) != expected:
            raise ValueError(
                f"{path} does not match this buffer: missing {sorted(expected - set(arrays))}, "
                f"unexpected {sorted(set(arrays) - expected)} (different obs keys or mc_return?)"
            )
        capacity = int(arrays["capacity"][0])
        if capacity != self.capacity:
            raise ValueError(
                f"{path} was saved with capacity={capacity}; this buffer has {self.capacity}"
            )
        n = int(arrays["size"][0])
        targets = {f"obs.{k}": v for k, v in self._obs.items()}
        targets.update({f"next_obs.{k}": v for k, v in self._next_obs.items()})
        targets.update(self._on)
        for key, target in targets.items():
            if arrays[key].shape != (n, *target.shape[1:]):
                raise ValueError(
                    f"{path}: {key} has shape {arrays[key].shape}; expected {(n, *target.shape[1:])}"
                )
            target[:n] = arrays[key]
        for name in _SCALARS:
            setattr(self, name, int(arrays[name][0]))


def _empty(capacity: int, like: np.ndarray) -> np.ndarray:
    return np.zeros((capacity, *like.shape[1:]), dtype=like.dtype)


def _as_dict(obs: Any) -> dict[str, Any]:
    return obs if isinstance(obs, dict) else {OBS_KEY: obs}
