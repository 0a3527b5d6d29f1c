"""The RT-2-style policy's preference data for the LLM trainers: labelled pairs of trajectory
segments (the B-Pref scripted teacher's, AI feedback's or the labeling page's) as
:class:`~embodied_rl.llm.pairs.SegmentPair` for :class:`~embodied_rl.llm.dpo.DPOTrainer`.

Behaviour cloning (SFT) examples come from :func:`embodied_rl.policies.rt2.rt2_sft_examples`;
per-step action preferences are plain :class:`~embodied_rl.llm.pairs.TextPair` with an image.
"""

from __future__ import annotations

import numpy as np

from embodied_rl.llm.pairs import SegmentPair
from embodied_rl.policies.rt2 import RT2Policy
from embodied_rl.preference.data import PreferenceDataset


def rt2_segment_pairs(
    policy: RT2Policy, preferences: PreferenceDataset
) -> tuple[list[SegmentPair], np.ndarray]:
    """Every decided pair of ``preferences`` (equal and skipped ones are left out) as a
    segment pair, the preferred segment first, and the images its steps point into (the
    segments' images, ``(2 P L, H, W, 3)``). The segments' dataset needs ``image`` and text
    ``instruction`` observations."""
    segments = preferences.segments
    for key in ("image", "instruction"):
        if key not in segments.data.observations:
            raise ValueError(
                f"the RT-2 policy reads images and instructions; the segments' dataset has "
                f"{sorted(segments.data.observations)}"
            )
    decided = preferences.labels != 0.5
    decided &= ~np.isnan(preferences.labels)
    first, second = preferences.first[decided], preferences.second[decided]
    prefer_first = preferences.labels[decided] == 1.0
    winners = np.where(prefer_first, first, second)
    losers = np.where(prefer_first, second, first)
    images = segments.observations("image")  # (S, L, H, W, 3)
    instructions = segments.observations("instruction")  # (S, L)
    actions = segments.actions()  # (S, L, A)
    length = segments.length

    def steps(segment: int) -> list[tuple[str, list[int], int]]:
        return [
            (policy.prompt(str(instructions[segment, t])), policy.action_tokens(actions[segment, t]),
             segment * length + t)
            for t in range(length)
        ]  # fmt: skip

    pairs = [SegmentPair(steps(w), steps(lo)) for w, lo in zip(winners, losers, strict=True)]
    return pairs, images.reshape(-1, *images.shape[2:])
