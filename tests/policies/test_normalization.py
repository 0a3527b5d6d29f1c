"""Observation standardisation inside policies and critics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_rl.agents.critics import QEnsemble, ValueNetwork
from embodied_rl.policies import load_policy
from embodied_rl.policies.mlp import MLPConfig, MLPPolicy
from embodied_rl.policies.normalization import (
    CLIP,
    STD_FLOOR,
    ObservationNormalizer,
    fit_observation_normalizers,
)


def test_fit_matches_numpy_and_floors_constant_features():
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -2.0, 0.0], [0.5, 3.0, 0.0], size=(1000, 3)).astype(np.float32)
    norm = ObservationNormalizer(3)
    assert not norm.is_fitted
    norm.fit(x)
    np.testing.assert_allclose(norm.mean.numpy(), x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.std.numpy()[:2], x.astype(np.float64).std(0)[:2], rtol=1e-6)
    assert norm.std[2] == pytest.approx(
        STD_FLOOR
    )  # a constant feature is centred, not divided by 0
    z = norm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z[:, :2].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(0), 1.0, atol=1e-4)
    far = norm(torch.tensor([[1e6, 0.0, 0.0]]))
    assert far[0, 0] == CLIP


def test_fit_errors_name_the_problem():
    norm = ObservationNormalizer(3, key="state")
    with pytest.raises(ValueError, match="'state' has 2 features"):
        norm.fit(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        norm.fit(np.full((4, 3), np.nan))
    with pytest.raises(KeyError, match="'state'"):
        fit_observation_normalizers([norm], {"image": np.zeros((2, 3))})


def test_fitted_normalizers_are_kept_and_travel_with_the_weights(tmp_path):
    policy = MLPPolicy(MLPConfig(obs_dim=3))
    data = {"state": np.random.default_rng(1).normal(5.0, 2.0, size=(64, 3))}
    assert fit_observation_normalizers([policy], data) == 1
    mean = policy.obs_norm.mean.clone()
    # a pretrained (already fitted) policy keeps its statistics on new data
    assert fit_observation_normalizers([policy], {"state": np.zeros((8, 3))}) == 0
    torch.testing.assert_close(policy.obs_norm.mean, mean)
    policy.save(tmp_path / "p")
    restored = load_policy(tmp_path / "p")
    torch.testing.assert_close(restored.obs_norm.mean, mean)
    assert restored.obs_norm.is_fitted
    obs = {"state": np.array([5.0, 4.0, 6.0], np.float32)}
    np.testing.assert_array_equal(policy.act(obs), restored.act(obs))


def test_critics_standardise_their_inputs():
    torch.manual_seed(0)
    q, v = QEnsemble(3, 2, (8,), 2, obs_key="state"), ValueNetwork(3, (8,), obs_key="state")
    x = np.random.default_rng(2).normal(100.0, 10.0, size=(32, 3))
    fit_observation_normalizers([q, v], {"state": x})
    obs, act = torch.tensor(x, dtype=torch.float32), torch.zeros(32, 2)
    plain_q, plain_v = QEnsemble(3, 2, (8,), 2), ValueNetwork(3, (8,))
    plain_q.load_state_dict({k: t for k, t in q.state_dict().items() if "obs_norm" not in k})
    plain_v.load_state_dict({k: t for k, t in v.state_dict().items() if "obs_norm" not in k})
    z = (obs - q.obs_norm.mean) / q.obs_norm.std
    torch.testing.assert_close(q(obs, act), plain_q(z, act))
    torch.testing.assert_close(v(obs), plain_v(z))
