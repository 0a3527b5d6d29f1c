"""Preference learning shared by robot agents and LLM trainers (see docs/preference.md).

Losses (pure tensor functions), pair/segment datasets, labelers (scripted teacher, AI
feedback, human web page) and robot learners (CPL, P-IQL).
"""

from embodied_rl.preference.losses import (
    bradley_terry_loss,
    cpl_loss,
    cpl_ranked_loss,
    dpo_loss,
)

__all__ = [
    "bradley_terry_loss",
    "cpl_loss",
    "cpl_ranked_loss",
    "dpo_loss",
]
