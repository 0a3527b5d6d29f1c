"""Batched sampling from a causal LM with a KV cache and a seeded ``torch.Generator``.

Prompts are left-padded so every row's next token sits in the last column; responses are
right-padded after their EOS. :class:`Generation` keeps both halves and the masks the RL and
preference trainers need (``sequences()`` joins them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.models import (
    IGNORE_INDEX,
    causal_lm_forward,
    check_length,
    eval_mode,
    pad,
    position_ids_from_mask,
    token_logprobs,
)
from embodied_rl.utils.tokenizer import cache_kwargs, encode


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are drawn."""

    max_new_tokens: int = 24
    temperature: float = 1.0  # PPO-RLHF needs 1.0: its log-probs are of the unscaled policy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    greedy: bool = False  # argmax instead of sampling

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (use greedy=True)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 turns it off)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")


@dataclass(frozen=True)
class Generation:
    """Prompts and sampled responses as token tensors and text."""

    prompt_ids: Tensor  # (B, P) left-padded
    prompt_mask: Tensor  # (B, P)
    response_ids: Tensor  # (B, R) right-padded; the EOS is included where one was sampled
    response_mask: Tensor  # (B, R) 1 on response tokens (up to and including EOS)
    prompts: list[str]
    responses: list[str]  # decoded, without EOS
    finished: Tensor  # (B,) bool: the response ended with EOS within max_new_tokens
    # per-row model inputs besides the ids, e.g. a vision-language model's pixel_values
    model_inputs: dict[str, Any] = field(default_factory=dict)
    # ids [lo, hi) the responses were sampled among (constrained decoding, e.g. the RT-2
    # policy's action ids): log-probabilities are of the distribution renormalised over them
    allowed_ids: tuple[int, int] | None = None

    def select(self, index: Tensor) -> Generation:
        """The rows ``index`` (a ``(K,)`` long tensor)."""
        rows = index.tolist()
        return Generation(
            self.prompt_ids[index], self.prompt_mask[index], self.response_ids[index],
            self.response_mask[index], [self.prompts[i] for i in rows],
            [self.responses[i] for i in rows], self.finished[index],
            {k: v[index] for k, v in self.model_inputs.items()}, self.allowed_ids,
        )  # fmt: skip

    def sequences(self) -> tuple[Tensor, Tensor]:
        """``(B, P + R)`` token ids and attention mask of prompt + response."""
        ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        mask = torch.cat([self.prompt_mask, self.response_mask], dim=1)
        return ids, mask

    @property
    def response_lengths(self) -> Tensor:
        """``(B,)`` tokens per response (EOS included)."""
        return self.response_mask.sum(-1)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """Left-padded ``(B, P)`` prompt ids and mask."""
    ids = encode(tokenizer, prompts)
    if any(len(x) == 0 for x in ids):
        raise ValueError("an empty prompt cannot be continued; give every prompt some text")
    mask = pad([[1] * len(x) for x in ids], 0, side="left")
    return pad(ids, tokenizer.pad_token_id, side="left"), mask


def _filter_logits(logits: Tensor, config: SamplingConfig) -> Tensor:
    logits = logits / config.temperature
    if config.top_k:
        kth = torch.topk(logits, min(config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > config.top_p  # keep the first over top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(
    logits: Tensor, config: SamplingConfig, generator: torch.Generator | None
) -> Tensor:
    """``(B,)`` next tokens from ``(B, V)`` logits."""
    if config.greedy:
        return logits.argmax(-1)
    probs = _filter_logits(logits.float(), config).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: SamplingConfig = SamplingConfig(),
    generator: torch.Generator | None = None,
) -> Generation:
    """Sample one response per prompt (stopping at EOS); the model is in eval mode meanwhile."""
    eos, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    check_length(model, int(prompt_mask.sum(-1).max()) + config.max_new_tokens)
    with eval_mode(model):
        positions = position_ids_from_mask(prompt_mask)
        out = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=positions,
            use_cache=True,
        )
        mask, next_position = prompt_mask, positions[:, -1:] + 1  # (B, P), (B, 1)
        alive = torch.ones(len(prompts), dtype=torch.bool)
        tokens = []
        for step in range(config.max_new_tokens):
            token = sample_next(out.logits[:, -1], config, generator)
            token = torch.where(alive, token, torch.full_like(token, pad_id))
            tokens.append(token)
            alive = alive & (token != eos)
            if not alive.any() or step == config.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_position,
                **cache_kwargs(out),
                use_cache=True,
            )
            next_position = next_position + 1
    response_ids = torch.stack(tokens, dim=1)  # (B, R)
    is_eos = response_ids == eos
    # a token belongs to the response if no EOS came strictly before it
    eos_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    response_mask = (~eos_before).long()
    response_ids = response_ids.masked_fill(eos_before, pad_id)
    finished = is_eos.any(-1)
    texts = [
        tokenizer.decode(row[m.bool() & (row != eos)].tolist())
        for row, m in zip(response_ids, response_mask, strict=True)
    ]
    return Generation(
        prompt_ids, prompt_mask, response_ids, response_mask, prompts, texts, finished
    )


def response_logits(logits: Tensor, generation: Generation) -> tuple[Tensor, Tensor]:
    """The ``(B, R, V')`` logits that predict each response token, from a forward's ``(B, P +
    R, V)`` logits, and the ``(B, R)`` labels (:data:`IGNORE_INDEX` past the response); with
    ``generation.allowed_ids`` only those ids' logits, labels counted from the first."""
    n_prompt = generation.prompt_ids.shape[1]
    logits = logits[:, n_prompt - 1 : -1]  # position t predicts token t + 1
    labels = generation.response_ids.masked_fill(generation.response_mask == 0, IGNORE_INDEX)
    if generation.allowed_ids is not None:
        lo, hi = generation.allowed_ids
        inside = (labels >= lo) & (labels < hi)
        if bool((~inside & (labels != IGNORE_INDEX)).any()):
            raise ValueError(f"a response token lies outside the allowed ids [{lo}, {hi})")
        logits, labels = logits[..., lo:hi], torch.where(inside, labels - lo, labels)
    return logits, labels


def response_logprobs(model: nn.Module, generation: Generation, **kwargs) -> tuple[Tensor, object]:
    """``(B, R)`` log-probabilities of the response tokens (0 past the response) and the
    model output (``kwargs`` go to the forward, e.g. ``output_hidden_states=True``;
    ``generation.model_inputs`` too)."""
    ids, mask = generation.sequences()
    out = causal_lm_forward(model, ids, mask, **generation.model_inputs, **kwargs)
    logits, labels = response_logits(out.logits, generation)
    return token_logprobs(logits, labels), out


@torch.no_grad()
def sequence_kl(policy: nn.Module, reference: nn.Module, generation: Generation) -> Tensor:
    """``(B,)`` Monte-Carlo estimate of KL(pi || pi_ref) per response: the summed log-ratio
    ``log pi(y_t) - log pi_ref(y_t)`` over tokens sampled from ``pi``."""
    with eval_mode(policy, reference):
        logps, _ = response_logprobs(policy, generation)
        ref_logps, _ = response_logprobs(reference, generation)
    return (logps - ref_logps).sum(-1)
