"""Build the D4RL-style locomotion datasets on any machine (``erl datasets locomotion``).

For one body (``hopper``, ``walker2d``, ``halfcheetah``; see
:mod:`embodied_rl.datasets.locomotion`):

1. PPO (the toolkit's, SB3's defaults) trains a behaviour policy for ``env_steps``
   environment steps. Every episode of its rollouts is recorded inside the environments
   (``full-replay``), and every ``snapshot_every`` steps the policy is saved and evaluated
   (deterministic actions, ``eval_episodes`` episodes on held-out reset seeds).
2. The expert is the best-evaluated snapshot; the medium policy is the first snapshot whose
   evaluation return reaches ``random + medium_fraction * (expert - random)``, D4RL's "about
   a third of the expert" (the first: PPO's return rises and falls, and the replay up to the
   medium policy must not hold a better phase of training).
3. ``random``, ``medium`` and ``expert`` hold ``transitions`` steps each (actions sampled
   from the policy's Gaussian, or uniform), ``medium-expert`` both of the latter,
   ``medium-replay`` the recorded training episodes up to the medium snapshot. Every dataset
   carries the reference returns (random's and expert's mean episode return) and names its
   environment, so the offline trainer evaluates normalised scores on it.

Everything is seeded: the same config and seed give the same datasets on the same machine.
A dataset whose metadata records the same build config is not built again, and a behaviour
policy trained in ``work`` with the same training settings is reused (its snapshots and the
``full-replay`` dataset hold everything the other datasets need).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from embodied_rl.datasets.locomotion import (
    BODIES,
    KINDS,
    EpisodeRecorder,
    check_body,
    check_kind,
    locomotion_id,
    run_episodes,
)
from embodied_rl.datasets.minari_format import dataset_dir, write_dataset
from embodied_rl.evaluation.rollout import held_out_seed
from embodied_rl.utils.io import write_text_atomic

logger = logging.getLogger(__name__)
BUILD_VERSION = 2  # bump when a change alters the datasets a config builds (caches rebuild)


@dataclass(frozen=True)
class LocomotionConfig:
    """How the locomotion datasets of one body are built (see the module doc)."""

    env_steps: int = 1_000_000  # PPO training of the behaviour policy (environment steps)
    snapshot_every: int = 50_000  # steps between saved and evaluated policy snapshots
    eval_episodes: int = 10  # evaluation episodes per snapshot
    transitions: int = 200_000  # steps of random, medium and expert (D4RL: 1M)
    medium_fraction: float = 1 / 3  # the medium policy's place between random and expert
    n_envs: int = 1  # PPO's environment copies
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("env_steps", "snapshot_every", "eval_episodes", "transitions", "n_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.snapshot_every > self.env_steps:
            raise ValueError(
                f"snapshot_every={self.snapshot_every} exceeds env_steps={self.env_steps}: no "
                "snapshot would be taken before the end"
            )
        if not 0.0 < self.medium_fraction < 1.0:
            raise ValueError(f"medium_fraction={self.medium_fraction} must be in (0, 1)")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")


@dataclass
class Behaviour:
    """The trained behaviour policy's snapshots: ``(env_step, eval return)`` and the
    choice of the medium and expert snapshots."""

    snapshots: list[tuple[int, float]]
    random_return: float
    medium_step: int
    expert_step: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _reset_seed(seed: int, kind: str) -> int:
    """First reset seed of a dataset's episodes: a block of 1M per kind and 10M per seed,
    below the evaluation seeds (:func:`held_out_seed`)."""
    return seed * 10_000_000 + KINDS.index(kind) * 1_000_000


def _sampling_actor(policy: Any, space: gym.spaces.Box, seed: int):
    """Actions sampled from ``policy``'s Gaussian (numpy, batch 1), clipped to ``space``."""
    actor = policy.numpy_actor()
    std = np.exp(policy.head.log_std.detach().numpy())
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        mean, _ = actor(obs[None])
        return np.clip(mean[0] + std * rng.standard_normal(std.shape), space.low, space.high)

    return act


