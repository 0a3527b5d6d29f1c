"""A LLaVA whose vision tower reads the instruction: RT-1's image path inside an RT-2 policy.

In a LLaVA the image meets the instruction only inside the language model. The tiny RT-2
policy built that way does not learn to find the instructed object from pixels
(``benchmarks/results/rt2_learning.md``), where the RT-1-style policy on the same data does,
with a ConvNet whose features the instruction modulates (FiLM, Perez et al. 2018) before any
token is formed. :class:`InstructedLlavaModel` is transformers' ``LlavaModel`` with that
tower: the prompt's text tokens before the image placeholders (the question, with
``image_position="after_text"``) are embedded with the language model's own input
embeddings and pooled (attention with a learned query, the mean at initialisation), or,
given a frozen sentence encoder, decoded and embedded by it (RT-1's MiniLM); that vector
conditions every stage of a :class:`FiLMConvNet`, coordinate maps are appended and
TokenLearner pools the map into a few image tokens, which the LLaVA projector maps into the
language model as before. Everything else (prompts, action
tokens, the trainers' forward with ``input_ids`` and ``pixel_values``, the KV cache) is
LLaVA's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LlavaConfig, LlavaModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from embodied_rl.policies.encoders import FiLMConvNet, TokenLearner, with_coordinates


class FiLMVisionTower(nn.Module):
    """``pixel_values`` ``(B, 3, H, W)`` and a condition ``(B, cond_dim)`` -> image tokens
    ``(B, n_tokens, width)``: a FiLM ConvNet, x/y coordinate channels, then TokenLearner's
    ``n_tokens`` spatial softmaxes (``n_tokens=0``: every cell of the feature map)."""

    def __init__(
        self, cond_dim: int, width: int, channels: tuple[int, ...], strides: tuple[int, ...],
        n_tokens: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.convnet = FiLMConvNet(cond_dim, width, channels, strides)
        self.token_learner = TokenLearner(width + 2, n_tokens) if n_tokens else None
        self.out = nn.Linear(width + 2, width)

    def forward(self, pixel_values: Tensor, cond: Tensor) -> Tensor:
        features = with_coordinates(self.convnet.features(pixel_values, cond))  # (B, C+2, h, w)
        if self.token_learner is None:
            tokens = features.flatten(2).transpose(1, 2)  # (B, h * w, C + 2)
        else:
            tokens = self.token_learner(features)  # (B, n_tokens, C + 2)
        return self.out(tokens)


class InstructedLlavaModel(LlavaModel):
    """``LlavaModel`` with a :class:`FiLMVisionTower` conditioned on the prompt's text.

    The condition pools the input embeddings of the tokens before each row's first image
    placeholder that are attended to, are not padding and lie below ``first_non_text_id`` (the
    RT-2 tokenizer appends the image placeholder and the action/state ids after the words),
    with a learned attention query (:meth:`instruction_embedding`).
    """

    def __init__(
        self, config: LlavaConfig, first_non_text_id: int, channels: tuple[int, ...],
        strides: tuple[int, ...], n_tokens: int, sentence_encoder: nn.Module | None = None,
        tokenizer: Any = None, instruction_of: Callable[[str], str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config)
        # a frozen pretrained sentence encoder (RT-1's) in place of the pooled embeddings: it
        # embeds instruction_of(the decoded question), the instruction without the template
        self.sentence_encoder = sentence_encoder
        self.tokenizer, self.instruction_of = tokenizer, instruction_of
        if sentence_encoder is not None and (tokenizer is None or instruction_of is None):
            raise ValueError("a sentence_encoder needs the tokenizer and instruction_of")
        cond_dim = (
            sentence_encoder.embed_dim if sentence_encoder is not None
            else config.text_config.hidden_size
        )  # fmt: skip
        self.vision_tower = FiLMVisionTower(
            cond_dim, config.vision_config.hidden_size, channels, strides, n_tokens
        )
        # attention pooling over the text: zero, it starts as the mean and learns which words
        # matter (the prompt's template is most of the tokens and the same in every prompt)
        self.text_query = (
            nn.Parameter(torch.zeros(config.text_config.hidden_size))
            if sentence_encoder is None else None
        )  # fmt: skip
        self.first_non_text_id = first_non_text_id
        self._condition: Tensor | None = None

    def instruction_embedding(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """``(B, width)``: each row's text before its image, pooled: the input embeddings
        weighted by a softmax of their dot product with a learned query (the mean at
        initialisation); zeros for a row without text. With a ``sentence_encoder``: its
        embedding ``(B, E)`` of each row's decoded text passed through ``instruction_of``."""
        before_image = (input_ids == self.config.image_token_id).long().cumsum(-1) == 0
        text = before_image & (input_ids < self.first_non_text_id)
        pad = self.config.text_config.pad_token_id
        if pad is not None:
            text &= input_ids != pad
        if attention_mask is not None:
            text &= attention_mask.bool()
        if self.sentence_encoder is not None:
            rows = [ids[keep].tolist() for ids, keep in zip(input_ids, text, strict=True)]
            texts = [self.instruction_of(t) for t in self.tokenizer.batch_decode(rows)]
            return self.sentence_encoder(texts).to(self.get_input_embeddings().weight.dtype)
        embeddings = self.get_input_embeddings()(input_ids)  # (B, T, width)
        scores = embeddings @ self.text_query / embeddings.shape[-1] ** 0.5  # (B, T)
        weights = scores.masked_fill(~text, float("-inf")).softmax(-1).nan_to_num(0.0)
        return torch.einsum("bt,btw->bw", weights, embeddings)

    def forward(
        self, input_ids: Tensor | None = None, pixel_values: Tensor | None = None,
        attention_mask: Tensor | None = None, **kwargs: Any,
    ):  # fmt: skip
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError(
                    "the instruction-conditioned vision tower reads the prompt's input_ids; "
                    "pass input_ids with pixel_values, not inputs_embeds"
                )
            self._condition = self.instruction_embedding(input_ids, attention_mask)
        try:
            return super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                **kwargs,
            )  # fmt: skip
        finally:
            self._condition = None

    def get_image_features(self, pixel_values: Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        if self._condition is None:
            raise RuntimeError(
                "InstructedLlavaModel encodes images inside forward(input_ids=..., "
                "pixel_values=...), where the prompt conditions them"
            )
        tokens = self.vision_tower(pixel_values, self._condition)  # (B, S, vision width)
        features = self.multi_modal_projector(tokens)  # (B, S, text width)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=list(features))


def instructed_llava(
    model: nn.Module, first_non_text_id: int, channels: tuple[int, ...],
    strides: tuple[int, ...], n_tokens: int, **text: Any,
) -> nn.Module:  # fmt: skip
    """``model`` (a ``LlavaForConditionalGeneration``) with its ``LlavaModel`` replaced by an
    :class:`InstructedLlavaModel` of the same config (fresh weights; ``text``: its
    ``sentence_encoder``, ``tokenizer`` and ``instruction_of``)."""
    model.model = InstructedLlavaModel(
        model.config, first_non_text_id, channels, strides, n_tokens, **text
    )
    return model


def film_output_side(image_size: int, strides: tuple[int, ...]) -> int:
    """Side of the FiLM ConvNet's feature map (3x3 convolutions, padding 1)."""
    side = image_size
    for s in strides:
        side = (side - 1) // s + 1
    return side
