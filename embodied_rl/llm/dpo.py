"""Direct Preference Optimization and its IPO / hinge variants on a causal LM (Rafailov et al.
2023, arXiv:2305.18290); the loss is :func:`embodied_rl.preference.losses.dpo_loss`.

Speed choices (``benchmarks/dpo_speed.py`` measures them against TRL's DPOTrainer):

- the frozen reference's log-probabilities are computed once for the whole dataset before
  training (``precompute_reference=True``), so a step runs one forward and one backward;
- the prompt is encoded once per pair: each row is ``prompt + chosen + rejected`` with
  positions and a 4-D attention mask that make the rejected tokens continue the prompt
  without seeing the chosen ones (:func:`~embodied_rl.llm.pairs.collate_shared_prompt`);
- only response positions reach the LM head: the transformer's hidden states at those
  positions are gathered before the vocabulary projection;
- both tricks are checked once against the plain forward on the model at hand; a model
  where they do not reproduce it (another attention kernel, a scaled or soft-capped head)
  falls back to TRL's layout (chosen and rejected rows in one ``(2B, T)`` forward);
- batches are built from token lists in plain Python, without datasets or accelerate.
"""

from __future__ import annotations

import copy
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

from embodied_rl.llm.models import (
    causal_lm_forward,
    disable_dropout,
    eval_mode,
    freeze,
    save_causal_lm,
    sequence_logprobs,
)
from embodied_rl.llm.pairs import (
    SegmentPair,
    TextPair,
    TokenizedPair,
    TokenizedSegmentPair,
    collate_pairs,
    collate_segment_pairs,
    collate_shared_prompt,
    tokenize_pairs,
    tokenize_segment_pairs,
)
from embodied_rl.llm.training import (
    IndexBatches,
    checked_images,
    make_optimizer,
    optimizer_step,
    require_positive,
    run_steps,
)
from embodied_rl.preference.losses import DPO_LOSSES, dpo_loss
from embodied_rl.rl.distributed import data_parallel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPOConfig:
    """DPO options (the paper's beta 0.1 by default)."""

    beta: float = 0.1  # KL weight; for IPO it is tau
    loss_type: str = "sigmoid"  # "sigmoid" (DPO), "ipo" (length-averaged log-probs), "hinge"
    label_smoothing: float = 0.0  # conservative DPO's flip probability (sigmoid only)
    steps: int = 500
    batch_size: int = 16  # pairs per step
    learning_rate: float = 1e-5  # 1e-4 overshoots (KL > 50 nats) even on the tiny demo model
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 128
    precompute_reference: bool = True  # one pass over the data before training
    share_prompt: bool = True  # encode each prompt once per pair (checked on the model)
    seed: int = 0
    log_every: int = 50
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        require_positive(self, "steps", "batch_size", "max_length", "log_every")
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type={self.loss_type!r}; choose one of {sorted(DPO_LOSSES)}")
        if self.beta <= 0:
            raise ValueError(f"beta={self.beta} must be > 0 (0.1 is the DPO paper's value)")


