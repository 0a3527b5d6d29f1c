"""Preference losses as pure functions of tensors, shared by the robot agents and the LLM trainers.

No models, optimisers or logging here: each function takes scores or log-probabilities and
returns a loss (mean by default, per-example with ``reduction="none"``). Every function cites
its paper; ``tests/preference/test_preference_losses.py`` checks each against hand-computed numbers and
DPO against TRL's implementation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match, got {shapes}")


# ---------------------------------------------------------------------- reward models
def bradley_terry_loss(
    chosen_rewards: Tensor,  # (B,) reward-model scores of the preferred items
    rejected_rewards: Tensor,  # (B,)
    margin: Tensor | float | None = None,  # (B,) or scalar m(r) >= 0, Llama 2's margin
    reduction: str = "mean",
) -> Tensor:
    """Bradley-Terry reward-model loss ``-log sigmoid(r_c - r_r - m)``.

    The margin term is Llama 2's (Touvron et al. 2023, arXiv:2307.09288, eq. 2): pairs rated
    as clearly different must be separated by at least ``m`` before the loss saturates.
    """
    _check_same_shape(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    logits = chosen_rewards - rejected_rewards
    if margin is not None:
        logits = logits - margin
    return _reduce(-F.logsigmoid(logits), reduction)


# ---------------------------------------------------------------------- DPO family
def _dpo_sigmoid(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    # DPO eq. 7; with label_smoothing eps > 0 the labels are flipped with probability eps
    # (conservative DPO, Mitchell 2023, "A note on DPO with noisy preferences").
    return -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
        -beta * h
    )


def _dpo_ipo(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    # IPO (Azar et al. 2023, arXiv:2310.12036, eq. 17), beta plays the role of tau.
    return (h - 1.0 / (2.0 * beta)).square()


def _dpo_hinge(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    # SLiC hinge (Zhao et al. 2023, arXiv:2305.10425, eq. 2) on the policy/reference log-ratio.
    return torch.relu(1.0 - beta * h)


DPO_LOSSES: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "sigmoid": _dpo_sigmoid,
    "ipo": _dpo_ipo,
    "hinge": _dpo_hinge,
}


def dpo_loss(
    policy_chosen_logps: Tensor,  # (B,) summed log-probs of the chosen responses under the policy
    policy_rejected_logps: Tensor,  # (B,)
    ref_chosen_logps: Tensor,  # (B,) same under the frozen reference
    ref_rejected_logps: Tensor,  # (B,)
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> tuple[Tensor, Tensor, Tensor]:
    """Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290, eq. 7) and variants.

    ``h = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))``; ``loss_type`` picks
    ``"sigmoid"`` (DPO; ``label_smoothing > 0`` gives conservative DPO), ``"ipo"``
    (``(h - 1/(2 beta))^2``; pass length-averaged log-probs to match TRL, which divides by the
    completion length) or ``"hinge"`` (``relu(1 - beta h)``). Returns ``(loss, chosen_rewards,
    rejected_rewards)``; the implicit rewards ``beta * (log pi - log ref)`` are detached.
    """
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {sorted(DPO_LOSSES)}")
    if beta <= 0.0:
        raise ValueError(f"beta={beta} must be > 0 (DPO's KL weight; 0.1 is the usual value)")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"label_smoothing={label_smoothing} must lie in [0, 0.5): it is the probability "
            "that a label is flipped (conservative DPO)"
        )
    if label_smoothing > 0.0 and loss_type != "sigmoid":
        raise ValueError(
            f"label_smoothing={label_smoothing} applies to loss_type='sigmoid' only, "
            f"not {loss_type!r}; set it to 0"
        )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    per_example = DPO_LOSSES[loss_type](
        chosen_logratios - rejected_logratios, beta, label_smoothing
    )
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return _reduce(per_example, reduction), chosen_rewards, rejected_rewards


# ---------------------------------------------------------------------- CPL
def _check_cpl_args(alpha: float, conservative_lambda: float) -> None:
    if alpha <= 0.0:
        raise ValueError(f"alpha={alpha} must be > 0 (CPL's temperature; the paper uses 0.1)")
    if not 0.0 < conservative_lambda <= 1.0:
        raise ValueError(
            f"conservative_lambda={conservative_lambda} must lie in (0, 1]; 1 is unbiased, "
            "the paper uses 0.5"
        )


def _biased_logistic(score_a: Tensor, score_b: Tensor, labels: Tensor, lam: float) -> Tensor:
    # -log P(a > b) with P = exp(S_a) / (exp(S_a) + exp(lam S_b)) = sigmoid(S_a - lam S_b),
    # and the same with a and b swapped, mixed by the (possibly soft) label.
    a_wins = -F.logsigmoid(score_a - lam * score_b)
    b_wins = -F.logsigmoid(score_b - lam * score_a)
    return labels * a_wins + (1.0 - labels) * b_wins


def cpl_loss(
    logp_a: Tensor,  # (B, L) per-step log pi(a_t | s_t) along segment a
    logp_b: Tensor,  # (B, L) same along segment b
    labels: Tensor,  # (B,) 1 if a is preferred, 0 if b, 0.5 if equal
    alpha: float = 0.1,
    conservative_lambda: float = 0.5,
    reduction: str = "mean",
) -> Tensor:
    """Contrastive Preference Learning (Hejna et al. 2023, arXiv:2310.13639, eq. 5 with the
    conservative bias of section 3.2).

    Segment score ``S = alpha * sum_t log pi(a_t|s_t)``; the loss is
    ``-log exp(S+) / (exp(S+) + exp(lambda S-))`` for the preferred segment ``+``. Soft labels
    mix both directions, so ``0.5`` asks for equal scores.
    """
    _check_same_shape(logp_a=logp_a, logp_b=logp_b)
    if logp_a.dim() != 2:
        raise ValueError(
            f"logp_a must be (B, L) per-step log-probs, got shape {tuple(logp_a.shape)}"
        )
    if labels.shape != logp_a.shape[:1]:
        raise ValueError(
            f"labels must be (B,)={tuple(logp_a.shape[:1])}, got {tuple(labels.shape)}"
        )
    _check_cpl_args(alpha, conservative_lambda)
    labels = labels.to(logp_a.dtype)
    per_example = _biased_logistic(
        alpha * logp_a.sum(-1), alpha * logp_b.sum(-1), labels, conservative_lambda
    )
    return _reduce(per_example, reduction)


def cpl_ranked_loss(
    logps: Tensor,  # (B, K, L) per-step log pi(a_t | s_t) of K segments per group
    scores: Tensor,  # (B, K) any ranking score of each segment (higher is better), e.g. return
    alpha: float = 0.1,
    conservative_lambda: float = 0.5,
    reduction: str = "mean",
) -> Tensor:
    """CPL over every pair of K ranked segments (the paper's dense / all-pairs comparisons).

    Each of the ``K (K - 1) / 2`` pairs ``(i, j)`` gets the pairwise CPL loss with label
    1 if ``scores_i > scores_j``, 0 if lower and 0.5 if tied; a group's loss is the mean over
    its pairs, so ``K = 2`` equals :func:`cpl_loss`. ``reduction="none"`` returns ``(B,)``.
    """
    if logps.dim() != 3 or logps.shape[1] < 2:
        raise ValueError(f"logps must be (B, K>=2, L), got shape {tuple(logps.shape)}")
    if scores.shape != logps.shape[:2]:
        raise ValueError(
            f"scores must be (B, K)={tuple(logps.shape[:2])}, got {tuple(scores.shape)}"
        )
    _check_cpl_args(alpha, conservative_lambda)
    segment_scores = alpha * logps.sum(-1)  # (B, K)
    pairs = list(itertools.combinations(range(logps.shape[1]), 2))
    first = torch.tensor([i for i, _ in pairs], device=logps.device)
    second = torch.tensor([j for _, j in pairs], device=logps.device)
    s_i, s_j = segment_scores[:, first], segment_scores[:, second]  # (B, P)
    diff = scores[:, first] - scores[:, second]  # (B, P)
    labels = (diff > 0).to(logps.dtype) + 0.5 * (diff == 0).to(logps.dtype)
    per_group = _biased_logistic(s_i, s_j, labels, conservative_lambda).mean(-1)  # (B,)
    return _reduce(per_group, reduction)
