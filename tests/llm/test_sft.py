import pytest
import torch
import torch.nn.functional as F

from embodied_rl.llm.models import IGNORE_INDEX, load_causal_lm
from embodied_rl.llm.sft import (
    SFTConfig,
    SFTTrainer,
    check_packing_support,
    collate,
    lm_loss,
    pack,
    sft_loss,
    tokenize_examples,
)

EXAMPLES = [
    ("Write a positive sentence about the hotel:", " the hotel was great."),
    ("Write a negative sentence about the book:", " my book was really dull and bad."),
    ("Write a positive sentence about the song:", " the song was fun."),
]


def test_prompt_tokens_are_masked_and_eos_is_learnt(tokenizer):
    ex = tokenize_examples(tokenizer, EXAMPLES[:1], 128)[0]
    n_prompt = len(tokenizer.encode(EXAMPLES[0][0]))
    assert ex.loss_mask == [0] * n_prompt + [1] * (len(ex.input_ids) - n_prompt)
    assert ex.input_ids[-1] == tokenizer.eos_token_id
    batch = collate(tokenize_examples(tokenizer, EXAMPLES, 128), tokenizer.pad_token_id)
    labels = batch["labels"]
    assert (labels[0, :n_prompt] == IGNORE_INDEX).all()
    assert (labels[batch["attention_mask"] == 0] == IGNORE_INDEX).all()  # padding


def test_sft_loss_is_cross_entropy_over_response_tokens_only():
    logits = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[2, IGNORE_INDEX, 3, 5]])  # token 1 is prompt (no loss)
    expected = (
        F.cross_entropy(logits[0, 1:2], labels[0, 2:3])
        + F.cross_entropy(logits[0, 2:3], labels[0, 3:4])
    ) / 2
    assert sft_loss(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="no response token"):
        sft_loss(logits, torch.full((1, 4), IGNORE_INDEX))


def test_prompt_logits_do_not_change_the_loss(make_model, tokenizer):
    model = make_model().eval()
    batch = collate(tokenize_examples(tokenizer, EXAMPLES, 128), tokenizer.pad_token_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    n_prompt = len(tokenizer.encode(EXAMPLES[0][0]))
    changed = logits.clone()
    changed[0, : n_prompt - 1] += torch.randn_like(
        changed[0, : n_prompt - 1]
    )  # predict prompt tokens
    assert sft_loss(changed, batch["labels"]) == sft_loss(logits, batch["labels"])


def test_packing_isolates_examples_and_matches_unpacked_loss(make_model, tokenizer):
    model = make_model(seed=1).eval()
    check_packing_support(model)
    tokenized = tokenize_examples(tokenizer, EXAMPLES, 128)
    packed = pack(tokenized, 64, tokenizer.pad_token_id)
    assert packed["input_ids"].shape == (1, 64)
    unpacked = collate(tokenized, tokenizer.pad_token_id)
    n_packed = (packed["labels"][:, 1:] != IGNORE_INDEX).sum()
    n_unpacked = (unpacked["labels"][:, 1:] != IGNORE_INDEX).sum()
    assert n_packed == n_unpacked
    with torch.no_grad():
        torch.testing.assert_close(
            lm_loss(model, packed), lm_loss(model, unpacked), atol=1e-5, rtol=0
        )


def test_sft_lowers_loss_reproducibly_and_saves(make_model, tokenizer, task, tmp_path):
    data = task.demonstrations(200)
    config = SFTConfig(steps=30, batch_size=16, learning_rate=3e-3, progress=False, log_every=10)
    first = SFTTrainer(make_model(), tokenizer, config)
    before = first.evaluate(data[:50])["loss"]
    rows = first.train(data, out=tmp_path / "run", eval_examples=data[:50])
    assert rows[-1]["eval/loss"] < before - 0.5
    assert (tmp_path / "run" / "metrics.csv").exists()
    second = SFTTrainer(make_model(), tokenizer, config)
    second.train(data)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)  # same seed: same weights
    first.save(tmp_path / "sft")
    loaded = load_causal_lm(tmp_path / "sft")
    assert SFTTrainer(loaded, tokenizer, config).evaluate(data[:50])["loss"] == pytest.approx(
        rows[-1]["eval/loss"], abs=1e-5
    )


def test_packed_training_runs(make_model, tokenizer, task):
    config = SFTConfig(
        steps=3, batch_size=4, max_length=64, packing=True, progress=False, tensorboard=False
    )
    rows = SFTTrainer(make_model(), tokenizer, config).train(task.demonstrations(40))
    assert rows[-1]["train/loss"] > 0


def test_config_validates():
    with pytest.raises(ValueError, match="steps"):
        SFTConfig(steps=0)
