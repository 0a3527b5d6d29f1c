"""Runs collection episodes by index, in the main process or in a worker process.

An episode depends only on its index: the environment is reset with ``seed + index``
and the policy's noise comes from a generator seeded with ``(seed, index, role)``, so a
dataset is bit-identical whatever the number of workers. Data episodes are written one
file each (atomically) to the collection's partial directory as soon as they finish.
"""

from __future__ import annotations

import atexit
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from embodied_rl.datasets.episode import EXPERT_ACTION, Episode, check_episode
from embodied_rl.datasets.minari_format import ImageCodec, write_episode_group
from embodied_rl.datasets.tiers import NoisyPolicy, RandomPolicy, episode_tier, expert_noise
from embodied_rl.utils.io import atomic_path

REFERENCE_SEED_OFFSET = 1_000_000  # reference episodes reset with seed + offset + j
ROLES: dict[str, int] = {"data": 0, "reference-random": 1, "reference-expert": 2}


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker needs to rebuild the environment and the policy (picklable)."""

    env_id: str
    env_kwargs: dict[str, Any]
    randomization: Any
    seed: int
    tier: str | None  # None with a custom policy
    noise: float | None
    policy: Any  # a custom policy (with act) or a factory(env, seed); None for tiers
    episodes_dir: Path
    codec: ImageCodec = field(default_factory=ImageCodec)


@dataclass(frozen=True)
class EpisodeSummary:
    """What the parent needs to know about a finished episode."""

    index: int
    role: str
    episode_return: float
    length: int
    success: bool


def episode_filename(index: int) -> str:
    return f"episode_{index:07d}.hdf5"


def make_env(spec: RunnerSpec):
    from embodied_rl.envs import make

    kwargs = dict(spec.env_kwargs)
    if spec.randomization is not None:
        kwargs["randomization"] = spec.randomization
    return make(spec.env_id, **kwargs)


class EpisodeRunner:
    """Owns one environment and plays episodes of a collection by index."""

    def __init__(self, spec: RunnerSpec) -> None:
        self.spec = spec
        self.env = make_env(spec)

    def close(self) -> None:
        self.env.close()

    def _policy(self, role: str, index: int, task: str) -> tuple[Any, str, float | None]:
        """The policy of one episode, its tier name and its expert noise."""
        from embodied_rl.envs import make_expert

        rng_seed = np.random.SeedSequence([self.spec.seed, index, ROLES[role]])
        if role == "reference-random":
            return RandomPolicy(self.env.action_space, rng_seed), "random", None
        if role == "reference-expert":
            return make_expert(self.env, noise=0.0, seed=_int_seed(rng_seed)), "expert", 0.0
        if self.spec.tier is None:
            policy = self.spec.policy
            if not hasattr(policy, "act"):
                policy = policy(self.env, _int_seed(rng_seed))
            if self.spec.noise:
                policy = NoisyPolicy(policy, self.env.action_space, self.spec.noise, rng_seed)
            return policy, "custom", self.spec.noise
        tier = episode_tier(self.spec.tier, index)
        if tier == "random":
            return RandomPolicy(self.env.action_space, rng_seed), tier, None
        noise = expert_noise(tier, task, self.spec.noise)
        return make_expert(self.env, noise=noise, seed=_int_seed(rng_seed)), tier, noise

    def run(self, role: str, index: int) -> EpisodeSummary:
        """Play one episode; data episodes are written to ``episodes_dir``."""
        offset = 0 if role == "data" else REFERENCE_SEED_OFFSET
        seed = self.spec.seed + offset + index
        episode = record_episode(self.env, lambda task: self._policy(role, index, task), seed)
        episode.metadata["episode_index"] = index
        if role == "data":
            self._write(index, episode)
        return EpisodeSummary(
            index=index,
            role=role,
            episode_return=float(np.sum(episode.rewards)),
            length=len(episode),
            success=bool(episode.metadata["success"]),
        )

    def _write(self, index: int, episode: Episode) -> None:
        env = self.env
        check_episode(
            f"episode {index}", episode.as_mapping(), env.observation_space, env.action_space
        )
        target = self.spec.episodes_dir / episode_filename(index)
        with atomic_path(target) as tmp, h5py.File(tmp, "w", track_order=True) as f:
            write_episode_group(f.create_group("episode"), episode, self.spec.codec, index)


def _int_seed(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def record_episode(env, make_policy, seed: int) -> Episode:
    """Reset ``env`` with ``seed``, build the policy (``make_policy(task)``), play it out."""
    obs, info = env.reset(seed=seed)
    policy, tier, noise = make_policy(str(info.get("task", "")))
    if hasattr(policy, "reset"):
        policy.reset()
    observations, infos = [obs], [info]
    actions, rewards, terminations, truncations = [], [], [], []
    labels: list[np.ndarray] | None = []  # None once a step has no clean action
    dtype = env.action_space.dtype
    while True:
        action = np.asarray(policy.act(obs), dtype=dtype)
        clean = getattr(policy, "clean_action", None)
        if labels is not None and clean is not None:
            labels.append(np.asarray(clean, dtype=dtype).reshape(action.shape))
        else:
            labels = None
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        infos.append(info)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        if terminated or truncated:
            break
    metadata = {
        "seed": seed,
        "tier": tier,
        "noise": noise,
        "instruction": infos[0].get("instruction"),
        "task": infos[0].get("task"),
        "unseen": infos[0].get("unseen"),
        "success": bool(info.get("success", False)),
        "episode_return": float(np.sum(rewards)),
        "physics_error": info.get("physics_error"),
        "domain": {k: float(v) for k, v in infos[0].get("domain", {}).items()},
    }
    infos_arrays = {"success": np.array([bool(i.get("success", False)) for i in infos])}
    if labels:
        # The noise-free action at every observation (DART labels); the final observation,
        # where no action is taken, repeats the last one so the array has T + 1 rows.
        infos_arrays[EXPERT_ACTION] = np.stack([*labels, labels[-1]])
    return Episode(
        observations=_stack(observations, env.observation_space),
        actions=np.stack(actions),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terminations, dtype=bool),
        truncations=np.asarray(truncations, dtype=bool),
        infos=infos_arrays,
        metadata=metadata,
    )


def _stack(observations: list[Any], space: spaces.Space) -> Any:
    if isinstance(space, spaces.Dict):
        return {k: _stack([o[k] for o in observations], s) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Text):
        return [str(o) for o in observations]
    return np.stack([np.asarray(o, dtype=space.dtype) for o in observations])


# ---------------------------------------------------------------------- worker processes
_RUNNER: EpisodeRunner | None = None


def init_worker(spec: RunnerSpec) -> None:
    """Process-pool initializer: build this worker's environment once."""
    global _RUNNER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _RUNNER = EpisodeRunner(spec)
    atexit.register(_RUNNER.close)


def run_in_worker(role: str, index: int) -> EpisodeSummary:
    if _RUNNER is None:
        raise RuntimeError("init_worker was not called in this process")
    return _RUNNER.run(role, index)
