import json
from dataclasses import replace

import pytest
import torch

from embodied_rl.llm.generation import SamplingConfig
from embodied_rl.llm.ppo_rlhf import (
    PolicyWithValue,
    PPORLHFConfig,
    PPORLHFTrainer,
    kl_shaped_rewards,
    masked_whiten,
    response_advantages,
)
from embodied_rl.llm.tasks import oracle_scores, words

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_kl_shaped_rewards_by_hand():
    scores = torch.tensor([1.0, 2.0])
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -3.0]])
    rewards, kl = kl_shaped_rewards(scores, logps, ref, MASK, kl_coef=0.1)
    # KL_t = log pi - log pi_ref: [0.5, -1, 0] and [1, 0, (padding)]
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]]))
    # -beta KL_t, plus the score on the last response token
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 1.0], [-0.1, 2.0, 0.0]]))


def test_k3_penalty_is_never_negative():
    logps = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    _, kl = kl_shaped_rewards(torch.zeros(1), logps, ref, torch.ones(1, 3), 0.1, "k3")
    assert (kl >= 0).all() and kl[0, 2] == 0


def test_gae_over_response_tokens_by_hand():
    rewards = torch.tensor([[-0.05, 0.1, 1.0], [-0.1, 2.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [0.1, 0.3, 9.0]])  # 9: padding, must not leak
    advantages, returns = response_advantages(rewards, values, MASK, gamma=1.0, gae_lambda=0.5)
    # row 0: deltas 0.15, 0.3, 0.4 -> A = 0.15 + 0.5 * (0.3 + 0.5 * 0.4), 0.3 + 0.5 * 0.4, 0.4
    # row 1: the episode ends at token 1: deltas 0.1, 1.7 -> A = 0.95, 1.7, (padding) 0
    torch.testing.assert_close(advantages, torch.tensor([[0.4, 0.5, 0.4], [0.95, 1.7, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.6, 0.9, 1.0], [1.05, 2.0, 0.0]]))


def test_masked_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    out = masked_whiten(x, MASK)
    kept = out[MASK.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-5)
    assert out[1, 2] == 0


def _length_reward(prompts, responses):
    return torch.tensor([float(len(words(r))) for r in responses])


def _trainer(make_model, tokenizer, **overrides):
    config = PPORLHFConfig(
        iterations=2, batch_size=8, minibatch_size=4, ppo_epochs=2, learning_rate=1e-3,
        sampling=SamplingConfig(max_new_tokens=8), progress=False, tensorboard=False,
    )  # fmt: skip
    return PPORLHFTrainer(make_model(), tokenizer, _length_reward, replace(config, **overrides))


def test_ppo_iterations_are_finite_and_reproducible(make_model, tokenizer, task):
    prompts = task.prompts(32)
    rows_a = _trainer(make_model, tokenizer).train(prompts)
    rows_b = _trainer(make_model, tokenizer).train(prompts)
    drop_time = [{k: v for k, v in row.items() if k != "train/seconds"} for row in rows_a + rows_b]
    assert drop_time[:2] == drop_time[2:]  # same seed: identical rollouts and updates
    last = rows_a[-1]
    for key in (
        "train/policy_loss",
        "train/value_loss",
        "train/kl",
        "train/score",
        "train/entropy",
    ):
        assert torch.isfinite(torch.tensor(last[key])), key
    assert last["train/kl_coef"] == 0.1


def test_reference_stays_frozen_and_policy_moves(make_model, tokenizer, task):
    trainer = _trainer(make_model, tokenizer)
    before = [p.clone() for p in trainer.reference.parameters()]
    start = [p.clone() for p in trainer.policy.parameters()]
    trainer.train(task.prompts(16))
    assert all(
        torch.equal(a, b) for a, b in zip(before, trainer.reference.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(start, trainer.policy.parameters(), strict=True)
    )


def test_adaptive_kl_controller_moves_beta(make_model, tokenizer, task):
    trainer = _trainer(make_model, tokenizer, kl_target=1e-6, kl_horizon=100)
    rows = trainer.train(task.prompts(16))
    assert rows[-1]["train/kl_coef"] != 0.1


def test_ptx_mix_adds_the_language_model_loss(make_model, tokenizer, task):
    config = PPORLHFConfig(
        iterations=1, batch_size=8, minibatch_size=8, ppo_epochs=1, ptx_coef=0.5,
        sampling=SamplingConfig(max_new_tokens=6), progress=False, tensorboard=False,
    )  # fmt: skip
    trainer = PPORLHFTrainer(
        make_model(), tokenizer, _length_reward, config, ptx_examples=task.demonstrations(20)
    )
    rows = trainer.train(task.prompts(8))
    assert rows[-1]["train/ptx_loss"] > 0
    with pytest.raises(ValueError, match="ptx_examples"):
        PPORLHFTrainer(make_model(), tokenizer, _length_reward, config)


def test_save_and_load_round_trip(make_model, tokenizer, task, tmp_path):
    trainer = _trainer(make_model, tokenizer)
    trainer.train(task.prompts(8))
    trainer.save(tmp_path / "ppo")
    state = json.loads((tmp_path / "ppo" / "ppo_state.json").read_text())
    assert state["iteration"] == 2 and state["config"]["kl_coef"] == 0.1
    loaded = PolicyWithValue.load(tmp_path / "ppo")
    rollout = trainer.rollout(task.prompts(4))
    with torch.no_grad():
        expected = trainer.model.logprobs_and_values(rollout.generation)
        got = loaded.logprobs_and_values(rollout.generation)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="minibatch_size"):
        PPORLHFConfig(batch_size=4, minibatch_size=8)
    with pytest.raises(ValueError, match="temperature"):
        PPORLHFConfig(sampling=SamplingConfig(temperature=0.7))
    with pytest.raises(ValueError, match="kl_target"):
        PPORLHFConfig(kl_coef=0.0, kl_target=1.0)


def test_oracle_metrics_hook(make_model, tokenizer, task):
    def oracle(prompts, responses):
        return {"oracle": sum(oracle_scores(prompts, responses)) / len(prompts)}

    config = PPORLHFConfig(
        iterations=1, batch_size=4, minibatch_size=4, ppo_epochs=1,
        sampling=SamplingConfig(max_new_tokens=6), progress=False, tensorboard=False,
    )  # fmt: skip
    trainer = PPORLHFTrainer(make_model(), tokenizer, _length_reward, config, metrics_fn=oracle)
    assert "train/oracle" in trainer.train(task.prompts(4))[-1]
