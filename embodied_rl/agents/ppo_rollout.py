"""Vectorized environments, the preallocated rollout buffer PPO fills and trains from, the glue
that feeds observations to any policy, and the per-rollout metrics log.

Vector environments reset finished episodes in one of two ways (gymnasium 1.x
``autoreset_mode``): ``SAME_STEP`` returns the next episode's first observation at once and the
final one in ``info["final_obs"]`` (what :func:`make_vec_env` builds; SB3 works this way), and
``NEXT_STEP`` (gymnasium's default) returns the final observation and resets on the following
``step()``, whose action is ignored. The buffer handles both: in ``NEXT_STEP`` mode that reset
step is stored but marked invalid, so it never enters a loss or an advantage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.vector.async_vector_env import AsyncState
from torch import Tensor

from embodied_rl.policies.base import Policy

logger = logging.getLogger(__name__)

BOX_KEY = "state"  # a plain Box observation is stored (and given to the policy) under this key
VECTORIZATION = ("sync", "async")


def make_vec_env(
    env: str | Callable[[], gym.Env],
    n_envs: int = 1,
    vectorization: str = "sync",
    **make_kwargs: Any,
) -> VectorEnv:
    """``n_envs`` copies of ``env`` (a task id or a factory) in a gymnasium vector env.

    Tabletop ids go through :func:`embodied_rl.envs.make` (so ``randomization=...`` and
    ``adr=...`` work), other ids through ``gymnasium.make``. Episodes autoreset in
    ``SAME_STEP`` mode; observations are returned without a copy (the next ``step()`` overwrites
    them). An ``ADR`` instance is shared by every copy in ``"sync"`` mode;
    ``"async"`` runs each copy in its own process, where one shared ADR cannot live.
    """
    if vectorization not in VECTORIZATION:
        raise ValueError(f"vectorization={vectorization!r}; choose one of {VECTORIZATION}")
    if n_envs < 1:
        raise ValueError(f"n_envs={n_envs} must be >= 1")
    if vectorization == "async" and make_kwargs.get("adr") not in (None, False):
        raise ValueError(
            "adr with vectorization='async' would give every process its own copy of the ADR "
            "state; use vectorization='sync' to grow one shared set of ranges"
        )
    if callable(env):
        factories = [env] * n_envs
    elif env.startswith("tabletop/") or env.startswith("metaworld/"):
        from embodied_rl.envs import make

        if make_kwargs.get("adr") is True:  # one ADR for every copy, not one each
            make_kwargs["adr"] = _shared_adr(make_kwargs.get("randomization"))
        factories = [lambda: make(env, **make_kwargs)] * n_envs
    else:
        factories = [lambda: gym.make(env, **make_kwargs)] * n_envs
    # copy=False: PPO copies each observation into its buffer anyway
    if vectorization == "sync":
        return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
    # gymnasium 1.4's shared memory returns Text observations as "aaaa..." (checked): use pipes
    # whenever the observations hold text, whichever way the envs are built
    if isinstance(env, str):
        text = make_kwargs.get("instruction_mode", "text") == "text"
        text = text and (env.startswith("tabletop/") or env.startswith("metaworld/"))
    else:
        probe = factories[0]()  # gymnasium builds such a copy to read the spaces as well
        text = has_text(probe.observation_space)
        probe.close()
    return CheckedAsyncVectorEnv(
        factories, autoreset_mode=AutoresetMode.SAME_STEP, copy=False, shared_memory=not text
    )


def has_text(space: gym.Space) -> bool:
    """Whether a (Dict/Tuple) observation space holds a Text space anywhere."""
    if isinstance(space, spaces.Text):
        return True
    if isinstance(space, spaces.Dict):
        return any(has_text(s) for s in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return any(has_text(s) for s in space.spaces)
    return False


class EnvWorkerError(RuntimeError):
    """An environment worker process raised or died; the message holds what it reported."""


class CheckedAsyncVectorEnv(AsyncVectorEnv):
    """gymnasium's ``AsyncVectorEnv``, with worker failures that are reported, not hidden.

    gymnasium logs a worker's traceback as a warning and raises a bare copy of its exception;
    here the raised :class:`EnvWorkerError` carries the traceback. A worker that dies without
    a word (killed, out of memory, a native crash) makes gymnasium raise a bare ``EOFError``
    and then hang in ``close()`` waiting for a reply that never comes (checked with gymnasium
    1.4); here it raises :class:`EnvWorkerError` naming the worker and its exit code, and
    ``close()`` returns.
    """

    def _raise_if_errors(self, successes) -> None:
        if all(successes):
            return
        reports = []
        for _ in range(self.num_envs - sum(successes)):
            index, exctype, value, trace = self.error_queue.get()
            self.parent_pipes[index].close()
            self.parent_pipes[index] = None
            reports.append(
                f"environment worker {index} raised {exctype.__name__}: {value}\n{trace}"
            )
        self._state = AsyncState.DEFAULT
        raise EnvWorkerError("\n".join(reports).rstrip())

    def _checked(self, wait: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return wait(*args, **kwargs)
        except (EOFError, ConnectionError) as error:
            raise self._dead_worker_error() from error

    def step_async(self, *args: Any, **kwargs: Any) -> None:
        self._checked(super().step_async, *args, **kwargs)

    def reset_async(self, *args: Any, **kwargs: Any) -> None:
        self._checked(super().reset_async, *args, **kwargs)

    def call_async(self, *args: Any, **kwargs: Any) -> None:
        self._checked(super().call_async, *args, **kwargs)

    def step_wait(self, *args: Any, **kwargs: Any):
        return self._checked(super().step_wait, *args, **kwargs)

    def reset_wait(self, *args: Any, **kwargs: Any):
        return self._checked(super().reset_wait, *args, **kwargs)

    def call_wait(self, *args: Any, **kwargs: Any):
        return self._checked(super().call_wait, *args, **kwargs)

    def _dead_worker_error(self) -> EnvWorkerError:
        """Drop the dead workers' pipes (so ``close()`` does not wait on them) and name them."""
        deadline = time.monotonic() + 2.0  # the pipe can close just before the exit is seen
        dead: list[int] = []
        while not dead and time.monotonic() < deadline:
            dead = [i for i, p in enumerate(self.processes) if not p.is_alive()]
            time.sleep(0.01)
        for i in dead:
            if self.parent_pipes[i] is not None:
                self.parent_pipes[i].close()
                self.parent_pipes[i] = None
        self._state = AsyncState.DEFAULT
        codes = ", ".join(f"worker {i} exit code {self.processes[i].exitcode}" for i in dead)
        return EnvWorkerError(
            f"an environment worker process died abruptly ({codes or 'unknown worker'}): killed "
            "by a signal, out of memory, or a crash in native code; no traceback is available"
        )


