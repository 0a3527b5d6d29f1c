"""PPO fine-tuning of pretrained policies: the actor-critic conversion, the frozen KL reference,
the from-scratch baseline, and the tiny VLA on images and instructions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from embodied_rl.agents.finetune import (
    PPOFinetuneConfig,
    _warm_up_value,
    actor_critic,
    finetune_ppo,
)
from embodied_rl.agents.ppo import PPOConfig
from embodied_rl.agents.ppo_rollout import make_vec_env
from embodied_rl.policies import MLPConfig, MLPPolicy, VLAPolicy, load_policy, vla_preset

STATE_DIM = 45  # tabletop state with one object
ENV = {"n_objects": 1, "reward_type": "dense"}


def bc_policy(seed: int = 0) -> MLPPolicy:
    """A 'BC-pretrained' MLP: deterministic head, fitted observation statistics."""
    torch.manual_seed(seed)
    policy = MLPPolicy(MLPConfig(obs_dim=STATE_DIM, hidden=(16,), head="deterministic"))
    policy.obs_norm.fit(np.random.default_rng(seed).normal(2.0, 3.0, (50, STATE_DIM)))
    return policy


def batch(n: int = 5) -> dict[str, torch.Tensor]:
    return {"state": torch.randn(n, STATE_DIM)}


def test_actor_critic_keeps_the_pretrained_mean_and_adds_a_value_head():
    pretrained = bc_policy()
    policy = actor_critic(pretrained, init_log_std=-1.0)
    assert policy.head.kind == "gaussian" and policy.value_head is not None
    x = batch()
    torch.testing.assert_close(policy(x), pretrained(x))  # same mean action
    torch.testing.assert_close(policy.head.log_std, torch.full((4,), -1.0))
    assert policy.value(x).shape == (5,)


def test_actor_critic_of_a_squashed_gaussian_keeps_its_deterministic_action():
    """A CQL/Cal-QL policy (SAC's squashed Gaussian) becomes PPO's Gaussian whose mean is the
    squashed mean, i.e. the action it took when evaluated deterministically."""
    torch.manual_seed(0)
    pretrained = MLPPolicy(MLPConfig(obs_dim=STATE_DIM, hidden=(16,), head="tanh_gaussian"))
    policy = actor_critic(pretrained, init_log_std=-1.0)
    assert policy.head.kind == "gaussian"
    x = batch()
    torch.testing.assert_close(policy.head.mode(policy(x)), pretrained.head.mode(pretrained(x)))
    torch.testing.assert_close(policy.head.log_std, torch.full((4,), -1.0))


def test_from_scratch_has_fresh_weights_but_the_same_observation_statistics():
    pretrained = bc_policy()
    scratch = actor_critic(pretrained, reinitialize=True, seed=1)
    torch.testing.assert_close(scratch.obs_norm.mean, pretrained.obs_norm.mean)
    assert scratch.obs_norm.is_fitted
    assert not torch.equal(scratch.trunk[0].weight, pretrained.trunk[0].weight)


def saved_module(agent_dir, name: str) -> dict:
    """One network's tensors from a saved agent's ``model.safetensors`` (keys ``name.*``)."""
    tensors = load_file(agent_dir / "model.safetensors")
    return {k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")}


def test_ppo_finetuning_keeps_the_kl_reference_frozen(tmp_path):
    pretrained = bc_policy()
    pretrained.save(tmp_path / "bc")
    result = finetune_ppo(
        tmp_path / "bc", tmp_path / "ppo",
        PPOFinetuneConfig(env_steps=64, n_envs=1, env_kwargs=ENV, eval_episodes=1),
        PPOConfig(n_steps=32, batch_size=16, n_epochs=2, kl_coef=0.1, learning_rate=1e-3),
    )  # fmt: skip
    assert result.env_steps == 64 and result.last_rollout["kl_coef"] == pytest.approx(0.1)
    assert result.last_rollout["ref_kl"] != 0.0  # the policy moved away from the reference
    original = {k: v for k, v in pretrained.state_dict().items()}
    reference = saved_module(tmp_path / "ppo" / "agent", "reference")
    trained = saved_module(tmp_path / "ppo" / "agent", "policy")
    for key, value in original.items():  # the reference is the pretrained policy, untouched
        torch.testing.assert_close(reference[key], value)
    assert not torch.equal(trained["trunk.0.weight"], original["trunk.0.weight"])
    for key in ("obs_norm.mean", "obs_norm.std"):  # statistics stay the data's
        torch.testing.assert_close(trained[key], original[key])
    saved = json.loads((tmp_path / "ppo" / "result.json").read_text())
    assert saved["before"]["eval/success_rate"] in (0.0, 1.0) and not saved["from_scratch"]


def test_value_warmup_trains_only_the_value_head(tmp_path):
    policy = actor_critic(bc_policy())
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    envs = make_vec_env("tabletop/reach-v0", 1, obs_mode="state", **ENV)
    try:
        steps = _warm_up_value(policy, envs, PPOConfig(n_steps=32, batch_size=16), 32, tmp_path)
    finally:
        envs.close()
    assert steps == 32 and all(p.requires_grad for p in policy.parameters())
    changed = {k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"value_head.weight", "value_head.bias"}


def test_from_scratch_run_has_no_reference(tmp_path):
    result = finetune_ppo(
        bc_policy(), tmp_path / "scratch",
        PPOFinetuneConfig(env_steps=32, n_envs=1, env_kwargs=ENV, eval_episodes=0),
        PPOConfig(n_steps=32, batch_size=16, n_epochs=1), from_scratch=True,
    )  # fmt: skip
    assert result.from_scratch and result.last_rollout["ref_kl"] == 0.0
    assert not saved_module(tmp_path / "scratch" / "agent", "reference")


def test_tiny_vla_finetunes_on_images_and_instructions(tmp_path):
    torch.manual_seed(0)
    vla = VLAPolicy(vla_preset("tiny", history=2, n_layers=1, dropout=0.0, head="tokens"))
    policy = actor_critic(vla)
    assert policy.head.kind == "tokens" and policy.value_head is not None
    result = finetune_ppo(
        vla, tmp_path / "vla",
        PPOFinetuneConfig(env_steps=8, n_envs=1, env_kwargs=ENV, eval_episodes=0, randomization="none"),
        PPOConfig(n_steps=8, batch_size=4, n_epochs=1, kl_coef=0.05),
    )  # fmt: skip
    assert result.env_steps == 8 and np.isfinite(result.last_rollout["policy_loss"])
    reference = saved_module(tmp_path / "vla" / "agent", "reference")
    for key, value in vla.trainable_state_dict().items():
        torch.testing.assert_close(reference[key], value)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a saved policy"):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match="obs_mode"):
        PPOFinetuneConfig(env_kwargs={"obs_mode": "rgb"})
    with pytest.raises(ValueError, match="env_steps=0"):
        PPOFinetuneConfig(env_steps=0)
    with pytest.raises(ValueError, match="value_warmup_steps=100"):
        PPOFinetuneConfig(env_steps=100, value_warmup_steps=100)


def test_log_std_sets_the_exploration_noise_of_policy_and_reference(tmp_path):
    torch.manual_seed(0)
    vla = VLAPolicy(vla_preset("tiny", history=1, n_layers=1, dropout=0.0))  # Gaussian head
    finetune_ppo(
        vla, tmp_path / "vla",
        PPOFinetuneConfig(env_steps=8, n_envs=1, env_kwargs=ENV, eval_episodes=0,
                          randomization="none", log_std=-2.0),
        PPOConfig(n_steps=8, batch_size=4, n_epochs=1, kl_coef=0.05, learning_rate=1e-12),
    )  # fmt: skip
    for part in ("policy", "reference"):
        tensors = saved_module(tmp_path / "vla" / "agent", part)
        torch.testing.assert_close(
            tensors["head.log_std"], torch.full((4,), -2.0), atol=1e-6, rtol=0
        )
    assert not torch.allclose(vla.head.log_std, torch.full((4,), -2.0))  # BC's stays untouched


@pytest.mark.parametrize("warmup", [0, 16])
def test_interrupted_finetuning_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, warmup):
    """Ctrl-C after the second of four rollouts; resume=True reaches bit-identical weights."""
    from embodied_rl.agents.ppo import PPO

    bc_policy().save(tmp_path / "bc")
    config = PPOFinetuneConfig(
        env_steps=64 + warmup, n_envs=1, env_kwargs=ENV, eval_episodes=1, checkpoint_every=16,
        value_warmup_steps=warmup,
    )  # fmt: skip
    ppo = PPOConfig(n_steps=16, batch_size=8, n_epochs=2, kl_coef=0.1, learning_rate=1e-3)
    straight = finetune_ppo(tmp_path / "bc", tmp_path / "straight", config, ppo)

    update, calls = PPO.update, []

    def interrupted(self):
        calls.append(self.num_steps)
        if len(calls) == 3 + (warmup > 0):  # (the warm-up's own update comes first)
            raise KeyboardInterrupt
        return update(self)

    monkeypatch.setattr(PPO, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune_ppo(tmp_path / "bc", tmp_path / "cut", config, ppo)
    monkeypatch.setattr(PPO, "update", update)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        finetune_ppo(tmp_path / "bc", tmp_path / "cut", config, ppo)
    resumed = finetune_ppo(tmp_path / "bc", tmp_path / "cut", config, ppo, resume=True)
    assert resumed.env_steps == straight.env_steps == 64 + warmup
    a = load_file(tmp_path / "straight" / "agent" / "policy" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "agent" / "policy" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert resumed.after == straight.after and resumed.before == straight.before
