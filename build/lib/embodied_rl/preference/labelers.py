"""Synthetic labelers: the B-Pref scripted teacher and an AI-feedback (RLAIF) judge.

:class:`ScriptedTeacher` labels pairs from the ground-truth reward with B-Pref's
irrationalities (Lee et al. 2021, arXiv:2111.03026, section 3.2): Boltzmann rationality,
myopia, mistakes, skipped and equal queries. :class:`AIFeedbackLabeler` asks a judge, any
``Callable[[str], str]`` (e.g. a local language model from ``embodied_rl.llm``), to compare
two described segments under a constitution (Bai et al. 2022, arXiv:2212.08073), and parses
its preference and rationale. :func:`agreement` compares two labelers on the same pairs.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embodied_rl.preference.data import (
    EQUAL,
    LABEL_VALUES,
    PREFER_FIRST,
    PREFER_SECOND,
    PreferenceDataset,
    Segments,
)
from embodied_rl.preference.describe import describe_segment

logger = logging.getLogger(__name__)

Judge = Callable[[str], str]


# ---------------------------------------------------------------------- scripted teacher
@dataclass(frozen=True)
class TeacherConfig:
    """B-Pref's simulated teacher (Lee et al. 2021, section 3.2); the defaults are its
    "oracle": perfectly rational, never skips, never calls a tie, never errs."""

    beta: float = math.inf  # Boltzmann rationality: P(a > b) = sigmoid(beta (R_a - R_b))
    gamma: float = 1.0  # myopia: step t of L weighs gamma^(L - 1 - t) (recent steps count more)
    mistake_rate: float = 0.0  # probability of flipping a strict preference
    skip_threshold: float = 0.0  # skip when both returns are below this x mean |segment return|
    equal_threshold: float = 0.0  # equal when |R_a - R_b| is below this x mean |segment return|
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta} must be > 0 (inf: perfectly rational)")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma} must lie in (0, 1] (1: not myopic)")
        if not 0.0 <= self.mistake_rate <= 0.5:
            raise ValueError(f"mistake_rate={self.mistake_rate} must lie in [0, 0.5]")
        for name in ("skip_threshold", "equal_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")


class ScriptedTeacher:
    """Labels segment pairs from their ground-truth rewards (seeded, reproducible)."""

    def __init__(self, config: TeacherConfig | None = None) -> None:
        self.config = config or TeacherConfig()
        self.rng = np.random.default_rng(self.config.seed)

    def label_rewards(
        self, rewards_a: np.ndarray, rewards_b: np.ndarray, scale: float | None = None
    ) -> np.ndarray:
        """Labels ``(P,)`` for reward windows ``(P, L)``: 1 (a), 0 (b), 0.5 (equal), NaN (skip).

        ``scale`` multiplies the skip and equal thresholds; None: the mean absolute
        undiscounted return of the given segments (B-Pref's convention, which assumes
        positive rewards)."""
        c = self.config
        rewards_a, rewards_b = np.asarray(rewards_a, np.float64), np.asarray(rewards_b, np.float64)
        if rewards_a.shape != rewards_b.shape or rewards_a.ndim != 2:
            raise ValueError(
                f"rewards_a {rewards_a.shape} and rewards_b {rewards_b.shape} must both be (P, L)"
            )
        return_a, return_b = rewards_a.sum(1), rewards_b.sum(1)
        if scale is None:
            scale = float(np.mean(np.abs(np.concatenate([return_a, return_b]))))
        weights = c.gamma ** np.arange(rewards_a.shape[1] - 1, -1, -1)  # (L,) myopic weights
        gap = (rewards_a - rewards_b) @ weights  # (P,)
        if math.isinf(c.beta):
            labels = np.where(gap > 0, PREFER_FIRST, np.where(gap < 0, PREFER_SECOND, EQUAL))
        else:
            p_first = 1.0 / (1.0 + np.exp(-np.clip(c.beta * gap, -500, 500)))
            labels = (self.rng.random(len(gap)) < p_first).astype(np.float64)
        strict = labels != EQUAL
        flip = strict & (self.rng.random(len(labels)) < c.mistake_rate)
        labels = np.where(flip, 1.0 - labels, labels)
        labels = np.where(np.abs(return_a - return_b) < c.equal_threshold * scale, EQUAL, labels)
        if c.skip_threshold > 0:  # B-Pref skips only with a positive threshold
            skip = np.maximum(return_a, return_b) < c.skip_threshold * scale
            labels = np.where(skip, np.nan, labels)
        return labels.astype(np.float32)

    def label_pairs(
        self, segments: Segments, first: np.ndarray, second: np.ndarray
    ) -> PreferenceDataset:
        """Label pairs of ``segments`` (skipped pairs keep a NaN label)."""
        rewards = segments.rewards()
        labels = self.label_rewards(rewards[first], rewards[second])
        return PreferenceDataset(segments, first, second, labels)


# ---------------------------------------------------------------------- AI feedback
DEFAULT_CONSTITUTION: tuple[str, ...] = (
    "Prefer the behaviour that makes more progress toward what the instruction asks.",
    "Prefer the behaviour that completes the task, and completes it sooner.",
    "Prefer smooth, purposeful motion over erratic or aimless motion.",
)

PROMPT_TEMPLATE = """You compare two short segments of a robot's behaviour.

