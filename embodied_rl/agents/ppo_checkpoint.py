"""PPO persistence on the agents' one checkpoint format (:mod:`embodied_rl.agents.checkpoint`).

``PPO.save(dir)`` and every ``<dir>/step_<N>`` (N environment steps, written between rollouts,
atomically with a ``last`` pointer) hold the files every agent's checkpoint holds:
``model.safetensors`` (``policy.*``, and ``reference.*`` with a KL penalty),
``optimizer.safetensors`` + ``optimizer.json``, ``config.json`` (agent type ``ppo`` and the
:class:`~embodied_rl.agents.ppo.PPOConfig`, the policy's type and config) and ``state.json``
(step = environment steps, the global RNG states, the KL coefficient, the reference policy's
type and config). ``PPO.save`` adds ``policy/``, the self-contained policy artifact every
command reads. A checkpoint adds what exact resume needs:

- ``state.safetensors``: every action the environments received since the first reset,
  the last observation (numeric entries) and the torch generator's state;
- in ``state.json``: PPO's numpy generator, each environment's streams and the ADR state,
  the ``learn`` call in progress, episode statistics and the last observation's text entries.

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
from torch import Tensor
from tqdm.auto import tqdm

from embodied_rl.agents.base import config_from_dict
from embodied_rl.agents.checkpoint import (
    STATE_TENSORS,
    CheckpointError,
    build_policy,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    read_json,
    read_state_tensors,
    restore_rng_state,
    save_agent,
)
from embodied_rl.agents.checkpoint import save_checkpoint as save_checkpoint_files
from embodied_rl.agents.env_state import env_rng_state
from embodied_rl.agents.ppo_rollout import BOX_KEY
from embodied_rl.utils.metrics import MetricsLogger

if TYPE_CHECKING:
    from embodied_rl.agents.ppo import PPO

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- save / load
def _agent_state(agent: PPO) -> dict[str, Any]:
    """What ``state.json`` holds besides the global RNGs: enough to rebuild the agent."""
    reference = None
    if agent.reference is not None:
        reference = {
            "type": agent.reference.policy_type,
            "config": json.loads(json.dumps(asdict(agent.reference.config), default=str)),
        }
    return {"kl_coef": agent.kl_controller.coef, "reference_policy": reference}


def save_ppo(agent: PPO, directory: str | os.PathLike) -> Path:
    """The checkpoint files of ``agent`` (no resume state) and ``policy/`` in ``directory``."""
    directory = save_agent(agent, directory, extra_state=_agent_state(agent))
    agent.policy.save(directory / "policy")
    return directory


def load_ppo(cls: type[PPO], directory: str | os.PathLike, envs: Any, log_dir: Any) -> PPO:
    """Rebuild a saved agent (or a checkpoint's) on ``envs``: policy, reference, optimizer,
    step count and KL coefficient."""
    directory = Path(directory)
    if (directory / "ppo.json").is_file() and not (directory / "config.json").is_file():
        raise CheckpointError(
            f"{directory} holds a PPO agent in the older layout (ppo.json, from before the "
            "one checkpoint format); "
            "this version reads the agents' checkpoint format. Its policy still loads: "
            f"load_policy('{directory / 'policy'}')"
        )
    path, meta = read_checkpoint_config(directory)
    if meta["agent"]["type"] != "ppo":
        raise CheckpointError(
            f"{path} is a {meta['agent']['type']!r} checkpoint, not PPO's: load_agent(path) "
            "rebuilds it, and finetune_ppo(path, ...) fine-tunes its policy with PPO"
        )
    state = read_json(path / "state.json")
    reference = state.get("reference_policy")
    agent = cls(
        build_policy(meta["policy"], path),
        envs,
        config_from_dict(cls.config_class, meta["agent"]["config"], str(path)),
        build_policy(reference, path) if reference else None,
        log_dir,
    )
    load_checkpoint(agent, path, restore_rng=False)  # networks, optimizer, step
    agent.kl_controller.coef = state["kl_coef"]
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
        **_agent_state(agent),
        "ppo_rng": agent.rng.bit_generator.state,
        "learn": agent._call,
        "episodes": {
            "returns": list(agent.episode_returns),
            "lengths": list(agent.episode_lengths),
        },
        "running": running,
        "obs_text": text,
    }
    return save_checkpoint_files(
        agent, directory, extra_state=state, keep=keep, extra_tensors=tensors, env=agent.envs,
        where=f"environment step {agent.num_steps}",
    )  # fmt: skip


# ---------------------------------------------------------------------------- resume
def resume(
    cls: type[PPO], directory: str | os.PathLike, envs: Any, log_dir: Any, progress: bool = False
) -> PPO:
    """Rebuild the agent of the ``last`` checkpoint on fresh ``envs`` (see the module doc);
    ``progress`` shows a bar while the recorded actions are replayed."""
    path = latest_checkpoint(directory)
    state = read_json(path / "state.json")
    tensors = read_state_tensors(path)
    if "generator" not in tensors:
        raise CheckpointError(
            f"{path} holds no resume state ({STATE_TENSORS}): it is a saved agent, not a "
            "training checkpoint; PPO.load(path, envs) rebuilds it"
        )
    agent = load_ppo(cls, path, envs, None)
    agent.log = MetricsLogger(log_dir, resume_step=state["step"])
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
