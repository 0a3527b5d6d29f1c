"""The evaluation suite's pieces: judges, win rates with position swapping, distinct-n,
perplexity and the reward-hacking flag."""

from __future__ import annotations

import json
import math

import pytest
import torch

from embodied_rl.llm.evaluation import (
    WinRate,
    critique_judge,
    critique_score,
    distinct_n,
    evaluate_models,
    lm_judge,
    oracle_judge,
    perplexity,
    reward_hacking,
    win_rate,
    write_eval_report,
)
from embodied_rl.llm.generation import SamplingConfig
from embodied_rl.llm.models import sequence_logprobs
from embodied_rl.llm.sft import SFTConfig, SFTTrainer
from embodied_rl.llm.tasks import oracle_scores
from embodied_rl.utils.tokenizer import encode, pad

PROMPT = "Write a positive sentence about the garden:"
GOOD = "the garden is lovely."
BAD = "the garden is awful."
OFF_TOPIC = "the sea is lovely."


def test_oracle_and_critique_judges_prefer_the_better_response():
    for judge in (oracle_judge(), critique_judge()):
        assert judge(PROMPT, GOOD, BAD) == "a" and judge(PROMPT, BAD, GOOD) == "b"
        assert judge(PROMPT, GOOD, GOOD) == "equal"
    # the critic counts problems: wrong sentiment (1) vs wrong topic (1) tie; the oracle
    # weighs them (sentiment -2 vs topic term) and decides
    assert critique_judge()(PROMPT, BAD, OFF_TOPIC) == "equal"
    assert oracle_judge()(PROMPT, BAD, OFF_TOPIC) != "equal"
    assert oracle_judge(margin=10.0)(PROMPT, GOOD, BAD) == "equal"


def test_critique_score_is_minus_the_problems_and_orders_as_the_judge():
    """Direct RLAIF's reward: 0 for a response the critic finds fine, -1 per named problem."""
    wrong_both = "the sea is awful."  # wrong sentiment and wrong topic
    scores = critique_score()([PROMPT] * 4, [GOOD, BAD, OFF_TOPIC, wrong_both])
    assert scores.tolist() == [0.0, -1.0, -1.0, -2.0]
    judge = critique_judge()
    for a, b in [(GOOD, BAD), (BAD, wrong_both), (BAD, OFF_TOPIC)]:
        sa, sb = critique_score()([PROMPT] * 2, [a, b])
        assert judge(PROMPT, a, b) == ("equal" if sa == sb else "a" if sa > sb else "b")


def test_win_rate_counts_ties_as_half_and_has_a_wilson_interval():
    prompts = [PROMPT] * 4
    result = win_rate(prompts, [GOOD, GOOD, BAD, GOOD], [BAD, GOOD, GOOD, BAD], oracle_judge())
    assert (result.wins, result.ties, result.losses, result.inconsistent) == (2, 1, 1, 0)
    assert result.rate == pytest.approx(2.5 / 4)
    low, high = result.interval
    assert 0 < low < result.rate < high < 1
    assert "62% [" in str(result)


def test_swapping_removes_a_judges_position_bias():
    """A judge that always answers "a" gives the model 100% without swapping and 50% (all
    ties, every comparison inconsistent) with it."""
    always_first = lambda prompt, a, b: "a"  # noqa: E731
    prompts = [PROMPT] * 6
    unswapped = win_rate(prompts, [BAD] * 6, [GOOD] * 6, always_first, swap=False)
    swapped = win_rate(prompts, [BAD] * 6, [GOOD] * 6, always_first)
    assert unswapped.rate == 1.0
    assert swapped == WinRate(wins=0, losses=0, ties=6, inconsistent=6) and swapped.rate == 0.5
    assert str(swapped).endswith("(0 W / 6 T / 0 L of 6, 6 changed with the order)")
    with pytest.raises(ValueError, match="'maybe'"):
        win_rate([PROMPT], [GOOD], [BAD], lambda p, a, b: "maybe")
    with pytest.raises(ValueError, match="2 prompts, 1 responses"):
        win_rate([PROMPT] * 2, [GOOD], [BAD], oracle_judge())


def test_lm_judge_parses_the_models_verdict():
    seen = []

    def judge(prompt: str) -> str:
        seen.append(prompt)
        return "Preference: B\nRationale: it is positive."

    pair_judge = lm_judge(judge, ["Prefer the positive response."])
    assert pair_judge(PROMPT, BAD, GOOD) == "b"
    assert BAD in seen[0] and GOOD in seen[0] and "Prefer the positive response." in seen[0]


