"""Reinforcement-learning pieces shared by the robot agents and the LLM trainers.

:mod:`embodied_rl.rl.ppo`: GAE, the clipped surrogate, value loss, KL estimators and
controllers; :mod:`embodied_rl.rl.errors`: :class:`NonFiniteLossError`. The preference losses
live in :mod:`embodied_rl.preference.losses`.
"""

from embodied_rl.rl.errors import NonFiniteLossError
from embodied_rl.rl.ppo import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    clipped_surrogate_loss,
    explained_variance,
    gae,
    kl_penalty,
    value_loss,
)

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "NonFiniteLossError",
    "clipped_surrogate_loss",
    "explained_variance",
    "gae",
    "kl_penalty",
    "value_loss",
]
