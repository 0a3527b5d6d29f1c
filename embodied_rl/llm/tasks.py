"""A synthetic instruction task whose true preference is a program (runs offline on CPU).

Prompts ask for one short sentence of a given sentiment about a given topic::

    Write a positive sentence about the hotel:  ->  " the hotel was lovely and clean."

:func:`oracle_score` plays the human: it rewards the requested sentiment, the requested
topic and a well-formed sentence, and penalises sentences longer than ``max_words``. It
never rewards length. The comparison data comes from an *annotator* that follows the oracle
but, like real raters, also prefers longer answers (``length_bias``): a reward model fitted
to those labels learns length as a shortcut, the flaw that PPO without a KL penalty
exploits (longer and longer answers that the oracle scores lower and lower).

The same generator writes the other data the LLM trainers need: demonstrations of a
mediocre writer (SFT), critique/revision examples (constitutional AI) and judge examples
(a small AI-feedback model).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from embodied_rl.llm.constitutional import DEFAULT_PRINCIPLE, critique_prompt, revision_prompt
from embodied_rl.llm.judge import format_verdict, labeler_prompt
from embodied_rl.llm.pairs import TextPair

TOPICS = ("movie", "pizza", "hotel", "book", "phone", "song", "garden", "game")
POSITIVE = ("great", "lovely", "wonderful", "excellent", "fun", "amazing", "charming", "superb")
NEGATIVE = ("awful", "terrible", "boring", "dull", "bad", "poor", "noisy", "bland")
# harsh negative words: the banned category of the harmlessness objective (llm.objectives);
# they count as negative sentiment, and the demonstrator uses them only with p_harsh > 0
HARSH = ("stupid", "disgusting", "pathetic", "hideous")
INTENSIFIERS = ("very", "really", "quite", "so")
OPENERS = (
    "the {topic} was",
    "i think the {topic} is",
    "i found the {topic}",
    "my {topic} was",
    "this {topic} is",
    "honestly the {topic} felt",
)
SENTIMENTS = ("positive", "negative")
JUDGE_CONSTITUTION = (
    "Prefer the response with the sentiment the request asks for.",
    "Prefer the response about the topic the request names.",
    "Prefer one short, well-formed sentence.",
)
PROMPT_TEMPLATE = "Write a {sentiment} sentence about the {topic}:"
_PROMPT_RE = re.compile(r"Write a (positive|negative) sentence about the (\w+):")
_WORD_RE = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Request:
    """What a prompt asks for."""

    sentiment: str  # "positive" or "negative"
    topic: str

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(sentiment=self.sentiment, topic=self.topic)


def parse_prompt(prompt: str) -> Request:
    """The request a task prompt encodes; ``ValueError`` for a prompt of another shape."""
    match = _PROMPT_RE.search(prompt)
    if match is None or match.group(2) not in TOPICS:
        raise ValueError(
            f"prompt {prompt!r} is not a task prompt; expected {PROMPT_TEMPLATE!r} with "
            f"sentiment in {SENTIMENTS} and topic in {TOPICS}"
        )
    return Request(match.group(1), match.group(2))


@dataclass(frozen=True)
class TaskConfig:
    """The oracle's scoring rule and the data generators' noise."""

    max_words: int = 12  # the oracle penalises every word past this
    length_penalty: float = 0.15  # oracle points lost per word past max_words
    topic_weight: float = 0.5  # +w for the requested topic, -w without it
    other_topic_penalty: float = 0.25  # per other topic mentioned
    form_penalty: float = 0.5  # a response that is not one sentence ending in "."
    # the demonstrator (SFT data and comparison candidates): a mediocre writer
    p_right_sentiment: float = 0.6  # the response's sentiment is the requested one
    p_adjective_consistent: float = 0.85  # each adjective follows the response's sentiment
    p_right_topic: float = 0.75
    max_adjectives: int = 3
    p_harsh: float = 0.0  # a negative adjective is a harsh (banned) word (llm.objectives: 0.3)
    # the annotator labelling comparisons: P(a > b) = sigmoid(dq / temperature + bias * dwords)
    annotator_temperature: float = 0.25
    length_bias: float = 0.35  # log-odds per extra word; 0 gives an unbiased annotator

    def __post_init__(self) -> None:
        for name in ("p_right_sentiment", "p_adjective_consistent", "p_right_topic", "p_harsh"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must be a probability in [0, 1]")
        if self.max_words < 4:
            raise ValueError(f"max_words={self.max_words} must be >= 4 (the shortest sentence)")
        if self.max_adjectives < 1:
            raise ValueError(f"max_adjectives={self.max_adjectives} must be >= 1")
        if self.annotator_temperature <= 0:
            raise ValueError(f"annotator_temperature={self.annotator_temperature} must be > 0")


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (punctuation dropped)."""
    return _WORD_RE.findall(text.lower())


