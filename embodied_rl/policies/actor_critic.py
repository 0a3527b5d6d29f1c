"""An actor-critic MLP with separate policy and value towers, as Stable-Baselines3's PPO default.

:class:`MLPPolicy` shares one ReLU trunk between its action and value heads; SB3's ``MlpPolicy``
for PPO has two separate tanh towers (``net_arch=dict(pi=[64, 64], vf=[64, 64])``),
orthogonal initialisation (gain sqrt(2) in hidden layers, 0.01 on the action output, 1 on the
value output) and an *unsquashed* Gaussian whose log-std starts at 0, with actions clipped to
the bounds only when sent to the environment. This module builds exactly that, so our PPO and
SB3's can be compared with the same network; the ``tokens`` head (RT-1's 256 bins per action
dimension) fits on the same towers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.policies.base import Policy, check_observation, register_policy
from embodied_rl.policies.heads import ActionHead

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class ActorCriticConfig:
    """Separate actor and critic MLPs on ``obs[obs_key]``; defaults are SB3's PPO ``MlpPolicy``."""

    obs_dim: int = 96  # the tabletop state with four objects
    action_low: tuple[float, ...] = (-1.0, -1.0, -1.0, -1.0)
    action_high: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    obs_key: str = "state"
    hidden: tuple[int, ...] = (64, 64)  # widths of each tower (actor and critic have their own)
    activation: str = "tanh"  # "tanh" (SB3, CleanRL) | "relu"
    head: str = "gaussian"  # "gaussian" (unsquashed, SB3) | "tokens" (256 bins per dimension)
    n_bins: int = 256
    log_std_init: float = 0.0  # SB3's default
    ortho_init: bool = True

    def __post_init__(self) -> None:
        if self.head not in ("gaussian", "tokens"):
            raise ValueError(f"head={self.head!r}; choose 'gaussian' or 'tokens'")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if len(self.action_low) != len(self.action_high) or not self.action_low:
            raise ValueError(
                f"action_low {self.action_low} and action_high {self.action_high} must be "
                "non-empty and of equal length"
            )
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden={self.hidden} must list positive layer widths")
        if self.obs_dim < 1:
            raise ValueError(f"obs_dim={self.obs_dim} must be >= 1")


class DiagGaussianHead(nn.Module):
    """A diagonal Gaussian with an unsquashed mean and a state-independent log-std (SB3).

    Same methods as :class:`~embodied_rl.policies.heads.ActionHead`; log-probabilities are
    written out instead of built through ``torch.distributions`` (cheaper per call).
    """

    kind = "gaussian"

    def __init__(
        self, width: int, low: Sequence[float], high: Sequence[float], log_std_init: float
    ):
        super().__init__()
        self.action_dim = len(low)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32), persistent=False)
        self.proj = nn.Linear(width, self.action_dim)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(log_std_init)))

    def forward(self, features: Tensor) -> Tensor:
        return self.proj(features)  # (..., action_dim) mean

    def mode(self, out: Tensor) -> Tensor:
        return out

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(out.shape, generator=generator, device=out.device)
        return out + noise * self.log_std.exp()

    def log_prob(self, out: Tensor, actions: Tensor) -> Tensor:
        z = (actions - out) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - _LOG_SQRT_2PI).sum(-1)  # (...)

    def entropy(self, out: Tensor) -> Tensor:
        per_dim = 0.5 + _LOG_SQRT_2PI + self.log_std  # (action_dim,)
        return per_dim.sum().expand(out.shape[:-1])


class TwinMLP(nn.Module):
    """Two MLPs of the same widths on the same input, evaluated together.

    Layer 1 is one ``Linear`` to both towers' units (concatenated); later layers are one batched
    matmul over the pair. No weight is shared, so this is exactly two separate MLPs, computed
    with half the kernel calls (what dominates at PPO's minibatch size of 64 on a CPU).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], activation: type[nn.Module]):
        super().__init__()
        self.first = nn.Linear(in_dim, 2 * hidden[0])
        pairs = list(zip(hidden[:-1], hidden[1:], strict=True))
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(2, a, b)) for a, b in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(2, 1, b)) for _, b in pairs)
        self.activation = activation()
        with torch.no_grad():
            for weight in self.weights:
                bound = 1.0 / math.sqrt(weight.shape[1])  # nn.Linear's default init
                weight.uniform_(-bound, bound)

    def orthogonal_(self, gain: float) -> None:
        """Orthogonal init of each tower's matrices (zero biases), as SB3 does per layer."""
        half = self.first.out_features // 2
        with torch.no_grad():
            for rows in (self.first.weight[:half], self.first.weight[half:]):
                nn.init.orthogonal_(rows, gain=gain)
            nn.init.zeros_(self.first.bias)
            for weight, bias in zip(self.weights, self.biases, strict=True):
                for i in range(len(weight)):
                    nn.init.orthogonal_(weight[i], gain=gain)
                nn.init.zeros_(bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, in_dim)`` -> the two towers' features, each ``(B, hidden[-1])``."""
        h = self.activation(self.first(x))  # (B, 2 * h1)
        h = h.unflatten(-1, (2, -1)).transpose(0, 1)  # (2, B, h1)
        for weight, bias in zip(self.weights, self.biases, strict=True):
            h = self.activation(torch.baddbmm(bias, h, weight))  # (2, B, h_k)
        return h[0], h[1]

    def numpy_layers(self) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Each tower's ``(weight (in, out), bias (out,))`` pairs as numpy copies."""
        half = self.first.out_features // 2
        w1, b1 = self.first.weight.detach().numpy(), self.first.bias.detach().numpy()
        towers = []
        for i, rows in enumerate((slice(0, half), slice(half, None))):
            layers = [(w1[rows].T.copy(), b1[rows].copy())]
            for weight, bias in zip(self.weights, self.biases, strict=True):
                layers.append(
                    (weight[i].detach().numpy().copy(), bias[i, 0].detach().numpy().copy())
                )
            towers.append(layers)
        return towers


