"""Observation standardisation stored inside the networks that use it.

State vectors mix metres, quaternions and one-hot codes; what a manipulation policy must
resolve (a gripper 2 cm from its goal) is a tiny difference in raw units. Networks that
read flat observations therefore standardise them with the dataset's per-feature mean and
standard deviation, as d3rlpy's ``StandardObservationScaler`` and CORL do. The statistics
are buffers of an :class:`ObservationNormalizer` inside the policy or critic, so they travel
with the weights in every safetensors checkpoint and the deployed policy reads raw
environment observations.

A normalizer starts unfitted (identity). :func:`fit_observation_normalizers` fits every
unfitted normalizer under some modules from a dataset's observation arrays; a normalizer
that is already fitted (a pretrained policy being fine-tuned) keeps its statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

STD_FLOOR = 1e-2  # features (nearly) constant in the data are centred, not blown up
CLIP = 10.0  # standardised features are clipped to [-CLIP, CLIP]


class ObservationNormalizer(nn.Module):
    """``clip((x - mean) / std, -CLIP, CLIP)`` for observation ``key`` with ``dim`` features."""

    def __init__(self, dim: int, key: str = "state") -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim={dim} must be >= 1")
        self.key = key
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def fit(self, values: np.ndarray | Tensor) -> None:
        """Set the statistics from ``values`` ``(N, dim)`` (float64 accumulation)."""
        x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        if x.shape[1] != self.mean.numel():
            raise ValueError(
                f"observation {self.key!r} has {x.shape[1]} features; "
                f"the normalizer expects {self.mean.numel()}"
            )
        if not np.isfinite(x).all():
            raise ValueError(f"observation {self.key!r} contains NaN or inf; cannot fit")
        self.mean.copy_(torch.from_numpy(x.mean(0)))
        self.std.copy_(torch.from_numpy(np.maximum(x.std(0), STD_FLOOR)))
        self.fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std).clamp(-CLIP, CLIP)

    def extra_repr(self) -> str:
        return f"key={self.key!r}, dim={self.mean.numel()}, fitted={self.is_fitted}"


def fit_observation_normalizers(
    modules: Iterable[nn.Module], observations: Mapping[str, np.ndarray]
) -> int:
    """Fit every unfitted :class:`ObservationNormalizer` under ``modules`` whose key is in
    ``observations``; returns how many were fitted. Raises if one's key is missing."""
    fitted = 0
    for root in modules:
        for module in root.modules():
            if not isinstance(module, ObservationNormalizer) or module.is_fitted:
                continue
            if module.key not in observations:
                raise KeyError(
                    f"a normalizer reads observation {module.key!r}, which the data lacks "
                    f"(keys: {sorted(observations)})"
                )
            module.fit(observations[module.key])
            fitted += 1
    return fitted
