"""Random-number and ADR state of environments, as JSON for checkpoints (no pickle).

``env_rng_state(env)`` records, for each copy of a plain or synchronous vector env, the
environment's ``np_random`` stream, its action space's stream (when seeded) and the
domain-randomization wrapper's stream, plus the state of every ADR instance once (sync
copies share one). ``restore_env_rng_state`` puts them back. Physics state inside an
episode is not captured: restore at episode boundaries, or (as PPO's resume does) rebuild
the environments by replaying the recorded actions and compare with this state.
Asynchronous vector envs keep their copies in other processes and are not captured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv, VectorEnv

from embodied_rl.envs.randomization import DomainRandomization


def copies(env: gym.Env | VectorEnv) -> list[gym.Env] | None:
    """The single environments of ``env`` (None for vector envs whose copies live elsewhere)."""
    if isinstance(env, SyncVectorEnv):
        return list(env.envs)
    if isinstance(env, VectorEnv):
        return None
    return [env]


def _layers(env: gym.Env) -> Iterator[gym.Env]:
    while True:
        yield env
        if not isinstance(env, gym.Wrapper):
            return
        env = env.env


def _stream(generator: np.random.Generator | None) -> dict[str, Any] | None:
    return None if generator is None else generator.bit_generator.state


def _set_stream(generator: np.random.Generator | None, state: dict[str, Any] | None) -> None:
    if generator is not None and state is not None:
        generator.bit_generator.state = state


def env_rng_state(env: gym.Env | VectorEnv) -> dict[str, Any] | None:
    """``{"envs": [per copy], "adr": [ADR states]}`` as plain JSON; None for async envs."""
    envs = copies(env)
    if envs is None:
        return None
    adrs: list[Any] = []
    rows = []
    for single in envs:
        base = single.unwrapped
        row: dict[str, Any] = {
            "np_random": _stream(getattr(base, "_np_random", None)),
            "action_space": _stream(getattr(single.action_space, "_np_random", None)),
        }
        for layer in _layers(single):
            if isinstance(layer, DomainRandomization):
                row["randomization"] = _stream(layer._rng)
                if layer.adr is not None:
                    if not any(layer.adr is a for a in adrs):
                        adrs.append(layer.adr)
                    row["adr"] = next(i for i, a in enumerate(adrs) if a is layer.adr)
        rows.append(row)
    state = {"envs": rows, "adr": [adr.state_dict() for adr in adrs]}
    return json.loads(json.dumps(state))  # plain JSON types, comparable with a loaded one


def restore_env_rng_state(env: gym.Env | VectorEnv, state: dict[str, Any]) -> None:
    """Put back the streams and ADR states of :func:`env_rng_state` (same env layout)."""
    envs = copies(env)
    if envs is None:
        raise ValueError("an asynchronous vector env's random state cannot be restored")
    if len(envs) != len(state["envs"]):
        raise ValueError(f"the state has {len(state['envs'])} env copies; this env {len(envs)}")
    for single, row in zip(envs, state["envs"], strict=True):
        base = single.unwrapped
        if row["np_random"] is not None:
            bit_generator = getattr(np.random, row["np_random"]["bit_generator"])()
            bit_generator.state = row["np_random"]
            base.np_random = np.random.Generator(bit_generator)
        _set_stream(getattr(single.action_space, "_np_random", None), row["action_space"])
        for layer in _layers(single):
            if isinstance(layer, DomainRandomization):
                _set_stream(layer._rng, row.get("randomization"))
                if layer.adr is not None and "adr" in row:
                    layer.adr.load_state_dict(state["adr"][row["adr"]])