def _orthogonal(layer: nn.Linear, gain: float) -> None:
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)


@register_policy("actor_critic")
class ActorCriticPolicy(Policy):
    """Batches: ``{obs_key: float (B, obs_dim)}``. ``value(batch)`` uses the critic tower."""

    config_class = ActorCriticConfig

    def __init__(self, config: ActorCriticConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input_keys = (c.obs_key,)
        self.towers = TwinMLP(c.obs_dim, c.hidden, ACTIVATIONS[c.activation])  # actor, critic
        width = c.hidden[-1]
        if c.head == "gaussian":
            self.head = DiagGaussianHead(width, c.action_low, c.action_high, c.log_std_init)
        else:
            self.head = ActionHead(width, c.action_low, c.action_high, "tokens", c.n_bins)
        self.value_head = nn.Linear(width, 1)
        if c.ortho_init:
            self.towers.orthogonal_(math.sqrt(2))
            _orthogonal(self.head.proj, 0.01)
            _orthogonal(self.value_head, 1.0)

    def _obs(self, batch: dict[str, Any]) -> Tensor:
        x = batch[self.config.obs_key].float()
        if x.shape[-1] != self.config.obs_dim:
            raise ValueError(
                f"{self.config.obs_key} has {x.shape[-1]} features; the policy expects {self.config.obs_dim}"
            )
        return x

    def features(self, batch: dict[str, Any]) -> Tensor:
        """The actor tower's features ``(B, hidden[-1])``."""
        return self.towers(self._obs(batch))[0]

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.head(self.features(batch))

    def value(self, batch: dict[str, Any]) -> Tensor:
        return self.value_head(self.towers(self._obs(batch))[1]).squeeze(-1)  # (B,)

    def forward_with_value(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Head output and value ``(B,)`` in one call (what PPO needs per step)."""
        actor, critic = self.towers(self._obs(batch))
        return self.head(actor), self.value_head(critic).squeeze(-1)

    @torch.no_grad()
    def numpy_actor(self) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """A numpy snapshot of the current weights: ``obs (B, obs_dim) -> (mean (B, A), value (B,))``.

        For acting in rollouts: a call costs microseconds where torch's per-op dispatch costs
        tens of them at batch size 1. The snapshot does not follow later updates; take a new one.
        """
        if self.head.kind != "gaussian":
            raise ValueError(f"numpy_actor supports the gaussian head, not {self.head.kind!r}")
        nonlinear = np.tanh if self.config.activation == "tanh" else lambda x: np.maximum(x, 0.0)

        pi, vf = self.towers.numpy_layers()
        for tower, out in ((pi, self.head.proj), (vf, self.value_head)):
            tower.append((out.weight.detach().numpy().T.copy(), out.bias.detach().numpy().copy()))

        def run(net: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
            for weight, bias in net[:-1]:
                x = nonlinear(x @ weight + bias)
            return x @ net[-1][0] + net[-1][1]

        def actor(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = np.asarray(obs, dtype=np.float32)
            return run(pi, x), run(vf, x)[:, 0]

        return actor

    @torch.no_grad()
    def act(self, obs: dict[str, Any], deterministic: bool = True) -> np.ndarray:
        c = self.config
        x = torch.as_tensor(check_observation(obs, c.obs_key, (c.obs_dim,)), dtype=torch.float32)
        out = self({self.config.obs_key: x.to(self.head.low.device).unsqueeze(0)})
        action = self.head.mode(out) if deterministic else self.head.sample(out)
        action = torch.maximum(torch.minimum(action, self.head.high), self.head.low)
        return action[0].cpu().numpy().astype(np.float32)
