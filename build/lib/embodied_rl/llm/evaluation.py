"""Evaluating a policy: sampled responses' scores and KL(pi || pi_ref), the two axes of the
reward-vs-KL frontier (the DPO paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.generation import SamplingConfig, generate, sequence_kl

ScoreFn = Callable[[list[str], list[str]], Sequence[float] | torch.Tensor]


def evaluate_policy(
    policy: nn.Module,
    reference: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    scorers: Mapping[str, ScoreFn],
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """One sampled response per prompt: mean (and standard error) of each scorer, the
    Monte-Carlo KL(pi || pi_ref) per response, response length and EOS rate (``sampling``
    None: plain sampling at temperature 1, the distribution the KL is about)."""
    sampling = sampling or SamplingConfig()
    generator = torch.Generator().manual_seed(seed)
    kl, tokens, finished = [], [], []
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        generation = generate(policy, tokenizer, chunk, sampling, generator)
        kl.append(sequence_kl(policy, reference, generation))
        tokens.append(generation.response_lengths.float())
        finished.append(generation.finished.float())
        texts += generation.responses
    out = _mean_and_sem("kl", torch.cat(kl).numpy())
    for name, fn in scorers.items():
        values = fn(list(prompts), texts)
        values = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        out.update(_mean_and_sem(name, values.astype(np.float64)))
    out["response_tokens"] = torch.cat(tokens).mean().item()
    out["eos_rate"] = torch.cat(finished).mean().item()
    return out


def _mean_and_sem(name: str, values: np.ndarray) -> dict[str, float]:
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {name: float(values.mean()), f"{name}_sem": float(sem)}
