"""RT-1's action tokenizer: uniform bins per action dimension, and its cross-entropy loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class ActionTokenizer:
    """Map continuous actions in ``[low, high]`` to ``n_bins`` uniform bins per dimension.

    De-tokenization returns bin centres, so a round trip is off by at most half a bin width.
    """

    def __init__(self, low: Sequence[float], high: Sequence[float], n_bins: int = 256) -> None:
        low_t = torch.as_tensor(np.asarray(low, dtype=np.float32))
        high_t = torch.as_tensor(np.asarray(high, dtype=np.float32))
        if low_t.shape != high_t.shape or low_t.ndim != 1:
            raise ValueError(
                f"low {tuple(low_t.shape)} and high {tuple(high_t.shape)} must be equal 1-D shapes"
            )
        if (
            not torch.isfinite(low_t).all()
            or not torch.isfinite(high_t).all()
            or (high_t <= low_t).any()
        ):
            raise ValueError(
                f"action bounds must be finite with high > low; got low={low}, high={high}"
            )
        if n_bins < 2:
            raise ValueError(f"n_bins={n_bins} must be >= 2")
        self.low, self.high, self.n_bins = low_t, high_t, n_bins

    @property
    def action_dim(self) -> int:
        return int(self.low.numel())

    @property
    def bin_width(self) -> Tensor:
        return (self.high - self.low) / self.n_bins

    def tokenize(self, actions: Tensor) -> Tensor:
        """``(..., action_dim)`` floats -> ``(..., action_dim)`` int64 bins (out-of-range clipped)."""
        low, high = self.low.to(actions.device), self.high.to(actions.device)
        scaled = (actions - low) / (high - low) * self.n_bins
        return scaled.floor().clamp(0, self.n_bins - 1).long()

    def detokenize(self, tokens: Tensor) -> Tensor:
        """``(..., action_dim)`` bins -> bin-centre actions."""
        low, width = self.low.to(tokens.device), self.bin_width.to(tokens.device)
        return low + (tokens.float() + 0.5) * width


def action_token_loss(
    logits: Tensor,  # (..., action_dim, n_bins)
    tokens: Tensor,  # (..., action_dim) int64
    mask: Tensor | None = None,  # (...,) bool: which positions count
    weights: Tensor | None = None,  # (...,) per-position weights (e.g. IQL's advantage weights)
) -> tuple[Tensor, dict[str, float]]:
    """Mean cross-entropy over action dimensions and (masked, weighted) positions; also token accuracy."""
    ce = F.cross_entropy(logits.flatten(0, -2), tokens.flatten(), reduction="none").view(
        tokens.shape
    )
    per_position = ce.mean(-1)  # (...,)
    correct = (logits.argmax(-1) == tokens).float().mean(-1)
    keep = torch.ones_like(per_position) if mask is None else mask.float()
    w = keep if weights is None else keep * weights
    loss = (per_position * w).sum() / keep.sum().clamp_min(1.0)
    accuracy = (correct * keep).sum() / keep.sum().clamp_min(1.0)
    return loss, {"token_loss": loss.item(), "token_accuracy": accuracy.item()}


def gaussian_bin_targets(bins: Tensor, n_bins: int, sigma: float) -> Tensor:
    """HL-Gauss targets (Imani & White 2018; Farebrother et al. 2024, arXiv:2403.03950): the
    probability that a Gaussian centred on each label's bin centre, with standard deviation
    ``sigma`` bin widths, falls in each of the ``n_bins`` bins, renormalised to the bins'
    range. ``bins`` ``(...)`` int64 in ``[0, n_bins)`` -> ``(..., n_bins)`` float targets.

    Cross-entropy against these targets tells a token head that neighbouring bins are close
    actions; ``sigma`` -> 0 gives the one-hot target (plain cross-entropy). Farebrother et al.
    use ``sigma = 0.75`` bin widths."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma} must be > 0 (bin widths); leave smoothing off instead")
    if bins.dtype not in (torch.int32, torch.int64) or (bins < 0).any() or (bins >= n_bins).any():
        raise ValueError(f"bins must be integers in [0, {n_bins}); got {bins.dtype}")
    edges = torch.arange(n_bins + 1, dtype=torch.float32, device=bins.device)
    centre = bins.float().unsqueeze(-1) + 0.5
    cdf = torch.special.ndtr((edges - centre) / sigma)  # (..., n_bins + 1)
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / (cdf[..., -1:] - cdf[..., :1])
