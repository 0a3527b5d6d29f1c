"""Conservative Q-Learning (Kumar, Zhou, Tucker, Levine 2020, arXiv:2006.04779), CQL(H) on SAC.

The critics minimise the TD error plus ``alpha * (logsumexp_a Q(s, a) - Q(s, a_data))``,
estimated with 10 uniform and 2 x 10 policy actions per state (importance-sampled, as in
the authors' code); with ``lagrange=True`` a learned ``alpha'`` holds that gap near
``target_action_gap``. The actor is SAC's, a tanh-squashed Gaussian (``head='tanh_gaussian'``,
the default policy), with automatic entropy tuning. The critic
ensemble evaluates the dataset action and all 30 sampled actions of a state in one
batched call, and actor, critics and temperatures update with one backward (their losses
touch disjoint parameters: the actor's loss reads the critics through detached weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from embodied_rl.agents.base import (
    Agent,
    adam,
    as_obs_dict,
    critic_obs,
    critics_for,
    policy_action_dim,
    register_agent,
)
from embodied_rl.agents.critics import make_target, polyak_update
from embodied_rl.agents.losses import (
    cql_lagrange,
    cql_penalty,
    sac_actor_loss,
    td_loss,
    temperature_loss,
    uniform_log_density,
)
from embodied_rl.policies.base import Policy
from embodied_rl.utils.precision import check_precision


@dataclass(frozen=True)
class CQLConfig:
    """CQL(H) (Kumar et al. 2020, arXiv:2006.04779); defaults: the paper's D4RL settings and
    the authors' code (``min_q_weight=5``, 10 sampled actions, policy lr 1e-4)."""

    alpha: float = 5.0  # weight of the conservative gap (min_q_weight)
    lagrange: bool = False  # learn alpha' so that the gap stays near target_action_gap
    target_action_gap: float = 10.0  # tau of CQL-Lagrange (the paper's AntMaze value)
    n_actions: int = 10  # uniform and policy actions sampled per state for the logsumexp
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 3e-4  # also alpha' of the Lagrange variant
    temperature_learning_rate: float = 1e-4  # SAC entropy temperature
    target_entropy: float | None = None  # None: -action_dim (SAC)
    backup_entropy: bool = False  # subtract alpha log pi in the TD target (off in the paper)
    bc_steps: int = 0  # steps of behaviour-cloning actor warm-up (the paper: 10k-40k)
    hidden: tuple[int, ...] = (256, 256)  # the paper uses 3 x 256; d3rlpy 2 x 256
    n_critics: int = 2
    critic_obs_key: str | None = None  # the critics' input; None: the policy's obs_key
    critic_obs_dim: int = 0  # 0: the MLP policy's obs_dim
    normalize_obs: bool = True  # critics standardise their observations (data statistics)
    # training reward = reward_scale * r + reward_bias; CORL's Cal-QL uses 10 and -5 on
    # AntMaze (Monte-Carlo returns of Cal-QL are computed from the transformed rewards)
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # "bf16": hidden-layer matmuls in bf16 under autocast (1.8x on a CPU with AVX512-BF16);
    # weights, Q-values and losses stay fp32 (embodied_rl.utils.precision)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha} must be >= 0 (5.0 in the paper)")
        if self.n_actions < 1:
            raise ValueError(f"n_actions={self.n_actions} must be >= 1 (10 in the paper)")
        for name in ("actor_learning_rate", "critic_learning_rate", "temperature_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(
                f"discount={self.discount} must lie in [0, 1] and tau={self.tau} in (0, 1]"
            )
        if self.n_critics < 1 or self.bc_steps < 0:
            raise ValueError(f"n_critics={self.n_critics} and bc_steps={self.bc_steps} invalid")
        check_precision(self.precision)


