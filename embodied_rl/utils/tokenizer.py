"""A byte-level BPE tokenizer trained locally with the ``tokenizers`` library (no download),
and the padding of token-id sequences (with the positions and KV-cache keywords of a forward)
shared by the LLM trainers and the RT-2-style policy.

Byte-level means every string encodes (no unknown token); BPE merges learnt on the task's
text make its words single tokens. The result is a ``transformers.PreTrainedTokenizerFast``
so any trainer (ours or TRL's) uses it unchanged; it saves as JSON (``tokenizer.json``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
_N_BYTES = 256


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` with ``<|endoftext|>`` (EOS, also BOS)
    and ``<|pad|>`` as special tokens."""
    if vocab_size < _N_BYTES + 2:
        raise ValueError(
            f"vocab_size={vocab_size} must be >= {_N_BYTES + 2}: 256 byte tokens and the "
            "two special tokens come first"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """A tokenizer saved with ``save_pretrained`` in a local directory (never downloads)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a pad token its EOS as pad (GPT-2's tokenizer has none)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token; "
                "set tokenizer.pad_token before training"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens added."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_items(tokenizer: PreTrainedTokenizerBase, items: Sequence) -> list[list[int]]:
    """Token ids of each item: strings are encoded (:func:`encode`), lists of ids pass
    through (responses whose ids do not round-trip through text, e.g. a VLM's action ids)."""
    out = [[] if isinstance(item, str) else [int(i) for i in item] for item in items]
    texts = [i for i, item in enumerate(items) if isinstance(item, str)]
    if texts:
        for i, ids in zip(texts, encode(tokenizer, [items[i] for i in texts]), strict=True):
            out[i] = ids
    return out


def pad(sequences: Sequence[Sequence[int]], value: int, side: str = "right") -> Tensor:
    """``(B, T)`` long tensor of the sequences padded with ``value`` on ``side``."""
    if side not in ("left", "right"):
        raise ValueError(f"side={side!r}; choose 'left' or 'right'")
    if not sequences:
        raise ValueError("pad() needs at least one sequence")
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq):
            row = torch.as_tensor(seq, dtype=torch.long)
            if side == "right":
                out[i, : len(seq)] = row
            else:
                out[i, width - len(seq) :] = row
    return out


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``(B, T)`` positions counting only attended tokens: left padding gives 0, 0, 0, 1, 2..."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def cache_kwargs(out: Any) -> dict[str, Any]:
    """The KV cache of a forward's output as the next forward's keyword: ``cache`` where the
    model returns one (transformers 5.2x, which deprecates ``past_key_values``), else
    ``past_key_values``."""
    cache = getattr(out, "cache", None)
    return {"cache": cache} if cache is not None else {"past_key_values": out.past_key_values}
