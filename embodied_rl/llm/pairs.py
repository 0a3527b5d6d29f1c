"""Text preference pairs and their tokenized, batched form (shared by the reward model and DPO).

A batch of ``B`` pairs is one ``(2B, T)`` tensor: the ``B`` prompt + chosen sequences
first, then the ``B`` prompt + rejected ones, right-padded (TRL's layout), so one forward
pass scores both halves. A pair may carry the index of its image (vision-language models):
the batch then holds the images' ``pixel_values``, the chosen rows' first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.models import pad
from embodied_rl.utils.tokenizer import encode, encode_items

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextPair:
    """A prompt with a preferred and a dispreferred response (text, or token ids)."""

    prompt: str
    chosen: str | list[int]
    rejected: str | list[int]
    margin: float = 0.0  # Llama 2's m(r): how clearly chosen wins (0: no margin)
    # index of the prompt's image in the trainer's images (-1: text only); keyword-only, so
    # subclasses (llm.tasks.Comparison) keep their positional fields
    image: int = field(default=-1, kw_only=True)


def text_pairs_from_labels(records: Sequence[dict]) -> list[TextPair]:
    """Reward-model pairs from the labels of a text labeling session
    (:func:`embodied_rl.preference.human.load_text_labels`): each ``a`` or ``b`` choice as
    (prompt, chosen, rejected); ``equal`` and ``skip`` decide nothing and are left out."""
    pairs = []
    for i, r in enumerate(records):
        missing = [k for k in ("prompt", "a", "b", "choice") if k not in r]
        if missing:
            raise ValueError(f"label {i} lacks {missing}: not a text session's record")
        if r["choice"] in ("a", "b"):
            chosen, rejected = (r["a"], r["b"]) if r["choice"] == "a" else (r["b"], r["a"])
            pairs.append(TextPair(r["prompt"], chosen, rejected))
    return pairs


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of a pair; each response ends with EOS."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float = 0.0
    image: int = field(default=-1, kw_only=True)

    @property
    def n_tokens(self) -> int:
        """Tokens in prompt + chosen and prompt + rejected together."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[TextPair], max_length: int
) -> list[TokenizedPair]:
    """Tokenize prompt and responses apart (each response + EOS); sequences longer than
    ``max_length`` lose their end; pairs whose prompt fills ``max_length`` are dropped."""
    if not pairs:
        raise ValueError("no preference pairs given")
    eos = tokenizer.eos_token_id
    prompts = encode(tokenizer, [p.prompt for p in pairs])
    chosen = encode_items(tokenizer, [p.chosen for p in pairs])
    rejected = encode_items(tokenizer, [p.rejected for p in pairs])
    out = []
    for pair, p, c, r in zip(pairs, prompts, chosen, rejected, strict=True):
        room = max_length - len(p)
        if room < 1:
            continue
        out.append(
            TokenizedPair(p, (c + [eos])[:room], (r + [eos])[:room], pair.margin, image=pair.image)
        )
    if len(out) < len(pairs):
        logger.warning(
            "dropped %d pairs whose prompt fills max_length=%d", len(pairs) - len(out), max_length
        )
    if not out:
        raise ValueError(f"every prompt fills max_length={max_length}; raise max_length")
    return out


def collate_pairs(
    pairs: Sequence[TokenizedPair],
    pad_id: int,
    images: Tensor | None = None,
    image_processor: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """``input_ids``, ``attention_mask``, ``loss_mask`` ``(2B, T)`` (chosen rows first) and
    ``margin`` ``(B,)``; ``loss_mask`` is 1 on response tokens. With ``images`` (uint8
    ``(N, H, W, 3)``): ``pixel_values`` of the rows' images from ``image_processor``."""
    rows = [p.prompt_ids + p.chosen_ids for p in pairs] + [
        p.prompt_ids + p.rejected_ids for p in pairs
    ]
    prompt_lengths = [len(p.prompt_ids) for p in pairs] * 2
    return {
        "input_ids": pad(rows, pad_id),
        "attention_mask": pad([[1] * len(r) for r in rows], 0),
        "loss_mask": pad(
            [[0] * n + [1] * (len(r) - n) for r, n in zip(rows, prompt_lengths, strict=True)], 0
        ),
        "margin": torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        **(
            {"pixel_values": image_processor(images[[p.image for p in pairs] * 2])}
            if images is not None
            else {}
        ),
    }


@dataclass(frozen=True)
class SegmentPair:
    """Two trajectory segments of equal length, the preferred one first. Each step is
    ``(prompt, response, image)``: what the policy saw (its image index) and did; DPO compares
    the sums of the steps' response log-probabilities (trajectory preferences for the
    RT-2-style policy, whose actions are token responses)."""

    chosen: Sequence[tuple[str, str | list[int], int]]
    rejected: Sequence[tuple[str, str | list[int], int]]
    margin: float = 0.0


@dataclass(frozen=True)
class TokenizedSegmentPair:
    """Token ids of a segment pair: each step a :class:`TokenizedPair` whose ``chosen_ids``
    hold the step's response (``rejected_ids`` unused, empty)."""

    chosen: list[TokenizedPair]
    rejected: list[TokenizedPair]
    margin: float = 0.0


def tokenize_segment_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[SegmentPair], max_length: int
) -> list[TokenizedSegmentPair]:
    """Tokenize every step (prompt, response + EOS); every segment must have the same number
    of steps, and no step may exceed ``max_length`` tokens (an error names it)."""
    if not pairs:
        raise ValueError("no segment pairs given")
    lengths = {len(side) for p in pairs for side in (p.chosen, p.rejected)}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"segments have {sorted(lengths)} steps; they must all have the same > 0")
    steps = [step for p in pairs for side in (p.chosen, p.rejected) for step in side]
    prompts = encode_items(tokenizer, [prompt for prompt, _, _ in steps])
    responses = encode_items(tokenizer, [response for _, response, _ in steps])
    eos = tokenizer.eos_token_id
    tokenized = []
    for (_, _, image), prompt, response in zip(steps, prompts, responses, strict=True):
        if len(prompt) + len(response) + 1 > max_length:
            raise ValueError(
                f"a step has {len(prompt) + len(response) + 1} tokens > max_length={max_length}"
            )
        tokenized.append(TokenizedPair(prompt, response + [eos], [], image=image))
    n = lengths.pop()
    out = []
    for i, pair in enumerate(pairs):
        first = 2 * n * i
        out.append(
            TokenizedSegmentPair(
                tokenized[first : first + n], tokenized[first + n : first + 2 * n], pair.margin
            )
        )
    return out