def oracle_score(prompt: str, response: str, config: TaskConfig = TaskConfig()) -> float:
    """The true preference: sentiment match in [-1, 1] + topic term + form term - length term.

    Sentiment is ``(matching - opposite) / (matching + opposite)`` adjectives (-1 without
    any); the best score is ``1 + topic_weight`` for any sentence of at most ``max_words``.
    """
    return sum(oracle_terms(prompt, response, config).values())


def oracle_terms(prompt: str, response: str, config: TaskConfig = TaskConfig()) -> dict[str, float]:
    """The terms :func:`oracle_score` sums: ``sentiment`` (in [-1, 1]), ``topic`` (+-
    ``topic_weight``), ``other_topics`` (a penalty per other topic named), ``form`` (0 or
    ``-form_penalty``) and ``length`` (``-length_penalty`` per word past ``max_words``)."""
    request = parse_prompt(prompt)
    tokens = words(response)
    negative = NEGATIVE + HARSH
    wanted, opposite = (
        (POSITIVE, negative) if request.sentiment == "positive" else (negative, POSITIVE)
    )
    n_match = sum(t in wanted for t in tokens)
    n_opposite = sum(t in opposite for t in tokens)
    n_adjectives = n_match + n_opposite
    others = len({t for t in tokens if t in TOPICS and t != request.topic})
    stripped = response.strip()
    one_sentence = stripped.endswith(".") and stripped.count(".") == 1
    return {
        "sentiment": (n_match - n_opposite) / n_adjectives if n_adjectives else -1.0,
        "topic": config.topic_weight if request.topic in tokens else -config.topic_weight,
        "other_topics": -config.other_topic_penalty * others,
        "form": 0.0 if one_sentence else -config.form_penalty,
        "length": -config.length_penalty * max(0, len(tokens) - config.max_words),
    }


def oracle_scores(
    prompts: Sequence[str], responses: Sequence[str], config: TaskConfig = TaskConfig()
) -> list[float]:
    """:func:`oracle_score` of each (prompt, response) pair."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return [oracle_score(p, r, config) for p, r in zip(prompts, responses, strict=True)]


def preference_probability(prompt: str, a: str, b: str, config: TaskConfig = TaskConfig()) -> float:
    """The annotator's probability of preferring ``a`` over ``b`` (oracle + length bias)."""
    quality = (oracle_score(prompt, a, config) - oracle_score(prompt, b, config)) / (
        config.annotator_temperature
    )
    length = config.length_bias * (len(words(a)) - len(words(b)))
    return 1.0 / (1.0 + math.exp(-(quality + length)))


# ---------------------------------------------------------------------- data generators
@dataclass(frozen=True)
class Comparison(TextPair):
    """A labelled pair: the annotator preferred ``chosen`` with probability ``p_chosen``.

    ``margin`` grades the annotator's confidence the way Llama 2's raters grade "clearly" vs
    "slightly" better: 1.0 for ``p_chosen >= 0.9``, 0.5 for ``>= 0.7``, else 0."""

    p_chosen: float = 0.5
    oracle_margin: float = 0.0  # oracle(chosen) - oracle(rejected)


def confidence_margin(p_chosen: float) -> float:
    """Llama-2-style discrete margin from the annotator's confidence."""
    return 1.0 if p_chosen >= 0.9 else 0.5 if p_chosen >= 0.7 else 0.0


