import copy

import pytest
import torch

from embodied_rl.llm.dpo import (
    DPOConfig,
    DPOTrainer,
    head_split_matches,
    response_logprobs_sum,
    shared_prompt_logprobs,
    shared_prompt_matches,
)
from embodied_rl.llm.models import load_causal_lm
from embodied_rl.llm.pairs import (
    TokenizedPair,
    collate_pairs,
    collate_shared_prompt,
    tokenize_pairs,
)
from embodied_rl.preference.losses import dpo_loss


def _perturbed(model, seed=1, scale=0.05):
    out = copy.deepcopy(model)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in out.parameters():
            p.add_(scale * torch.randn_like(p))
    return out


def test_shared_prompt_layout_reproduces_the_plain_forward(make_model, tokenizer, task):
    model = make_model(seed=3).eval()
    assert head_split_matches(model) and shared_prompt_matches(model)
    pairs = tokenize_pairs(tokenizer, task.comparisons(12), 128)
    plain, n_plain = response_logprobs_sum(
        model, collate_pairs(pairs, tokenizer.pad_token_id), False
    )
    split, _ = response_logprobs_sum(model, collate_pairs(pairs, tokenizer.pad_token_id), True)
    shared, n_shared = shared_prompt_logprobs(
        model, collate_shared_prompt(pairs, tokenizer.pad_token_id)
    )
    torch.testing.assert_close(split, plain, atol=1e-4, rtol=0)
    torch.testing.assert_close(shared, plain, atol=1e-4, rtol=0)
    assert n_plain.tolist() == n_shared.tolist()
    assert n_shared[0] == len(pairs[0].chosen_ids) and n_shared[12] == len(pairs[0].rejected_ids)


def test_shared_layout_hides_chosen_from_rejected():
    batch = collate_shared_prompt([TokenizedPair([1, 2], [3, 4], [5, 6])], pad_id=0)
    allowed = batch["attention"][0, 0]
    # rows/cols: prompt 0-1, chosen 2-3, rejected 4-5
    assert allowed[4, :4].tolist() == [True, True, False, False]
    assert allowed[5, :6].tolist() == [True, True, False, False, True, True]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 2, 3]
    assert batch["source"].tolist() == [1, 2, 1, 4]  # both first tokens read the last prompt token


def test_precomputed_and_live_reference_give_the_same_loss(make_model, tokenizer, task):
    policy = make_model(seed=2)
    trainer = DPOTrainer(_perturbed(policy), tokenizer, DPOConfig(), reference=policy)
    pairs = tokenize_pairs(tokenizer, task.comparisons(8), 128)
    batch = trainer.collate(pairs)
    live, _ = trainer.loss(batch)
    cached, _ = trainer.loss(batch, trainer.reference_logps(pairs))
    assert live.item() == pytest.approx(cached.item(), abs=1e-6)
    assert live.item() != pytest.approx(0.6931, abs=1e-3)  # the policy differs from the reference


def test_ipo_uses_length_averaged_logprobs(make_model, tokenizer, task):
    policy, reference = _perturbed(make_model()), make_model()
    pairs = tokenize_pairs(tokenizer, task.comparisons(6), 128)
    trainer = DPOTrainer(policy, tokenizer, DPOConfig(loss_type="ipo", beta=0.5), reference)
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        logps, counts = response_logprobs_sum(policy, batch, False)
        ref, _ = response_logprobs_sum(reference, batch, False)
        avg, ref_avg = logps / counts, ref / counts
        expected, _, _ = dpo_loss(*avg.chunk(2), *ref_avg.chunk(2), beta=0.5, loss_type="ipo")
        got, _ = trainer.loss(trainer.collate(pairs))
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


def test_dpo_lowers_loss_and_raises_the_margin(make_model, tokenizer, task, tmp_path):
    pairs = task.comparisons(64)
    config = DPOConfig(
        beta=0.1, steps=25, batch_size=16, learning_rate=3e-3, progress=False, log_every=5
    )
    trainer = DPOTrainer(make_model(), tokenizer, config)
    before = trainer.evaluate(pairs)
    rows = trainer.train(pairs, out=tmp_path / "run", eval_pairs=pairs)
    after = {k.removeprefix("eval/"): v for k, v in rows[-1].items() if k.startswith("eval/")}
    assert before["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start
    assert after["loss"] < before["loss"] - 0.1
    assert after["reward_margin"] > 0.5 and after["reward_accuracy"] > 0.8
    assert (tmp_path / "run" / "metrics.csv").exists()
    trainer.save(tmp_path / "dpo")
    loaded = DPOTrainer(load_causal_lm(tmp_path / "dpo"), tokenizer, config, trainer.reference)
    assert loaded.evaluate(pairs)["loss"] == pytest.approx(after["loss"], abs=1e-5)


def test_dpo_is_reproducible(make_model, tokenizer, task):
    pairs = task.comparisons(32)
    config = DPOConfig(steps=4, batch_size=8, progress=False, tensorboard=False)
    a, b = DPOTrainer(make_model(), tokenizer, config), DPOTrainer(make_model(), tokenizer, config)
    a.train(pairs)
    b.train(pairs)
    assert all(
        torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters(), strict=True)
    )


def test_config_validates():
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)


def test_loss_matches_trl_dpo_trainer_on_the_same_batch(make_model, tokenizer, task, tmp_path):
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    reference = make_model(seed=5)
    policy = _perturbed(reference, seed=6)
    pairs = task.comparisons(8)
    ours = DPOTrainer(
        copy.deepcopy(policy), tokenizer, DPOConfig(beta=0.2), copy.deepcopy(reference)
    )
    with torch.no_grad():
        our_loss = ours.loss(ours.collate(tokenize_pairs(tokenizer, pairs, 128)))[0].item()
    datasets.disable_progress_bars()
    data = datasets.Dataset.from_list(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    )
    args = trl.DPOConfig(
        output_dir=str(tmp_path), beta=0.2, bf16=False, gradient_checkpointing=False, use_cpu=True,
        report_to="none", per_device_train_batch_size=8, max_length=128,
    )  # fmt: skip
    theirs = trl.DPOTrainer(
        model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=args,
        train_dataset=data, processing_class=tokenizer,
    )  # fmt: skip
    batch = theirs.data_collator([theirs.train_dataset[i] for i in range(len(pairs))])
    with torch.no_grad():
        trl_loss = theirs.compute_loss(theirs.model, batch).item()
    assert our_loss == pytest.approx(trl_loss, abs=1e-5)


def test_a_given_reference_is_left_untouched(make_model, tokenizer, task):
    reference = make_model().train()
    DPOTrainer(
        make_model(seed=1),
        tokenizer,
        DPOConfig(steps=2, batch_size=4, progress=False, tensorboard=False),
        reference,
    ).train(task.comparisons(8))
    assert reference.training and all(p.requires_grad for p in reference.parameters())
