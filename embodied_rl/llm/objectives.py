"""Several objectives on the synthetic task: helpful, harmless, concise.

The single oracle of :mod:`embodied_rl.llm.tasks` mixes what a user wants; here it is split
into three objectives with their own oracles, annotators and reward models, so that the
trade-offs RLHF practitioners face (helpful vs harmless, detail vs brevity) can be measured:

- **helpful**: the requested sentiment and topic (the oracle's ``sentiment``, ``topic`` and
  ``other_topics`` terms), plus :data:`DETAIL_BONUS` per matching adjective past the first
  (up to two: detail) and :data:`EMPHASIS_BONUS` for a harsh word in a negative sentence
  (emphasis);
- **harmless**: no word of the banned category (:data:`~embodied_rl.llm.tasks.HARSH`), -1
  per banned word;
- **concise**: one well-formed sentence without padding: the oracle's ``form`` and
  ``length`` terms minus :data:`PADDING_PENALTY` per intensifier ("very", "really", ...) and
  per adjective past the first.

The optima conflict: helpful wants three matching adjectives and, for negative requests, a
harsh one; concise wants one adjective; harmless wants no harsh word. The best response for
one weighting is not the best for another, so weights draw a Pareto front.

Data for them comes from a :class:`~embodied_rl.llm.tasks.TaskGenerator` whose demonstrator
uses harsh words (``TaskConfig(p_harsh=0.3)``, :func:`objectives_task_config`).
:func:`objective_comparisons` labels pairs with one objective's Bradley-Terry annotator (no
length bias); :func:`weighted_scores` combines per-objective scores with a user's weights;
:func:`safety_filter` is the constitutional hard constraint (reject or rewrite a response
that uses a banned word before any reward sees it); :func:`constrained_reward` puts it in
front of a training reward.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from embodied_rl.llm.tasks import (
    HARSH,
    INTENSIFIERS,
    NEGATIVE,
    POSITIVE,
    Comparison,
    TaskConfig,
    TaskGenerator,
    confidence_margin,
    oracle_terms,
    parse_prompt,
    words,
)

OBJECTIVES = ("helpful", "harmless", "concise")
DETAIL_BONUS = 0.25  # helpful: per matching adjective past the first (at most two)
EMPHASIS_BONUS = 0.25  # helpful: a harsh word in a requested negative sentence
PADDING_PENALTY = 0.25  # concise: per intensifier and per adjective past the first
# a harsh word's mild replacement (the safety filter's rewrite): same sentiment, not banned
MILD = dict(zip(HARSH, ("bad", "awful", "poor", "dull"), strict=True))


def objectives_task_config(**overrides) -> TaskConfig:
    """The task's configuration for the objectives: a demonstrator that uses harsh words in
    30% of its negative adjectives, and an annotator without length bias."""
    return TaskConfig(**{"p_harsh": 0.3, "length_bias": 0.0, **overrides})


def objective_score(
    objective: str, prompt: str, response: str, config: TaskConfig | None = None
) -> float:
    """One objective's oracle (see the module docstring for each)."""
    config = config or TaskConfig()
    tokens = words(response)
    if objective == "harmless":
        return -float(sum(t in HARSH for t in tokens))
    terms = oracle_terms(prompt, response, config)
    if objective == "helpful":
        request = parse_prompt(prompt)
        negative = request.sentiment == "negative"
        matching = sum(t in (NEGATIVE + HARSH if negative else POSITIVE) for t in tokens)
        detail = DETAIL_BONUS * min(2, max(0, matching - 1))
        emphasis = EMPHASIS_BONUS if negative and any(t in HARSH for t in tokens) else 0.0
        return terms["sentiment"] + terms["topic"] + terms["other_topics"] + detail + emphasis
    if objective == "concise":
        adjectives = sum(t in POSITIVE + NEGATIVE + HARSH for t in tokens)
        padding = sum(t in INTENSIFIERS for t in tokens) + max(0, adjectives - 1)
        return terms["form"] + terms["length"] - PADDING_PENALTY * padding
    raise ValueError(f"objective={objective!r}; choose one of {OBJECTIVES}")


def objective_scores(
    prompts: Sequence[str],
    responses: Sequence[str],
    objectives: Sequence[str] = OBJECTIVES,
    config: TaskConfig | None = None,
) -> dict[str, np.ndarray]:
    """Every objective's oracle on each (prompt, response): ``{objective: (N,)}``."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    pairs = list(zip(prompts, responses, strict=True))
    return {o: np.array([objective_score(o, p, r, config) for p, r in pairs]) for o in objectives}


def objective_scorer(objective: str, config: TaskConfig | None = None) -> Callable:
    """``(prompts, responses) -> list[float]``: one objective's oracle as a scorer (for
    :func:`~embodied_rl.llm.evaluation.evaluate_models` or as a reward)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}; choose one of {OBJECTIVES}")
    return lambda prompts, responses: list(
        objective_scores(prompts, responses, [objective], config)[objective]
    )


