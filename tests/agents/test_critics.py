"""QEnsemble's hand-written backward against autograd through a plain per-critic MLP."""

from __future__ import annotations

import pytest
import torch

from embodied_rl.agents.critics import QEnsemble
from embodied_rl.utils.precision import autocast


def reference_q(critic: QEnsemble, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Q ``(E, B, N)`` from the same weights with ``torch.cat`` and ``@``, one critic at a
    time: the textbook MLP that the vectorised forward and backward must equal."""
    n = actions.shape[1]
    x_in = torch.cat([obs.unsqueeze(1).expand(-1, n, -1), actions], dim=-1)  # (B, N, O + A)
    qs = []
    for e in range(critic.n_critics):
        x = torch.relu(x_in @ torch.cat([critic.w_obs[e], critic.w_act[e]]) + critic.b_in[e])
        for w, b in zip(critic.weights[:-1], critic.biases[:-1], strict=True):
            x = torch.relu(x @ w[e] + b[e])
        qs.append((x @ critic.weights[-1][e] + critic.biases[-1][e]).squeeze(-1))
    return torch.stack(qs)


@pytest.mark.parametrize("hidden", [(16,), (16, 16), (8, 8, 8)])
@pytest.mark.parametrize("n_actions", [1, 6])  # autograd's backward; the hand-written one
def test_backward_matches_autograd_of_the_plain_mlp(hidden, n_actions):
    torch.manual_seed(0)
    critic = QEnsemble(5, 3, hidden, n_critics=3).double()
    obs = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    actions = torch.randn(4, n_actions, 3, dtype=torch.float64, requires_grad=True)
    q, q_ref = critic(obs, actions), reference_q(critic, obs, actions)
    assert q.shape == (3, 4, n_actions)
    torch.testing.assert_close(q, q_ref)
    weight = torch.randn_like(q)  # a loss that weighs every Q differently
    inputs = [obs, actions, *critic.parameters()]
    ours = torch.autograd.grad((q * weight).sum(), inputs)
    theirs = torch.autograd.grad((q_ref * weight).sum(), inputs)
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(critic, (obs, actions))


def test_detached_parameters_pass_gradients_to_the_actions_only():
    torch.manual_seed(0)
    critic = QEnsemble(5, 3, (16, 16), n_critics=2)
    obs, actions = torch.randn(8, 5), torch.randn(8, 4, 3, requires_grad=True)
    critic(obs, actions, detach_params=True).sum().backward()
    assert all(p.grad is None for p in critic.parameters())
    want = torch.autograd.grad(reference_q(critic, obs, actions).sum(), actions)[0]
    torch.testing.assert_close(actions.grad, want)
    assert critic(obs, actions[:, 0]).shape == (2, 8)  # one action per state: (E, B)


def test_bf16_gradients_are_as_close_to_fp32_as_autograd_under_autocast():
    """Under bf16 autocast the backward runs in bf16 as autograd's would: its parameter
    gradients stay within bf16's error of the fp32 ones, and come out in fp32."""
    torch.manual_seed(1)
    critic = QEnsemble(5, 3, (64, 64), n_critics=2)
    obs, actions = torch.randn(64, 5), torch.randn(64, 7, 3)
    weight = torch.linspace(-1, 1, 2 * 64 * 7).view(2, 64, 7)
    with autocast("bf16"):
        q = critic(obs, actions)
    ours = torch.autograd.grad((q * weight).sum(), list(critic.parameters()))
    fp32 = torch.autograd.grad((reference_q(critic, obs, actions) * weight).sum(),
                               list(critic.parameters()))  # fmt: skip
    for got, want in zip(ours, fp32, strict=True):
        assert got.dtype == torch.float32
        assert (got - want).norm() <= 0.03 * want.norm()  # autograd's own bf16 error: 0.016
