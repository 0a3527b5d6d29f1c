"""The agent interface, the agent registry and helpers every algorithm shares.

An agent owns a policy (the actor), its own extra networks (critics, value) and one
optimiser per learning rate group. ``update(batch)`` does one gradient step and returns
``dict[str, float]`` metrics; the shared loop in :mod:`embodied_rl.agents.trainer` does the
rest. ``modules()`` and ``optimizers()`` expose what a checkpoint stores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.agents.critics import QEnsemble
from embodied_rl.config import ConfigError, from_dict
from embodied_rl.policies.base import Policy
from embodied_rl.policies.normalization import fit_observation_normalizers
from embodied_rl.rl.errors import NonFiniteLossError
from embodied_rl.utils.precision import autocast

_AGENTS: dict[str, type[Agent]] = {}


def register_agent(name: str):
    """Class decorator: build the agent by name and rebuild it from a checkpoint's JSON."""

    def add(cls: type[Agent]) -> type[Agent]:
        if name in _AGENTS:
            raise ValueError(f"agent name {name!r} is taken by {_AGENTS[name].__qualname__}")
        _AGENTS[name] = cls
        cls.agent_type = name
        return cls

    return add


def agent_class(name: str) -> type[Agent]:
    if name not in _AGENTS:
        raise KeyError(f"unknown agent {name!r}; choose one of {sorted(_AGENTS)}")
    return _AGENTS[name]


def make_agent(name: str, policy: Policy, config: Any = None) -> Agent:
    """Build agent ``name`` around ``policy`` (``config`` None: the paper defaults)."""
    cls = agent_class(name)
    return cls(policy, config if config is not None else cls.config_class())


def list_agents() -> list[str]:
    return sorted(_AGENTS)


def config_from_dict(config_class: type, values: dict[str, Any], source: str = "config") -> Any:
    """``config_class`` from a YAML/JSON mapping, every key and type checked (lists become
    tuples where the field is a tuple); errors name ``source`` and the key."""
    try:
        return from_dict(config_class, values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def action_chunk(policy: Policy) -> int:
    """Actions the policy predicts per step (``VLAConfig.action_chunk``; 1 for the others)."""
    return int(getattr(policy.config, "action_chunk", 1))


def check_single_action(policy: Policy, user: str, chunks_allowed: bool = False) -> None:
    """Value-based and on-policy learners score one action per step: refuse action chunks."""
    if action_chunk(policy) > 1 and not chunks_allowed:
        raise ValueError(
            f"{user} scores one action per step, but the policy predicts chunks of "
            f"action_chunk={action_chunk(policy)}; train chunked policies with BC, or build "
            "the policy with action_chunk=1"
        )


class Agent(ABC):
    """One offline RL algorithm: a config, a policy, extra networks and ``update``."""

    agent_type: ClassVar[str] = ""
    config_class: ClassVar[type]
    uses_history: ClassVar[bool] = False  # DT: sequence batches instead of transitions
    sampler_options: ClassVar[dict[str, Any]] = {}  # extra AgentSampler options (Cal-QL)
    trains_action_chunks: ClassVar[bool] = False  # BC: policies that predict k actions per step
    needs_preferences: ClassVar[bool] = False  # CPL: batches of labelled segment pairs

    def __init__(self, policy: Policy, config: Any) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}; got {type(config).__name__}"
            )
        check_single_action(policy, type(self).__name__, self.trains_action_chunks)
        self.policy, self.config = policy, config
        self.step = 0  # gradient steps taken

    @abstractmethod
    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One gradient step on ``batch``; returns float metrics (losses and diagnostics)."""

    @property
    def critic_obs_key(self) -> str:
        """The observation key the critics read (see :func:`critic_obs_key`)."""
        return critic_obs_key(self.policy, self.config)

    def modules(self) -> dict[str, nn.Module]:
        """Every network a checkpoint stores, by name (the policy is ``"policy"``)."""
        return {"policy": self.policy}

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser a checkpoint stores, by name."""

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The deterministic action of the policy for one environment observation."""
        return self.policy.act(obs)

    def fit_observation_normalizers(self, observations: dict[str, np.ndarray]) -> int:
        """Fit the observation statistics of every network that standardises its inputs
        and has not been fitted yet (a pretrained policy keeps its own); returns how many."""
        return fit_observation_normalizers(self.modules().values(), observations)

    def train_mode(self, training: bool = True) -> None:
        for module in self.modules().values():
            module.train(training)

    # ------------------------------------------------------------------ helpers
    def autocast(self) -> AbstractContextManager[None]:
        """The update's precision context: bf16 autocast when the config sets
        ``precision="bf16"`` (see :mod:`embodied_rl.utils.precision`), else nothing."""
        device = next(self.policy.parameters()).device.type
        return autocast(getattr(self.config, "precision", "fp32"), device)

    def check_finite(self, losses: dict[str, Tensor]) -> None:
        """Raise :class:`NonFiniteLossError` naming the first non-finite loss (one sync)."""
        values = torch.stack([v.detach().float() for v in losses.values()])
        if not bool(torch.isfinite(values).all()):
            for (name, _), value in zip(losses.items(), values.tolist(), strict=True):
                if not np.isfinite(value):
                    raise NonFiniteLossError(name, self.step, value)

    def optimize(self, optimizer: torch.optim.Optimizer, losses: dict[str, Tensor]) -> None:
        """Check the losses, then one backward of their sum and one optimiser step.

        The losses must touch disjoint parameters (the agents detach across networks), so a
        single backward equals one backward per network at a fraction of the overhead."""
        self.check_finite(losses)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        self.step += 1


def adam(groups: list[dict[str, Any]], **kwargs: Any) -> torch.optim.Adam:
    """Adam over parameter groups, fused into one kernel per step where torch supports it."""
    try:
        return torch.optim.Adam(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, foreach=True, **kwargs)


def critic_obs(batch: dict[str, Any], key: str) -> tuple[Tensor, Tensor]:
    """The critics' flat inputs ``(B, O)`` of ``obs`` and ``next_obs`` from a transition batch."""
    obs, next_obs = batch["obs"], batch["next_obs"]
    if isinstance(obs, dict):
        if key not in obs:
            raise KeyError(
                f"critic_obs_key={key!r} is not in the batch's observations {sorted(obs)}; "
                "load the dataset with that key (critics need a flat state vector)"
            )
        obs, next_obs = obs[key], next_obs[key]
    return obs.float(), next_obs.float()