# ---------------------------------------------------------------------- log-probabilities
@torch.no_grad()
def head_split_matches(model: nn.Module) -> bool:
    """Whether ``output_embeddings(base_model(x))`` reproduces the model's logits (true for
    GPT-2, Llama and most causal LMs; false where the head adds scaling or soft-capping)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(model, "base_model", model) is model:
        return False
    ids = torch.arange(1, 7)[None] % model.config.vocab_size
    mask = torch.ones_like(ids)
    with eval_mode(model):
        full = causal_lm_forward(model, ids, mask).logits
        split = head(causal_lm_forward(model.base_model, ids, mask).last_hidden_state)
    return full.shape == split.shape and torch.allclose(full, split, atol=1e-4)


def response_logprobs_sum(
    model: nn.Module, batch: dict[str, Tensor], head_split: bool
) -> tuple[Tensor, Tensor]:
    """``(2B,)`` summed log-probs of the response tokens of a :func:`collate_pairs` batch and
    ``(2B,)`` their counts; with ``head_split`` only response positions reach the LM head."""
    ids, attention, loss_mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    counts = loss_mask[:, 1:].sum(-1)
    if "pixel_values" in batch:  # a vision-language model: the full forward with its images
        extra = {"pixel_values": batch["pixel_values"]}
        return sequence_logprobs(model, ids, attention, loss_mask, **extra), counts
    if not head_split:
        return sequence_logprobs(model, ids, attention, loss_mask), counts
    hidden = causal_lm_forward(model.base_model, ids, attention).last_hidden_state  # (2B, T, H)
    selected = loss_mask[:, 1:].bool()  # (2B, T-1): position t predicts token t + 1
    rows = selected.nonzero()[:, 0]  # (N,) sequence of each response token
    return _head_logps(
        model, hidden[:, :-1][selected], ids[:, 1:][selected], rows, len(ids)
    ), counts


def _head_logps(
    model: nn.Module, hidden: Tensor, target: Tensor, rows: Tensor, n_rows: int
) -> Tensor:
    """``(n_rows,)`` sums over ``rows`` of ``log p(target)`` from ``(N, H)`` hidden states."""
    logits = model.get_output_embeddings()(hidden)  # (N, V)
    token_logps = -F.cross_entropy(logits.float(), target, reduction="none")  # (N,)
    return torch.zeros(n_rows, dtype=token_logps.dtype).index_add(0, rows, token_logps)


def _attention_mask_for(model: nn.Module, allowed: Tensor) -> Tensor | None:
    """The 4-D mask in the form the model's attention kernel takes (None: unsupported)."""
    kind = getattr(model.config, "_attn_implementation", None)
    if kind == "sdpa":
        return allowed
    if kind == "eager":
        return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return None


def shared_prompt_logprobs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(2B,)`` summed response log-probs and counts of a :func:`collate_shared_prompt` batch."""
    mask = _attention_mask_for(model, batch["attention"])
    hidden = model.base_model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=batch["position_ids"],
        use_cache=False,
    ).last_hidden_state  # (B, T, H)
    flat = hidden.flatten(0, 1)[batch["source"]]  # (N, H)
    n_rows = len(batch["counts"])
    return _head_logps(model, flat, batch["target"], batch["sequence"], n_rows), batch["counts"]


@torch.no_grad()
def shared_prompt_matches(model: nn.Module) -> bool:
    """Whether the shared-prompt layout reproduces the plain forward's log-probs on ``model``."""
    if (
        not head_split_matches(model)
        or _attention_mask_for(model, torch.ones(1, dtype=torch.bool)) is None
    ):
        return False
    vocab = model.config.vocab_size
    pairs = [
        TokenizedPair([1, 2, 3], [4, 5], [6, 7, 8]),
        TokenizedPair([9, 10], [11, 12, 13, 14], [15]),
    ]
    pairs = [
        TokenizedPair(
            *([t % vocab for t in ids] for ids in (p.prompt_ids, p.chosen_ids, p.rejected_ids))
        )
        for p in pairs
    ]
    with eval_mode(model):
        plain, _ = response_logprobs_sum(model, collate_pairs(pairs, 0), head_split=False)
        shared, _ = shared_prompt_logprobs(model, collate_shared_prompt(pairs, 0))
    return bool(torch.allclose(plain, shared, atol=1e-4))


@dataclass(frozen=True)
class DPOData:
    """Pairs ready for :meth:`DPOTrainer.train`: token ids and reference log-probs."""

    pairs: list[TokenizedPair] | list[TokenizedSegmentPair]
    reference_logps: Tensor | None  # (N, 2) chosen, rejected; None: computed per batch
    images: Tensor | None = None  # uint8 (N_images, H, W, 3) the pairs' image indices point into


