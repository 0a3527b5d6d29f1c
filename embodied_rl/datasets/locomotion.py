"""D4RL-style locomotion datasets (Hopper, Walker2d, HalfCheetah): names, recording, loading.

D4RL's MuJoCo datasets no longer install (mujoco-py) and cannot be downloaded on an offline
machine, so the toolkit regenerates their kind of data with gymnasium's ``*-v5`` bodies and
its own PPO (:func:`embodied_rl.runners.locomotion.build_locomotion`, ``erl datasets
locomotion``). The kinds follow D4RL:

- ``random``: uniform random actions;
- ``medium``: a behaviour policy at roughly a third of the expert's return, sampling actions;
- ``medium-replay``: every episode the behaviour policy's training ran until it first
  reached the medium level (PPO's rollouts, recorded in the environments);
- ``expert``: the fully trained behaviour policy, sampling actions;
- ``medium-expert``: ``medium`` and ``expert`` together;
- ``full-replay``: every episode of the behaviour policy's training.

Datasets are Minari datasets with ids ``locomotion/<body>/<kind>-v0`` (beside Minari's own
``mujoco/<body>/<kind>-v0``), observations a plain ``Box`` as in Minari's, and D4RL's
reference returns (``ref_min_score``: the random policy's mean return, ``ref_max_score``: the
expert's) for normalised scores. :func:`load_locomotion` reads ours, or Minari's published
datasets when a user has them under the same root.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from embodied_rl.datasets.episode import Episode
from embodied_rl.datasets.minari_format import dataset_dir, default_root
from embodied_rl.datasets.minari_reader import load_dataset
from embodied_rl.datasets.offline import OfflineDataset

BODIES = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert", "full-replay")
NAMESPACE = "locomotion"


def check_body(body: str) -> str:
    """``body`` if it is one of :data:`BODIES`, else a ``ValueError`` listing them."""
    if body not in BODIES:
        raise ValueError(f"body={body!r} is not a locomotion body; choose one of {list(BODIES)}")
    return body


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a dataset kind; choose one of {list(KINDS)}")
    return kind


def locomotion_id(body: str, kind: str, version: int = 0) -> str:
    """The toolkit's dataset id, e.g. ``locomotion/hopper/medium-replay-v0``."""
    return f"{NAMESPACE}/{check_body(body)}/{check_kind(kind)}-v{version}"


def minari_id(body: str, kind: str, version: int = 0) -> str:
    """Minari's published id of the same data, e.g. ``mujoco/hopper/medium-v0``."""
    return f"mujoco/{check_body(body)}/{check_kind(kind)}-v{version}"


def load_locomotion(
    body: str, kind: str, root: str | os.PathLike | None = None, version: int = 0, **kwargs: Any
) -> OfflineDataset:
    """Load ``locomotion/<body>/<kind>-v<version>`` from ``root`` (default: Minari's root), or
    Minari's published ``mujoco/<body>/<kind>-v<version>`` when only that one is there.
    ``kwargs`` go to :func:`~embodied_rl.datasets.load_dataset`."""
    tried = []
    for ident in (locomotion_id(body, kind, version), minari_id(body, kind, version)):
        path = dataset_dir(root, ident)
        if (path / "data" / "metadata.json").is_file():
            return load_dataset(path, **kwargs)
        tried.append(str(path))
    where = f" --root {root}" if root is not None else ""
    raise FileNotFoundError(
        f"no {body} {kind} dataset: none of {tried} exists (root "
        f"{root if root is not None else default_root()}); build it with `erl datasets "
        f"locomotion --bodies {body}{where}`"
    )


class EpisodeRecorder(gym.Wrapper):
    """Records every finished episode of the wrapped environment as an :class:`Episode`.

    ``sink`` receives ``(steps, episode)`` when an episode ends, ``steps`` being this
    environment's step count at its end (so a sequence of recorders can be cut at a point of
    training). Observations and rewards are the environment's own (wrap the raw environment,
    inside any normalisation). Actions are clipped to the action space before the environment
    sees them (gymnasium's ``ClipAction``; PPO and SB3 clip too), so a recorded reward's
    control cost is that of the recorded action. An episode still running when recording
    stops is not kept."""

    def __init__(self, env: gym.Env, sink: Callable[[int, Episode], None]) -> None:
        super().__init__(env)
        self.sink, self.steps = sink, 0
        self._obs: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._seed: int | None = None
        self._obs_dtype = env.observation_space.dtype
        self._act_dtype = env.action_space.dtype
        self._low, self._high = env.action_space.low, env.action_space.high

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs, self._actions, self._rewards = [np.array(obs)], [], []
        self._seed = seed
        return obs, info

    def step(self, action):
        action = np.clip(np.asarray(action), self._low, self._high)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self._obs.append(np.array(obs))
        self._actions.append(action)
        self._rewards.append(float(reward))
        if terminated or truncated:
            self._emit(bool(terminated))
            self._obs = [np.array(obs)]  # the next reset() replaces it
        return obs, reward, terminated, truncated, info

    @property
    def running_steps(self) -> int:
        """Steps of the episode in progress."""
        return len(self._rewards)

    def cut(self) -> None:
        """End the episode in progress here, as truncated (D4RL's timeouts; ``cut`` in its
        metadata); nothing if it has no step yet."""
        if self._rewards:
            self._emit(terminated=False, cut=True)

    def _emit(self, terminated: bool, cut: bool = False) -> None:
        n = len(self._rewards)
        episode = Episode(
            observations=np.stack(self._obs).astype(self._obs_dtype, copy=False),
            actions=np.stack(self._actions).astype(self._act_dtype, copy=False),
            rewards=np.asarray(self._rewards, dtype=np.float64),
            terminations=np.array([False] * (n - 1) + [terminated]),
            truncations=np.array([False] * (n - 1) + [not terminated]),
            metadata={
                **({"seed": self._seed} if self._seed is not None else {}),
                **({"cut": True} if cut else {}),
            },
        )
        self.sink(self.steps, episode)
        self._obs, self._actions, self._rewards = [], [], []


def run_episodes(
    env: gym.Env,
    act: Callable[[np.ndarray], np.ndarray],
    transitions: int,
    seed: int,
) -> list[Episode]:
    """Episodes of ``act`` on ``env`` (reset seeds ``seed``, ``seed + 1``, ...) until they hold
    ``transitions`` steps; the last one is cut there (marked truncated, as D4RL's timeouts,
    and ``cut`` in its metadata)."""
    episodes: list[Episode] = []
    recorder = EpisodeRecorder(env, lambda _, episode: episodes.append(episode))
    total = 0
    while total < transitions:
        obs, _ = recorder.reset(seed=seed + len(episodes))
        done = False
        while not done and total + recorder.running_steps < transitions:
            obs, _, terminated, truncated, _ = recorder.step(act(obs))
            done = terminated or truncated
        recorder.cut()  # the budget ended inside this episode
        total = sum(len(e) for e in episodes)
    return episodes