def as_obs_dict(policy: Policy, obs: Any) -> dict[str, Any]:
    """A batch's observations as the policy reads them: a plain ``Box`` dataset's samplers
    give the array itself, which is the policy's ``obs_key``."""
    return obs if isinstance(obs, dict) else {policy.config.obs_key: obs}


def policy_input(policy: Policy, batch: dict[str, Any]) -> dict[str, Any]:
    """The policy's training input for a transition batch: the observation dict for flat
    policies; for the VLA policy the frame history, instructions and frame mask (the sampler
    adds ``history`` when built with ``history=k``)."""
    if "history" not in batch:
        return as_obs_dict(policy, batch["obs"])
    history = batch["history"]
    out = {
        "images": history["image"],  # (B, k, H, W, 3) uint8
        "instructions": [row[-1] for row in history["instruction"]],
        "frame_mask": batch["history_mask"],  # (B, k)
    }
    if "proprio" in history:
        out["proprio"] = history["proprio"]  # (B, k, P)
    return out


def current_output(out: Tensor, policy: Policy, batch: dict[str, Any]) -> Tensor:
    """Head output of the current step: the last frame of a history policy's output."""
    return out[:, -1] if "history" in batch else out


def critic_obs_dim(policy: Policy, configured: int) -> int:
    """The critics' input size: ``configured`` if set, else the MLP policy's ``obs_dim``."""
    if configured:
        return configured
    if getattr(policy.config, "obs_dim", 0):
        return int(policy.config.obs_dim)
    raise ValueError(
        f"critic_obs_dim=0 but {type(policy).__name__} has no obs_dim; set critic_obs_dim to "
        "the size of the state the critics read (96 for the tabletop suite)"
    )


def policy_action_dim(policy: Policy) -> int:
    return int(policy.head.action_dim)


def critic_obs_key(policy: Policy, config: Any) -> str:
    """The observation key the critics read: the config's ``critic_obs_key``, else the
    policy's ``obs_key`` (``"observation"`` for a plain ``Box`` dataset), else ``"state"``."""
    key = getattr(config, "critic_obs_key", None)
    return key or getattr(policy.config, "obs_key", None) or "state"


def critics_for(policy: Policy, config: Any) -> QEnsemble:
    """The Q ensemble of an actor-critic agent from its config's ``critic_obs_dim``,
    ``hidden``, ``n_critics``, ``critic_obs_key`` and ``normalize_obs``."""
    key = critic_obs_key(policy, config) if config.normalize_obs else None
    obs_dim = critic_obs_dim(policy, config.critic_obs_dim)
    return QEnsemble(obs_dim, policy_action_dim(policy), config.hidden, config.n_critics, key)
