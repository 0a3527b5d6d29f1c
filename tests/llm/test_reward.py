import pytest
import torch

from embodied_rl.llm.models import freeze, pad
from embodied_rl.llm.pairs import TextPair, collate_pairs, tokenize_pairs
from embodied_rl.llm.reward import RewardConfig, RewardModel, RewardTrainer, pool_last_token
from embodied_rl.llm.tasks import TaskConfig, TaskGenerator


def test_pooling_reads_the_last_real_token_for_either_padding(make_model, tokenizer):
    rm = RewardModel.from_causal_lm(make_model(seed=1)).eval()
    rows = [
        tokenizer.encode(t)
        for t in (" the hotel was great.", " a book.", " i think the song is dull and bad.")
    ]
    right = pad(rows, tokenizer.pad_token_id, "right")
    left = pad(rows, tokenizer.pad_token_id, "left")
    r_mask = pad([[1] * len(r) for r in rows], 0, "right")
    l_mask = pad([[1] * len(r) for r in rows], 0, "left")
    alone = torch.cat(
        [rm(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)) for r in rows]
    )
    torch.testing.assert_close(rm(right, r_mask), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(rm(left, l_mask), alone, atol=1e-5, rtol=0)


def test_pool_last_token_by_hand():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    assert pool_last_token(hidden, mask).squeeze(-1).tolist() == [1.0, 7.0]


def test_reward_model_learns_the_annotators_length_bias(make_model, tokenizer):
    # labels driven by length (the flaw PPO exploits): learnable by a 1-layer model in seconds;
    # the full task's accuracy (> 0.8) is checked by the slow end-to-end test
    task = TaskGenerator(TaskConfig(annotator_temperature=100.0, length_bias=3.0), seed=1)
    rm = RewardModel.from_causal_lm(make_model())
    config = RewardConfig(steps=40, batch_size=32, learning_rate=3e-3, progress=False, log_every=20)
    trainer = RewardTrainer(rm, tokenizer, config)
    held_out = task.comparisons(200)
    assert trainer.evaluate(held_out)["accuracy"] < 0.65
    rows = trainer.train(task.comparisons(1000), eval_pairs=held_out)
    assert rows[-1]["eval/accuracy"] > 0.8
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]


def test_margin_and_centring_change_the_loss(make_model, tokenizer):
    rm = RewardModel.from_causal_lm(make_model())
    pairs = [TextPair("Write a positive sentence about the hotel:", " great.", " bad.", margin=1.0)]
    batch = collate_pairs(tokenize_pairs(tokenizer, pairs, 64), tokenizer.pad_token_id)
    plain = RewardTrainer(rm, tokenizer, RewardConfig()).loss(batch)[0]
    margin = RewardTrainer(rm, tokenizer, RewardConfig(use_margin=True)).loss(batch)[0]
    centred = RewardTrainer(rm, tokenizer, RewardConfig(center_rewards_coef=0.5)).loss(batch)[0]
    assert margin > plain and centred > plain


def test_normalize_and_round_trip(make_model, tokenizer, task, tmp_path):
    rm = RewardModel.from_causal_lm(make_model(seed=2))
    demos = task.demonstrations(64)
    prompts, responses = [p for p, _ in demos], [r for _, r in demos]
    rm.normalize(tokenizer, prompts, responses)
    scores = rm.score(tokenizer, prompts, responses)
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-4)
    rm.save(tmp_path / "rm")
    assert (tmp_path / "rm" / "head.safetensors").exists()
    loaded = RewardModel.load(tmp_path / "rm")
    torch.testing.assert_close(loaded.score(tokenizer, prompts, responses), scores)
    with pytest.raises(FileNotFoundError, match="reward_model.json"):
        RewardModel.load(tmp_path)


def test_new_heads_are_seeded(make_model):
    torch.manual_seed(123)  # the global generator must not matter
    a = RewardModel.from_causal_lm(make_model(), seed=4)
    torch.manual_seed(456)
    b = RewardModel.from_causal_lm(make_model(), seed=4)
    assert torch.equal(a.head.weight, b.head.weight)


def test_a_reward_model_from_a_frozen_policy_is_trainable(make_model):
    """InstructGPT's RM starts from the SFT model, which is often frozen as a reference too:
    the copy must train (a frozen backbone would leave only the scalar head learning)."""
    policy = freeze(make_model())
    rm = RewardModel.from_causal_lm(policy)
    assert all(p.requires_grad for p in rm.parameters())
    assert not any(p.requires_grad for p in policy.parameters())  # the policy stays frozen
