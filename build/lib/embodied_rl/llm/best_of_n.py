"""Best-of-N sampling and rejection-sampling fine-tuning data (Llama 2, Touvron et al. 2023,
arXiv:2307.09288, section 3.2.3).

For each prompt, N responses are sampled from the policy and the one the reward function
scores highest is kept. The kept responses are either the output (inference-time best-of-N)
or SFT data for the next policy (rejection sampling). The KL of the best-of-N distribution
to the sampling policy is ``log N - (N - 1) / N`` (Stiennon et al. 2020, appendix G.3;
Beirami et al. 2024 show it is an upper bound), the x-axis of the reward-vs-KL frontier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.generation import SamplingConfig, generate
from embodied_rl.llm.reward import RewardFn


@dataclass(frozen=True)
class BestOfNConfig:
    """Best-of-N options."""

    n: int = 8  # samples per prompt
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch_size: int = 256  # sequences per generation call
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n={self.n} must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")


@dataclass(frozen=True)
class BestOfN:
    """The kept response per prompt and every sample's score."""

    prompts: list[str]
    responses: list[str]  # the best of N per prompt
    scores: Tensor  # (P, N) reward of every sample
    samples: list[list[str]]  # (P, N) every sampled response

    @property
    def best_scores(self) -> Tensor:
        """``(P,)`` the kept responses' rewards."""
        return self.scores.max(-1).values


def best_of_n_kl(n: int) -> float:
    """``log n - (n - 1) / n``: KL(best-of-n || policy) in nats (an upper bound)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return math.log(n) - (n - 1) / n


def best_of_n(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    reward_fn: RewardFn,
    config: BestOfNConfig = BestOfNConfig(),
) -> BestOfN:
    """Sample ``config.n`` responses per prompt and keep the highest-scoring one (seeded)."""
    if not prompts:
        raise ValueError("no prompts given")
    generator = torch.Generator().manual_seed(config.seed)
    repeated = [p for p in prompts for _ in range(config.n)]  # prompt-major
    responses: list[str] = []
    for start in range(0, len(repeated), config.batch_size):
        chunk = repeated[start : start + config.batch_size]
        responses += generate(policy, tokenizer, chunk, config.sampling, generator).responses
    scores = reward_fn(repeated, responses).float().view(len(prompts), config.n)  # (P, N)
    samples = [responses[i * config.n : (i + 1) * config.n] for i in range(len(prompts))]
    best = scores.argmax(-1).tolist()
    return BestOfN(
        list(prompts), [s[b] for s, b in zip(samples, best, strict=True)], scores, samples
    )


def rejection_sampling_data(result: BestOfN) -> list[tuple[str, str]]:
    """(prompt, best response) pairs: SFT data for rejection-sampling fine-tuning."""
    return list(zip(result.prompts, result.responses, strict=True))
