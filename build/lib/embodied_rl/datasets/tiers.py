"""Quality tiers in the D4RL spirit and the normalized score.

``expert`` is the scripted expert, ``medium`` the expert with Gaussian action noise
calibrated per task family to reach roughly half the expert's normalized score,
``random`` uniform actions, and ``mixed`` cycles expert, medium and random episode by
episode (exactly a third each). Reference returns (min: random policy, max: expert, on
the same environment configuration) are stored in the dataset so that
:func:`normalized_score` applies the D4RL formula to any policy's returns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

logger = logging.getLogger(__name__)

TIERS: tuple[str, ...] = ("expert", "medium", "random", "mixed")
MIXED_CYCLE: tuple[str, ...] = ("expert", "medium", "random")

# Expert action-noise std giving ~50 normalized score (sparse reward, default config),
# interpolated from 200 episodes per level; docs/datasets.md has the sweep and the results.
MEDIUM_NOISE: dict[str, float] = {
    "reach": 1.3,
    "push": 0.43,
    "push_next_to": 0.47,
    "pick": 0.42,
    "place": 0.47,
    "stack": 0.43,
}
DEFAULT_MEDIUM_NOISE = 0.45  # tasks without a calibrated value (Meta-World): pass noise= to tune


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise ValueError(f"tier={tier!r} is not a quality tier; choose one of {TIERS}")
    return tier


def episode_tier(tier: str, index: int) -> str:
    """The tier that generates episode ``index`` (``mixed`` cycles through the others)."""
    check_tier(tier)
    return MIXED_CYCLE[index % len(MIXED_CYCLE)] if tier == "mixed" else tier


def expert_noise(tier: str, task: str, noise: float | None = None) -> float:
    """Expert action-noise std for an episode of ``tier`` on task family ``task``.

    ``noise`` overrides the tier's value (for ``expert`` and ``medium`` episodes).
    """
    if noise is not None:
        if noise < 0:
            raise ValueError(f"noise={noise} must be >= 0")
        return float(noise)
    if tier == "expert":
        return 0.0
    if tier == "medium":
        if task not in MEDIUM_NOISE:
            logger.debug(
                "no calibrated medium noise for task %r; using %s", task, DEFAULT_MEDIUM_NOISE
            )
        return MEDIUM_NOISE.get(task, DEFAULT_MEDIUM_NOISE)
    raise ValueError(f"tier {tier!r} does not use the expert")


class RandomPolicy:
    """Uniform actions over a Box action space from a seeded generator."""

    def __init__(
        self, action_space: spaces.Space, seed: int | np.random.SeedSequence | None = None
    ):
        if not isinstance(action_space, spaces.Box) or not np.all(np.isfinite(action_space.low)):
            raise ValueError(f"RandomPolicy needs a bounded Box action space; got {action_space}")
        self.low, self.high = action_space.low, action_space.high
        self.dtype = action_space.dtype
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Stateless between episodes."""

    def act(self, obs: Any = None) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(self.dtype)


class NoisyPolicy:
    """Adds Gaussian noise (std ``noise``) to another policy's actions, clipped to the space;
    ``clean_action`` keeps the policy's own action of the latest step."""

    def __init__(self, policy: Any, action_space: spaces.Box, noise: float, seed: Any = None):
        self.policy, self.noise = policy, float(noise)
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def act(self, obs: Any) -> np.ndarray:
        action = np.asarray(self.policy.act(obs), dtype=np.float64)
        self.clean_action = np.clip(action, self.low, self.high).astype(np.float32)
        action = action + self.rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, self.low, self.high).astype(np.float32)


def reference_scores(source: Any) -> tuple[float, float]:
    """``(ref_min_score, ref_max_score)`` from a dataset, its metadata dict or a pair."""
    if isinstance(source, tuple | list) and len(source) == 2:
        low, high = source
    else:
        meta = source if isinstance(source, Mapping) else getattr(source, "metadata", None)
        if (
            not isinstance(meta, Mapping)
            or "ref_min_score" not in meta
            or "ref_max_score" not in meta
        ):
            raise ValueError(
                "no reference scores: the dataset metadata lacks ref_min_score/ref_max_score "
                "(collect with reference_episodes > 0, or pass (min, max))"
            )
        low, high = meta["ref_min_score"], meta["ref_max_score"]
    low, high = float(low), float(high)
    if not high > low:
        raise ValueError(
            f"ref_max_score={high} must exceed ref_min_score={low}; the expert does not beat "
            "the random policy on this configuration, so scores cannot be normalized"
        )
    return low, high


def normalized_score(returns: Any, reference: Any) -> np.ndarray:
    """D4RL normalized score ``100 * (R - R_random) / (R_expert - R_random)``.

    ``reference``: a dataset, its metadata, or ``(ref_min_score, ref_max_score)``.
    """
    low, high = reference_scores(reference)
    return 100.0 * (np.asarray(returns, dtype=np.float64) - low) / (high - low)