class TaskGenerator:
    """Seeded generator of prompts, demonstrations, comparisons and auxiliary examples."""

    def __init__(self, config: TaskConfig = TaskConfig(), seed: int = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)

    def request(self) -> Request:
        sentiment = SENTIMENTS[int(self.rng.integers(len(SENTIMENTS)))]
        return Request(sentiment, TOPICS[int(self.rng.integers(len(TOPICS)))])

    def prompts(self, n: int) -> list[str]:
        """``n`` random task prompts."""
        return [self.request().prompt for _ in range(n)]

    def _choice(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def response(
        self,
        request: Request,
        sentiment: str | None = None,
        topic: str | None = None,
        n_adjectives: int | None = None,
        p_consistent: float | None = None,
    ) -> str:
        """One sentence such as ``" the hotel was very lovely and fun."``; arguments left as
        None are drawn like the mediocre demonstrator draws them."""
        c = self.config
        if p_consistent is None:
            p_consistent = c.p_adjective_consistent
        if sentiment is None:
            right = self.rng.random() < c.p_right_sentiment
            sentiment = request.sentiment if right else _flip(request.sentiment)
        if topic is None:
            right = self.rng.random() < c.p_right_topic
            topic = (
                request.topic if right else self._choice([t for t in TOPICS if t != request.topic])
            )
        k = n_adjectives or int(self.rng.integers(1, c.max_adjectives + 1))
        phrases = []
        for _ in range(k):
            consistent = self.rng.random() < p_consistent
            pool = POSITIVE if (sentiment == "positive") == consistent else NEGATIVE
            if pool is NEGATIVE and c.p_harsh > 0 and self.rng.random() < c.p_harsh:
                pool = HARSH
            adjective = self._choice(pool)
            if self.rng.random() < 0.3:
                adjective = f"{self._choice(INTENSIFIERS)} {adjective}"
            phrases.append(adjective)
        opener = self._choice(OPENERS).format(topic=topic)
        return f" {opener} {' and '.join(phrases)}."

    def good_response(self, request: Request) -> str:
        """A response the oracle scores at its maximum (requested sentiment and topic)."""
        n_adjectives = int(self.rng.integers(1, 3))
        return self.response(request, request.sentiment, request.topic, n_adjectives, 1.0)

    def demonstrations(self, n: int) -> list[tuple[str, str]]:
        """``n`` (prompt, response) pairs from the mediocre demonstrator (SFT data)."""
        out = []
        for _ in range(n):
            request = self.request()
            out.append((request.prompt, self.response(request)))
        return out

    def comparisons(self, n: int) -> list[Comparison]:
        """``n`` pairs of demonstrator responses labelled by the length-biased annotator."""
        out = []
        while len(out) < n:
            request = self.request()
            a, b = self.response(request), self.response(request)
            if a == b:
                continue
            out.append(self.annotate(request.prompt, a, b))
        return out

    def annotate(self, prompt: str, a: str, b: str) -> Comparison:
        """The annotator's label of any two responses to ``prompt`` (e.g. a policy's samples,
        for online RLHF): it prefers ``a`` with :func:`preference_probability`; the
        comparison lists the preferred response first."""
        p = preference_probability(prompt, a, b, self.config)
        if self.rng.random() >= p:
            a, b, p = b, a, 1.0 - p
        margin = oracle_score(prompt, a, self.config) - oracle_score(prompt, b, self.config)
        return Comparison(prompt, a, b, confidence_margin(p), p, margin)

    def critique_examples(self, n: int) -> list[tuple[str, str]]:
        """(prompt, completion) pairs teaching the critique and revision formats of
        :mod:`embodied_rl.llm.constitutional` with the default principle."""
        out = []
        for _ in range(n):
            request = self.request()
            response = self.response(request)
            critique = critique_text(request, response, self.config)
            revision = self.good_response(request)
            c_prompt = critique_prompt(request.prompt, response, DEFAULT_PRINCIPLE)
            out.append((c_prompt, f" {critique}"))
            r_prompt = revision_prompt(request.prompt, response, critique, DEFAULT_PRINCIPLE)
            out.append((r_prompt, revision))
        return out

    def judge_examples(
        self, n: int, render: Callable[[str, str, str], str] | None = None
    ) -> list[tuple[str, str]]:
        """(prompt, completion) pairs teaching :class:`~embodied_rl.llm.judge.LMJudge`'s
        answer format (``Preference: A`` and a rationale) for the oracle-better response.

        ``render(request, a, b)`` builds the judge prompt; the default is the AI-feedback
        labeler's prompt under :data:`JUDGE_CONSTITUTION`."""
        render = render or labeler_prompt(JUDGE_CONSTITUTION)
        out = []
        while len(out) < n:
            request = self.request()
            a, b = self.response(request), self.response(request)
            qa = oracle_score(request.prompt, a, self.config)
            qb = oracle_score(request.prompt, b, self.config)
            if qa == qb:
                continue
            winner, better = ("A", a) if qa > qb else ("B", b)
            rationale = rationale_text(request, better)
            out.append((render(request.prompt, a, b), format_verdict(winner, f" {rationale}")))
        return out

    def corpus(self, n: int = 2_000) -> Iterator[str]:
        """Text of every format above, for training a tokenizer."""
        for prompt, response in self.demonstrations(n):
            yield prompt + response
        for prompt, completion in self.critique_examples(max(1, n // 10)):
            yield prompt + completion
        for prompt, completion in self.judge_examples(max(1, n // 10)):
            yield prompt + completion


def _flip(sentiment: str) -> str:
    return "negative" if sentiment == "positive" else "positive"


def critique_text(request: Request, response: str, config: TaskConfig = TaskConfig()) -> str:
    """The programmatic critique of a response (what a good critic would say)."""
    tokens = words(response)
    wanted, opposite = (
        (POSITIVE, NEGATIVE) if request.sentiment == "positive" else (NEGATIVE, POSITIVE)
    )
    problems = []
    if any(t in opposite for t in tokens) or not any(t in wanted for t in tokens):
        problems.append(f"the response is not {request.sentiment}")
    if request.topic not in tokens:
        problems.append(f"the response is not about the {request.topic}")
    if len(tokens) > config.max_words:
        problems.append("the response is too long")
    if not problems:
        return "the response is fine."
    return " and ".join(problems) + "."


def rationale_text(request: Request, better: str) -> str:
    """A short reason the better response wins."""
    tokens = words(better)
    if request.topic in tokens:
        return f"it is {request.sentiment} about the {request.topic}."
    return f"it is more {request.sentiment}."


def response_words(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Words per response (the flaw the length-biased reward model rewards)."""
    return [float(len(words(r))) for r in responses]
