"""Loss maths of the offline agents as pure functions of tensors (no models, no optimisers).

Every function cites its paper and equation; ``tests/agents/test_losses.py`` checks each
against numbers worked out by hand.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from embodied_rl.policies.action_tokenizer import action_token_loss


# ---------------------------------------------------------------------- IQL
def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """Asymmetric L2 ``|tau - 1(u < 0)| u^2`` averaged over ``diff = Q - V``
    (IQL, Kostrikov et al. 2021, arXiv:2110.06169, eq. 5)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def awr_weights(advantage: Tensor, temperature: float, max_weight: float) -> Tensor:
    """Advantage weights ``min(exp(beta * A), max_weight)`` (IQL eq. 7; AWR, Peng et al. 2019)."""
    return torch.exp(temperature * advantage).clamp(max=max_weight)


# ---------------------------------------------------------------------- behaviour cloning
def _mse(out: Tensor, actions: Tensor, head) -> Tensor:
    return (out - actions).square().mean(-1)  # (B,)


def _gaussian_nll(out: Tensor, actions: Tensor, head) -> Tensor:
    return -head.log_prob(out, actions)  # (B,)


def behavior_loss(
    head, out: Tensor, actions: Tensor, weights: Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """(Weighted) behaviour-cloning loss chosen by the head's kind: MSE for ``deterministic``,
    Gaussian negative log-likelihood for ``gaussian``, action-token cross-entropy for
    ``tokens``. ``weights`` ``(B,)`` multiply each sample's loss (IQL's advantage weights)."""
    if head.kind == "tokens":
        return action_token_loss(out, head.tokenizer.tokenize(actions), weights=weights)
    per_sample = _PER_SAMPLE[head.kind](out, actions, head)  # (B,)
    loss = per_sample.mean() if weights is None else (weights * per_sample).mean()
    return loss, {}


_PER_SAMPLE = {"deterministic": _mse, "gaussian": _gaussian_nll, "tanh_gaussian": _gaussian_nll}


# ---------------------------------------------------------------------- CQL and Cal-QL
def uniform_log_density(low: Tensor, high: Tensor) -> float:
    """``log(1 / prod(high - low))``: the density of uniform random actions in the box."""
    return -float(torch.log(high - low).sum())


def cql_penalty(
    q_sampled: Tensor,  # (E, B, M) Q of the M sampled actions (random and policy)
    log_density: Tensor,  # (B, M) log-density each action was sampled with
    q_data: Tensor,  # (E, B) Q of the dataset actions
) -> Tensor:
    """CQL(H) gap ``log sum_a exp(Q(s, a) - log mu(a)) - Q(s, a_data)`` with importance
    sampling (Kumar et al. 2020, arXiv:2006.04779, eq. 4 and appendix F), averaged over the
    batch: one value per critic ``(E,)``. ``log sum exp`` minus ``log M`` estimates
    ``log E_mu[exp(Q)/mu]``; the constant ``log M`` is dropped as in the authors' code."""
    lse = torch.logsumexp(q_sampled - log_density, dim=-1)  # (E, B)
    return (lse - q_data).mean(-1)  # (E,)


def cql_lagrange(
    penalty: Tensor, log_alpha: Tensor, target_gap: float, max_alpha: float = 1e6
) -> tuple[Tensor, Tensor, Tensor]:
    """CQL-Lagrange (CQL eq. 5): ``alpha' >= 0`` grows while the gap exceeds ``target_gap``.

    Returns ``(critic_term, alpha_loss, alpha)``: the critic minimises
    ``alpha' (gap - target_gap)`` with ``alpha'`` fixed, ``alpha'`` minimises
    ``-alpha' (gap - target_gap)`` with the gap fixed (dual gradient ascent)."""
    alpha = log_alpha.exp().clamp(0.0, max_alpha)
    critic_term = (alpha.detach() * (penalty - target_gap)).sum()
    alpha_loss = -(alpha * (penalty.detach() - target_gap)).sum()
    return critic_term, alpha_loss, alpha


def calql_lower_bound(q_policy: Tensor, mc_return: Tensor) -> Tensor:
    """Cal-QL's calibration (Nakamoto et al. 2023, arXiv:2303.05479, eq. 5.1 / Alg. 1): the Q
    of policy actions in the CQL penalty is replaced by ``max(Q(s, a), V^mu(s))``, with the
    behaviour value ``V^mu(s)`` estimated by the Monte-Carlo return of the dataset.

    ``q_policy`` ``(E, B, N)``, ``mc_return`` ``(B,)``."""
    return torch.maximum(q_policy, mc_return[:, None])


def discounted_returns(rewards: np.ndarray, episode_starts: np.ndarray, gamma: float) -> np.ndarray:
    """``(N,)`` Monte-Carlo return ``sum_k gamma^k r_{t+k}`` to the end of each episode."""
    out = np.zeros(len(rewards), dtype=np.float64)
    for a, b in zip(episode_starts[:-1], episode_starts[1:], strict=True):
        running = 0.0
        for t in range(int(b) - 1, int(a) - 1, -1):
            running = float(rewards[t]) + gamma * running
            out[t] = running
    return out.astype(np.float32)


def sac_actor_loss(q_policy: Tensor, log_prob: Tensor, alpha: Tensor) -> Tensor:
    """``E[alpha log pi(a|s) - min_e Q_e(s, a)]`` with ``a ~ pi`` (SAC, Haarnoja et al. 2018)."""
    return (alpha.detach() * log_prob - q_policy).mean()


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """SAC's automatic entropy tuning: ``-alpha (log pi + target_entropy)`` (Haarnoja et al.
    2018b, eq. 18)."""
    return -(log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()


# ---------------------------------------------------------------------- Decision Transformer
def return_to_go(rewards: Tensor, gamma: float = 1.0) -> Tensor:
    """``R_t = sum_{k >= t} gamma^(k - t) r_k`` along the last axis (Chen et al. 2021,
    arXiv:2106.01345, sec. 3.1: the DT's conditioning token; undiscounted by default)."""
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running
        out[..., t] = running
    return out


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the ``mask``-ed positions: ``pred``/``target`` ``(B, T, A)``,
    ``mask`` ``(B, T)`` bool (DT's action loss for continuous actions)."""
    err = (pred - target).square().mean(-1)  # (B, T)
    keep = mask.float()
    return (err * keep).sum() / keep.sum().clamp_min(1.0)


def td_loss(q: Tensor, target: Tensor) -> Tensor:
    """Sum over critics of the mean squared TD error: ``q`` ``(E, B)``, ``target`` ``(B,)``."""
    return F.mse_loss(q, target.expand_as(q), reduction="none").mean(-1).sum()


def td3bc_actor_loss(
    q_policy: Tensor, policy_action: Tensor, data_action: Tensor, alpha: float
) -> Tensor:
    """TD3+BC's actor loss (Fujimoto & Gu 2021, eq. 3-4): ``-lambda * mean Q(s, pi(s)) +
    mean_{batch, dims} (pi(s) - a)^2`` with ``lambda = alpha / mean |Q(s, pi(s))|`` (no gradient
    through lambda), which keeps the RL term on the BC term's scale whatever the reward scale.

    The BC term averages over action dimensions as well as the batch (the authors' code, CORL
    and d3rlpy use ``mse_loss``): summing them would weight BC ``action_dim`` times more and
    make ``alpha`` mean something different on every body."""
    lmbda = alpha / q_policy.detach().abs().mean().clamp_min(1e-6)
    bc = (policy_action - data_action).square().mean()
    return -lmbda * q_policy.mean() + bc