@register_agent("cql")
class CQLAgent(Agent):
    config_class = CQLConfig

    def __init__(self, policy: Policy, config: CQLConfig) -> None:
        super().__init__(policy, config)
        if policy.head.kind not in ("tanh_gaussian", "gaussian"):
            raise ValueError(
                f"{type(self).__name__} needs a stochastic policy: head={policy.head.kind!r}; "
                "build the policy with head='tanh_gaussian' (SAC's, the default) or 'gaussian'"
            )
        c = config
        action_dim = policy_action_dim(policy)
        self.critic = critics_for(policy, c)
        self.target_critic = make_target(self.critic)
        self.log_alpha = torch.nn.Parameter(torch.zeros(()))  # SAC temperature
        self.log_alpha_prime = torch.nn.Parameter(torch.zeros(()))  # CQL-Lagrange alpha'
        self.target_entropy = -action_dim if c.target_entropy is None else c.target_entropy
        self.log_uniform = uniform_log_density(policy.head.low, policy.head.high)
        self.optimizer = adam(
            [
                {
                    "params": [p for p in policy.parameters() if p.requires_grad],
                    "lr": c.actor_learning_rate,
                },
                {"params": list(self.critic.parameters()), "lr": c.critic_learning_rate},
                {"params": [self.log_alpha], "lr": c.temperature_learning_rate},
                {"params": [self.log_alpha_prime], "lr": c.critic_learning_rate},
            ]
        )

    def modules(self) -> dict[str, torch.nn.Module]:
        temperatures = torch.nn.ParameterDict(
            {"log_alpha": self.log_alpha, "log_alpha_prime": self.log_alpha_prime}
        )
        return {
            "policy": self.policy,
            "critic": self.critic,
            "target_critic": self.target_critic,
            "temperatures": temperatures,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def calibrate(self, q_policy: Tensor, batch: dict[str, Any]) -> Tensor:
        """Hook on the Q of policy actions in the penalty (Cal-QL lower-bounds it)."""
        return q_policy

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        with self.autocast():
            return self._update(batch)

    def _update(self, batch: dict[str, Any]) -> dict[str, float]:
        c, head, n = self.config, self.policy.head, self.config.n_actions
        obs, next_obs = critic_obs(batch, self.critic_obs_key)
        action = batch["action"]
        alpha = self.log_alpha.exp()

        out = self.policy(as_obs_dict(self.policy, batch["obs"]))  # (B, A) mean action
        pi, log_pi = head.rsample(out, 1)  # (B, 1, A), (B, 1)
        if self.step < c.bc_steps:
            actor_loss = (alpha.detach() * log_pi[:, 0] - head.log_prob(out, action)).mean()
        else:
            q_pi = self.critic(obs, pi, detach_params=True).min(0).values  # (B, 1)
            actor_loss = sac_actor_loss(q_pi, log_pi, alpha)
        losses = {
            "actor_loss": actor_loss,
            "temperature_loss": temperature_loss(self.log_alpha, log_pi, self.target_entropy),
        }

        with torch.no_grad():
            next_out = self.policy(as_obs_dict(self.policy, batch["next_obs"]))  # (B, A)
            next_pi, next_log_pi = head.rsample(next_out, n)  # (B, n, A)
            target_q = self.target_critic(next_obs, next_pi[:, :1]).min(0).values[:, 0]  # (B,)
            if c.backup_entropy:
                target_q = target_q - alpha * next_log_pi[:, 0]
            q_target = batch["reward"] + batch["discount"] * target_q
            pi_now, log_pi_now = head.rsample(out, n)
            low, high = head.low, head.high
            random = low + (high - low) * torch.rand(obs.shape[0], n, len(low))  # (B, n, A)
        actions = torch.cat([action.unsqueeze(1), random, pi_now, next_pi], dim=1)  # (B, 1+3n, A)
        q_all = self.critic(obs, actions)  # (E, B, 1 + 3n)
        q_data, q_random, q_policy = q_all[..., 0], q_all[..., 1 : 1 + n], q_all[..., 1 + n :]
        q_calibrated = self.calibrate(q_policy, batch)
        q_sampled = torch.cat([q_random, q_calibrated], dim=-1)  # (E, B, 3n)
        log_density = torch.cat(
            [torch.full_like(log_pi_now, self.log_uniform), log_pi_now, next_log_pi], dim=-1
        )  # (B, 3n)
        gap = cql_penalty(q_sampled, log_density, q_data)  # (E,)
        if c.lagrange:
            conservative, losses["alpha_prime_loss"], alpha_prime = cql_lagrange(
                c.alpha * gap, self.log_alpha_prime, c.target_action_gap
            )
        else:
            conservative, alpha_prime = c.alpha * gap.sum(), torch.tensor(c.alpha)
        td = td_loss(q_data, q_target)
        losses["critic_loss"] = td + conservative
        self.optimize(self.optimizer, losses)
        polyak_update(self.target_critic, self.critic, c.tau)
        metrics = {}
        if q_calibrated is not q_policy:  # Cal-QL: how often the lower bound replaced Q
            metrics["bound_share"] = (q_calibrated > q_policy).float().mean().item()
        return {
            **{k: v.item() for k, v in losses.items()},
            **metrics,
            "td_loss": td.item(),
            "cql_gap": gap.mean().item(),
            "q_data": q_data.mean().item(),
            "alpha": alpha.item(),
            "alpha_prime": float(alpha_prime),
        }
