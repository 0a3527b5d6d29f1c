"""Action heads shared by every policy: 256-bin action tokens, a Gaussian, or deterministic."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from embodied_rl.policies.action_tokenizer import ActionTokenizer
from embodied_rl.utils.precision import fp32_linear

HEAD_TYPES = ("tokens", "gaussian", "tanh_gaussian", "deterministic")
LOG_2PI = math.log(2 * math.pi)
# log-std bounds of the squashed Gaussian (SAC's, as in d3rlpy and CORL)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
# dataset actions on the bounds are pulled this far inside before atanh
ATANH_EPS = 1e-6


class ActionHead(nn.Module):
    """Maps features ``(..., width)`` to an action distribution over a Box ``[low, high]``.

    - ``tokens``: independent categoricals over ``n_bins`` bins per dimension (RT-1);
    - ``gaussian``: a diagonal Gaussian with state-independent log-std (PPO's usual head),
      its mean squashed into the bounds with tanh, its samples not squashed;
    - ``tanh_gaussian``: SAC's policy (Haarnoja et al. 2018, appendix C): a Gaussian with
      state-dependent mean and log-std whose samples pass through tanh into the bounds, with
      the change of variables in the log-density. ``forward`` returns the pre-squash mean
      and the clamped log-std side by side, ``(..., 2 * action_dim)``;
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
        out = {"tokens": self.action_dim * n_bins, "tanh_gaussian": 2 * self.action_dim}.get(
            kind, self.action_dim
        )
        self.proj = nn.Linear(width, out)
        if kind == "gaussian":
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(init_log_std)))

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(..., action_dim, n_bins)`` for tokens, the pre-squash mean and log-std
        ``(..., 2 * action_dim)`` for ``tanh_gaussian``, else the mean action
        ``(..., action_dim)``."""
        out = fp32_linear(self.proj, features)  # full precision under bf16 autocast
        if self.kind == "tokens":
            return out.unflatten(-1, (self.action_dim, self.tokenizer.n_bins))
        if self.kind == "tanh_gaussian":
            mean, log_std = out.chunk(2, dim=-1)
            return torch.cat([mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)], dim=-1)
        return self._squash(out)

    def _squash(self, u: Tensor) -> Tensor:
        """``tanh(u)`` mapped onto ``[low, high]``."""
        centre, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        return centre + half * torch.tanh(u)

    def _squash_log_det(self, u: Tensor) -> Tensor:
        """``sum log |d squash(u) / du|`` ``(...)``, with ``log(1 - tanh(u)^2)`` written
        stably as ``2 (log 2 - u - softplus(-2u))``."""
        log_half = torch.log((self.high - self.low) / 2)
        return (log_half + 2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)

    def mode(self, out: Tensor) -> Tensor:
        """The most likely action (bin centres for tokens; the squashed mean for
        ``tanh_gaussian``, SAC's deterministic action)."""
        if self.kind == "tokens":
            return self.tokenizer.detokenize(out.argmax(-1))
        if self.kind == "tanh_gaussian":
            return self._squash(out[..., : self.action_dim])
        return out

    def rsample(self, out: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """``n`` reparameterised actions ``(..., n, action_dim)`` per output and their
        log-densities ``(..., n)``, gradients flowing into ``out`` (and the log-std); for the
        Gaussian heads only (SAC's actor, CQL's sampled actions)."""
        if self.kind == "gaussian":
            mean, log_std = out, self.log_std.expand_as(out)
        elif self.kind == "tanh_gaussian":
            mean, log_std = out.chunk(2, dim=-1)
        else:
            raise ValueError(f"head={self.kind!r} has no reparameterised samples; use a Gaussian")
        eps = torch.randn(*mean.shape[:-1], n, self.action_dim, dtype=mean.dtype)
        mean, log_std = mean.unsqueeze(-2), log_std.unsqueeze(-2)  # (..., 1, A)
        u = mean + eps * log_std.exp()  # (..., n, A)
        log_prob = (-0.5 * eps.square() - log_std).sum(-1) - 0.5 * LOG_2PI * self.action_dim
        if self.kind == "gaussian":
            return u, log_prob
        return self._squash(u), log_prob - self._squash_log_det(u)

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
        if self.kind == "tanh_gaussian":
            mean, log_std = out.chunk(2, dim=-1)
            noise = torch.randn(mean.shape, generator=generator, device=out.device)
            return self._squash(mean + noise * log_std.exp())
        return out

    def log_prob(self, out: Tensor, actions: Tensor) -> Tensor:
        """Log-likelihood ``(...)`` of ``actions`` (summed over action dimensions)."""
        if self.kind == "tokens":
            tokens = self.tokenizer.tokenize(actions)
            return out.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)
        if self.kind == "gaussian":  # closed form: torch.distributions validates every call
            z = (actions - out) * torch.exp(-self.log_std)
            return (-0.5 * z.square() - self.log_std).sum(-1) - 0.5 * LOG_2PI * self.action_dim
        if self.kind == "tanh_gaussian":  # actions on the bounds are pulled ATANH_EPS inside
            mean, log_std = out.chunk(2, dim=-1)
            centre, half = (self.high + self.low) / 2, (self.high - self.low) / 2
            y = ((actions - centre) / half).clamp(-1 + ATANH_EPS, 1 - ATANH_EPS)
            u = torch.atanh(y)
            z = (u - mean) * torch.exp(-log_std)
            gaussian = (-0.5 * z.square() - log_std).sum(-1) - 0.5 * LOG_2PI * self.action_dim
            return gaussian - self._squash_log_det(u)
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
        if self.kind == "tanh_gaussian":  # no closed form: one reparameterised sample (SAC)
            return -self.rsample(out, 1)[1][..., 0]
        raise ValueError("a deterministic head has no entropy; use head='gaussian' or 'tokens'")
