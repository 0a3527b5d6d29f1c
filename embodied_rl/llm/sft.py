"""Supervised fine-tuning: next-token cross-entropy on response tokens only.

Each example is a ``(prompt, response)`` pair; the model sees ``prompt + response + EOS``
and the loss covers the response and its EOS (prompt and padding are labelled
:data:`~embodied_rl.llm.models.IGNORE_INDEX`). With ``packing=True`` several examples share
one row of ``max_length`` tokens; their positions restart at 0 and no attention mask is
passed, which transformers (>= 5) turns into a block-diagonal causal mask, so packed
examples never see each other (checked on the model before training).

Vision-language models train the same way: ``train(examples, images=...)`` gives every
example an image (uint8 ``(H, W, 3)``), the trainer's ``image_processor`` turns a batch of
them into the model's ``pixel_values``, and the prompt holds the model's image placeholder
tokens. Behaviour cloning of the RT-2-style policy is this trainer on (image, instruction) ->
action-token examples (:func:`embodied_rl.policies.rt2.rt2_sft_examples`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from embodied_rl.llm.models import IGNORE_INDEX, causal_lm_forward, eval_mode, pad, save_causal_lm
from embodied_rl.llm.training import (
    IndexBatches,
    checked_images,
    make_optimizer,
    optimizer_step,
    require_positive,
    run_steps,
    warmup_lambda,
)
from embodied_rl.policies.action_tokenizer import gaussian_bin_targets
from embodied_rl.rl.distributed import data_parallel
from embodied_rl.utils.tokenizer import encode_items

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning options."""

    steps: int = 1_000  # optimiser steps
    batch_size: int = 32  # examples per step (rows when packing)
    learning_rate: float = 5e-4  # suits a small model from scratch; ~1e-5 for pretrained LMs
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    max_length: int = 128  # tokens per example (and per packed row); longer ones are cut
    packing: bool = False
    seed: int = 0  # data order
    log_every: int = 50
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        require_positive(self, "steps", "batch_size", "max_length", "log_every")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")


@dataclass(frozen=True)
class OrdinalBins:
    """Token ids ``first_id .. first_id + n_bins - 1`` are ordered bins of a continuous value
    (the RT-2 policy's action tokens): :func:`sft_loss` replaces their one-hot targets by
    HL-Gauss targets of ``sigma`` bin widths
    (:func:`~embodied_rl.policies.action_tokenizer.gaussian_bin_targets`), so a label's
    neighbouring bins share its probability. Other tokens keep plain cross-entropy."""

    first_id: int
    n_bins: int
    sigma: float

    def __post_init__(self) -> None:
        if self.first_id < 0 or self.n_bins < 2:
            raise ValueError(
                f"OrdinalBins(first_id={self.first_id}, n_bins={self.n_bins}): first_id must "
                "be >= 0 and n_bins >= 2"
            )
        if self.sigma <= 0:
            raise ValueError(f"OrdinalBins sigma={self.sigma} must be > 0 (bin widths)")


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of prompt + response + EOS and which of them the loss sees."""

    input_ids: list[int]
    loss_mask: list[int]  # 0 on the prompt, 1 on the response and EOS
    image: int = -1  # index of the example's image (vision-language examples), else -1


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[tuple[str, str]], max_length: int
) -> list[TokenizedExample]:
    """Tokenize (prompt, response) pairs (either may be given as token ids); pairs whose
    prompt fills ``max_length`` are dropped (example ``i`` keeps image index ``i``)."""
    prompts = encode_items(tokenizer, [p for p, _ in examples])
    responses = encode_items(tokenizer, [r for _, r in examples])
    out, dropped = [], 0
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        ids = (prompt + response + [tokenizer.eos_token_id])[:max_length]
        mask = ([0] * len(prompt) + [1] * (len(response) + 1))[:max_length]
        if not any(mask):
            dropped += 1
            continue
        out.append(TokenizedExample(ids, mask, i))
    if dropped:
        logger.warning("dropped %d examples whose prompt fills max_length=%d", dropped, max_length)
    if not out:
        raise ValueError(f"no example has a response token within max_length={max_length}")
    return out


def sft_loss(logits: Tensor, labels: Tensor, ordinal: OrdinalBins | None = None) -> Tensor:
    """Mean next-token cross-entropy: ``logits[:, t]`` predicts ``labels[:, t + 1]``.

    ``logits`` ``(B, T, V)``; ``labels`` ``(B, T)`` token ids with :data:`IGNORE_INDEX` on
    the tokens no loss sees (the Hugging Face convention). With ``ordinal``, a label among its
    bin ids is scored against HL-Gauss targets over those ids instead of its one-hot."""
    shifted = labels[:, 1:]
    if not (shifted != IGNORE_INDEX).any():
        raise ValueError("every label is IGNORE_INDEX: the batch has no response token")
    flat_logits, flat = logits[:, :-1].flatten(0, 1).float(), shifted.flatten()
    if ordinal is None:
        return F.cross_entropy(flat_logits, flat, ignore_index=IGNORE_INDEX)
    if ordinal.first_id + ordinal.n_bins > logits.shape[-1]:
        raise ValueError(f"{ordinal} reaches past the model's {logits.shape[-1]} logits")
    keep = flat != IGNORE_INDEX
    logp, target = flat_logits[keep].log_softmax(-1), flat[keep]
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    bins = target - ordinal.first_id
    binned = (bins >= 0) & (bins < ordinal.n_bins)
    if binned.any():
        soft = gaussian_bin_targets(bins[binned], ordinal.n_bins, ordinal.sigma)
        span = slice(ordinal.first_id, ordinal.first_id + ordinal.n_bins)
        nll = nll.masked_scatter(binned, -(soft * logp[binned, span]).sum(-1))
    return nll.mean()


def collate(
    examples: Sequence[TokenizedExample],
    pad_id: int,
    images: Tensor | None = None,
    image_processor: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` ``(B, T)``; with
    ``images`` (uint8 ``(N, H, W, 3)``), the examples' ``pixel_values`` from
    ``image_processor``."""
    ids = pad([e.input_ids for e in examples], pad_id)
    attention = pad([[1] * len(e.input_ids) for e in examples], 0)
    keep = pad([e.loss_mask for e in examples], 0).bool()
    batch = {
        "input_ids": ids,
        "attention_mask": attention,
        "labels": ids.masked_fill(~keep, IGNORE_INDEX),
    }
    if images is not None:
        batch["pixel_values"] = image_processor(images[[e.image for e in examples]])
    return batch


