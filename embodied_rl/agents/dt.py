"""Decision Transformer (Chen et al. 2021, arXiv:2106.01345): return-conditioned sequence BC.

A causal transformer reads ``(R_1, s_1, a_1, ..., R_K, s_K, a_K)`` (return-to-go, state,
action tokens, each plus a timestep embedding) and predicts ``a_t`` from the output at
``s_t``. Acting starts from a target return (the dataset's expert reference by default) and
subtracts each received reward; the evaluation loop reports rewards through
``observe_reward``. The policy is registered as ``"dt"`` so checkpoints rebuild it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.agents.base import Agent, register_agent
from embodied_rl.agents.losses import masked_mse
from embodied_rl.policies.base import Policy, register_policy
from embodied_rl.policies.heads import ActionHead
from embodied_rl.policies.normalization import ObservationNormalizer


@dataclass(frozen=True)
class DTPolicyConfig:
    """Architecture of the Decision Transformer; defaults: the paper's Gym settings."""

    obs_dim: int = 96  # the tabletop state with four objects
    action_low: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0)
    action_high: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    obs_key: str = "state"
    context: int = 20  # K: timesteps in the window
    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    dropout: float = 0.1
    max_timestep: int = 1000  # size of the timestep embedding table
    return_scale: float = 1.0  # returns are divided by this (the paper: 1000 for Gym)
    target_return: float = 1.0  # return-to-go at the first step when acting
    normalize_obs: bool = True  # standardise states with the data's statistics (as the paper)

    def __post_init__(self) -> None:
        for name in ("obs_dim", "context", "embed_dim", "n_layers", "n_heads", "max_timestep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.embed_dim % self.n_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by n_heads={self.n_heads}"
            )
        if self.return_scale <= 0:
            raise ValueError(f"return_scale={self.return_scale} must be > 0")


@register_policy("dt")
class DecisionTransformerPolicy(Policy):
    """Batches: ``obs`` ``{obs_key: (B, K, O)}``, ``action`` ``(B, K, A)``, ``return_to_go``
    ``(B, K)``, ``timestep`` ``(B, K)`` int64, ``mask`` ``(B, K)`` bool (False: padding)."""

    config_class = DTPolicyConfig

    def __init__(self, config: DTPolicyConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.embed_dim
        self.head = ActionHead(d, c.action_low, c.action_high, "deterministic")
        a = self.head.action_dim
        self.obs_norm = ObservationNormalizer(c.obs_dim, c.obs_key) if c.normalize_obs else None
        self.embed_state, self.embed_action = nn.Linear(c.obs_dim, d), nn.Linear(a, d)
        self.embed_return, self.embed_time = nn.Linear(1, d), nn.Embedding(c.max_timestep, d)
        self.norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(
            d, c.n_heads, 4 * d, c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self._history: dict[str, collections.deque] = {}
        self.reset()

    def features(self, batch: dict[str, Any]) -> Tensor:
        c = self.config
        states = batch["obs"][c.obs_key].float()  # (B, K, O)
        if self.obs_norm is not None:
            states = self.obs_norm(states)
        b, k = states.shape[:2]
        time = self.embed_time(batch["timestep"].clamp(0, c.max_timestep - 1))  # (B, K, D)
        returns = (batch["return_to_go"].float() / c.return_scale).unsqueeze(-1)  # (B, K, 1)
        tokens = torch.stack(
            [
                self.embed_return(returns) + time,
                self.embed_state(states) + time,
                self.embed_action(batch["action"].float()) + time,
            ],
            dim=2,
        ).reshape(b, 3 * k, -1)  # (B, 3K, D): R_1, s_1, a_1, R_2, ...
        valid = batch["mask"].repeat_interleave(3, dim=1)  # (B, 3K)
        causal = torch.ones(3 * k, 3 * k, dtype=torch.bool).tril()
        allowed = (causal & valid[:, None, :]) | torch.eye(3 * k, dtype=torch.bool)  # (B, 3K, 3K)
        attn = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
        out = self.transformer(self.norm(tokens), mask=attn.repeat_interleave(c.n_heads, dim=0))
        return out.view(b, k, 3, -1)[:, :, 1]  # (B, K, D) outputs at the state tokens

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.head(self.features(batch))  # (B, K, A)

    # ------------------------------------------------------------------ acting
    def reset(self) -> None:
        k = self.config.context
        self._history = {name: collections.deque(maxlen=k) for name in ("obs", "action", "rtg")}
        self._return_to_go, self._t = float(self.config.target_return), 0

    def observe_reward(self, reward: float) -> None:
        """Subtract a received reward from the return still to collect."""
        self._return_to_go -= float(reward)

    @torch.no_grad()
    def act(self, obs: dict[str, Any], deterministic: bool = True) -> np.ndarray:
        c, h = self.config, self._history
        h["obs"].append(torch.as_tensor(np.asarray(obs[c.obs_key]), dtype=torch.float32))
        h["action"].append(torch.zeros(self.head.action_dim))
        h["rtg"].append(self._return_to_go)
        n = len(h["obs"])
        start = max(0, self._t - n + 1)
        batch = {
            "obs": {c.obs_key: torch.stack(list(h["obs"]))[None]},
            "action": torch.stack(list(h["action"]))[None],
            "return_to_go": torch.tensor([list(h["rtg"])]),
            "timestep": torch.arange(start, start + n)[None],
            "mask": torch.ones(1, n, dtype=torch.bool),
        }
        action = self(batch)[0, -1]
        h["action"][-1] = action
        self._t += 1
        return action.numpy().astype(np.float32)


@dataclass(frozen=True)
class DTConfig:
    """Training of the Decision Transformer; defaults: the paper's Gym settings (AdamW)."""

    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000  # linear learning-rate warm-up
    grad_clip: float = 0.25  # gradient-norm clip

    def __post_init__(self) -> None:
        if (
            self.learning_rate <= 0
            or self.weight_decay < 0
            or self.warmup_steps < 0
            or self.grad_clip <= 0
        ):
            raise ValueError(
                f"learning_rate={self.learning_rate} and grad_clip={self.grad_clip} must be > 0, weight_decay="
                f"{self.weight_decay} and warmup_steps={self.warmup_steps} >= 0"
            )


@register_agent("dt")
class DTAgent(Agent):
    config_class = DTConfig
    uses_history = True

    def __init__(self, policy: Policy, config: DTConfig) -> None:
        if not isinstance(policy, DecisionTransformerPolicy):
            raise TypeError(
                f"the dt agent trains a DecisionTransformerPolicy; got {type(policy).__name__}"
            )
        super().__init__(policy, config)
        self.optimizer = torch.optim.AdamW(
            policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        c = self.config
        warm = min(1.0, (self.step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = c.learning_rate * warm
        loss = masked_mse(self.policy(batch), batch["action"], batch["mask"])
        self.check_finite({"action_loss": loss})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {"action_loss": loss.item(), "lr": c.learning_rate * warm}
