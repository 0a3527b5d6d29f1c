import pytest
import torch

from embodied_rl.llm.dpo import DPOConfig
from embodied_rl.llm.judge import LMJudge, format_verdict, labeler_prompt
from embodied_rl.llm.pairs import TextPair
from embodied_rl.llm.rlaif import RLAIFConfig, ai_feedback_labeler, label_pairs, rlaif
from embodied_rl.llm.tasks import JUDGE_CONSTITUTION, oracle_score, oracle_scores
from embodied_rl.preference.labelers import parse_judgement


def test_judge_answers_parse_and_follow_the_likelier_verdict(make_model, tokenizer):
    judge = LMJudge(make_model(seed=1), tokenizer, rationale_tokens=4)
    render = labeler_prompt(JUDGE_CONSTITUTION)
    prompts = [
        render(
            "Write a positive sentence about the hotel:", " the hotel was great.", " it was bad."
        )
    ] * 2
    logps = judge.option_logprobs(prompts)
    assert logps.shape == (2, 2) and (logps < 0).all()
    answers = judge.judge(prompts)
    expected = "ab"[int(logps[0].argmax())]
    assert all(parse_judgement(a).choice == expected for a in answers)
    assert (
        parse_judgement(
            LMJudge(make_model(seed=1), tokenizer, rationale_tokens=0)(prompts[0])
        ).choice
        == expected
    )


def test_ai_feedback_labeler_decides_with_the_lm_judge(make_model, tokenizer):
    labeler = ai_feedback_labeler(make_model(), tokenizer, JUDGE_CONSTITUTION, rationale_tokens=3)
    prompt, good, bad = (
        "Write a positive sentence about the hotel:",
        " the hotel was great.",
        " bad.",
    )
    verdict = labeler.judge_pair(prompt, good, bad)
    # both orders asked: a position-biased untrained judge gives "equal", a consistent one a/b
    assert verdict.choice in ("a", "b", "equal")
    one_order = ai_feedback_labeler(make_model(), tokenizer, JUDGE_CONSTITUTION, both_orders=False)
    assert one_order.judge_pair(prompt, good, bad).choice in ("a", "b")  # always parseable


class OracleLabeler:
    """A labeler with the oracle's verdicts (the scripted stand-in for a judge)."""

    def judge_pair(self, instruction, a, b):
        qa, qb = oracle_score(instruction, a), oracle_score(instruction, b)
        return type("Verdict", (), {"choice": "a" if qa > qb else "b" if qb > qa else "equal"})()


def test_label_pairs_orders_chosen_first_and_drops_ties():
    prompt = "Write a positive sentence about the hotel:"
    pairs, choices = label_pairs(
        OracleLabeler(), [prompt] * 3,
        [" the hotel was bad.", " the hotel was great.", " the hotel was fun."],
        [" the hotel was great.", " the hotel was bad.", " the hotel was lovely."],
    )  # fmt: skip
    assert choices == ["b", "a", "equal"]
    assert pairs == [TextPair(prompt, " the hotel was great.", " the hotel was bad.")] * 2


def test_rlaif_rounds_sample_label_and_train(make_model, tokenizer, task, tmp_path):
    config = RLAIFConfig(
        rounds=2, prompts_per_round=24,
        dpo=DPOConfig(steps=3, batch_size=8, progress=False, tensorboard=False, log_every=3),
    )  # fmt: skip
    policy = make_model()
    start = [p.clone() for p in policy.parameters()]
    rows = rlaif(
        policy, tokenizer, OracleLabeler(), task.prompts(50), config,
        score_fn=oracle_scores, out=tmp_path / "rlaif",
    )  # fmt: skip
    assert [r["round"] for r in rows] == [1.0, 2.0]
    assert all(r["label_agreement"] == 1.0 for r in rows if r["pairs"] > 0)
    assert any(not torch.equal(a, b) for a, b in zip(start, policy.parameters(), strict=True))
    assert (tmp_path / "rlaif" / "metrics.csv").exists()


def test_verdict_format_is_the_labelers():
    assert parse_judgement(format_verdict("B", " it is positive.")).choice == "b"
    with pytest.raises(ValueError, match="rounds"):
        RLAIFConfig(rounds=0)
