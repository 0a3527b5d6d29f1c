"""A local causal LM as an AI-feedback judge: ``judge(prompt) -> "Preference: A\\nRationale: ..."``.

The verdict compares the log-probabilities of the answer continuations (``"\\nPreference: A"``
vs ``"\\nPreference: B"``) after the judge prompt, so it is deterministic and always
parses; the rationale is then generated greedily after the chosen verdict. The answer
format is the one :class:`embodied_rl.preference.labelers.AIFeedbackLabeler` parses, so the
labeler can use the judge as its ``judge: Callable[[str], str]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.generation import SamplingConfig, generate
from embodied_rl.llm.models import eval_mode, pad, sequence_logprobs
from embodied_rl.utils.tokenizer import encode

OPTIONS = ("A", "B")
VERDICT = "\nPreference: {option}"
RATIONALE = "\nRationale:"


def format_verdict(option: str, rationale: str = "") -> str:
    """The judge's answer text: verdict line, then ``Rationale:`` and ``rationale``."""
    return VERDICT.format(option=option) + RATIONALE + rationale


def labeler_prompt(constitution: Sequence[str]) -> Callable[[str, str, str], str]:
    """``render(instruction, a, b)``: the AI-feedback labeler's judge prompt under ``constitution``."""
    from embodied_rl.preference.labelers import build_prompt

    return lambda instruction, a, b: build_prompt(instruction, a, b, constitution)


class LMJudge:
    """Answers comparison prompts with a verdict for one of ``options`` and a rationale.

    ``rationale_tokens=0`` returns the verdict line alone (no generation: faster)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        options: Sequence[str] = OPTIONS,
        rationale_tokens: int = 16,
    ) -> None:
        if len(options) < 2:
            raise ValueError(f"options={options!r}: a judge needs at least two answers")
        if rationale_tokens < 0:
            raise ValueError(f"rationale_tokens={rationale_tokens} must be >= 0")
        self.model, self.tokenizer = model, tokenizer
        self.options = tuple(options)
        self.rationale_tokens = rationale_tokens

    @torch.no_grad()
    def option_logprobs(self, prompts: Sequence[str]) -> Tensor:
        """``(B, n_options)`` log-probability of each verdict continuation after each prompt."""
        prompt_ids = encode(self.tokenizer, list(prompts))
        option_ids = encode(self.tokenizer, [VERDICT.format(option=o) for o in self.options])
        rows, masks = [], []
        for ids in prompt_ids:
            for answer in option_ids:
                rows.append(ids + answer)
                masks.append([0] * len(ids) + [1] * len(answer))
        attention = pad([[1] * len(r) for r in rows], 0)
        with eval_mode(self.model):
            ids = pad(rows, self.tokenizer.pad_token_id)
            logps = sequence_logprobs(self.model, ids, attention, pad(masks, 0))
        return logps.view(len(prompt_ids), len(self.options))

    def judge(self, prompts: Sequence[str]) -> list[str]:
        """Batched :meth:`__call__`."""
        best = self.option_logprobs(prompts).argmax(-1).tolist()
        verdicts = [format_verdict(self.options[i]) for i in best]
        if self.rationale_tokens == 0:
            return [v.removesuffix(RATIONALE).strip() for v in verdicts]
        config = SamplingConfig(max_new_tokens=self.rationale_tokens, greedy=True)
        asks = [p + v for p, v in zip(prompts, verdicts, strict=True)]
        reasons = generate(self.model, self.tokenizer, asks, config).responses
        return [(v + r).strip() for v, r in zip(verdicts, reasons, strict=True)]

    def __call__(self, prompt: str) -> str:
        return self.judge([prompt])[0]
