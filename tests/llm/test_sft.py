import pytest
import torch
import torch.nn.functional as F

from embodied_rl.llm.models import IGNORE_INDEX, load_causal_lm
from embodied_rl.llm.sft import (
    OrdinalBins,
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


def test_ordinal_bins_score_binned_labels_against_hl_gauss_targets():
    from embodied_rl.policies.action_tokenizer import gaussian_bin_targets

    logits = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(1))
    # ids 4..11 are 8 bins; label 2 is an ordinary token, 5 and 11 are bins 1 and 7
    labels = torch.tensor([[0, IGNORE_INDEX, 2, 5, 11], [0, 9, IGNORE_INDEX, 4, IGNORE_INDEX]])
    ordinal = OrdinalBins(first_id=4, n_bins=8, sigma=1.5)
    logp = logits[:, :-1].log_softmax(-1)
    terms = []
    for b, t in [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2)]:  # logits[b, t] predicts labels[b, t+1]
        label = int(labels[b, t + 1])
        if 4 <= label < 12:
            soft = gaussian_bin_targets(torch.tensor(label - 4), 8, 1.5)
            terms.append(-(soft * logp[b, t, 4:12]).sum())
        else:
            terms.append(-logp[b, t, label])
    expected = torch.stack(terms).mean()
    assert sft_loss(logits, labels, ordinal).item() == pytest.approx(expected.item(), abs=1e-5)
    assert sft_loss(logits, labels, ordinal).item() != pytest.approx(
        sft_loss(logits, labels).item(), abs=1e-3
    )  # the smoothing changes the binned terms
    # a tiny width is the one-hot target: plain cross-entropy
    sharp = OrdinalBins(first_id=4, n_bins=8, sigma=1e-3)
    assert sft_loss(logits, labels, sharp).item() == pytest.approx(
        sft_loss(logits, labels).item(), abs=1e-5
    )
    with pytest.raises(ValueError, match="reaches past"):
        sft_loss(logits, labels, OrdinalBins(first_id=8, n_bins=8, sigma=1.0))
    with pytest.raises(ValueError, match="sigma"):
        OrdinalBins(first_id=4, n_bins=8, sigma=0.0)


def test_ordinal_training_moves_probability_to_neighbouring_bins(make_model, tokenizer):
    """After training on one bin with HL-Gauss targets the neighbours get far more
    probability than after plain cross-entropy, and the trainer uses the option."""
    first = len(tokenizer) - 16  # pretend the last 16 ids are ordered bins
    examples = [("Write a positive sentence about the hotel:", [first + 8])] * 8
    config = SFTConfig(steps=40, batch_size=8, learning_rate=3e-3, progress=False,
                       tensorboard=False)  # fmt: skip
    probs = {}
    for name, ordinal in (("plain", None), ("hl", OrdinalBins(first, 16, sigma=1.0))):
        model = make_model(seed=0)
        SFTTrainer(model, tokenizer, config, ordinal=ordinal).train(examples)
        ids = tokenize_examples(tokenizer, examples[:1], 64)[0].input_ids[:-2]
        with torch.no_grad():
            p = model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
        probs[name] = p[first : first + 16]
    assert probs["hl"].argmax() == 8 and probs["plain"].argmax() == 8
    neighbours = lambda p: float(p[7] + p[9])  # noqa: E731
    assert neighbours(probs["hl"]) > 0.3 > 5 * neighbours(probs["plain"])


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