def collate_segment_pairs(
    pairs: Sequence[TokenizedSegmentPair],
    pad_id: int,
    images: Tensor | None = None,
    image_processor: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """:func:`collate_pairs`' layout with one row per step: ``(2 B L, T)`` rows, the chosen
    segments' steps first (pair by pair), and ``steps`` ``L`` so that the log-probabilities
    are summed per segment."""
    steps = [s for p in pairs for s in p.chosen] + [s for p in pairs for s in p.rejected]
    rows = [s.prompt_ids + s.chosen_ids for s in steps]
    batch = {
        "input_ids": pad(rows, pad_id),
        "attention_mask": pad([[1] * len(r) for r in rows], 0),
        "loss_mask": pad([[0] * len(s.prompt_ids) + [1] * len(s.chosen_ids) for s in steps], 0),
        "margin": torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        "steps": torch.tensor(len(pairs[0].chosen)),
    }
    if images is not None:
        batch["pixel_values"] = image_processor(images[[s.image for s in steps]])
    return batch


def collate_shared_prompt(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, Tensor]:
    """One row per pair, ``prompt + chosen + rejected``, so the prompt is encoded once.

    The rejected tokens take the positions the chosen ones have (both continue the prompt)
    and ``attention`` ``(B, 1, T, T)`` (True: may attend) hides the chosen tokens from them.
    ``source`` / ``target`` ``(N,)`` list every response token: the flat ``(B * T)`` index of
    the position whose output predicts it (the last prompt token for both first tokens)
    and its id; ``sequence`` ``(N,)`` says which of the ``2B`` halves it belongs to (chosen
    ``b``, rejected ``B + b``, the order of :func:`collate_pairs`)."""
    n = len(pairs)
    width = max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    segment = torch.full((n, width), 3, dtype=torch.long)  # 0 prompt, 1 chosen, 2 rejected, 3 pad
    source, target, sequence = [], [], []
    for b, p in enumerate(pairs):
        n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
        ids[b, : n_p + n_c + n_r] = torch.tensor(p.prompt_ids + p.chosen_ids + p.rejected_ids)
        positions[b, : n_p + n_c] = torch.arange(n_p + n_c)
        positions[b, n_p + n_c : n_p + n_c + n_r] = torch.arange(n_p, n_p + n_r)
        segment[b, :n_p], segment[b, n_p : n_p + n_c] = 0, 1
        segment[b, n_p + n_c : n_p + n_c + n_r] = 2
        row = b * width
        source += [row + n_p - 1 + k for k in range(n_c)]
        source += [row + n_p - 1] + [row + n_p + n_c + k for k in range(n_r - 1)]
        target += p.chosen_ids + p.rejected_ids
        sequence += [b] * n_c + [n + b] * n_r
    q, k = segment[:, :, None], segment[:, None, :]  # (B, T, 1), (B, 1, T)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    attention = causal & (k != 3) & ((k == 0) | (k == q))  # (B, T, T)
    attention |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves
    counts = torch.tensor([len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs])
    return {
        "input_ids": ids,
        "position_ids": positions,
        "attention": attention[:, None],  # (B, 1, T, T)
        "source": torch.tensor(source),
        "target": torch.tensor(target),
        "sequence": torch.tensor(sequence),
        "counts": counts,
    }
