"""Reward model: an LM backbone with a scalar head on the last non-padding token, trained on
preference pairs with the shared Bradley-Terry loss (InstructGPT, Ouyang et al. 2022,
arXiv:2203.02155, eq. 1; Llama 2's margin, arXiv:2307.09288, eq. 2).

Pooling finds each row's last attended token from the attention mask, so left- and
right-padded batches score the same. :meth:`RewardModel.score` turns text into rewards
(``prompt + response + EOS``, the layout it was trained on), which is what PPO-RLHF and
best-of-N call.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from embodied_rl.llm.models import (
    atomic_dir,
    eval_mode,
    last_token_index,
    pad,
    position_ids_from_mask,
)
from embodied_rl.llm.pairs import TextPair, TokenizedPair, collate_pairs, tokenize_pairs
from embodied_rl.llm.training import (
    IndexBatches,
    make_optimizer,
    optimizer_step,
    require_positive,
    run_steps,
)
from embodied_rl.preference.losses import bradley_terry_loss
from embodied_rl.rl.distributed import data_parallel
from embodied_rl.utils.tokenizer import encode

RewardFn = Callable[[list[str], list[str]], Tensor]  # (prompts, responses) -> (B,) scores


def pool_last_token(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """``(B, H)`` hidden state of each row's last attended token from ``(B, T, H)``."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_token_index(attention_mask)]


class RewardModel(nn.Module):
    """``r(x, y)``: a transformer backbone and a linear head on the last token's state."""

    def __init__(self, backbone: PreTrainedModel) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.get_text_config().hidden_size  # a VLM's: its language model's
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        # r = (head(h) - shift) / scale; set by normalize() (InstructGPT: demonstrations score 0)
        self.register_buffer("norm_shift", torch.zeros(()))
        self.register_buffer("norm_scale", torch.ones(()))

    @classmethod
    def from_causal_lm(cls, model: PreTrainedModel, seed: int = 0) -> RewardModel:
        """A reward model on a copy of a causal LM's transformer (InstructGPT starts its RM
        from the SFT model); the LM head is dropped, the new head is initialised from ``seed``.
        The copy is trainable even when ``model`` is frozen (``llm.models.freeze``)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            backbone = copy.deepcopy(model.base_model).requires_grad_(True)
            return cls(backbone)

    def _hidden(self, input_ids: Tensor, attention_mask: Tensor, **inputs: Any) -> Tensor:
        return self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
            **inputs,
        ).last_hidden_state  # (B, T, H)

    def _read_out(self, hidden: Tensor) -> Tensor:
        return (self.head(hidden).squeeze(-1) - self.norm_shift) / self.norm_scale

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``(B,)`` rewards of ``(B, T)`` token ids, any padding side."""
        hidden = self._hidden(input_ids, attention_mask)
        return self._read_out(pool_last_token(hidden, attention_mask))  # (B,)

    def token_values(self, input_ids: Tensor, attention_mask: Tensor, **inputs: Any) -> Tensor:
        """``(B, T)`` head output at every position (PPO's value model reads these);
        ``inputs`` go to the backbone (e.g. a vision-language model's ``pixel_values``)."""
        return self._read_out(self._hidden(input_ids, attention_mask, **inputs))

    @torch.no_grad()
    def normalize(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[str],
        responses: Sequence[str],
        scale: bool = True,
    ) -> tuple[float, float]:
        """Shift (and with ``scale``, divide) rewards so these responses, e.g. the
        demonstrations or SFT samples, score mean 0 and std 1 (InstructGPT, section 3.5).
        Returns the new ``(shift, scale)``."""
        self.norm_shift.zero_()
        self.norm_scale.fill_(1.0)
        raw = self.score(tokenizer, prompts, responses)
        self.norm_shift.fill_(raw.mean().item())
        if scale and len(raw) > 1:
            self.norm_scale.fill_(max(raw.std().item(), 1e-6))
        return self.norm_shift.item(), self.norm_scale.item()

    @torch.no_grad()
    def score(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[str],
        responses: Sequence[str],
        batch_size: int = 128,
    ) -> Tensor:
        """``(N,)`` rewards of ``prompt + response + EOS`` texts (eval mode)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        eos = tokenizer.eos_token_id
        out = []
        with eval_mode(self):
            for start in range(0, len(prompts), batch_size):
                p = encode(tokenizer, list(prompts[start : start + batch_size]))
                r = encode(tokenizer, list(responses[start : start + batch_size]))
                rows = [a + b + [eos] for a, b in zip(p, r, strict=True)]
                mask = pad([[1] * len(x) for x in rows], 0)
                out.append(self(pad(rows, tokenizer.pad_token_id), mask))
        return torch.cat(out)

    def save(self, path: str | os.PathLike) -> Path:
        """Backbone (``save_pretrained``, safetensors), head (safetensors) and JSON, atomically."""
        with atomic_dir(path) as tmp:
            self.backbone.save_pretrained(str(tmp / "backbone"), safe_serialization=True)
            head = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
            head.update(norm_shift=self.norm_shift.clone(), norm_scale=self.norm_scale.clone())
            save_file(head, str(tmp / "head.safetensors"))
            (tmp / "reward_model.json").write_text(json.dumps({"format": 1, "head": "linear"}))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RewardModel:
        """A reward model written by :meth:`save` (local files only)."""
        path = Path(path)
        if not (path / "reward_model.json").exists():
            raise FileNotFoundError(f"{path} holds no reward model (reward_model.json is missing)")
        config = AutoConfig.from_pretrained(str(path / "backbone"), local_files_only=True)
        backbone = AutoModel.from_pretrained(
            str(path / "backbone"), config=config, local_files_only=True, use_safetensors=True
        )
        model = cls(backbone)
        tensors = load_file(str(path / "head.safetensors"))
        model.norm_shift.copy_(tensors.pop("norm_shift"))
        model.norm_scale.copy_(tensors.pop("norm_scale"))
        model.head.load_state_dict(tensors)
        return model


def reward_model_fn(reward_model: RewardModel, tokenizer: PreTrainedTokenizerBase) -> RewardFn:
    """A :data:`RewardFn` scoring with ``reward_model`` (what PPO-RLHF and best-of-N call)."""
    return lambda prompts, responses: reward_model.score(tokenizer, prompts, responses)


@dataclass(frozen=True)
class RewardConfig:
    """Reward-model training options."""

    steps: int = 1_000
    batch_size: int = 32  # pairs per step
    learning_rate: float = 3e-4  # suits a small model from scratch; ~1e-5 for pretrained LMs
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 128
    use_margin: bool = False  # subtract each pair's margin (Llama 2)
    center_rewards_coef: float = 0.0  # + c * mean((r_c + r_r)^2): keeps rewards near 0
    eval_every: int = 0  # steps between held-out accuracies (0: only at the end)
    seed: int = 0
    log_every: int = 50
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        require_positive(self, "steps", "batch_size", "max_length", "log_every")
        if self.center_rewards_coef < 0:
            raise ValueError(f"center_rewards_coef={self.center_rewards_coef} must be >= 0")


def pair_rewards(model: RewardModel, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(B,)`` rewards of the chosen and of the rejected halves of a pair batch."""
    rewards = model(batch["input_ids"], batch["attention_mask"])  # (2B,)
    return rewards.chunk(2)