# the rubric of the 1-5 ratings: each objective's score range mapped linearly onto 1..5
RATING_RANGES = {"helpful": (-1.5, 2.25), "harmless": (-2.0, 0.0), "concise": (-1.0, 0.0)}


def objective_rating(
    objective: str, prompt: str, response: str, config: TaskConfig | None = None
) -> int:
    """An absolute 1-5 rating of ``response`` on one objective (the evaluation suite's
    ratings): the objective's oracle mapped linearly from :data:`RATING_RANGES` onto 1..5 and
    rounded, so 5 is the best score (2.25 helpful, 0 harmless or concise) and 1 the bottom of
    the range or below."""
    score = objective_score(objective, prompt, response, config)  # names a bad objective
    low, high = RATING_RANGES[objective]
    return 1 + round(4 * min(1.0, max(0.0, (score - low) / (high - low))))


def rating_scorer(objective: str, config: TaskConfig | None = None) -> Callable:
    """``(prompts, responses) -> list[int]``: :func:`objective_rating` as a scorer."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}; choose one of {OBJECTIVES}")
    return lambda prompts, responses: [
        objective_rating(objective, p, r, config) for p, r in zip(prompts, responses, strict=True)
    ]


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` over :data:`OBJECTIVES` (non-negative, not all zero), normalised to sum 1."""
    unknown = set(weights) - set(OBJECTIVES)
    if unknown:
        raise ValueError(f"weights name unknown objectives {sorted(unknown)}; use {OBJECTIVES}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"weights={dict(weights)} must be >= 0 and not all 0")
    total = sum(weights.values())
    return {o: weights.get(o, 0.0) / total for o in OBJECTIVES}


def weighted_scores(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum_o w_o * scores[o]`` with the weights normalised by :func:`check_weights`
    (scores of objectives with weight 0 may be missing)."""
    w = check_weights(weights)
    missing = [o for o, v in w.items() if v > 0 and o not in scores]
    if missing:
        raise ValueError(f"weights need scores for {missing}; got {sorted(scores)}")
    return sum(v * np.asarray(scores[o], np.float64) for o, v in w.items() if v > 0)


def objective_comparisons(
    generator: TaskGenerator, objective: str, n: int, temperature: float = 0.25
) -> list[Comparison]:
    """``n`` pairs of demonstrator responses labelled by one objective's annotator:
    ``P(a > b) = sigmoid((score_a - score_b) / temperature)``; pairs the objective scores
    equal are skipped (they teach its reward model nothing)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    out: list[Comparison] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * max(n, 1):
            raise RuntimeError(f"the demonstrator gave {len(out)} decided pairs for {objective!r}")
        request = generator.request()
        a, b = generator.response(request), generator.response(request)
        qa = objective_score(objective, request.prompt, a, generator.config)
        qb = objective_score(objective, request.prompt, b, generator.config)
        if qa == qb:
            continue
        p = 1.0 / (1.0 + math.exp(-(qa - qb) / temperature))
        if generator.rng.random() >= p:
            a, b, p, qa, qb = b, a, 1.0 - p, qb, qa
        out.append(Comparison(request.prompt, a, b, confidence_margin(p), p, qa - qb))
    return out


def safety_filter(response: str, mode: str = "rewrite") -> str | None:
    """The constitutional hard constraint on harmlessness, applied before any reward.

    ``"rewrite"`` replaces each banned word by its mild counterpart (:data:`MILD`);
    ``"reject"`` returns None for a response with a banned word (the caller scores it as a
    refusal). A response without banned words is returned unchanged."""
    if mode not in ("rewrite", "reject"):
        raise ValueError(f"mode={mode!r}; choose 'rewrite' or 'reject'")
    if not any(t in HARSH for t in words(response)):
        return response
    if mode == "reject":
        return None
    out = response
    for harsh, mild in MILD.items():
        out = _replace_word(out, harsh, mild)
    return out


def constrained_reward(
    reward_fn: Callable[[list[str], list[str]], np.ndarray],
    mode: str = "rewrite",
    refusal_score: float = -1.0,
) -> Callable[[list[str], list[str]], np.ndarray]:
    """``reward_fn`` behind the hard constraint, for PPO-RLHF: each response passes
    :func:`safety_filter` before the reward sees it. ``"rewrite"`` scores the rewritten
    response (the policy is trained for what the filter will deploy); ``"reject"`` gives a
    response with a banned word ``refusal_score`` (what a refusal earns) and scores the rest
    as they are."""
    if mode not in ("rewrite", "reject"):
        raise ValueError(f"mode={mode!r}; choose 'rewrite' or 'reject'")

    def reward(prompts: list[str], responses: list[str]) -> np.ndarray:
        kept = [safety_filter(r, mode) for r in responses]
        out = np.full(len(responses), float(refusal_score))
        index = [i for i, r in enumerate(kept) if r is not None]
        if index:
            scores = reward_fn([prompts[i] for i in index], [kept[i] for i in index])
            out[index] = np.asarray(scores, dtype=np.float64)
        return out

    return reward


def _replace_word(text: str, old: str, new: str) -> str:
    return re.sub(rf"\b{re.escape(old)}\b", new, text, flags=re.IGNORECASE)


# ---------------------------------------------------------------- letting users choose
WEIGHTS_PREFIX = "Weights: helpful {helpful:.2f} harmless {harmless:.2f} concise {concise:.2f}\n"
_WEIGHTS_RE = re.compile(r"^Weights: helpful ([\d.]+) harmless ([\d.]+) concise ([\d.]+)\n")


def weights_prompt(prompt: str, weights: Mapping[str, float]) -> str:
    """``prompt`` with the user's (normalised) weights in front: the input of a
    weight-conditioned policy (one policy for every weighting instead of one per weight)."""
    return WEIGHTS_PREFIX.format(**check_weights(weights)) + prompt


def parse_weights_prompt(prompt: str) -> tuple[dict[str, float], str]:
    """``(weights, task prompt)`` of a :func:`weights_prompt`; ``ValueError`` without weights."""
    match = _WEIGHTS_RE.match(prompt)
    if match is None:
        raise ValueError(f"prompt {prompt[:80]!r} does not start with {WEIGHTS_PREFIX[:8]!r}...")
    weights = dict(zip(OBJECTIVES, (float(g) for g in match.groups()), strict=True))
    return weights, prompt[match.end() :]


def weight_conditioned_examples(
    prompts: Sequence[str],
    samples: Sequence[Sequence[str]],
    scores: Mapping[str, np.ndarray],
    weights: Sequence[Mapping[str, float]],
) -> list[tuple[str, str]]:
    """SFT data that teaches one policy to read the user's weights: for every prompt and every
    weight vector, (the prompt with those weights in front, the prompt's sample with the
    highest weighted score). Rejection sampling per weighting, in the spirit of
    Rewards-in-Context (Yang et al. 2024, arXiv:2402.10207), which conditions on desired
    rewards instead: the same prompt with other weights gets another response, so the
    weights are what tells the examples apart. ``samples``: ``N`` responses per prompt;
    ``scores``: per objective, ``(P, N)`` scores of them (reward models or oracles)."""
    n_prompts = len(prompts)
    if len(samples) != n_prompts:
        raise ValueError(f"{len(samples)} sample lists for {n_prompts} prompts")
    if not weights:
        raise ValueError("give at least one weight vector")
    for o, v in scores.items():
        if np.shape(v) != (n_prompts, len(samples[0]) if n_prompts else 0):
            raise ValueError(
                f"scores[{o!r}] has shape {np.shape(v)}; expected (prompts, samples) = "
                f"({n_prompts}, {len(samples[0]) if n_prompts else 0})"
            )
    examples = []
    for w in weights:
        best = weighted_scores(scores, w).argmax(-1)  # (P,)
        examples += [
            (weights_prompt(q, w), samples[i][int(best[i])]) for i, q in enumerate(prompts)
        ]
    return examples


def conditioned_reward(
    scores_fn: Callable[[list[str], list[str]], Mapping[str, np.ndarray]],
) -> Callable[[list[str], list[str]], np.ndarray]:
    """The reward of a weight-conditioned policy: each prompt's own weights applied to
    ``scores_fn(task_prompts, responses)`` (per-objective scores, e.g. reward models), the
    weights stripped before scoring."""

    def reward(prompts: list[str], responses: list[str]) -> np.ndarray:
        parsed = [parse_weights_prompt(p) for p in prompts]
        scores = scores_fn([task for _, task in parsed], list(responses))
        return np.array([
            sum(w[o] * float(scores[o][i]) for o in OBJECTIVES if w[o] > 0)
            for i, (w, _) in enumerate(parsed)
        ])  # fmt: skip

    return reward
