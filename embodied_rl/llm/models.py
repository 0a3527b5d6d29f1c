"""Building, saving and loading causal LMs, and the log-probability maths every trainer uses.

Any ``transformers`` causal LM works: a tiny GPT-2 built from a config (tests, the demo
task) or a pretrained model in a local directory (never downloaded). Weights are written
with safetensors only, each save into a temporary directory renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from embodied_rl.utils.io import temp_dir_beside
from embodied_rl.utils.tokenizer import pad, position_ids_from_mask  # noqa: F401  (re-exported)

IGNORE_INDEX = -100  # label of a token that no loss sees (prompt, padding)


# ---------------------------------------------------------------------- building and files
def tiny_gpt2_config(
    tokenizer: PreTrainedTokenizerBase,
    n_layer: int = 2,
    n_embd: int = 128,
    n_head: int = 4,
    n_positions: int = 128,
    dropout: float = 0.0,
) -> GPT2Config:
    """A small GPT-2 config sized for ``tokenizer`` (2 layers x 128 by default)."""
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_causal_lm(config, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM from a transformers config, seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def load_causal_lm(path: str | os.PathLike) -> PreTrainedModel:
    """A causal LM from a local directory holding safetensors weights (never downloads)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{path} has no *.safetensors weights; convert the model with "
            "save_pretrained(..., safe_serialization=True) (pickled weights are not loaded)"
        )
    return AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, use_safetensors=True
    )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(path)
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_causal_lm(
    model: PreTrainedModel,
    path: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """``save_pretrained`` (safetensors) the model and tokenizer into ``path`` atomically."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return Path(path)


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability to 0 (RL and preference training, as TRL does)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) inside the block; each model's own mode restored after."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def freeze(model: nn.Module) -> nn.Module:
    """Evaluation mode and no gradients: a frozen reference model."""
    model.eval()
    model.requires_grad_(False)
    return model


def last_token_index(attention_mask: Tensor) -> Tensor:
    """``(B,)`` index of the last attended token of each row, for left or right padding."""
    if (attention_mask.sum(-1) == 0).any():
        raise ValueError("a row of attention_mask is all padding; every sequence needs a token")
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


# ---------------------------------------------------------------------- log-probabilities
def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """``log p(labels_t)`` under ``logits``: ``(B, T, V)`` and ``(B, T)`` give ``(B, T)``.

    Positions labelled :data:`IGNORE_INDEX` give 0."""
    safe = labels.clamp_min(0)
    logps = -F.cross_entropy(logits.flatten(0, 1).float(), safe.flatten(), reduction="none")
    return logps.view_as(labels) * (labels != IGNORE_INDEX)


def shifted_labels(input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """``(B, T - 1)`` next-token labels: ``input_ids[:, 1:]`` where ``loss_mask`` is on."""
    return input_ids[:, 1:].masked_fill(~loss_mask[:, 1:].bool(), IGNORE_INDEX)


def check_length(model: nn.Module, length: int) -> None:
    """Raise ``ValueError`` when ``length`` tokens exceed the model's position table."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ValueError(
            f"a sequence of {length} tokens exceeds the model's {limit} positions "
            "(max_position_embeddings); shorten the text or build the model with more positions"
        )


def causal_lm_forward(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, **kwargs):
    """The model's forward with positions that skip padding and no KV cache."""
    check_length(model, int(attention_mask.sum(-1).max()))
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        **kwargs,
    )


def sequence_logprobs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, **kwargs
) -> Tensor:
    """``(B,)`` summed log-probability of the ``loss_mask``-ed tokens of each sequence
    (``kwargs``, e.g. ``pixel_values``, go to the model)."""
    logits = causal_lm_forward(model, input_ids, attention_mask, **kwargs).logits[:, :-1]
    return token_logprobs(logits, shifted_labels(input_ids, loss_mask)).sum(-1)
