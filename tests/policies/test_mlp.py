import numpy as np
import pytest
import torch

from embodied_rl.policies import CNNConfig, CNNPolicy, MLPConfig, MLPPolicy, load_policy


@pytest.mark.parametrize("head", ["gaussian", "tanh_gaussian", "tokens", "deterministic"])
def test_mlp_policy_interface(head, tmp_path):
    torch.manual_seed(0)
    policy = MLPPolicy(MLPConfig(obs_dim=10, head=head, value_head=True, hidden=(32, 32)))
    batch = {"state": torch.randn(5, 10)}
    actions = torch.rand(5, 4) * 2 - 1
    action = policy.act({"state": np.zeros(10, np.float32)})
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)
    assert policy.value(batch).shape == (5,)
    if head == "deterministic":
        with pytest.raises(ValueError, match="no log-probability"):
            policy.log_prob(batch, actions)
    else:
        assert policy.log_prob(batch, actions).shape == (5,) and policy.entropy(batch).shape == (5,)
    loaded = load_policy(policy.save(tmp_path / "mlp"))
    np.testing.assert_array_equal(
        loaded.act({"state": np.ones(10, np.float32)}),
        policy.act({"state": np.ones(10, np.float32)}),
    )


def test_gaussian_log_prob_matches_the_normal_density():
    policy = MLPPolicy(MLPConfig(obs_dim=3, head="gaussian", hidden=(8,)))
    batch = {"state": torch.randn(4, 3)}
    mean = policy(batch)
    actions = mean + 0.1
    std = policy.head.log_std.exp()
    expected = (-0.5 * ((0.1 / std) ** 2) - torch.log(std) - 0.5 * np.log(2 * np.pi)).sum()
    torch.testing.assert_close(policy.log_prob(batch, actions), expected.expand(4))
    normal = torch.distributions.Normal(mean, std)  # entropy: 0.5 log(2 pi e sigma^2) per dim
    torch.testing.assert_close(policy.entropy(batch), normal.entropy().sum(-1))


def _squashed_normal(head, out):
    """The tanh-squashed Gaussian as torch.distributions builds it (the reference)."""
    from torch.distributions import Independent, Normal, TransformedDistribution
    from torch.distributions.transforms import AffineTransform, TanhTransform

    mean, log_std = out.chunk(2, dim=-1)
    centre, half = (head.high + head.low) / 2, (head.high - head.low) / 2
    squash = [TanhTransform(), AffineTransform(centre, half)]
    return TransformedDistribution(Independent(Normal(mean, log_std.exp()), 1), squash)


def test_tanh_gaussian_matches_torch_distributions_and_stays_in_bounds():
    """SAC's head: samples inside the box, the change-of-variables density of
    torch.distributions, rsample's log-density equal to log_prob of its own samples, and the
    mode is the squashed mean."""
    torch.manual_seed(0)
    config = MLPConfig(obs_dim=6, head="tanh_gaussian", hidden=(16,), action_low=(-1, -2, 0),
                       action_high=(1, 2, 3))  # fmt: skip
    policy = MLPPolicy(config)
    head = policy.head
    out = policy({"state": torch.randn(64, 6)})
    assert out.shape == (64, 6)
    reference = _squashed_normal(head, out)
    actions = head.sample(out)
    assert bool(((actions > head.low) & (actions < head.high)).all())
    torch.testing.assert_close(head.log_prob(out, actions), reference.log_prob(actions),
                               atol=2e-3, rtol=1e-4)  # fmt: skip
    samples, log_prob = head.rsample(out, 5)  # (64, 5, 3), (64, 5)
    assert samples.shape == (64, 5, 3) and log_prob.shape == (64, 5)
    torch.testing.assert_close(log_prob, reference.log_prob(samples.transpose(0, 1)).T,
                               atol=2e-3, rtol=1e-4)  # fmt: skip
    mean = out[:, :3]
    torch.testing.assert_close(head.mode(out), (head.high + head.low) / 2
                               + (head.high - head.low) / 2 * torch.tanh(mean))  # fmt: skip
    # gradients reach the mean and the state-dependent log-std through the samples
    samples.sum().backward()
    assert policy.head.proj.weight.grad[3:].abs().sum() > 0
    # actions exactly on the bounds (clipped data) have a finite log-likelihood
    edge = head.low.expand(64, 3)
    assert torch.isfinite(head.log_prob(out, edge)).all()


def test_tanh_gaussian_log_std_is_clamped():
    head = MLPPolicy(MLPConfig(obs_dim=2, head="tanh_gaussian", hidden=(4,))).head
    with torch.no_grad():
        head.proj.bias.fill_(100.0)
    out = head(torch.zeros(1, 4))
    assert out[0, :4].eq(100.0).all() and out[0, 4:].eq(2.0).all()  # LOG_STD_MAX


def test_mlp_learns_a_linear_map():
    torch.manual_seed(0)
    policy = MLPPolicy(MLPConfig(obs_dim=4, head="deterministic", hidden=(64, 64)))
    x = torch.randn(256, 4)
    target = torch.tanh(x @ torch.randn(4, 4) * 0.5)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(300):
        loss = ((policy({"state": x}) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01


def test_cnn_policy_on_env_observations():
    from embodied_rl.envs import make

    env = make("tabletop/pick-v0", obs_mode="rgb", image_size=64, seed=0)
    obs, _ = env.reset()
    policy = CNNPolicy(CNNConfig(image_size=64, proprio_dim=7, head="tokens", value_head=True))
    action = policy.act(obs)
    assert env.action_space.contains(action)
    batch = {
        "image": torch.as_tensor(obs["image"])[None],
        "proprio": torch.as_tensor(obs["proprio"])[None],
    }
    assert policy(batch).shape == (1, 4, 256) and policy.value(batch).shape == (1,)
    with pytest.raises(ValueError, match="expects 5"):
        MLPPolicy(MLPConfig(obs_dim=5))({"state": torch.zeros(1, 6)})


def test_act_names_bad_observations():
    """A batch, a NaN, a missing key and float pixels each get an error naming the value."""
    mlp = MLPPolicy(MLPConfig(obs_dim=10, hidden=(8,)))
    with pytest.raises(ValueError, match=r"shape \(1, 10\).*act\(\) takes one observation"):
        mlp.act({"state": np.zeros((1, 10), np.float32)})
    state = np.zeros(10, np.float32)
    state[3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values at entries \[3\]"):
        mlp.act({"state": state})
    with pytest.raises(ValueError, match=r"lacks \(it has \['image'\]\).*env_options"):
        mlp.act({"image": np.zeros((64, 64, 3), np.uint8)})
    cnn = CNNPolicy(CNNConfig(image_size=64, hidden=(8,)))
    with pytest.raises(ValueError, match="is float64; the policy reads uint8 pixels"):
        cnn.act({"image": np.full((64, 64, 3), 0.5)})
