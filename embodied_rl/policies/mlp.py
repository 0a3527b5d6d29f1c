"""MLP and small-CNN policies behind the same interface as the VLA policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.policies.base import Policy, check_observation, register_policy
from embodied_rl.policies.encoders import images_to_float
from embodied_rl.policies.heads import HEAD_TYPES, ActionHead
from embodied_rl.policies.normalization import ObservationNormalizer


def mlp(
    sizes: list[int], activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0
) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` (and dropout) between them."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _check_common(config) -> None:
    if config.head not in HEAD_TYPES:
        raise ValueError(f"head={config.head!r}; choose one of {HEAD_TYPES}")
    if len(config.action_low) != len(config.action_high):
        raise ValueError("action_low and action_high must have the same length")
    if not config.hidden or min(config.hidden) < 1:
        raise ValueError(f"hidden={config.hidden} must list positive layer widths")


@dataclass(frozen=True)
class MLPConfig:
    """A state-based policy: ``obs[obs_key]`` -> MLP -> action head."""

    obs_dim: int = 96  # the tabletop state with four objects
    action_low: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0)
    action_high: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    obs_key: str = "state"
    hidden: tuple[int, ...] = (256, 256)
    dropout: float = 0.0
    head: str = "gaussian"  # "tokens" | "gaussian" | "tanh_gaussian" | "deterministic"
    n_bins: int = 256
    value_head: bool = False
    # standardise obs[obs_key] with the training data's statistics (stored with the weights)
    normalize_obs: bool = True

    def __post_init__(self) -> None:
        _check_common(self)
        if self.obs_dim < 1:
            raise ValueError(f"obs_dim={self.obs_dim} must be >= 1")


class _FlatPolicy(Policy):
    """Shared acting for policies whose batch is ``{key: (B, ...)}`` tensors."""

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.head(self.features(batch))

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one observation of each key the policy reads."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: dict[str, Any], deterministic: bool = True) -> np.ndarray:
        device = next(self.parameters()).device
        shapes = self.input_shapes()
        batch = {
            k: torch.as_tensor(check_observation(obs, k, shapes[k]), device=device).unsqueeze(0)
            for k in self.input_keys
        }
        out = self(batch)
        action = self.head.mode(out) if deterministic else self.head.sample(out)
        return action[0].cpu().numpy().astype(np.float32)


@register_policy("mlp")
class MLPPolicy(_FlatPolicy):
    """Batches: ``{obs_key: float (B, obs_dim)}``."""

    config_class = MLPConfig

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {self.config.obs_key: (self.config.obs_dim,)}

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input_keys = (c.obs_key,)
        self.obs_norm = ObservationNormalizer(c.obs_dim, c.obs_key) if c.normalize_obs else None
        self.trunk = mlp([c.obs_dim, *c.hidden], dropout=c.dropout)
        self.trunk.append(nn.ReLU())
        self.head = ActionHead(c.hidden[-1], c.action_low, c.action_high, c.head, c.n_bins)
        self.value_head = nn.Linear(c.hidden[-1], 1) if c.value_head else None

    def features(self, batch: dict[str, Any]) -> Tensor:
        x = batch[self.config.obs_key].float()
        if x.shape[-1] != self.config.obs_dim:
            raise ValueError(
                f"{self.config.obs_key} has {x.shape[-1]} features; the policy expects {self.config.obs_dim}"
            )
        if self.obs_norm is not None:
            x = self.obs_norm(x)
        return self.trunk(x)


CNN_LAYERS = ((8, 4), (4, 2), (3, 1), (3, 1), (3, 1), (3, 1))  # (kernel, stride), Nature DQN's


@dataclass(frozen=True)
class CNNConfig:
    """An image (+ proprio) policy: Nature-DQN-style conv stack -> MLP -> action head."""

    image_size: int = 64
    proprio_dim: int = 7  # 0: images only
    action_low: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0)
    action_high: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    channels: tuple[int, ...] = (32, 64, 64)
    hidden: tuple[int, ...] = (256,)
    head: str = "gaussian"
    n_bins: int = 256
    value_head: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        side = self.image_size
        for kernel, stride in CNN_LAYERS[: len(self.channels)]:
            side = (side - kernel) // stride + 1
        if side < 1:
            raise ValueError(
                f"image_size={self.image_size} is too small for {len(self.channels)} conv layers "
                f"(kernels/strides {CNN_LAYERS[: len(self.channels)]}); use >= 36 for three"
            )


@register_policy("cnn")
class CNNPolicy(_FlatPolicy):
    """Batches: ``image`` uint8 ``(B, H, W, 3)`` and, if ``proprio_dim``, ``proprio`` ``(B, P)``."""

    config_class = CNNConfig

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input_keys = ("image", "proprio") if c.proprio_dim else ("image",)
        convs, c_in = [], 3
        for i, ch in enumerate(c.channels):
            kernel, stride = CNN_LAYERS[min(i, len(CNN_LAYERS) - 1)]
            convs += [nn.Conv2d(c_in, ch, kernel, stride), nn.ReLU()]
            c_in = ch
        self.conv = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, 3, c.image_size, c.image_size)).shape[-1]
        self.trunk = mlp([n_flat + c.proprio_dim, *c.hidden])
        self.trunk.append(nn.ReLU())
        self.head = ActionHead(c.hidden[-1], c.action_low, c.action_high, c.head, c.n_bins)
        self.value_head = nn.Linear(c.hidden[-1], 1) if c.value_head else None

    def env_options(self) -> dict[str, Any]:
        return {"obs_mode": "rgb", "image_size": self.config.image_size}

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        return {"image": (c.image_size, c.image_size, 3), "proprio": (c.proprio_dim,)}

    def features(self, batch: dict[str, Any]) -> Tensor:
        x = self.conv(images_to_float(batch["image"]))  # (B, n_flat)
        if self.config.proprio_dim:
            x = torch.cat([x, batch["proprio"].float()], dim=-1)
        return self.trunk(x)