def pack(examples: Sequence[TokenizedExample], max_length: int, pad_id: int) -> dict[str, Tensor]:
    """Greedy packing into rows of ``max_length``: ``input_ids``, ``position_ids`` (restarting
    at every example) and ``labels`` ``(N, max_length)``. The first token of every example is
    never a label (it would be predicted from the previous example)."""
    rows: list[tuple[list[int], list[int], list[int]]] = []
    ids: list[int] = []
    positions: list[int] = []
    labels: list[int] = []
    for e in examples:
        if len(ids) + len(e.input_ids) > max_length:
            rows.append((ids, positions, labels))
            ids, positions, labels = [], [], []
        ids += e.input_ids
        positions += list(range(len(e.input_ids)))
        labels += [IGNORE_INDEX] + [
            t if m else IGNORE_INDEX for t, m in zip(e.input_ids[1:], e.loss_mask[1:], strict=True)
        ]
    rows.append((ids, positions, labels))
    n_pad = [max_length - len(r[0]) for r in rows]
    return {
        "input_ids": pad([r[0] + [pad_id] * k for r, k in zip(rows, n_pad, strict=True)], pad_id),
        # padding forms its own sequence (positions from 0), so nothing attends across it
        "position_ids": pad([r[1] + list(range(k)) for r, k in zip(rows, n_pad, strict=True)], 0),
        "labels": pad(
            [r[2] + [IGNORE_INDEX] * k for r, k in zip(rows, n_pad, strict=True)], IGNORE_INDEX
        ),
    }


@torch.no_grad()
def check_packing_support(model: nn.Module) -> None:
    """Raise ``ValueError`` unless the model isolates packed sequences by their positions."""
    with eval_mode(model):
        ids = torch.arange(1, 9)[None] % model.config.vocab_size  # (1, 8)
        positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]])
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, 3:]
        alone = model(input_ids=ids[:, 3:], use_cache=False).logits[0]
    if not torch.allclose(packed, alone, atol=1e-4):
        raise ValueError(
            f"{type(model).__name__} lets packed examples attend to each other (its attention "
            "ignores restarting position_ids); train it with packing=False"
        )


def lm_loss(
    model: nn.Module, batch: dict[str, Tensor], ordinal: OrdinalBins | None = None
) -> Tensor:
    """:func:`sft_loss` of the model on a :func:`collate` or :func:`pack` batch."""
    if "position_ids" in batch:  # packed: no attention mask, positions mark the examples
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
    else:
        extra = {"pixel_values": batch["pixel_values"]} if "pixel_values" in batch else {}
        logits = causal_lm_forward(
            model, batch["input_ids"], batch["attention_mask"], **extra
        ).logits
    return sft_loss(logits, batch["labels"], ordinal)