def _shared_adr(randomization: Any) -> Any:
    from embodied_rl.envs.randomization import ADR, resolve_randomization

    config = resolve_randomization(randomization)
    if config is None or not config.ranges:
        raise ValueError(
            f"adr=True needs randomization ranges as ADR's limits (randomization={randomization!r}); "
            "e.g. randomization='heavy'"
        )
    return ADR.from_config(config)


def autoreset_mode(envs: VectorEnv) -> AutoresetMode:
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    mode = AutoresetMode(mode) if isinstance(mode, str) else mode
    if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        raise ValueError(
            f"autoreset_mode={mode}; PPO needs SAME_STEP or NEXT_STEP (make_vec_env builds SAME_STEP)"
        )
    return mode


def _obs_keys(space: spaces.Space) -> dict[str, spaces.Space]:
    if isinstance(space, spaces.Dict):
        return dict(space.spaces)
    if isinstance(space, spaces.Box):
        return {BOX_KEY: space}
    raise TypeError(f"observation space {space} is not a Box or a Dict of Box and Text spaces")


def obs_to_torch(obs: Any, space: spaces.Space) -> dict[str, Tensor | np.ndarray]:
    """A batched vector-env observation as ``{key: (n_envs, ...) tensor}``; text stays strings.

    Float observations become float32; uint8 images stay uint8.
    """
    obs = obs if isinstance(space, spaces.Dict) else {BOX_KEY: obs}
    out: dict[str, Tensor | np.ndarray] = {}
    for key, sub in _obs_keys(space).items():
        if isinstance(sub, spaces.Text):
            out[key] = np.asarray(obs[key], dtype=object)
        else:
            value = torch.from_numpy(np.asarray(obs[key]))
            out[key] = value.float() if value.is_floating_point() else value
    return out


def stack_obs(observations: list[Any], space: spaces.Space) -> Any:
    """Single-env observations (e.g. ``info["final_obs"]`` entries) as one batched observation."""
    if not isinstance(space, spaces.Dict):
        return np.stack(observations)
    return {
        key: [o[key] for o in observations]
        if isinstance(sub, spaces.Text)
        else np.stack([o[key] for o in observations])
        for key, sub in space.spaces.items()
    }