class RewardTrainer:
    """Fits a :class:`RewardModel` to preference pairs and reports held-out accuracy."""

    def __init__(
        self,
        model: RewardModel,
        tokenizer: PreTrainedTokenizerBase,
        config: RewardConfig = RewardConfig(),
    ) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.optimizer = make_optimizer(
            model.parameters(), config.learning_rate, config.weight_decay
        )
        self.step_count = 0

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Bradley-Terry loss (+ centring term) and metrics of one pair batch."""
        chosen, rejected = pair_rewards(self.model, batch)
        margin = batch["margin"] if self.config.use_margin else None
        loss = bradley_terry_loss(chosen, rejected, margin)
        if self.config.center_rewards_coef:
            loss = loss + self.config.center_rewards_coef * (chosen + rejected).square().mean()
        metrics = {
            "loss": loss.item(),
            "accuracy": (chosen > rejected).float().mean().item(),
            "reward_gap": (chosen - rejected).mean().item(),
        }
        return loss, metrics

    def train(
        self,
        pairs: Sequence[TextPair],
        out: str | os.PathLike | None = None,
        eval_pairs: Sequence[TextPair] | None = None,
    ) -> list[dict[str, float]]:
        """Run ``config.steps`` steps; returns the logged rows (``eval/accuracy`` on
        ``eval_pairs`` every ``eval_every`` steps and at the end)."""
        c = self.config
        tokenized = tokenize_pairs(self.tokenizer, pairs, c.max_length)
        order = IndexBatches(
            len(tokenized), c.batch_size, c.seed + self.step_count, data_parallel()
        )
        pad_id = self.tokenizer.pad_token_id
        held_out = tokenize_pairs(self.tokenizer, eval_pairs, c.max_length) if eval_pairs else None
        self.model.train()

        def step(i: int) -> dict[str, float]:
            batch = collate_pairs([tokenized[j] for j in next(order)], pad_id)
            loss, metrics = self.loss(batch)
            metrics["grad_norm"] = optimizer_step(
                loss, self.optimizer, c.max_grad_norm, i, "reward"
            )
            return metrics

        evaluate = (lambda: self.evaluate_tokenized(held_out)) if held_out else None
        rows = run_steps(
            step, c.steps, desc="reward model", out=out, log_every=c.log_every,
            progress=c.progress, tensorboard=c.tensorboard, evaluate=evaluate,
            eval_every=c.eval_every, start=self.step_count, parallel=data_parallel(),
            optimizers=[self.optimizer], modules=[self.model],
        )  # fmt: skip
        self.step_count += c.steps
        return rows

    def evaluate(self, pairs: Sequence[TextPair]) -> dict[str, float]:
        """Pairwise accuracy (``r_chosen > r_rejected``), mean loss and gap on ``pairs``."""
        return self.evaluate_tokenized(
            tokenize_pairs(self.tokenizer, pairs, self.config.max_length)
        )

    @torch.no_grad()
    def evaluate_tokenized(
        self, pairs: Sequence[TokenizedPair], batch_size: int = 128
    ) -> dict[str, float]:
        chosen, rejected = [], []
        with eval_mode(self.model):
            for start in range(0, len(pairs), batch_size):
                batch = collate_pairs(
                    pairs[start : start + batch_size], self.tokenizer.pad_token_id
                )
                c, r = pair_rewards(self.model, batch)
                chosen.append(c)
                rejected.append(r)
        c, r = torch.cat(chosen), torch.cat(rejected)
        return {
            "accuracy": (c > r).float().mean().item(),
            "loss": bradley_terry_loss(c, r).item(),
            "reward_gap": (c - r).mean().item(),
            "reward_mean": torch.cat([c, r]).mean().item(),
            "reward_std": torch.cat([c, r]).std().item(),
        }