class DPOTrainer:
    """Trains ``policy`` on preference pairs against a frozen ``reference`` (a copy of the
    initial policy when None). A vision-language model trains with ``image_processor`` (uint8
    images -> its ``pixel_values``) and ``images=`` that the pairs' ``image`` indices point
    into; its batches always use the plain ``(2B, T)`` layout."""

    def __init__(
        self,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: DPOConfig = DPOConfig(),
        reference: PreTrainedModel | None = None,
        image_processor: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.policy, self.tokenizer, self.config = disable_dropout(policy), tokenizer, config
        # a given reference is only read (no_grad, eval mode), never modified
        self.reference = reference if reference is not None else freeze(copy.deepcopy(policy))
        self.optimizer = make_optimizer(
            policy.parameters(), config.learning_rate, config.weight_decay
        )
        self.image_processor = image_processor
        self.head_split = image_processor is None and head_split_matches(policy)
        self.shared_prompt = (
            image_processor is None and config.share_prompt and shared_prompt_matches(policy)
        )
        if config.share_prompt and not self.shared_prompt:
            logger.info(
                "%s: shared-prompt layout unsupported; using (2B, T) rows", type(policy).__name__
            )
        self.step_count = 0

    def collate(
        self, pairs: Sequence[TokenizedPair], images: Tensor | None = None
    ) -> dict[str, Tensor]:
        """A batch in this trainer's layout."""
        pad_id = self.tokenizer.pad_token_id
        if isinstance(pairs[0], TokenizedSegmentPair):
            return collate_segment_pairs(pairs, pad_id, images, self.image_processor)
        if self.shared_prompt:
            return collate_shared_prompt(pairs, pad_id)
        return collate_pairs(pairs, pad_id, images, self.image_processor)

    # ------------------------------------------------------------------ maths
    def _logps(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(B,)`` chosen and rejected log-probs (length-averaged for IPO)."""
        if self.shared_prompt:
            logps, counts = shared_prompt_logprobs(model, batch)
        else:
            logps, counts = response_logprobs_sum(model, batch, self.head_split)
        if "steps" in batch:  # segment pairs: a segment's log-prob is the sum of its steps'
            n = int(batch["steps"])
            logps, counts = logps.view(-1, n).sum(-1), counts.view(-1, n).sum(-1)
        if self.config.loss_type == "ipo":
            logps = logps / counts.clamp_min(1)
        return logps.chunk(2)

    def _tokenize(self, pairs: Sequence[TextPair] | Sequence[SegmentPair]) -> list:
        if pairs and isinstance(pairs[0], SegmentPair):
            if self.shared_prompt:
                raise ValueError(
                    "segment pairs need the plain layout: DPOConfig(share_prompt=False), or a "
                    "vision-language trainer (image_processor=)"
                )
            return tokenize_segment_pairs(self.tokenizer, pairs, self.config.max_length)
        return tokenize_pairs(self.tokenizer, pairs, self.config.max_length)

    def _images(
        self, pairs: Sequence[TextPair] | Sequence[SegmentPair], images: Any
    ) -> Tensor | None:
        if images is None:
            return checked_images(None, 0, self.image_processor)
        images = torch.as_tensor(images)
        checked_images(images, len(images), self.image_processor)
        indices = (
            [step[2] for p in pairs for side in (p.chosen, p.rejected) for step in side]
            if pairs and isinstance(pairs[0], SegmentPair)
            else [p.image for p in pairs]
        )
        bad = [i for i in indices if not 0 <= i < len(images)]
        if bad:
            raise ValueError(f"pairs point at images {bad[:5]}; {len(images)} images were given")
        return images

    def prepare(
        self, pairs: Sequence[TextPair] | Sequence[SegmentPair], images: Any = None
    ) -> DPOData:
        """Tokenized pairs (text pairs, or segment pairs compared by their summed step
        log-probs) and, with ``precompute_reference``, their reference log-probs; ``images``:
        uint8 ``(N, H, W, 3)`` that the pairs' image indices point into."""
        images = self._images(pairs, images)
        tokenized = self._tokenize(pairs)
        ref = (
            self.reference_logps(tokenized, images=images)
            if self.config.precompute_reference
            else None
        )
        return DPOData(tokenized, ref, images)

    @torch.no_grad()
    def reference_logps(
        self, pairs: Sequence, batch_size: int = 64, images: Tensor | None = None
    ) -> Tensor:
        """``(N, 2)`` reference log-probs (chosen, rejected) of every pair."""
        out = []
        with eval_mode(self.reference):
            for start in range(0, len(pairs), batch_size):
                batch = self.collate(pairs[start : start + batch_size], images)
                out.append(torch.stack(self._logps(self.reference, batch), dim=-1))
        return torch.cat(out)

    def loss(
        self, batch: dict[str, Tensor], ref_logps: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """DPO loss and metrics of one pair batch; ``ref_logps`` ``(B, 2)`` precomputed or
        None (the reference runs now)."""
        c = self.config
        chosen, rejected = self._logps(self.policy, batch)
        if ref_logps is None:
            with torch.no_grad(), eval_mode(self.reference):
                ref_chosen, ref_rejected = self._logps(self.reference, batch)
        else:
            ref_chosen, ref_rejected = ref_logps.unbind(-1)
        loss, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, c.beta, c.loss_type, c.label_smoothing
        )
        margin = chosen_rewards - rejected_rewards
        return loss, {
            "loss": loss.item(),
            "reward_accuracy": (margin > 0).float().mean().item(),
            "reward_margin": margin.mean().item(),
            "chosen_reward": chosen_rewards.mean().item(),
            "rejected_reward": rejected_rewards.mean().item(),
            "chosen_logps": chosen.detach().mean().item(),
        }

    # ------------------------------------------------------------------ loop
    def train(
        self,
        pairs: Sequence[TextPair] | Sequence[SegmentPair] | DPOData,
        out: str | os.PathLike | None = None,
        eval_pairs: Sequence[TextPair] | None = None,
        images: Any = None,
        eval_images: Any = None,
    ) -> list[dict[str, float]]:
        """Run ``config.steps`` steps; returns the logged rows (``eval/*`` on ``eval_pairs``
        at the end). Pass :meth:`prepare`'s result to train in several calls without
        tokenizing and running the reference again. ``images``/``eval_images``: what the
        pairs' ``image`` indices point into (vision-language models)."""
        c = self.config
        data = pairs if isinstance(pairs, DPOData) else self.prepare(pairs, images)
        tokenized, ref, pixels = data.pairs, data.reference_logps, data.images
        order = IndexBatches(
            len(tokenized), c.batch_size, c.seed + self.step_count, data_parallel()
        )
        self.policy.train()

        def step(i: int) -> dict[str, float]:
            index = next(order)
            batch = self.collate([tokenized[j] for j in index], pixels)
            loss, metrics = self.loss(batch, ref[index] if ref is not None else None)
            metrics["grad_norm"] = optimizer_step(loss, self.optimizer, c.max_grad_norm, i, "dpo")
            return metrics

        evaluate = (lambda: self.evaluate(eval_pairs, images=eval_images)) if eval_pairs else None
        rows = run_steps(
            step, c.steps, desc=f"dpo ({c.loss_type})", out=out, log_every=c.log_every,
            progress=c.progress, tensorboard=c.tensorboard, evaluate=evaluate,
            start=self.step_count, parallel=data_parallel(),
            optimizers=[self.optimizer], modules=[self.policy],
        )  # fmt: skip
        self.step_count += c.steps
        return rows

    @torch.no_grad()
    def evaluate(
        self,
        pairs: Sequence[TextPair] | Sequence[SegmentPair],
        batch_size: int = 64,
        images: Any = None,
    ) -> dict[str, float]:
        """Mean loss, implicit-reward accuracy and margin on ``pairs`` (eval mode)."""
        pixels = self._images(pairs, images)
        tokenized = self._tokenize(pairs)
        sums: dict[str, float] = {}
        with eval_mode(self.policy):
            for start in range(0, len(tokenized), batch_size):
                rows = tokenized[start : start + batch_size]
                _, metrics = self.loss(self.collate(rows, pixels))
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * len(rows)
        return {k: v / len(tokenized) for k, v in sums.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """The policy and tokenizer (safetensors + JSON) in ``path``."""
        return save_causal_lm(self.policy, path, self.tokenizer)
