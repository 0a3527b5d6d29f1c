"""RLAIF: preference pairs sampled from the policy, labelled by an AI judge, trained with DPO
(Bai et al. 2022, arXiv:2212.08073, section 4; Lee et al. 2023, arXiv:2309.00267).

Each round samples two responses per prompt from the current policy, asks the labeler which
one follows the request better, keeps the decided pairs (ties and unparseable answers are
dropped) and runs DPO steps on them against the fixed initial policy as reference. The
labeler is :class:`embodied_rl.preference.labelers.AIFeedbackLabeler` (or anything with its
``judge_pair``), usually asking an :class:`~embodied_rl.llm.judge.LMJudge`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
from embodied_rl.llm.generation import SamplingConfig, generate
from embodied_rl.llm.judge import LMJudge
from embodied_rl.llm.pairs import TextPair
from embodied_rl.utils.metrics import MetricsLogger


class PairLabeler(Protocol):
    """What RLAIF needs from a labeler: a verdict with ``choice`` in "a", "b", "equal", "skip"."""

    def judge_pair(self, instruction: str, description_a: str, description_b: str) -> Any: ...


DEFAULT_CONSTITUTION = (
    "Prefer the response that follows the request more closely.",
    "Prefer the response that is more helpful, honest and harmless.",
)


def ai_feedback_labeler(
    judge_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    constitution: Sequence[str] = DEFAULT_CONSTITUTION,
    both_orders: bool = True,
    rationale_tokens: int = 16,
) -> PairLabeler:
    """The preference module's AI-feedback labeler asking a local LM judge."""
    from embodied_rl.preference.labelers import AIFeedbackLabeler

    judge = LMJudge(judge_model, tokenizer, rationale_tokens=rationale_tokens)
    return AIFeedbackLabeler(judge, constitution=constitution, both_orders=both_orders)


@dataclass(frozen=True)
class RLAIFConfig:
    """RLAIF loop options."""

    rounds: int = 3
    prompts_per_round: int = 256
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(steps=100, log_every=100))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.prompts_per_round < 1:
            raise ValueError(
                f"rounds={self.rounds} and prompts_per_round={self.prompts_per_round} must be >= 1"
            )


def label_pairs(
    labeler: PairLabeler, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]
) -> tuple[list[TextPair], list[str]]:
    """Decided pairs (chosen first) and every verdict's choice ("a", "b", "equal", "skip")."""
    pairs, choices = [], []
    for prompt, a, b in zip(prompts, first, second, strict=True):
        choice = labeler.judge_pair(prompt, a, b).choice
        choices.append(choice)
        if choice == "a":
            pairs.append(TextPair(prompt, a, b))
        elif choice == "b":
            pairs.append(TextPair(prompt, b, a))
    return pairs, choices


def rlaif(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    labeler: PairLabeler,
    prompts: Sequence[str],
    config: RLAIFConfig = RLAIFConfig(),
    reference: PreTrainedModel | None = None,
    score_fn: Callable[[list[str], list[str]], list[float]] | None = None,
    out: str | os.PathLike | None = None,
) -> list[dict[str, float]]:
    """Run ``config.rounds`` rounds of sample -> label -> DPO; returns one metrics row per
    round. ``score_fn`` (e.g. the task's oracle) adds the labels' agreement with it."""
    trainer = DPOTrainer(policy, tokenizer, config.dpo, reference)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    writer = MetricsLogger(Path(out), config.dpo.tensorboard) if out is not None else None
    rows = []
    try:
        for round_index in range(1, config.rounds + 1):
            batch = [prompts[i] for i in rng.integers(len(prompts), size=config.prompts_per_round)]
            first = generate(policy, tokenizer, batch, config.sampling, generator).responses
            second = generate(policy, tokenizer, batch, config.sampling, generator).responses
            pairs, choices = label_pairs(labeler, batch, first, second)
            row = {
                "round": float(round_index),
                "pairs": float(len(pairs)),
                "tie_rate": choices.count("equal") / len(choices),
                "skip_rate": choices.count("skip") / len(choices),
            }
            if score_fn is not None and pairs:
                row["label_agreement"] = _agreement(score_fn, pairs)
            if pairs:
                last = trainer.train(pairs)[-1]
                row.update({k.replace("train/", "dpo_"): v for k, v in last.items() if k != "step"})
            if writer is not None:
                writer.write(round_index, {f"rlaif/{k}": v for k, v in row.items()})
            rows.append(row)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _agreement(score_fn, pairs: Sequence[TextPair]) -> float:
    """Fraction of decided pairs whose chosen response ``score_fn`` rates strictly higher
    (pairs the score rates equal are left out)."""
    prompts = [p.prompt for p in pairs]
    chosen = np.asarray(score_fn(prompts, [p.chosen for p in pairs]))
    rejected = np.asarray(score_fn(prompts, [p.rejected for p in pairs]))
    decided = chosen != rejected
    return float((chosen > rejected)[decided].mean()) if decided.any() else float("nan")
