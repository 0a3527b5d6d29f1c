"""Preference learning shared by robot agents and LLM trainers (see docs/preference.md).

Losses (pure tensor functions), segment and pair datasets, labelers (B-Pref scripted teacher,
AI feedback under a constitution, a local web page for people) and robot learners (CPL, the
reward model behind P-IQL). Modules that need torch models load on first use, so importing
the losses stays cheap.
"""

import importlib
from typing import Any

from embodied_rl.preference.losses import (
    bradley_terry_loss,
    cpl_loss,
    cpl_ranked_loss,
    dpo_loss,
)

_LAZY = {
    "DEFAULT_SEGMENT_LENGTH": "data",
    "PreferenceDataset": "data",
    "PreferenceSampler": "data",
    "Segments": "data",
    "all_pairs": "data",
    "append_preference": "data",
    "preferences_from_records": "data",
    "random_pairs": "data",
    "read_preferences": "data",
    "records_from_preferences": "data",
    "sample_segments": "data",
    "AIFeedbackLabeler": "labelers",
    "DEFAULT_CONSTITUTION": "labelers",
    "Judgement": "labelers",
    "ScriptedTeacher": "labelers",
    "TeacherConfig": "labelers",
    "UnparseableJudgement": "labelers",
    "agreement": "labelers",
    "build_prompt": "labelers",
    "parse_judgement": "labelers",
    "describe_segment": "describe",
    "CPLConfig": "cpl",
    "CPLLearner": "cpl",
    "segment_log_probs": "cpl",
    "TransitionRewardModel": "reward_model",
    "RewardModelConfig": "reward_model",
    "fit_reward_model": "reward_model",
    "relabel_rewards": "reward_model",
    "LabelConflict": "human",
    "LabelingServer": "human",
    "load_session_preferences": "human",
    "load_text_labels": "human",
    "prepare_session": "human",
    "prepare_text_session": "human",
    "load_preferences": "sources",
}

__all__ = ["bradley_terry_loss", "cpl_loss", "cpl_ranked_loss", "dpo_loss", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
