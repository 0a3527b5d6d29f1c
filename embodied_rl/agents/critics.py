"""A vectorised Q-ensemble, a state-value MLP and Polyak-averaged target networks.

All ``n_critics`` Q-networks live in stacked weights of shape ``(n_critics, in, out)`` and
run as one batched matmul per layer (``torch.baddbmm``), so two or ten critics cost one
kernel call each. The first layer is split into an observation part and an action part:
with ``N`` actions per state (CQL's sampled actions) the observation part is computed once
per state and broadcast, which saves most of the first layer's work. The ensemble's
backward is written by hand (:class:`_EnsembleMLP`) when several actions per state are
evaluated: with CQL's 31 the activations are 16 MB each, and autograd's extra passes over
them cost a fifth of the update.
Under bf16 autocast (``precision="bf16"``) the hidden layers run in bf16 while Q and V come
out in fp32.
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
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        single = actions.dim() == 2
        acts = actions.unsqueeze(1) if single else actions  # (B, N, A)
        if acts.shape[1] >= _HAND_BACKWARD_MIN_ACTIONS:
            q = _EnsembleMLP.apply(_compute_dtype(obs.device.type), obs, acts, *params)
        else:
            q = _ensemble_mlp(obs, acts, params)
        return q.squeeze(-1) if single else q  # (E, B, N) or (E, B)


# Actions per state from which the hand-written backward is used: it saves passes over
# (E, B*N, H) activations but runs its backward in Python, which costs more than it saves
# at one action per state (IQL, TD3+BC, actor losses: ~5% slower there when measured).
_HAND_BACKWARD_MIN_ACTIONS = 2


def _ensemble_mlp(obs: Tensor, acts: Tensor, params: list[Tensor]) -> Tensor:
    """The ensemble's forward with autograd's backward: ``(E, B, N)``."""
    w_obs, w_act, b_in, *layers = params
    n_layers = len(layers) // 2
    weights, biases = layers[:n_layers], layers[n_layers:]
    e, (b, n) = w_obs.shape[0], acts.shape[:2]
    h_obs = torch.baddbmm(b_in, obs.expand(e, *obs.shape), w_obs)  # (E, B, H)
    h_act = torch.matmul(acts.reshape(1, b * n, -1), w_act)  # (E, B*N, H)
    x = torch.relu(h_act.view(e, b, n, -1) + h_obs.unsqueeze(2)).view(e, b * n, -1)
    for w, bias in zip(weights[:-1], biases[:-1], strict=True):
        x = torch.relu(torch.baddbmm(bias, x, w))  # (E, B*N, H)
    w, bias = weights[-1], biases[-1]  # (E, H, 1), (E, 1, 1)
    if x.dtype == w.dtype:
        x = torch.baddbmm(bias, x, w)  # (E, B*N, 1)
    else:  # bf16 activations (autocast): bf16 products summed in fp32, so Q ~ -50 keeps
        # fp32 resolution (a bf16 output would round it to 0.25); cheaper than upcasting x
        x = (x * w.to(x.dtype).transpose(1, 2)).sum(-1, keepdim=True, dtype=w.dtype) + bias
    return x.view(e, b, n)


def _compute_dtype(device_type: str) -> torch.dtype | None:
    """The hidden layers' dtype under autocast (bf16 for ``precision="bf16"``), else None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _relu_grad_(grad: Tensor, out: Tensor) -> Tensor:
    """``grad * (out > 0)`` written into ``grad`` (ReLU's backward, no new tensor)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad)


class _EnsembleMLP(torch.autograd.Function):
    """:class:`QEnsemble`'s forward and a hand-written backward.

    With ``N`` actions per state the activations are ``(E, B*N, H)`` (16 MB each for CQL's
    31 actions at batch 256), where every elementwise pass and every new tensor costs about
    as much as a twentieth of a matmul. Autograd's generic backward makes a fresh tensor for
    each ReLU gradient and runs the scalar output layer's gradient as a batched matmul with
    one column; this one applies the ReLU masks in place, forms the output layer's gradient
    by broadcasting, and skips every product whose input needs no gradient. The matmuls are
    the same as autograd's: the result is equal up to float summation order (tested).

    ``dtype`` (bf16 under autocast): hidden-layer inputs and weights are cast to it; Q and
    every gradient of an fp32 input come out in fp32 (as :func:`fp32_linear`'s layers)."""

    @staticmethod
    def forward(ctx, dtype, obs, acts, w_obs, w_act, b_in, *layers):  # type: ignore[override]
        n_layers = len(layers) // 2
        weights, biases = layers[:n_layers], layers[n_layers:]
        out_dtype = w_obs.dtype
        cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
        with torch.autocast(obs.device.type, enabled=False):
            e, (b, n, a) = w_obs.shape[0], acts.shape
            acts_c = cast(acts).reshape(1, b * n, a).expand(e, -1, -1)  # (E, B*N, A)
            obs_c = cast(obs).expand(e, *obs.shape)  # (E, B, O)
            w_obs_c, w_act_c = cast(w_obs), cast(w_act)
            ws = [cast(w) for w in weights]
            h_obs = torch.baddbmm(cast(b_in), obs_c, w_obs_c)  # (E, B, H)
            x = torch.bmm(acts_c, w_act_c)  # (E, B*N, H)
            x.view(e, b, n, -1).add_(h_obs.unsqueeze(2))
            xs = [x.relu_()]
            for w, bias in zip(ws[:-1], biases[:-1], strict=True):
                xs.append(torch.baddbmm(cast(bias), xs[-1], w).relu_())
            w_out = ws[-1]  # (E, H, 1)
            if dtype is None:
                q = torch.baddbmm(biases[-1], xs[-1], w_out)  # (E, B*N, 1)
            else:  # bf16 products summed in fp32: Q ~ -50 keeps fp32 resolution
                q = (xs[-1] * w_out.mT).sum(-1, keepdim=True, dtype=out_dtype) + biases[-1]
        ctx.save_for_backward(obs_c, acts_c, w_obs_c, w_act_c, *ws, *xs)
        ctx.shape, ctx.n_layers = (e, b, n), n_layers
        return q.view(e, b, n)

    @staticmethod
    def backward(ctx, grad_q):  # type: ignore[override]
        # input order: dtype, obs, acts, w_obs, w_act, b_in, *weights, *biases
        e, b, n = ctx.shape
        n_layers, needs = ctx.n_layers, ctx.needs_input_grad
        obs_c, acts_c, w_obs_c, w_act_c, *rest = ctx.saved_tensors
        ws, xs = rest[:n_layers], rest[n_layers:]
        w_at, b_at = 6, 6 + n_layers  # where the weights' and biases' gradients go
        grads: list[Tensor | None] = [None] * (6 + 2 * n_layers)
        out = grad_q.dtype  # the parameters' dtype (fp32)
        with torch.autocast(grad_q.device.type, enabled=False):
            g_q = grad_q.reshape(e, b * n, 1)
            if needs[b_at + n_layers - 1]:
                grads[b_at + n_layers - 1] = g_q.sum(1, keepdim=True)
            g_q = g_q.to(ws[-1].dtype)
            if needs[w_at + n_layers - 1]:
                grads[w_at + n_layers - 1] = torch.bmm(xs[-1].mT, g_q)
            if not any(needs[1 : w_at + n_layers - 1]) and not any(needs[b_at:-1]):
                return tuple(_as(g, out) for g in grads)
            g = g_q * ws[-1].mT  # (E, B*N, H): the gradient of the last hidden layer
            for i in range(n_layers - 2, -1, -1):  # hidden layer i: xs[i] -> xs[i + 1]
                _relu_grad_(g, xs[i + 1])
                if needs[b_at + i]:
                    grads[b_at + i] = g.sum(1, keepdim=True, dtype=out)
                if needs[w_at + i]:
                    grads[w_at + i] = torch.bmm(xs[i].mT, g)
                g = torch.bmm(g, ws[i].mT)
            _relu_grad_(g, xs[0])  # the first layer's pre-activation
            g_obs = g.view(e, b, n, -1).sum(2)  # (E, B, H): the broadcast observation part
            if needs[5]:
                grads[5] = g_obs.sum(1, keepdim=True, dtype=out)
            if needs[3]:
                grads[3] = torch.bmm(obs_c.mT, g_obs)
            if needs[1]:
                grads[1] = torch.bmm(g_obs, w_obs_c.mT).sum(0, dtype=out)
            if needs[4]:
                grads[4] = torch.bmm(acts_c.mT, g)
            if needs[2]:
                grads[2] = torch.bmm(g, w_act_c.mT).sum(0, dtype=out).view(b, n, -1)
        return tuple(_as(g, out) for g in grads)


def _as(grad: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if grad is None else grad.to(dtype)


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