def test_distinct_n_counts_unique_ngrams():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n(["a"], 2) == 0.0  # no bigram at all
    with pytest.raises(ValueError, match="n=0"):
        distinct_n(["a"], 0)


def test_perplexity_is_the_exp_mean_token_nll_and_drops_when_the_text_is_learned(
    make_model, tokenizer
):
    model = make_model(0)
    texts = [PROMPT + " " + GOOD, "Write a negative sentence about the sea: the sea is grim."]
    rows = [ids + [tokenizer.eos_token_id] for ids in encode(tokenizer, texts)]
    ids, mask = pad(rows, tokenizer.pad_token_id), pad([[1] * len(r) for r in rows], 0)
    with torch.no_grad():
        nll = -sequence_logprobs(model, ids, mask, mask).sum().item()
    want = math.exp(nll / sum(len(r) - 1 for r in rows))
    assert perplexity(model, tokenizer, texts) == pytest.approx(want, rel=1e-5)
    before = perplexity(model, tokenizer, texts[:1])
    SFTTrainer(model, tokenizer, SFTConfig(steps=30, batch_size=2, learning_rate=3e-3,
                                           tensorboard=False, progress=False)).train(
        [(PROMPT, " " + GOOD)] * 4
    )  # fmt: skip
    assert perplexity(model, tokenizer, texts[:1]) < 0.5 * before
    with pytest.raises(ValueError, match="no texts"):
        perplexity(model, tokenizer, [])


def test_reward_hacking_flag():
    assert reward_hacking(1.0, 2.0, 0.5, 0.2)  # reward up, oracle down
    assert not reward_hacking(1.0, 2.0, 0.5, 0.6)  # both up
    assert not reward_hacking(1.0, 2.0, 0.5, 0.45, tolerance=0.1)  # within tolerance
    assert not reward_hacking(2.0, 1.0, 0.5, 0.2)  # reward did not rise


def test_evaluate_models_judges_a_trained_model_above_an_untrained_one(
    make_model, tokenizer, task, tmp_path
):
    """An SFT model against its random initialisation (the baseline and the reference): the
    oracle judge prefers the SFT model's responses, its perplexity of held-out task text is
    lower (a negative alignment tax), and the report round-trips to JSON."""
    base, sft = make_model(0), make_model(0)
    config = SFTConfig(steps=150, batch_size=16, learning_rate=3e-3, tensorboard=False,
                       progress=False)  # fmt: skip
    SFTTrainer(sft, tokenizer, config).train(task.demonstrations(200))
    prompts = task.prompts(32)
    held_out = [p + r for p, r in task.demonstrations(16)]
    rows = evaluate_models(
        {"init": base, "sft": sft}, base, tokenizer, prompts, baseline="init",
        judges={"oracle": oracle_judge(), "critic": critique_judge()}, held_out_texts=held_out,
        scorers={"oracle": oracle_scores}, hacking=("oracle", "oracle"),
        sampling=SamplingConfig(max_new_tokens=12), best_of=[("sft", 4)], best_of_scorer="oracle",
    )  # fmt: skip
    init, trained, best = rows
    assert best["model"] == "best-of-4 sft" and best["oracle"] > trained["oracle"] + 0.2
    assert best["kl"] == pytest.approx(math.log(4) - 3 / 4)  # best-of-n's analytic KL
    assert best["perplexity"] == pytest.approx(trained["perplexity"])  # the same model's text
    assert init["win_rate/oracle"] is None and init["kl"] == pytest.approx(0.0, abs=1e-5)
    assert trained["win_rate/oracle"].rate > 0.65
    assert trained["oracle"] > init["oracle"] + 0.4
    assert trained["alignment_tax"] < 0 and init["alignment_tax"] == pytest.approx(0.0)
    assert trained["kl"] > 0.5 and not trained["reward_hacking"]
    paths = write_eval_report(rows, tmp_path, "init vs sft", notes=["32 prompts."])
    assert [p.name for p in paths] == ["eval.md", "eval.html", "eval.json"]
    saved = json.loads(paths[2].read_text())
    assert saved[1]["win_rate/oracle"]["wins"] == trained["win_rate/oracle"].wins
    md = paths[0].read_text()
    assert "win rate vs baseline, oracle" in md and "| sft |" in md and "baseline" in md
    with pytest.raises(ValueError, match="baseline='dpo'"):
        evaluate_models({"init": base}, base, tokenizer, prompts, "dpo", {})
    with pytest.raises(ValueError, match="best_of needs the scorer 'reward'"):
        evaluate_models({"init": base}, base, tokenizer, prompts, "init", {}, best_of=[("init", 2)])
