"""PPO's maths, shared by robot PPO (:mod:`embodied_rl.agents.ppo`) and PPO-RLHF on language
models (:mod:`embodied_rl.llm.ppo_rlhf`): generalized advantage estimation, the clipped
surrogate, the (clipped) value loss, KL estimators and the fixed and adaptive KL controllers.
Pure functions of tensors, as the preference losses are; neither package imports the other
for them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k3")


def gae(
    rewards: Tensor,  # (T, N)
    values: Tensor,  # (T, N) V(s_t)
    next_values: Tensor,  # (T, N) V(s_{t+1}); V(final obs) where truncated; bootstrap at T-1
    terminated: Tensor,  # (T, N) bool: s_{t+1} is terminal (no bootstrap)
    ended: Tensor,  # (T, N) bool: terminated or truncated (the lambda-return stops here)
    gamma: float,
    gae_lambda: float,
) -> Tensor:
    """Generalized advantage estimates ``(T, N)`` (Schulman et al. 2016, arXiv:1506.02438, eq. 16).

    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t);
    A_t = delta_t + gamma lambda (1 - ended_t) A_{t+1}.
    """
    r, v, nv = (x.detach().double().numpy() for x in (rewards, values, next_values))
    alive = 1.0 - terminated.numpy().astype(np.float64)
    carry = gamma * gae_lambda * (1.0 - ended.numpy().astype(np.float64))
    delta = r + gamma * alive * nv - v  # (T, N)
    advantages = np.zeros_like(delta)
    last = np.zeros(delta.shape[1])
    for t in range(delta.shape[0] - 1, -1, -1):
        last = delta[t] + carry[t] * last
        advantages[t] = last
    return torch.from_numpy(advantages).to(values.dtype)


def clipped_surrogate_loss(
    log_probs: Tensor,  # (B,) under the policy being trained
    old_log_probs: Tensor,  # (B,) under the rollout policy
    advantages: Tensor,  # (B,)
    clip_range: float,
) -> tuple[Tensor, Tensor]:
    """PPO's clipped objective, negated (Schulman et al. 2017, eq. 7); returns (loss, clip fraction)."""
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages
    clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
    return -torch.minimum(unclipped, clipped).mean(), clip_fraction


def value_loss(
    values: Tensor,  # (B,) predictions
    returns: Tensor,  # (B,) lambda-returns
    old_values: Tensor | None = None,  # (B,) the rollout's predictions (for clipping)
    clip_range: float | None = None,
) -> Tensor:
    """Mean squared error; with ``clip_range``, the max of the plain and the clipped error
    (OpenAI baselines' value clipping, as CleanRL's ``clip_vloss``)."""
    error = (values - returns).square()
    if clip_range is None:
        return error.mean()
    if old_values is None:
        raise ValueError(f"clip_range={clip_range} needs old_values (the rollout's predictions)")
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return torch.maximum(error, (clipped - returns).square()).mean()


def kl_penalty(log_probs: Tensor, ref_log_probs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-sample estimate of KL(pi || pi_ref) at actions drawn from pi (Schulman 2020,
    "Approximating KL divergence"): ``k1 = log pi - log pi_ref`` (unbiased, the RLHF penalty),
    ``k3 = r - 1 - log r`` with ``r = pi_ref / pi`` (unbiased and never negative)."""
    log_ratio = log_probs - ref_log_probs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"estimator={estimator!r}; choose one of {KL_ESTIMATORS}")


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """1 - Var[target - prediction] / Var[target]: 1 is perfect, 0 no better than the mean."""
    variance = targets.var()
    if variance == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / variance)


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, coef: float):
        self.coef = coef

    def update(self, kl: float, n_steps: int) -> None:
        """A fixed beta ignores the measured KL."""


class AdaptiveKLController:
    """Steers the measured KL to ``target`` (Ziegler et al. 2019, section 2.2):
    beta <- beta * (1 + K * e) with e = clip(KL / target - 1, -0.2, 0.2) and K = n_steps / horizon."""

    def __init__(self, coef: float, target: float, horizon: int):
        self.coef, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n_steps: int) -> None:
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.coef *= 1.0 + error * n_steps / self.horizon
