"""Calibrated Q-Learning (Nakamoto et al. 2023, arXiv:2303.05479).

CQL whose conservative penalty only pushes down the Q of policy actions as far as the
behaviour policy's value: ``Q(s, a_pi)`` in the logsumexp becomes ``max(Q(s, a_pi), V^mu(s))``,
with ``V^mu(s)`` the discounted Monte-Carlo return of the dataset from ``s`` (the sampler
adds it as ``mc_return``). Calibrated values keep the policy from unlearning when online
fine-tuning begins. Everything else is :class:`~embodied_rl.agents.cql.CQLAgent`.

Training logs ``bound_share``: the share of the penalty's policy-action Q-values that the
bound replaced. While it is near 1 no gradient pushes those Q-values down and the critic is
not conservative: it rises towards ``V^mu`` at the optimiser's pace, flat in the action
(measured on Walker2d medium, ``benchmarks/results/locomotion_offline.md``). With returns in
the hundreds that phase can outlast a short run; ``reward_scale`` shortens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from embodied_rl.agents.base import register_agent
from embodied_rl.agents.cql import CQLAgent, CQLConfig
from embodied_rl.agents.losses import calql_lower_bound


@dataclass(frozen=True)
class CalQLConfig(CQLConfig):
    """Cal-QL (Nakamoto et al. 2023); the paper keeps CQL's hyperparameters (alpha 5, 10
    sampled actions, actor lr 1e-4, critic lr 3e-4) and adds only the lower bound. Monte-Carlo
    returns stop at the end of each episode (truncated episodes count no reward beyond)."""


@register_agent("calql")
class CalQLAgent(CQLAgent):
    config_class = CalQLConfig
    sampler_options = {"mc_return": True}

    def calibrate(self, q_policy: Tensor, batch: dict[str, Any]) -> Tensor:
        if "mc_return" not in batch:
            raise KeyError(
                "Cal-QL needs batch['mc_return']; build the sampler with mc_return=True "
                "(make_sampler(agent, data) does)"
            )
        return calql_lower_bound(q_policy, batch["mc_return"])
