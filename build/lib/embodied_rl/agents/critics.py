"""A vectorised Q-ensemble, a state-value MLP and Polyak-averaged target networks.

All ``n_critics`` Q-networks live in stacked weights of shape ``(n_critics, in, out)`` and
run as one batched matmul per layer (``torch.baddbmm``), so two or ten critics cost one
kernel call each. The first layer is split into an observation part and an action part:
with ``N`` actions per state (CQL's sampled actions) the observation part is computed once
per state and broadcast, which saves most of the first layer's work. Under bf16 autocast
(``precision="bf16"``) the hidden layers run in bf16 while Q and V come out in fp32.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from embodied_rl.policies.mlp import mlp
from embodied_rl.policies.normalization import ObservationNormalizer
from embodied_rl.utils.precision import fp32_linear


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """``nn.Linear``'s default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class QEnsemble(nn.Module):
    """``n_critics`` MLPs ``Q_e(s, a)`` with ``hidden`` ReLU layers, evaluated together.

    With ``obs_key`` the observations are standardised first (an
    :class:`~embodied_rl.policies.normalization.ObservationNormalizer` fitted on the data)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: tuple[int, ...] = (256, 256),
        n_critics: int = 2,
        obs_key: str | None = None,
    ) -> None:
        super().__init__()
        self.obs_norm = ObservationNormalizer(obs_dim, obs_key) if obs_key else None
        if n_critics < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"n_critics={n_critics} and hidden={hidden} must be positive")
        e, h0, fan_in = n_critics, hidden[0], obs_dim + action_dim
        self.n_critics = n_critics
        self.w_obs = _uniform((e, obs_dim, h0), fan_in)
        self.w_act = _uniform((e, action_dim, h0), fan_in)
        self.b_in = _uniform((e, 1, h0), fan_in)
        sizes = [*hidden, 1]
        self.weights = nn.ParameterList(
            _uniform((e, sizes[i], sizes[i + 1]), sizes[i]) for i in range(len(sizes) - 1)
        )
        self.biases = nn.ParameterList(
            _uniform((e, 1, sizes[i + 1]), sizes[i]) for i in range(len(sizes) - 1)
        )

    def forward(self, obs: Tensor, actions: Tensor, detach_params: bool = False) -> Tensor:
        """``obs`` ``(B, O)`` and ``actions`` ``(B, A)`` or ``(B, N, A)`` -> Q ``(E, B)`` or
        ``(E, B, N)``. ``detach_params``: gradients reach the inputs only (an actor's loss)."""
        params = [self.w_obs, self.w_act, self.b_in, *self.weights, *self.biases]
        if detach_params:
            params = [p.detach() for p in params]
        w_obs, w_act, b_in = params[:3]
        n_layers = len(self.weights)
        weights, biases = params[3 : 3 + n_layers], params[3 + n_layers :]
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        single = actions.dim() == 2
        acts = actions.unsqueeze(1) if single else actions  # (B, N, A)
        b, n = acts.shape[:2]
        h_obs = torch.baddbmm(b_in, obs.expand(self.n_critics, *obs.shape), w_obs)  # (E, B, H)
        h_act = torch.matmul(acts.reshape(1, b * n, -1), w_act)  # (E, B*N, H)
        x = torch.relu(h_act.view(self.n_critics, b, n, -1) + h_obs.unsqueeze(2))  # (E, B, N, H)
        x = x.view(self.n_critics, b * n, -1)  # (E, B*N, H)
        for w, bias in zip(weights[:-1], biases[:-1], strict=True):
            x = torch.relu(torch.baddbmm(bias, x, w))  # (E, B*N, H)
        w, bias = weights[-1], biases[-1]  # (E, H, 1), (E, 1, 1)
        if x.dtype == w.dtype:
            x = torch.baddbmm(bias, x, w)  # (E, B*N, 1)
        else:  # bf16 activations (autocast): bf16 products summed in fp32, so Q ~ -50 keeps
            # fp32 resolution (a bf16 output would round it to 0.25); cheaper than upcasting x
            x = (x * w.to(x.dtype).transpose(1, 2)).sum(-1, keepdim=True, dtype=w.dtype) + bias
        q = x.view(self.n_critics, b, n)  # (E, B, N)
        return q.squeeze(-1) if single else q


class ValueNetwork(nn.Module):
    """``V(s)``: an MLP with ``hidden`` ReLU layers and a scalar output (``obs_key``: with
    standardised observations, as :class:`QEnsemble`)."""

    def __init__(
        self, obs_dim: int, hidden: tuple[int, ...] = (256, 256), obs_key: str | None = None
    ) -> None:
        super().__init__()
        self.obs_norm = ObservationNormalizer(obs_dim, obs_key) if obs_key else None
        self.net = mlp([obs_dim, *hidden, 1])

    def forward(self, obs: Tensor) -> Tensor:
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        *hidden, out = self.net
        for layer in hidden:
            obs = layer(obs)
        return fp32_linear(out, obs).squeeze(-1)  # (B,); V in full precision under autocast


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to be moved towards it with :func:`polyak_update`."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * source`` for every parameter, in one fused call."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
