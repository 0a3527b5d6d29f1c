"""bf16 mixed precision of the update steps: hidden matmuls in bf16, outputs and losses fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from embodied_rl.agents.base import agent_class
from embodied_rl.agents.critics import QEnsemble, ValueNetwork
from embodied_rl.agents.iql import IQLConfig
from embodied_rl.agents.trainer import default_policy, make_agent, make_sampler
from embodied_rl.utils.precision import autocast, check_precision, fp32_linear

MATMULS = {"mm", "addmm", "bmm", "baddbmm"}
OBS_DIM, ACTION_DIM = 6, 2  # the synthetic dataset's sizes (conftest.synthetic_dataset)


class MatmulDtypes(TorchDispatchMode):
    """Records the input dtype of every matmul dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in MATMULS:
            self.dtypes.append(next(a.dtype for a in args if isinstance(a, torch.Tensor)))
        return func(*args, **(kwargs or {}))


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="'fp16'"):
        check_precision("fp16")
    with pytest.raises(ValueError, match="'half'"):
        IQLConfig(precision="half")


def test_fp32_linear_keeps_full_precision_under_autocast():
    torch.manual_seed(0)
    layer, x = nn.Linear(16, 3), torch.randn(8, 16)
    assert torch.equal(fp32_linear(layer, x), layer(x))  # outside autocast: layer(x)
    with autocast("bf16"):
        assert layer(x).dtype == torch.bfloat16  # what autocast would do to an output layer
        out = fp32_linear(layer, x.bfloat16())
    assert out.dtype == torch.float32
    assert torch.allclose(out, layer(x.bfloat16().float()), atol=1e-6)


def _off_bf16_grid(values: torch.Tensor) -> float:
    """Fraction of ``values`` that bf16 cannot represent (0 for a bf16-rounded output)."""
    return (values != values.bfloat16().float()).float().mean().item()


def test_critic_and_value_outputs_are_fp32_and_not_rounded_to_bf16():
    torch.manual_seed(0)
    critic, value = QEnsemble(10, 3, (32, 32), n_critics=2), ValueNetwork(10, (32, 32))
    with torch.no_grad():  # Q ~ -50, where bf16's spacing is 0.25
        critic.biases[-1].fill_(-50.0)
        value.net[-1].bias.fill_(-50.0)
    obs, actions = torch.randn(64, 10), torch.rand(64, 5, 3) * 2 - 1
    q32, v32 = critic(obs, actions), value(obs)
    with autocast("bf16"):
        q16, v16 = critic(obs, actions), value(obs)
    assert q16.dtype == v16.dtype == torch.float32
    assert _off_bf16_grid(q16) > 0.9 and _off_bf16_grid(v16) > 0.9
    assert torch.allclose(q16, q32, atol=0.05) and torch.allclose(v16, v32, atol=0.05)


@pytest.mark.parametrize("algo", ["iql", "cql", "calql"])
def test_bf16_update_runs_hidden_matmuls_in_bf16_and_keeps_fp32_weights(algo, tiny_data):
    torch.manual_seed(0)
    config = agent_class(algo).config_class(precision="bf16")
    agent = make_agent(algo, default_policy(algo, tiny_data), config)
    sampler = make_sampler(agent, tiny_data, 32)
    with MatmulDtypes() as seen:
        metrics = agent.update(sampler.sample())
    assert torch.bfloat16 in seen.dtypes and torch.float32 in seen.dtypes  # outputs stay fp32
    assert all(isinstance(v, float) and v == v for v in metrics.values())
    for module in agent.modules().values():
        assert all(p.dtype == torch.float32 for p in module.parameters())
    with MatmulDtypes() as seen:
        agent.update(sampler.sample())
    assert torch.bfloat16 in seen.dtypes


def test_bf16_iql_tracks_fp32_iql(tiny_data):
    """Same seed, same batches: after 200 steps the bf16 run's Q-values stay within a few
    percent of the fp32 run's (bf16 rounding perturbs, it does not derail, the training)."""
    q = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        agent = make_agent(
            "iql",
            default_policy("iql", tiny_data),
            IQLConfig(reward_bias=-1.0, precision=precision),
        )
        sampler = make_sampler(agent, tiny_data, 64)
        torch.manual_seed(1)
        for _ in range(200):
            agent.update(sampler.sample())
        batch = make_sampler(agent, tiny_data, 64).sample()
        with torch.no_grad():
            q[precision] = agent.critic(batch["obs"]["state"], batch["action"])
    scale = q["fp32"].abs().mean()
    assert scale > 0.5  # the critics moved away from their initial ~0 (rewards are -1)
    assert (q["bf16"] - q["fp32"]).abs().mean() < 0.05 * scale


def test_bf16_iql_trains_the_vla_policy_like_fp32(tiny_image_data):
    """The whole update runs under autocast, so the VLA's image and text encoders and its
    transformer run in bf16 too; the token head stays fp32 and the losses match fp32's."""
    from embodied_rl.policies import VLAPolicy, vla_preset

    metrics = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        bounds = {"action_low": (-1.0,) * ACTION_DIM, "action_high": (1.0,) * ACTION_DIM}
        preset = vla_preset(
            "tiny", history=2, n_layers=1, dropout=0.0, image_size=32, head="tokens",
            proprio_dim=0, random_shift=0, **bounds,
        )  # fmt: skip
        config = IQLConfig(critic_obs_dim=OBS_DIM, precision=precision)
        agent = make_agent("iql", VLAPolicy(preset), config)
        sampler = make_sampler(agent, tiny_image_data, 8)
        for _ in range(3):
            metrics[precision] = agent.update(sampler.sample())
    for key in ("critic_loss", "token_loss"):
        assert metrics["bf16"][key] == pytest.approx(metrics["fp32"][key], rel=0.02), key
