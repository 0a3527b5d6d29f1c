"""PPO persistence: ``save``/``load`` of an agent, checkpoints, and exact resume.

A checkpoint ``<dir>/step_<N>`` is written between rollouts, atomically with a ``last``
pointer (:func:`embodied_rl.agents.checkpoint.write_checkpoint`), and holds:

- what :meth:`PPO.save` writes: ``policy/`` (and ``reference/``), ``optimizer.safetensors``
  and ``ppo.json`` (config, step count, KL coefficient);
- ``resume.safetensors``: every action the environments received since the first reset,
  the last observation (numeric entries) and the torch generator's state;
- ``state.json``: RNG states (python, numpy, torch, PPO's numpy generator, each
  environment's streams and the ADR state), the ``learn`` call in progress, episode
  statistics and the last observation's text entries.

The physics inside an unfinished episode cannot be read from every simulator, so
:func:`resume` rebuilds it: it resets the fresh environments with the run's seed and replays
the recorded actions (environment steps only, no network), then checks that the last
observation and every environment RNG stream and ADR state equal the checkpoint's. Replay
costs one environment step per recorded step; asynchronous vector envs are replayed and
their observation checked, but their RNG streams live in other processes and are not.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from embodied_rl.agents.checkpoint import (
    CheckpointError,
    check_finite,
    latest_checkpoint,
    read_json,
    read_tensors,
    restore_rng_state,
    rng_state,
    write_checkpoint,
)
from embodied_rl.agents.env_state import env_rng_state
from embodied_rl.agents.ppo_rollout import BOX_KEY
from embodied_rl.policies.base import load_policy
from embodied_rl.utils.metrics import MetricsLogger

if TYPE_CHECKING:
    from embodied_rl.agents.ppo import PPO

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- save / load
def _optimizer_tensors(agent: PPO) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    state = agent.optimizer.state_dict()
    tensors = {
        f"{i}.{name}": value.contiguous()
        for i, slot in state["state"].items()
        for name, value in slot.items()
    }
    return tensors, state["param_groups"]


def save_ppo(agent: PPO, directory: str | os.PathLike) -> Path:
    """``policy/`` (and ``reference/``), ``optimizer.safetensors`` and ``ppo.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    agent.policy.save(directory / "policy")
    if agent.reference is not None:
        agent.reference.save(directory / "reference")
    tensors, groups = _optimizer_tensors(agent)
    save_file(tensors, directory / "optimizer.safetensors")
    meta = {
        "config": asdict(agent.config),
        "num_steps": agent.num_steps,
        "kl_coef": agent.kl_controller.coef,
        "param_groups": groups,
    }
    (directory / "ppo.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_ppo(cls: type[PPO], directory: str | os.PathLike, envs: Any, log_dir: Any) -> PPO:
    """Rebuild a saved agent on ``envs``: policy, reference, optimizer and KL coefficient."""
    directory = Path(directory)
    if not (directory / "ppo.json").is_file():
        raise FileNotFoundError(f"{directory} is not a saved PPO agent: ppo.json is missing")
    meta = read_json(directory / "ppo.json")
    for part in ("policy", "reference"):
        if (directory / part).is_dir():
            read_json(directory / part / "config.json")  # an error naming a corrupt file
    reference = load_policy(directory / "reference") if (directory / "reference").is_dir() else None
    config = cls.config_class(**meta["config"])  # PPOConfig; no import of ppo.py (a cycle)
    agent = cls(load_policy(directory / "policy"), envs, config, reference, log_dir)
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in read_tensors(directory / "optimizer.safetensors").items():
        i, name = key.split(".", 1)
        slots.setdefault(int(i), {})[name] = value
    try:
        agent.optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{directory}: the optimizer state does not fit: {error}") from error
    agent.num_steps = meta["num_steps"]
    agent.kl_controller.coef = meta["kl_coef"]
    return agent


# ---------------------------------------------------------------------------- checkpoints
def _split_obs(obs: Any) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """A vector-env observation as numeric arrays and text lists, by key."""
    obs = obs if isinstance(obs, dict) else {BOX_KEY: obs}
    numeric, text = {}, {}
    for key, value in obs.items():
        array = np.asarray(value)
        if array.dtype.kind in "OUS":
            text[key] = [str(v) for v in value]
        else:
            numeric[key] = array
    return numeric, text


def save_checkpoint(agent: PPO, directory: str | os.PathLike, keep: int = 2) -> Path:
    """Write ``directory/step_<N>`` (N environment steps) atomically; never with NaN weights."""
    policy = {f"policy.{k}": v for k, v in agent.policy.trainable_state_dict().items()}
    check_finite({**policy, **_optimizer_tensors(agent)[0]}, f"environment step {agent.num_steps}")
    if len(agent.env_actions) > 1:  # one array, so each checkpoint concatenates once
        agent.env_actions = [np.concatenate(agent.env_actions)]
    numeric, text = _split_obs(agent._obs) if agent._obs is not None else ({}, {})
    tensors = {f"obs.{k}": torch.from_numpy(v.copy()) for k, v in numeric.items()}
    tensors["generator"] = agent.generator.get_state()
    if agent.env_actions:
        tensors["env_actions"] = torch.from_numpy(agent.env_actions[0])
    running = None
    if agent._obs is not None:
        running = {
            "return": agent._running_return.tolist(),
            "length": agent._running_length.tolist(),
            "was_ended": agent._was_ended.tolist(),
        }
    state = {
        "num_steps": agent.num_steps,
        "rng": rng_state(),
        "ppo_rng": agent.rng.bit_generator.state,
        "learn": agent._call,
        "episodes": {
            "returns": list(agent.episode_returns),
            "lengths": list(agent.episode_lengths),
        },
        "running": running,
        "obs_text": text,
        "env": env_rng_state(agent.envs),
    }

    def write(tmp: Path) -> None:
        save_ppo(agent, tmp)
        save_file(tensors, tmp / "resume.safetensors")
        (tmp / "state.json").write_text(json.dumps(state))

    return write_checkpoint(directory, f"step_{agent.num_steps:012d}", write, keep)


# ---------------------------------------------------------------------------- resume
def resume(
    cls: type[PPO], directory: str | os.PathLike, envs: Any, log_dir: Any, progress: bool = False
) -> PPO:
    """Rebuild the agent of the ``last`` checkpoint on fresh ``envs`` (see the module doc);
    ``progress`` shows a bar while the recorded actions are replayed."""
    path = latest_checkpoint(directory)
    state = read_json(path / "state.json")
    tensors = read_tensors(path / "resume.safetensors")
    agent = load_ppo(cls, path, envs, None)
    agent.log = MetricsLogger(log_dir, resume_step=state["num_steps"])
    if state["running"] is not None:
        actions = tensors["env_actions"].numpy() if "env_actions" in tensors else None
        _replay(agent, actions, progress)
        _verify(agent, state, tensors, path, 0 if actions is None else len(actions))
        agent._running_return = np.asarray(state["running"]["return"], dtype=np.float64)
        agent._running_length = np.asarray(state["running"]["length"], dtype=np.int64)
        agent._was_ended = np.asarray(state["running"]["was_ended"], dtype=bool)
    restore_rng_state(state["rng"])
    agent.generator.set_state(tensors["generator"])
    agent.rng.bit_generator.state = state["ppo_rng"]
    agent.episode_returns = deque(state["episodes"]["returns"], maxlen=100)
    agent.episode_lengths = deque(state["episodes"]["lengths"], maxlen=100)
    agent._call = state["learn"]
    logger.info("resumed PPO from %s at environment step %d", path, agent.num_steps)
    return agent


def _replay(agent: PPO, actions: np.ndarray | None, progress: bool) -> None:
    """Reset the envs as the run's first rollout did and step them through ``actions``."""
    agent._reset()
    if actions is None:
        return
    logger.info("replaying %d recorded steps to rebuild the environments", len(actions))
    for row in tqdm(actions, desc="replay", unit="step", disable=not progress):
        agent._obs = agent.envs.step(row)[0]  # row: (n_envs, action_dim)
    agent.env_actions = [actions]


def _verify(agent: PPO, state: dict, tensors: dict[str, Tensor], path: Path, n: int) -> None:
    numeric, text = _split_obs(agent._obs)
    problems = [
        f"observation {key!r}"
        for key, value in numeric.items()
        if f"obs.{key}" not in tensors or not np.array_equal(value, tensors[f"obs.{key}"].numpy())
    ]
    problems += [f"observation {k!r}" for k, v in text.items() if state["obs_text"].get(k) != v]
    if state["env"] is not None and _streams(env_rng_state(agent.envs)) != _streams(state["env"]):
        problems.append("environment RNG streams or ADR state")
    if problems:
        raise CheckpointError(
            f"{path}: replaying the {n} recorded environment steps did not reproduce the "
            f"checkpoint's {', '.join(problems)}; build the environments exactly as in the "
            "interrupted run (task, number of copies, options) and pass them without resetting"
        )


def _streams(state: dict[str, Any]) -> dict[str, Any]:
    """The env state without action-space streams: PPO never samples them, and unless the
    user seeds them they start from OS entropy, so two faithful builds differ there."""
    envs = [{k: v for k, v in row.items() if k != "action_space"} for row in state["envs"]]
    return {**state, "envs": envs}
