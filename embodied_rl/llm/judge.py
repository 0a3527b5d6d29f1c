"""A local causal LM as an AI-feedback judge: ``judge(prompt) -> "A. <rationale>"``.

The verdict compares the log-probabilities of the two answer continuations (``" A"`` vs
``" B"``) after the judge prompt, so it is deterministic and never fails to parse; the
rationale is then generated greedily after the chosen letter. Any labeler that takes a
``judge: Callable[[str], str]`` (the AI-feedback labeler of :mod:`embodied_rl.preference`)
can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.generation import SamplingConfig, generate
from embodied_rl.llm.models import pad, sequence_logprobs
from embodied_rl.llm.tokenizer import encode

OPTIONS = ("A", "B")


def judge_prompt(prompt: str, a: str, b: str) -> str:
    """The default comparison prompt (the judge answers with a letter and a reason)."""
    return (
        f"Request: {prompt}\nResponse A:{a}\nResponse B:{b}\n"
        "Which response follows the request better? Answer:"
    )


class LMJudge:
    """Answers comparison prompts with ``"A"`` or ``"B"`` followed by a short rationale.

    ``rationale_tokens=0`` returns the letter alone (faster: no generation)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        options: Sequence[str] = OPTIONS,
        rationale_tokens: int = 16,
    ) -> None:
        if len(options) < 2:
            raise ValueError(f"options={options!r}: a judge needs at least two answers")
        self.model, self.tokenizer = model, tokenizer
        self.options = tuple(options)
        self.rationale_tokens = rationale_tokens

    @torch.no_grad()
    def option_logprobs(self, prompts: Sequence[str]) -> Tensor:
        """``(B, n_options)`` log-probability of each answer ``" <option>"`` after each prompt."""
        prompt_ids = encode(self.tokenizer, list(prompts))
        option_ids = encode(self.tokenizer, [f" {o}" for o in self.options])
        rows, masks = [], []
        for ids in prompt_ids:
            for answer in option_ids:
                rows.append(ids + answer)
                masks.append([0] * len(ids) + [1] * len(answer))
        input_ids = pad(rows, self.tokenizer.pad_token_id)
        attention = pad([[1] * len(r) for r in rows], 0)
        was_training = self.model.training
        self.model.eval()
        try:
            logps = sequence_logprobs(self.model, input_ids, attention, pad(masks, 0))
        finally:
            self.model.train(was_training)
        return logps.view(len(prompt_ids), len(self.options))

    def judge(self, prompts: Sequence[str]) -> list[str]:
        """Batched :meth:`__call__`."""
        best = self.option_logprobs(prompts).argmax(-1).tolist()
        letters = [self.options[i] for i in best]
        if self.rationale_tokens == 0:
            return letters
        config = SamplingConfig(max_new_tokens=self.rationale_tokens, greedy=True)
        asks = [f"{p} {letter}" for p, letter in zip(prompts, letters, strict=True)]
        reasons = generate(self.model, self.tokenizer, asks, config).responses
        return [f"{letter}{reason}" for letter, reason in zip(letters, reasons, strict=True)]

    def __call__(self, prompt: str) -> str:
        return self.judge([prompt])[0]