def _uniform_actor(space: gym.spaces.Box, seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(space.low, space.high).astype(space.dtype)


def _mean_return(episodes: list) -> float:
    """Mean return of the episodes that ended by themselves or at the time limit (one cut by
    the step budget is left out unless it is all there is)."""
    whole = [e for e in episodes if not e.metadata.get("cut")] or episodes
    return float(np.mean([e.rewards.sum() for e in whole]))


def _evaluate(policy: Any, env_id: str, episodes: int, seed: int) -> float:
    from embodied_rl.agents.trainer import evaluate

    env = gym.make(env_id)
    try:
        return evaluate(policy, env, episodes, held_out_seed(seed))["eval/mean_return"]
    finally:
        env.close()


def train_behaviour(
    body: str, config: LocomotionConfig, work: Path, progress: bool = True
) -> tuple[Behaviour, list[tuple[int, Any]]]:
    """Train PPO on ``body``, saving and evaluating snapshots; returns the choice of medium
    and expert and every recorded training episode with the step at which it ended."""
    import torch

    from embodied_rl.agents.ppo import PPO, PPOConfig, default_ppo_policy
    from embodied_rl.agents.ppo_rollout import make_vec_env
    from embodied_rl.agents.trainer import seed_everything

    env_id = BODIES[check_body(body)]
    recorded: list[tuple[int, Any]] = []

    def factory() -> gym.Env:
        # steps of one copy x copies: the global step at which an episode ended (sync envs)
        return EpisodeRecorder(gym.make(env_id), lambda n, ep: record(n * config.n_envs, ep))

    def record(end_step: int, episode: Any) -> None:
        episode.metadata["end_step"] = end_step  # kept in the file: the replay is rebuilt from it
        recorded.append((end_step, episode))

    seed_everything(config.seed)
    envs = make_vec_env(factory, config.n_envs)
    envs.action_space.seed(config.seed)
    agent = PPO(default_ppo_policy(envs), envs, PPOConfig(seed=config.seed), log_dir=work)
    probe = gym.make(env_id)
    try:  # the random policy's return: the low end of the medium policy's target
        uniform = _uniform_actor(envs.single_action_space, config.seed)
        random_return = _mean_return(
            run_episodes(probe, uniform, 20_000, held_out_seed(config.seed))
        )
    finally:
        probe.close()
    snapshots: list[tuple[int, float]] = []
    threads = torch.get_num_threads()
    try:
        while agent.num_steps < config.env_steps:
            chunk = min(config.snapshot_every, config.env_steps - agent.num_steps)
            agent.learn(chunk, progress)
            agent.policy.save(work / "snapshots" / f"step_{agent.num_steps:09d}")
            value = _evaluate(agent.policy, env_id, config.eval_episodes, config.seed)
            snapshots.append((agent.num_steps, value))
            logger.info("%s: %d steps, evaluation return %.1f", body, agent.num_steps, value)
    finally:
        envs.close()
        agent.log.close()
        torch.set_num_threads(threads)
    return choose_policies(snapshots, random_return, config), recorded


def choose_policies(
    snapshots: list[tuple[int, float]], random_return: float, config: LocomotionConfig
) -> Behaviour:
    """The expert: the best-evaluated snapshot. The medium policy: the first snapshot whose
    return reaches ``random + medium_fraction * (expert - random)`` — the first, because PPO's
    return is not monotonic, and a replay "up to medium" must not hold a better phase."""
    expert_step, expert_return = max(snapshots, key=lambda s: (s[1], -s[0]))
    target = random_return + config.medium_fraction * (expert_return - random_return)
    medium_step = next(step for step, value in snapshots if value >= target)
    return Behaviour(snapshots, random_return, medium_step, expert_step)


def _metadata(body: str, kind: str, config: LocomotionConfig, behaviour: Behaviour,
              refs: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    env_id = BODIES[body]
    return {
        "ref_min_score": refs[0],
        "ref_max_score": refs[1],
        "algorithm_name": f"embodied_rl PPO behaviour policy ({kind})",
        "description": (
            f"D4RL-style {body} {kind} data regenerated on gymnasium's {env_id} by "
            "embodied_rl.runners.locomotion (see its docstring)"
        ),
        "env_spec": gym.spec(env_id).to_json(),
        "embodied_rl": {
            "collection": {"env_id": env_id, "env_kwargs": {}},
            "locomotion": {
                "body": body,
                "kind": kind,
                "config": dataclasses.asdict(config),
                "build_version": BUILD_VERSION,
                "behaviour": behaviour.to_json(),
            },
        },
    }


def _training(config: LocomotionConfig) -> dict[str, Any]:
    """The settings that decide the behaviour policy's training."""
    names = ("env_steps", "snapshot_every", "eval_episodes", "n_envs", "seed")
    return {name: getattr(config, name) for name in names}


def _built_with(path: Path, config: LocomotionConfig) -> bool:
    meta_file = path / "data" / "metadata.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text()).get("embodied_rl", {}).get("locomotion", {})
    same = meta.get("config") == json.loads(json.dumps(dataclasses.asdict(config)))
    return same and meta.get("build_version") == BUILD_VERSION


def _reuse_behaviour(
    body: str, root: Any, config: LocomotionConfig, work: Path
) -> tuple[Behaviour, list[tuple[int, Any]]] | None:
    """The behaviour policy of an earlier build with the same training settings: its
    snapshots, evaluations (``behaviour.json``) and training episodes (``full-replay``)."""
    from embodied_rl.datasets.minari_reader import load_dataset

    saved_file, full = (
        work / "behaviour.json",
        dataset_dir(root, locomotion_id(body, "full-replay")),
    )
    if not saved_file.is_file() or not (full / "data" / "metadata.json").is_file():
        return None
    saved = json.loads(saved_file.read_text())
    steps = [step for step, _ in saved.get("snapshots", [])]
    snapshots_there = all((work / "snapshots" / f"step_{n:09d}").is_dir() for n in steps)
    if saved.get("training") != _training(config) or not steps or not snapshots_there:
        return None
    data = load_dataset(full)
    episodes = list(data.episodes())
    ends = np.cumsum([len(e) for e in episodes]) * config.n_envs  # exact for one copy
    recorded = [
        (int(e.metadata.get("end_step", n)), e) for n, e in zip(ends, episodes, strict=True)
    ]
    snapshots = [(int(n), float(v)) for n, v in saved["snapshots"]]
    logger.info("%s: reusing the behaviour policy trained in %s", body, work)
    return choose_policies(snapshots, float(saved["random_return"]), config), recorded


def build_locomotion(
    body: str,
    root: str | os.PathLike | None = None,
    config: LocomotionConfig | None = None,
    kinds: tuple[str, ...] = KINDS,
    work: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Build (or find, cached) the ``kinds`` datasets of ``body`` under ``root`` (Minari's
    root by default); returns their directories by kind. ``work`` (default
    ``outputs/locomotion/<body>``) receives PPO's metrics, the policy snapshots and
    ``behaviour.json``; a behaviour policy trained there with the same training settings is
    reused (with the ``full-replay`` dataset, always written, holding its episodes)."""
    from embodied_rl.policies.base import load_policy

    config = config or LocomotionConfig()
    check_body(body)
    kinds = tuple(dict.fromkeys(check_kind(k) for k in kinds))
    paths = {k: dataset_dir(root, locomotion_id(body, k)) for k in kinds}
    todo = [k for k in kinds if not _built_with(paths[k], config)]
    if not todo:
        logger.info("%s: every requested dataset is already built", body)
        return paths
    work = Path(work) if work is not None else Path("outputs") / "locomotion" / body
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reused = _reuse_behaviour(body, root, config, work)
    behaviour, recorded = reused or train_behaviour(body, config, work, progress)
    if reused is None:
        saved = {**behaviour.to_json(), "training": _training(config)}
        write_text_atomic(work / "behaviour.json", json.dumps(saved, indent=1))
        if "full-replay" not in todo:
            todo.append("full-replay")  # what a later build reuses
    env_id = BODIES[body]
    env = gym.make(env_id)
    space = env.action_space
    episodes: dict[str, list] = {}
    try:
        for kind in ("random", "medium", "expert"):
            if kind == "random":
                act = _uniform_actor(space, config.seed + 1)
            else:
                step = behaviour.medium_step if kind == "medium" else behaviour.expert_step
                policy = load_policy(work / "snapshots" / f"step_{step:09d}")
                act = _sampling_actor(policy, space, config.seed + 1 + KINDS.index(kind))
            episodes[kind] = run_episodes(
                env, act, config.transitions, _reset_seed(config.seed, kind)
            )
    finally:
        env.close()
    refs = (_mean_return(episodes["random"]), _mean_return(episodes["expert"]))
    episodes["medium-expert"] = episodes["medium"] + episodes["expert"]
    episodes["medium-replay"] = [ep for n, ep in recorded if n <= behaviour.medium_step]
    episodes["full-replay"] = [ep for _, ep in recorded]
    probe = gym.make(env_id)
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    for kind in todo:
        write_dataset(
            root, locomotion_id(body, kind), episodes[kind], obs_space, act_space,
            metadata=_metadata(body, kind, config, behaviour, refs), overwrite=True,
        )  # fmt: skip
        logger.info(
            "wrote %s (%d steps)", locomotion_id(body, kind), sum(len(e) for e in episodes[kind])
        )
    logger.info("%s datasets built in %.0f s", body, time.perf_counter() - start)
    return paths
