"""TD3+BC (Fujimoto & Gu 2021, arXiv:2106.06860): TD3 with a behaviour-cloning term.

The critics learn TD3's target, ``r + gamma min_i Q'_i(s', clip(pi'(s') + clip(eps, -c, c)))``
with target-policy smoothing noise ``eps ~ N(0, sigma)``; every ``policy_delay`` steps the
deterministic actor minimises ``-lambda Q_1(s, pi(s)) + ||pi(s) - a||^2`` with
``lambda = alpha / mean |Q|`` (:func:`~embodied_rl.agents.losses.td3bc_actor_loss`), and the
target actor and critics move by Polyak averaging. The paper's other ingredient, observation
standardisation with the data's statistics, is what the policy's and critics' normalisers do.
The actor is a flat policy with a deterministic (tanh-squashed) head: ``default_policy("td3bc",
data)`` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embodied_rl.agents.base import (
    Agent,
    adam,
    as_obs_dict,
    critic_obs,
    critics_for,
    register_agent,
)
from embodied_rl.agents.critics import make_target, polyak_update
from embodied_rl.agents.losses import td3bc_actor_loss, td_loss
from embodied_rl.policies.base import Policy
from embodied_rl.utils.precision import check_precision


@dataclass(frozen=True)
class TD3BCConfig:
    """TD3+BC; defaults: the paper's (and CORL's) MuJoCo locomotion settings."""

    alpha: float = 2.5  # weight of the RL term against BC (lambda = alpha / mean |Q|)
    policy_noise: float = 0.2  # target smoothing noise std, in units of half the action range
    noise_clip: float = 0.5  # its clip, same units
    policy_delay: int = 2  # critic steps per actor (and target) step
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target actor and critics
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)  # critic MLP widths
    n_critics: int = 2  # clipped double Q
    critic_obs_key: str | None = None  # the critics' input; None: the policy's obs_key
    critic_obs_dim: int = 0  # 0: the policy's obs_dim
    normalize_obs: bool = True  # critics standardise their observations (data statistics)
    reward_scale: float = 1.0  # training reward = reward_scale * r + reward_bias
    reward_bias: float = 0.0
    precision: str = "fp32"  # "bf16": hidden-layer matmuls under bf16 autocast

    def __post_init__(self) -> None:
        for name in ("actor_learning_rate", "critic_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("alpha", "policy_noise", "noise_clip"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name}={getattr(self, name)} must be >= 0 (paper: 2.5, 0.2, 0.5)"
                )
        if self.policy_delay < 1 or self.n_critics < 1:
            raise ValueError(
                f"policy_delay={self.policy_delay} and n_critics={self.n_critics} must be >= 1"
            )
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(
                f"discount={self.discount} must lie in [0, 1] and tau={self.tau} in (0, 1]"
            )
        check_precision(self.precision)


@register_agent("td3bc")
class TD3BCAgent(Agent):
    config_class = TD3BCConfig

    def __init__(self, policy: Policy, config: TD3BCConfig) -> None:
        super().__init__(policy, config)
        if policy.head.kind != "deterministic":
            raise ValueError(
                f"TD3+BC trains a deterministic actor; the policy has head={policy.head.kind!r}: "
                "build it with head='deterministic' (default_policy('td3bc', data) does)"
            )
        c = config
        self.critic = critics_for(policy, c)
        self.target_critic = make_target(self.critic)
        self.target_policy = make_target(policy)
        self.optimizer = adam(
            [
                {
                    "params": [p for p in policy.parameters() if p.requires_grad],
                    "lr": c.actor_learning_rate,
                },
                {"params": list(self.critic.parameters()), "lr": c.critic_learning_rate},
            ]
        )

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "policy": self.policy,
            "critic": self.critic,
            "target_critic": self.target_critic,
            "target_policy": self.target_policy,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def fit_observation_normalizers(self, observations: dict[str, Any]) -> int:
        fitted = super().fit_observation_normalizers(observations)
        self.target_policy.load_state_dict(self.policy.state_dict())  # the same statistics
        return fitted

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        with self.autocast():
            return self._update(batch)

    def _update(self, batch: dict[str, Any]) -> dict[str, float]:
        c, head = self.config, self.policy.head
        if "history" in batch:
            raise ValueError("TD3+BC acts on flat observations; use an MLP or CNN policy")
        obs, next_obs = critic_obs(batch, self.critic_obs_key)
        action = batch["action"]
        half_range = (head.high - head.low) / 2
        with torch.no_grad():
            noise = torch.randn_like(action) * c.policy_noise * half_range
            noise = torch.maximum(torch.minimum(noise, c.noise_clip * half_range),
                                  -c.noise_clip * half_range)  # fmt: skip
            next_action = self.target_policy(as_obs_dict(self.policy, batch["next_obs"])) + noise
            next_action = torch.maximum(torch.minimum(next_action, head.high), head.low)
            target_q = self.target_critic(next_obs, next_action).min(0).values  # (B,)
            q_target = batch["reward"] + batch["discount"] * target_q
        q_data = self.critic(obs, action)  # (E, B)
        losses = {"critic_loss": td_loss(q_data, q_target)}
        actor_step = (self.step + 1) % c.policy_delay == 0
        metrics: dict[str, float] = {}
        if actor_step:
            pi = self.policy(as_obs_dict(self.policy, batch["obs"]))  # (B, A)
            q_pi = self.critic(obs, pi, detach_params=True)[0]  # Q_1 (B,)
            losses["actor_loss"] = td3bc_actor_loss(q_pi, pi, action, c.alpha)
            metrics["bc_mse"] = (pi - action).square().mean().item()
        self.optimize(self.optimizer, losses)
        if actor_step:
            polyak_update(self.target_critic, self.critic, c.tau)
            polyak_update(self.target_policy, self.policy, c.tau)
        return {
            **{k: v.item() for k, v in losses.items()},
            **metrics,
            "q_data": q_data.mean().item(),
        }
