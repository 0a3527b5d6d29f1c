"""Action heads shared by every policy: 256-bin action tokens, a Gaussian, or deterministic."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from embodied_rl.policies.action_tokenizer import ActionTokenizer
from embodied_rl.utils.precision import fp32_linear

HEAD_TYPES = ("tokens", "gaussian", "deterministic")
LOG_2PI = math.log(2 * math.pi)


class ActionHead(nn.Module):
    """Maps features ``(..., width)`` to an action distribution over a Box ``[low, high]``.

    - ``tokens``: independent categoricals over ``n_bins`` bins per dimension (RT-1);
    - ``gaussian``: a diagonal Gaussian with state-independent log-std (PPO's usual head),
      its mean squashed into the bounds with tanh;
    - ``deterministic``: the tanh-squashed mean only (MSE behaviour cloning).
    """

    def __init__(
        self,
        width: int,
        low: Sequence[float],
        high: Sequence[float],
        kind: str = "tokens",
        n_bins: int = 256,
        init_log_std: float = -0.5,
    ):
        super().__init__()
        if kind not in HEAD_TYPES:
            raise ValueError(f"head={kind!r}; choose one of {HEAD_TYPES}")
        self.kind = kind
        self.tokenizer = ActionTokenizer(low, high, n_bins)
        self.action_dim = self.tokenizer.action_dim
        self.register_buffer("low", self.tokenizer.low.clone(), persistent=False)
        self.register_buffer("high", self.tokenizer.high.clone(), persistent=False)
        out = self.action_dim * n_bins if kind == "tokens" else self.action_dim
        self.proj = nn.Linear(width, out)
        if kind == "gaussian":
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(init_log_std)))

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(..., action_dim, n_bins)`` for tokens, else the mean action ``(..., action_dim)``."""
        out = fp32_linear(self.proj, features)  # full precision under bf16 autocast
        if self.kind == "tokens":
            return out.unflatten(-1, (self.action_dim, self.tokenizer.n_bins))
        centre, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        return centre + half * torch.tanh(out)

    def mode(self, out: Tensor) -> Tensor:
        """The most likely action (bin centres for tokens)."""
        if self.kind == "tokens":
            return self.tokenizer.detokenize(out.argmax(-1))
        return out

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.kind == "tokens":
            probs = out.softmax(-1)
            flat = torch.multinomial(probs.flatten(0, -2), 1, generator=generator).view(
                probs.shape[:-1]
            )
            return self.tokenizer.detokenize(flat)
        if self.kind == "gaussian":
            noise = torch.randn(out.shape, generator=generator, device=out.device)
            return out + noise * self.log_std.exp()
        return out

    def log_prob(self, out: Tensor, actions: Tensor) -> Tensor:
        """Log-likelihood ``(...)`` of ``actions`` (summed over action dimensions)."""
        if self.kind == "tokens":
            tokens = self.tokenizer.tokenize(actions)
            return out.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)
        if self.kind == "gaussian":  # closed form: torch.distributions validates every call
            z = (actions - out) * torch.exp(-self.log_std)
            return (-0.5 * z.square() - self.log_std).sum(-1) - 0.5 * LOG_2PI * self.action_dim
        raise ValueError(
            "a deterministic head has no log-probability; use head='gaussian' or 'tokens'"
        )

    def entropy(self, out: Tensor) -> Tensor:
        if self.kind == "tokens":
            logp = out.log_softmax(-1)
            return -(logp.exp() * logp).sum(-1).sum(-1)
        if self.kind == "gaussian":  # state-independent: 0.5 log(2 pi e) + log_std per dim
            per_dim = 0.5 + 0.5 * LOG_2PI + self.log_std
            return per_dim.sum().expand(out.shape[:-1])
        raise ValueError("a deterministic head has no entropy; use head='gaussian' or 'tokens'")
