"""Import and export D4RL HDF5 files with h5py (``import d4rl`` needs mujoco-py; we don't).

A D4RL file is flat over transitions: ``observations`` ``(N, ...)``, ``actions``,
``rewards``, ``terminals`` and ``timeouts`` ``(N,)``, optionally ``next_observations``
and ``infos/<key>`` ``(N, ...)``. Episodes end where ``terminals | timeouts``.

- Export writes one observation key (``state`` by default for Dict datasets), with
  ``next_observations``, and the info rows that follow each step.
- Import rebuilds each episode's ``T + 1`` observations from ``next_observations``; a
  file without them loses the last transition of every episode (its observation becomes
  the final one), and rows after the last episode end form a truncated episode. The reset
  info row of an imported episode, which D4RL does not store, is zero.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from embodied_rl.datasets.episode import DatasetSchemaError
from embodied_rl.datasets.offline import OBS_KEY, OfflineDataset

logger = logging.getLogger(__name__)

D4RL_KEYS: tuple[str, ...] = ("observations", "actions", "rewards", "terminals", "timeouts")


def _export_key(data: OfflineDataset, obs_key: str | None) -> str:
    numeric = [k for k, v in data.observations.items() if v.dtype != object]
    if obs_key is not None:
        if obs_key not in numeric:
            raise ValueError(
                f"obs_key={obs_key!r} is not a numeric observation key; choose from {numeric}"
            )
        return obs_key
    if not data.dict_obs:
        return OBS_KEY
    if "state" in numeric:
        return "state"
    if len(numeric) == 1:
        return numeric[0]
    raise ValueError(f"the dataset has observation keys {numeric}; pass obs_key= to pick one")


def export_d4rl(
    data: OfflineDataset,
    path: str | os.PathLike,
    obs_key: str | None = None,
    rewards_dtype: Any = np.float32,
) -> Path:
    """Write ``data`` as a D4RL HDF5 file (rewards as float32 by D4RL convention)."""
    key = _export_key(data, obs_key)
    obs = data.observations[key]
    step_rows = data.obs_index + 1  # the row each step leads to (info after the step)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    compress = {"compression": "gzip"} if obs.dtype == np.uint8 and obs.ndim >= 3 else {}
    with h5py.File(tmp, "w") as f:
        f.create_dataset("observations", data=obs.take(data.obs_index, axis=0), **compress)
        f.create_dataset("next_observations", data=obs.take(step_rows, axis=0), **compress)
        f.create_dataset("actions", data=data.actions)
        f.create_dataset("rewards", data=data.rewards.astype(rewards_dtype))
        f.create_dataset("terminals", data=data.terminations)
        f.create_dataset("timeouts", data=data.truncations)
        for name, values in data.infos.items():
            f.create_dataset(f"infos/{name}", data=values.take(step_rows, axis=0))
        f.attrs["observation_key"] = key
        f.attrs["source_dataset_id"] = str(data.metadata.get("dataset_id", ""))
        for name in ("ref_min_score", "ref_max_score"):
            if name in data.metadata:
                f.attrs[name] = float(data.metadata[name])
    os.replace(tmp, path)
    return path


def _box(array: np.ndarray) -> spaces.Box:
    if array.dtype == np.uint8:
        return spaces.Box(0, 255, array.shape[1:], np.uint8)
    return spaces.Box(-np.inf, np.inf, array.shape[1:], array.dtype)


def _episode_bounds(terminals: np.ndarray, timeouts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of episodes; a trailing unterminated run becomes a truncated one."""
    done = terminals | timeouts
    ends = np.flatnonzero(done) + 1
    if len(ends) == 0 or ends[-1] != len(done):
        logger.warning(
            "rows %d.. have no terminal or timeout: kept as a truncated episode",
            ends[-1] if len(ends) else 0,
        )
        ends = np.append(ends, len(done))
    starts = np.concatenate([[0], ends[:-1]])
    return starts, ends


def _check_next_observations(obs, next_obs, starts, ends, path) -> None:
    """Warn where ``next_observations[i] != observations[i + 1]`` inside an episode."""
    inside = np.ones(len(obs), dtype=bool)
    inside[ends - 1] = False
    rows = np.flatnonzero(inside[:-1])
    bad = np.flatnonzero(np.any((next_obs[rows] != obs[rows + 1]).reshape(len(rows), -1), axis=1))
    if len(bad):
        logger.warning(
            "%s: next_observations differ from the following observations at %d rows inside "
            "episodes (first: %d); the observations are kept",
            path,
            len(bad),
            rows[bad[0]],
        )


def import_d4rl(path: str | os.PathLike) -> OfflineDataset:
    """Read a D4RL HDF5 file into an :class:`OfflineDataset` (Box observations)."""
    with h5py.File(path, "r") as f:
        missing = [k for k in D4RL_KEYS if k not in f]
        if missing:
            raise DatasetSchemaError(f"{path} is missing D4RL keys {missing}; it has {sorted(f)}")
        arrays = {k: f[k][()] for k in (*D4RL_KEYS, "next_observations") if k in f}
        infos = (
            {k: v[()] for k, v in f["infos"].items() if isinstance(v, h5py.Dataset)}
            if "infos" in f
            else {}
        )
        attrs = {k: f.attrs[k] for k in ("ref_min_score", "ref_max_score") if k in f.attrs}
    n = len(arrays["rewards"])
    for key, value in (*arrays.items(), *((f"infos/{k}", v) for k, v in infos.items())):
        if len(value) != n:
            raise DatasetSchemaError(f"{path}: {key} has {len(value)} rows; rewards has {n}")
    terminals = arrays["terminals"].astype(bool)
    timeouts = arrays["timeouts"].astype(bool)
    starts, ends = _episode_bounds(terminals, timeouts)
    obs, next_obs = arrays["observations"], arrays.get("next_observations")
    if next_obs is None:  # the last row of each episode only provides the final observation
        logger.warning("%s has no next_observations: dropping the last step of each episode", path)
        keep = ends - starts >= 2
        starts, ends = starts[keep], ends[keep] - 1
        next_obs = obs.take(np.minimum(np.arange(n) + 1, n - 1), axis=0)
        timeouts = timeouts.copy()
        timeouts[ends - 1] = ~terminals[ends - 1]
    else:
        _check_next_observations(obs, next_obs, starts, ends, path)
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])
    lengths = ends - starts
    episode = np.repeat(np.arange(len(starts)), lengths)
    out_rows = np.arange(len(rows)) + episode  # observation row of each kept transition
    final_rows = np.cumsum(lengths) + np.arange(len(starts))  # final observation rows
    observations = np.empty((len(rows) + len(starts), *obs.shape[1:]), dtype=obs.dtype)
    observations[out_rows] = obs[rows]
    observations[final_rows] = next_obs[ends - 1]
    info_arrays = {}
    for key, values in infos.items():
        full = np.zeros((len(observations), *values.shape[1:]), dtype=values.dtype)
        full[out_rows + 1] = values[rows]
        info_arrays[key] = full
    return OfflineDataset(
        observations={OBS_KEY: observations},
        actions=arrays["actions"][rows],
        rewards=arrays["rewards"][rows].astype(np.float64),
        terminations=terminals[rows],
        truncations=timeouts[rows],
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]),
        observation_space=_box(obs),
        action_space=_box(arrays["actions"]),
        infos=info_arrays,
        metadata={
            **{k: float(v) for k, v in attrs.items()},
            "dataset_id": f"d4rl:{Path(path).name}",
        },
    )
