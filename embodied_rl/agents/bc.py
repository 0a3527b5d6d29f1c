"""Behaviour cloning: maximise the likelihood of the dataset's actions.

The loss follows the policy's head: MSE for a deterministic head, Gaussian negative
log-likelihood for a Gaussian head, action-token cross-entropy for a token head (RT-1).
Works with the MLP policy (state batches) and the VLA policy (frame-history batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from embodied_rl.agents.base import (
    Agent,
    action_chunk,
    adam,
    current_output,
    policy_input,
    register_agent,
)
from embodied_rl.agents.losses import behavior_loss
from embodied_rl.policies.base import Policy


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning (Pomerleau 1989; RT-1 uses Adam 1e-4 on tokens)."""

    learning_rate: float = 3e-4  # Adam learning rate (CORL's BC; RT-1 uses 1e-4)
    weight_decay: float = 0.0  # L2 penalty of Adam
    # "action": imitate the recorded (executed) actions; "expert": imitate the expert's
    # noise-free action stored with noise-injected demonstrations (DART, Laskey et al. 2017)
    labels: str = "action"
    # learning-rate schedule: linear warm-up over warmup_steps, then cosine decay to 0 at
    # decay_steps (0: constant after the warm-up), as transformer BC recipes use
    warmup_steps: int = 0
    decay_steps: int = 0

    def __post_init__(self) -> None:
        if self.labels not in ("action", "expert"):
            raise ValueError(f"labels={self.labels!r} must be 'action' or 'expert'")
        if self.warmup_steps < 0 or self.decay_steps < 0:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} and decay_steps={self.decay_steps} must be >= 0"
            )
        if self.decay_steps and self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"decay_steps={self.decay_steps} must exceed warmup_steps={self.warmup_steps} "
                "(or be 0: no decay)"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")


def scheduled_lr(step: int, lr: float, warmup_steps: int = 0, decay_steps: int = 0) -> float:
    """The learning rate of gradient step ``step`` (0-based): ``lr * (step + 1) / warmup``
    during the warm-up, then ``lr`` or, with ``decay_steps``, a cosine from ``lr`` at the end of
    the warm-up to 0 at ``decay_steps`` (and 0 after)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if not decay_steps:
        return lr
    progress = min(1.0, (step - warmup_steps) / (decay_steps - warmup_steps))
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@register_agent("bc")
class BCAgent(Agent):
    """``update``: one step of :func:`~embodied_rl.agents.losses.behavior_loss`."""

    config_class = BCConfig

    def __init__(self, policy: Policy, config: BCConfig) -> None:
        super().__init__(policy, config)
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = adam(
            [{"params": params}], lr=config.learning_rate, weight_decay=config.weight_decay
        )

    trains_action_chunks = True

    @property
    def sampler_options(self) -> dict[str, Any]:  # type: ignore[override]
        return {"labels": self.config.labels, "action_chunk": action_chunk(self.policy)}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        out = current_output(self.policy(policy_input(self.policy, batch)), self.policy, batch)
        target = batch["label"] if "label" in batch else batch["action"]
        loss, metrics = behavior_loss(self.policy.head, out, target)
        c = self.config
        lr = scheduled_lr(self.step, c.learning_rate, c.warmup_steps, c.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimize(self.optimizer, {"bc_loss": loss})
        return {"bc_loss": loss.item(), "lr": lr, **metrics}
