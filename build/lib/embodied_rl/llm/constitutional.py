"""Constitutional AI's supervised stage: critique -> revision -> SFT data (Bai et al. 2022,
arXiv:2212.08073, section 3).

For each prompt the model answers, critiques its answer against a principle ("Critique
request"), then rewrites it ("Revision request"); several rounds may follow, each with a
principle drawn from the constitution. The final revisions become (prompt, revision) pairs
for :class:`~embodied_rl.llm.sft.SFTTrainer`. The prompt layout follows the paper's
examples: ``Critique Request: ... Critique: ... Revision Request: ... Revision: ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.generation import SamplingConfig, generate


@dataclass(frozen=True)
class Principle:
    """One rule of the constitution: how to ask for a critique and for a revision."""

    name: str
    critique_request: str
    revision_request: str


DEFAULT_PRINCIPLE = Principle(
    name="follow-the-request",
    critique_request="Identify ways in which the response does not follow the request.",
    revision_request="Rewrite the response so that it follows the request.",
)


def critique_prompt(prompt: str, response: str, principle: Principle) -> str:
    """The text that asks for a critique of ``response`` (the model continues after it)."""
    return f"{prompt}{response}\nCritique Request: {principle.critique_request}\nCritique:"


def revision_prompt(prompt: str, response: str, critique: str, principle: Principle) -> str:
    """The text that asks for a revision given the critique."""
    return (
        f"{critique_prompt(prompt, response, principle)} {critique.strip()}\n"
        f"Revision Request: {principle.revision_request}\nRevision:"
    )


@dataclass(frozen=True)
class ConstitutionalConfig:
    """Options of the critique-and-revise data generation."""

    n_rounds: int = 1  # critique -> revision rounds per response
    response_sampling: SamplingConfig = SamplingConfig()  # the first answer
    critique_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=32, greedy=True)
    )
    revision_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=24, greedy=True)
    )
    batch_size: int = 64  # prompts per generation call
    seed: int = 0  # sampling and the choice of principle per round

    def __post_init__(self) -> None:
        if self.n_rounds < 1:
            raise ValueError(f"n_rounds={self.n_rounds} must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")


@dataclass(frozen=True)
class Revision:
    """A prompt, the model's first answer and each round's critique and revision."""

    prompt: str
    initial: str
    critiques: tuple[str, ...]
    revisions: tuple[str, ...]
    principles: tuple[str, ...]  # principle name per round

    @property
    def final(self) -> str:
        return self.revisions[-1]


def _revise_batch(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    principles: Sequence[Principle],
    config: ConstitutionalConfig,
    generator: torch.Generator,
    rng: np.random.Generator,
) -> list[Revision]:
    current = generate(model, tokenizer, prompts, config.response_sampling, generator).responses
    initial = list(current)
    critiques: list[list[str]] = [[] for _ in prompts]
    revisions: list[list[str]] = [[] for _ in prompts]
    names: list[list[str]] = [[] for _ in prompts]
    for _ in range(config.n_rounds):
        chosen = [principles[int(rng.integers(len(principles)))] for _ in prompts]
        asks = [critique_prompt(p, r, c) for p, r, c in zip(prompts, current, chosen, strict=True)]
        said = generate(model, tokenizer, asks, config.critique_sampling, generator).responses
        asks = [
            revision_prompt(p, r, k, c)
            for p, r, k, c in zip(prompts, current, said, chosen, strict=True)
        ]
        current = generate(model, tokenizer, asks, config.revision_sampling, generator).responses
        for i in range(len(prompts)):
            critiques[i].append(said[i].strip())
            revisions[i].append(current[i])
            names[i].append(chosen[i].name)
    return [
        Revision(p, r0, tuple(c), tuple(v), tuple(n))
        for p, r0, c, v, n in zip(prompts, initial, critiques, revisions, names, strict=True)
    ]


def critique_and_revise(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    principles: Sequence[Principle] = (DEFAULT_PRINCIPLE,),
    config: ConstitutionalConfig = ConstitutionalConfig(),
) -> list[Revision]:
    """Answer, critique and revise every prompt with ``model`` (seeded)."""
    if not principles:
        raise ValueError("the constitution is empty; give at least one Principle")
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    out: list[Revision] = []
    for start in range(0, len(prompts), config.batch_size):
        batch = list(prompts[start : start + config.batch_size])
        out += _revise_batch(model, tokenizer, batch, principles, config, generator, rng)
    return out


def revision_sft_data(
    revisions: Sequence[Revision], drop_empty: bool = True
) -> list[tuple[str, str]]:
    """(prompt, final revision) pairs for supervised fine-tuning (empty revisions dropped)."""
    return [(r.prompt, r.final) for r in revisions if r.final.strip() or not drop_empty]