Instruction given to the robot: {instruction}

Judge them by these principles, in order of importance:
{principles}

Candidate A:
{a}

Candidate B:
{b}

Answer in exactly this form:
Preference: A, B or equal
Rationale: one or two sentences citing the principles."""


class UnparseableJudgement(ValueError):
    """The judge's answer names no clear preference (the message quotes it)."""


@dataclass(frozen=True)
class Judgement:
    """A parsed answer: ``choice`` is ``"a"``, ``"b"``, ``"equal"`` or ``"skip"``."""

    choice: str
    rationale: str
    answer: str = field(repr=False, default="")

    @property
    def label(self) -> float:
        """1, 0, 0.5, or NaN for a skip."""
        return LABEL_VALUES.get(self.choice, math.nan)


def build_prompt(
    instruction: str, description_a: str, description_b: str, constitution: Sequence[str]
) -> str:
    """The judge's prompt: the instruction, the numbered principles and both candidates."""
    if not constitution:
        raise ValueError("the constitution needs at least one principle")
    principles = "\n".join(f"{i}. {p}" for i, p in enumerate(constitution, start=1))
    return PROMPT_TEMPLATE.format(
        instruction=instruction, principles=principles, a=description_a, b=description_b
    )


_WORDS = {
    "a": "a",
    "candidate a": "a",
    "b": "b",
    "candidate b": "b",
    "equal": "equal",
    "tie": "equal",
    "both": "equal",
    "same": "equal",
    "neither": "equal",
    "equally good": "equal",
}
_PREFERENCE_LINE = re.compile(
    r"^[\s*#>_-]*(?:final\s+)?(?:preference|answer|verdict|choice|winner)\s*[:=\-]\s*(.+)$",
    re.IGNORECASE | re.MULTILINE,
)
_RATIONALE = re.compile(
    r"^[\s*#>_-]*(?:rationale|reason|reasoning|explanation)\s*[:=\-]\s*(.*)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def _choice(text: str) -> str | None:
    """The choice a short phrase names, e.g. ``**B**``, ``Candidate A.``, ``"equal"``."""
    words = re.sub(r"[^a-z ]", " ", text.lower()).split()
    for n in (2, 1):  # two-word phrases first ("candidate a", "equally good")
        if len(words) >= n and " ".join(words[:n]) in _WORDS:
            return _WORDS[" ".join(words[:n])]
    return None


def parse_judgement(answer: str) -> Judgement:
    """Parse ``Preference: A|B|equal`` and ``Rationale: ...`` from a judge's answer.

    Tolerates Markdown, quotes, "Candidate A", "tie"/"both", extra prose around the lines,
    and an answer that is just ``A`` or ``B``. Raises :class:`UnparseableJudgement` when no
    line names a preference or two preference lines disagree.
    """
    found = {_choice(m.group(1)) for m in _PREFERENCE_LINE.finditer(answer)} - {None}
    if not found:
        bare = _choice(answer.strip()) if len(answer.split()) <= 3 else None
        found = {bare} if bare else set()
    if len(found) != 1:
        what = "no preference line" if not found else f"conflicting preferences {sorted(found)}"
        raise UnparseableJudgement(
            f"judge answer has {what}; expected 'Preference: A', 'Preference: B' or "
            f"'Preference: equal'. Answer: {answer[:300]!r}"
        )
    rationale = _RATIONALE.search(answer)
    return Judgement(found.pop(), rationale.group(1).strip() if rationale else "", answer)


def _swap(choice: str) -> str:
    return {"a": "b", "b": "a"}.get(choice, choice)


class AIFeedbackLabeler:
    """Labels segment pairs by asking ``judge`` under ``constitution``.

    ``describe(segments, index)`` turns a segment into text (default:
    :func:`~embodied_rl.preference.describe.describe_segment`). With ``both_orders=True``
    each pair is judged twice with the candidates swapped, and disagreeing verdicts count
    as equal (a guard against position bias). Unparseable answers become skips, or raise
    with ``on_unparseable="raise"``.
    """

    def __init__(
        self,
        judge: Judge,
        constitution: Sequence[str] = DEFAULT_CONSTITUTION,
        describe: Callable[[Segments, int], str] = describe_segment,
        both_orders: bool = False,
        on_unparseable: str = "skip",
    ) -> None:
        if not callable(judge):
            raise TypeError(f"judge must be a callable str -> str, got {type(judge).__name__}")
        if on_unparseable not in ("skip", "raise"):
            raise ValueError(f"on_unparseable={on_unparseable!r}; choose 'skip' or 'raise'")
        if not constitution:
            raise ValueError("the constitution needs at least one principle")
        self.judge, self.constitution = judge, tuple(constitution)
        self.describe, self.both_orders = describe, both_orders
        self.on_unparseable = on_unparseable

    def _ask(self, instruction: str, a: str, b: str) -> Judgement:
        answer = self.judge(build_prompt(instruction, a, b, self.constitution))
        if not isinstance(answer, str):
            raise TypeError(f"the judge returned {type(answer).__name__}, not str")
        try:
            return parse_judgement(answer)
        except UnparseableJudgement as error:
            if self.on_unparseable == "raise":
                raise
            logger.warning("skipping a pair: %s", error)
            return Judgement("skip", str(error), answer)

    def judge_pair(self, instruction: str, description_a: str, description_b: str) -> Judgement:
        """One verdict on two described candidates."""
        first = self._ask(instruction, description_a, description_b)
        if not self.both_orders or first.choice == "skip":
            return first
        second = self._ask(instruction, description_b, description_a)
        if second.choice == "skip":
            return second
        if _swap(second.choice) != first.choice:
            return Judgement("equal", f"verdicts disagree when swapped: {first.rationale}", "")
        return first

    def label_pairs(
        self,
        segments: Segments,
        first: np.ndarray,
        second: np.ndarray,
        instruction: str | None = None,
    ) -> tuple[PreferenceDataset, list[Judgement]]:
        """Label pairs of ``segments``; returns the dataset and every verdict with its rationale.

        ``instruction`` None: each segment's own instruction from the dataset's episode metadata."""
        texts: dict[int, str] = {}
        judgements = []
        for i, j in zip(first.tolist(), second.tolist(), strict=True):
            for k in (i, j):
                if k not in texts:
                    texts[k] = self.describe(segments, k)
            task = instruction or _instruction(segments, i)
            judgements.append(self.judge_pair(task, texts[i], texts[j]))
        labels = np.array([j.label for j in judgements], dtype=np.float32)
        return PreferenceDataset(segments, first, second, labels), judgements


def _instruction(segments: Segments, index: int) -> str:
    data = segments.data
    meta = data.episode_metadata[int(segments.episodes[index])]
    if meta.get("instruction"):
        return str(meta["instruction"])
    if "instruction" in data.observations:
        return str(data.observations["instruction"][data.obs_index[segments.starts[index]]])
    return "complete the task"


# ---------------------------------------------------------------------- agreement
def agreement(labels_x: np.ndarray, labels_y: np.ndarray) -> dict[str, float]:
    """How two labelers agree on the same pairs.

    ``agreement``: fraction of pairs both labelled where the labels are equal;
    ``strict_agreement``: the same over pairs where both stated a strict preference;
    ``kappa``: Cohen's kappa over the three classes; ``coverage_x``/``coverage_y``: the
    fraction each labelled (not skipped)."""
    x, y = np.asarray(labels_x, np.float64), np.asarray(labels_y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"label arrays differ in shape: {x.shape} vs {y.shape}")
    both = ~np.isnan(x) & ~np.isnan(y)
    strict = both & (x != EQUAL) & (y != EQUAL)
    out = {
        "pairs": float(len(x)),
        "both_labelled": float(both.sum()),
        "coverage_x": float(np.mean(~np.isnan(x))) if len(x) else math.nan,
        "coverage_y": float(np.mean(~np.isnan(y))) if len(y) else math.nan,
        "agreement": float(np.mean(x[both] == y[both])) if both.any() else math.nan,
        "strict_agreement": float(np.mean(x[strict] == y[strict])) if strict.any() else math.nan,
    }
    if both.any():
        classes = (PREFER_FIRST, PREFER_SECOND, EQUAL)
        chance = sum(np.mean(x[both] == c) * np.mean(y[both] == c) for c in classes)
        observed = out["agreement"]
        out["kappa"] = float((observed - chance) / (1 - chance)) if chance < 1 else 1.0
    else:
        out["kappa"] = math.nan
    return out