class RolloutBuffer:
    """``n_steps x n_envs`` transitions in preallocated numpy arrays (text in object arrays).

    Each step writes numpy rows (cheap); ``tensors()`` gives zero-copy torch views for the update.
    """

    def __init__(self, obs_space: spaces.Space, action_dim: int, n_steps: int, n_envs: int):
        self.n_steps, self.n_envs = n_steps, n_envs
        shape = (n_steps, n_envs)
        self.obs: dict[str, np.ndarray] = {}
        for key, sub in _obs_keys(obs_space).items():
            if isinstance(sub, spaces.Text):
                self.obs[key] = np.empty(shape, dtype=object)
            elif isinstance(sub, spaces.Box):
                dtype = np.uint8 if sub.dtype == np.uint8 else np.float32
                self.obs[key] = np.zeros((*shape, *sub.shape), dtype=dtype)
            else:
                raise TypeError(f"observation {key!r} has space {sub}; PPO stores Box and Text")
        self.actions = np.zeros((*shape, action_dim), dtype=np.float32)
        self.log_probs, self.values, self.rewards, self.kl, self.final_values = (
            np.zeros(shape, dtype=np.float32) for _ in range(5)
        )
        self.terminated, self.truncated, self.valid = (
            np.zeros(shape, dtype=bool) for _ in range(3)
        )
        self.advantages = np.zeros(shape, dtype=np.float32)
        self.returns = np.zeros(shape, dtype=np.float32)

    def store_obs(self, t: int, obs: Any) -> None:
        """Write the raw vector-env observation of step ``t``."""
        if not isinstance(obs, dict):
            obs = {BOX_KEY: obs}
        for key, rows in self.obs.items():
            rows[t] = obs[key]

    def flat(self) -> dict[str, Tensor | np.ndarray]:
        """Every stored field with ``(n_steps * n_envs, ...)`` rows, as torch views where numeric."""
        out: dict[str, Tensor | np.ndarray] = {}
        for key, value in self.obs.items():
            flat = value.reshape(-1, *value.shape[2:])
            out[key] = flat if value.dtype == object else torch.from_numpy(flat)
        for name in ("actions", "log_probs", "values", "advantages", "returns"):
            value = getattr(self, name)
            out[name] = torch.from_numpy(value.reshape(-1, *value.shape[2:]))
        return out


def take(flat: dict[str, Tensor | np.ndarray], index: Tensor) -> dict[str, Any]:
    """Rows ``index`` of every field of :meth:`RolloutBuffer.flat` (text as a list of strings)."""
    rows = index.numpy()
    return {
        key: value[rows].tolist() if isinstance(value, np.ndarray) else value[index]
        for key, value in flat.items()
    }


# ---------------------------------------------------------------------------- policy glue
def policy_batch(policy: Policy, obs: dict[str, Any]) -> dict[str, Any]:
    """Environment observations ``{key: (B, ...)}`` as the policy's batch: the VLA gets a
    one-frame history ``images (B, 1, H, W, 3)``, ``instructions`` (and ``proprio``); others take ``obs`` as is."""
    if policy.policy_type != "vla":
        return obs
    if "image" not in obs or "instruction" not in obs:
        raise ValueError(
            f"the VLA policy needs 'image' and text 'instruction' observations, got {sorted(obs)}; "
            "make the env with obs_mode='rgb' (or 'rgb+state') and instruction_mode='text'"
        )
    batch = {"images": obs["image"].unsqueeze(1), "instructions": list(obs["instruction"])}
    if "proprio" in obs:
        batch["proprio"] = obs["proprio"].unsqueeze(1)  # (B, 1, P)
    return batch


def _head_input(features: Tensor) -> Tensor:
    return features[:, -1] if features.dim() == 3 else features  # (B, T, W): the current frame


def head_and_value(policy: Policy, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Head output and value ``(B,)``, sharing the trunk where the policy has one."""
    if hasattr(policy, "forward_with_value"):
        return policy.forward_with_value(batch)
    features = _head_input(policy.features(batch))
    return policy.head(features), policy.value_head(features).squeeze(-1)


def head_output(policy: Policy, batch: dict[str, Any]) -> Tensor:
    return policy.head(_head_input(policy.features(batch)))