class SFTTrainer:
    """Fine-tunes a causal LM (or a vision-language model, with ``image_processor``) on
    (prompt, response) demonstrations. ``ordinal``: token ids that are ordered bins (the RT-2
    policy's actions) train against HL-Gauss targets (:class:`OrdinalBins`); :meth:`evaluate`
    still reports the plain cross-entropy, the labels' likelihood."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: SFTConfig = SFTConfig(),
        image_processor: Callable[[Tensor], Tensor] | None = None,
        ordinal: OrdinalBins | None = None,
    ) -> None:
        if config.packing:
            if image_processor is not None:
                raise ValueError("packing=True is for text only; train with images unpacked")
            check_packing_support(model)
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.image_processor, self.ordinal = image_processor, ordinal
        self.optimizer = make_optimizer(
            model.parameters(), config.learning_rate, config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_lambda(config.warmup_steps)
        )
        self.step_count = 0

    def _images(self, examples: Sequence, images: Any) -> Tensor | None:
        return checked_images(images, len(examples), self.image_processor)

    def _batches(self, examples: Sequence[tuple[str, str]], images: Tensor | None = None):
        c = self.config
        tokenized = tokenize_examples(self.tokenizer, examples, c.max_length)
        pad_id = self.tokenizer.pad_token_id
        if c.packing:
            rows = pack(tokenized, c.max_length, pad_id)
            order = IndexBatches(
                len(rows["input_ids"]), c.batch_size, c.seed + self.step_count, data_parallel()
            )
            return (({k: v[i] for k, v in rows.items()}) for i in order)
        order = IndexBatches(
            len(tokenized), c.batch_size, c.seed + self.step_count, data_parallel()
        )
        return (
            collate([tokenized[j] for j in i], pad_id, images, self.image_processor) for i in order
        )

    def train(
        self,
        examples: Sequence[tuple[str, str]],
        out: str | os.PathLike | None = None,
        eval_examples: Sequence[tuple[str, str]] | None = None,
        images: Any = None,
        eval_images: Any = None,
    ) -> list[dict[str, float]]:
        """Run ``config.steps`` steps; returns the logged metric rows (``eval/loss`` at the end
        when ``eval_examples`` are given). ``out`` receives metrics.csv and TensorBoard.
        ``images``/``eval_images``: one uint8 ``(H, W, 3)`` image per example."""
        c = self.config
        batches = self._batches(examples, self._images(examples, images))
        self.model.train()

        def step(i: int) -> dict[str, float]:
            loss = lm_loss(self.model, next(batches), self.ordinal)
            norm = optimizer_step(loss, self.optimizer, c.max_grad_norm, i, "sft", self.scheduler)
            return {"loss": loss.item(), "grad_norm": norm}

        evaluate = (
            (lambda: self.evaluate(eval_examples, images=eval_images)) if eval_examples else None
        )
        rows = run_steps(
            step, c.steps, desc="sft", out=out, log_every=c.log_every, progress=c.progress,
            tensorboard=c.tensorboard, evaluate=evaluate, start=self.step_count, parallel=data_parallel(),
            optimizers=[self.optimizer], modules=[self.model],
        )  # fmt: skip
        self.step_count += c.steps
        return rows

    @torch.no_grad()
    def evaluate(
        self, examples: Sequence[tuple[str, str]], batch_size: int = 64, images: Any = None
    ) -> dict[str, float]:
        """Token-weighted mean response loss over ``examples`` (no packing, eval mode)."""
        tokenized = tokenize_examples(self.tokenizer, examples, self.config.max_length)
        pixels = self._images(examples, images)
        total, n_tokens = 0.0, 0
        with eval_mode(self.model):
            for start in range(0, len(tokenized), batch_size):
                batch = collate(
                    tokenized[start : start + batch_size], self.tokenizer.pad_token_id, pixels,
                    self.image_processor,
                )  # fmt: skip
                n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                total += float(lm_loss(self.model, batch)) * n
                n_tokens += n
        return {"loss": total / n_tokens}

    def save(self, path: str | os.PathLike) -> Path:
        """The fine-tuned model and tokenizer (safetensors + JSON) in ``path``."""
        return save_causal_lm(self.model, path, self.tokenizer)
