"""Implicit Q-Learning (Kostrikov, Nair, Levine 2021, arXiv:2110.06169).

V is fitted to an upper expectile of the target Q (never querying unseen actions), Q to the
one-step target ``r + gamma V(s')``, and the policy by advantage-weighted regression:
the weights ``exp(beta (Q - V))`` multiply the behaviour-cloning loss of the policy's head
(Gaussian log-likelihood, MSE, or action-token cross-entropy for the VLA policy).

Critics always read a flat state vector (``critic_obs_key``; default the policy's ``obs_key``,
``"state"`` for image policies): with the
VLA policy the actor sees images and instructions while V and Q see the low-dimensional
state stored beside them (an asymmetric actor-critic; collect ``obs_mode="rgb+state"``).
Value, critic and actor losses touch disjoint parameters, so one backward and one fused
Adam step update all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embodied_rl.agents.base import (
    Agent,
    adam,
    critic_obs,
    critic_obs_dim,
    critics_for,
    current_output,
    policy_input,
    register_agent,
)
from embodied_rl.agents.critics import ValueNetwork, make_target, polyak_update
from embodied_rl.agents.losses import awr_weights, behavior_loss, expectile_loss, td_loss
from embodied_rl.policies.base import Policy
from embodied_rl.utils.precision import check_precision


@dataclass(frozen=True)
class IQLConfig:
    """Implicit Q-Learning (Kostrikov et al. 2021, arXiv:2110.06169); defaults: the paper's
    MuJoCo locomotion settings (appendix B)."""

    expectile: float = 0.7  # tau in L2^tau; 0.5 makes V a plain mean; 0.9 for AntMaze
    temperature: float = 3.0  # beta in the AWR weight exp(beta * A); 10 for AntMaze
    max_weight: float = 100.0  # clip of the AWR weight
    discount: float = 0.99  # gamma
    tau: float = 0.005  # Polyak rate of the target critics
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4  # Q and V
    hidden: tuple[int, ...] = (256, 256)  # critic and value MLP widths
    n_critics: int = 2  # clipped double Q: the target is the ensemble minimum
    critic_obs_key: str | None = None  # the critics' input; None: the policy's obs_key
    critic_obs_dim: int = 0  # its size; 0: the MLP policy's obs_dim (set it for the VLA policy)
    normalize_obs: bool = True  # critics standardise their observations (data statistics)
    # training reward = reward_scale * r + reward_bias (offline data and online transitions);
    # the paper uses bias -1 on AntMaze's sparse 0/1 reward, which turns Q into minus the
    # steps to the goal so that advantages are O(1) instead of O(1 - gamma)
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # "bf16": hidden-layer matmuls in bf16 under autocast (1.4x IQL, 1.8x CQL on a CPU
    # with AVX512-BF16); weights, outputs and losses stay fp32 (embodied_rl.utils.precision)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(
                f"expectile={self.expectile} must lie in (0, 1); "
                "0.7 is the paper's value for locomotion, 0.9 for AntMaze."
            )
        for name in ("temperature", "max_weight", "actor_learning_rate", "critic_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(
                f"discount={self.discount} must lie in [0, 1] and tau={self.tau} in (0, 1]"
            )
        if self.n_critics < 1:
            raise ValueError(f"n_critics={self.n_critics} must be >= 1")
        check_precision(self.precision)


@register_agent("iql")
class IQLAgent(Agent):
    config_class = IQLConfig

    def __init__(self, policy: Policy, config: IQLConfig) -> None:
        super().__init__(policy, config)
        c = config
        self.critic = critics_for(policy, c)
        obs_dim = critic_obs_dim(policy, c.critic_obs_dim)
        key = self.critic_obs_key if c.normalize_obs else None
        self.target_critic = make_target(self.critic)
        self.value = ValueNetwork(obs_dim, c.hidden, key)
        actor = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = adam(
            [
                {"params": actor, "lr": c.actor_learning_rate},
                {"params": [*self.critic.parameters(), *self.value.parameters()]},
            ],
            lr=c.critic_learning_rate,
        )

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "policy": self.policy,
            "critic": self.critic,
            "target_critic": self.target_critic,
            "value": self.value,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        with self.autocast():
            return self._update(batch)

    def _update(self, batch: dict[str, Any]) -> dict[str, float]:
        c = self.config
        obs, next_obs = critic_obs(batch, self.critic_obs_key)
        action = batch["action"]
        with torch.no_grad():
            target_q = self.target_critic(obs, action).min(0).values  # (B,)
            next_v = self.value(next_obs)  # (B,)
            q_target = batch["reward"] + batch["discount"] * next_v  # (B,)
        v = self.value(obs)  # (B,)
        value_loss = expectile_loss(target_q - v, c.expectile)
        critic_loss = td_loss(self.critic(obs, action), q_target)
        advantage = (target_q - v).detach()
        weights = awr_weights(advantage, c.temperature, c.max_weight)
        out = current_output(self.policy(policy_input(self.policy, batch)), self.policy, batch)
        actor_loss, extra = behavior_loss(self.policy.head, out, action, weights)
        losses = {"value_loss": value_loss, "critic_loss": critic_loss, "actor_loss": actor_loss}
        self.optimize(self.optimizer, losses)
        polyak_update(self.target_critic, self.critic, c.tau)
        return {
            **{k: v.item() for k, v in losses.items()},
            "v_mean": v.mean().item(),
            "advantage_mean": advantage.mean().item(),
            "weight_mean": weights.mean().item(),
            **extra,
        }
