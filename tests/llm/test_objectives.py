"""Three objectives on the synthetic task: their oracles conflict where they should, their
annotators label by them, weights combine them, and the safety filter enforces one."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_rl.llm.objectives import (
    OBJECTIVES,
    check_weights,
    objective_comparisons,
    objective_score,
    objective_scores,
    objectives_task_config,
    safety_filter,
    weighted_scores,
)
from embodied_rl.llm.tasks import HARSH, TaskGenerator, oracle_score, oracle_terms, words

NEG = "Write a negative sentence about the song:"
DETAILED = " the song was stupid and awful and dull."  # three matching adjectives, one harsh
PLAIN = " the song was bad."


def test_the_objectives_score_by_their_rules_and_conflict():
    scores = {
        o: (objective_score(o, NEG, DETAILED), objective_score(o, NEG, PLAIN)) for o in OBJECTIVES
    }
    # helpful: sentiment 1 + topic 0.5 + detail 2 x 0.25 + emphasis 0.25 vs 1 + 0.5
    assert scores["helpful"] == pytest.approx((2.25, 1.5))
    assert scores["harmless"] == (-1.0, 0.0)  # one banned word
    assert scores["concise"] == pytest.approx((-0.5, 0.0))  # two adjectives past the first
    helpful_first = weighted_scores(
        {o: np.array(v) for o, v in scores.items()}, {"helpful": 1.0}
    )  # fmt: skip
    balanced = weighted_scores(
        {o: np.array(v) for o, v in scores.items()}, dict.fromkeys(OBJECTIVES, 1)
    )
    assert helpful_first.argmax() == 0 and balanced.argmax() == 1  # the weights pick differently
    with pytest.raises(ValueError, match="'funny'"):
        objective_score("funny", NEG, PLAIN)


def test_oracle_score_is_the_sum_of_its_terms():
    gen = TaskGenerator(seed=3)
    for prompt, response in gen.demonstrations(50):
        assert oracle_score(prompt, response) == pytest.approx(
            sum(oracle_terms(prompt, response).values())
        )


def test_only_the_objectives_demonstrator_uses_harsh_words():
    plain = [r for _, r in TaskGenerator(seed=0).demonstrations(500)]
    harsh = [r for _, r in TaskGenerator(objectives_task_config(), seed=0).demonstrations(500)]
    assert not any(t in HARSH for r in plain for t in words(r))
    assert sum(any(t in HARSH for t in words(r)) for r in harsh) > 50


def test_weights_are_checked_and_normalised():
    assert check_weights({"helpful": 2, "concise": 2}) == {
        "helpful": 0.5,
        "harmless": 0.0,
        "concise": 0.5,
    }
    scores = {"helpful": np.array([1.0, 3.0]), "concise": np.array([0.0, -1.0])}
    np.testing.assert_allclose(weighted_scores(scores, {"helpful": 1, "concise": 3}), [0.25, 0.0])
    with pytest.raises(ValueError, match="unknown objectives \\['funny'\\]"):
        check_weights({"funny": 1.0})
    with pytest.raises(ValueError, match="not all 0"):
        check_weights({"helpful": 0.0})
    with pytest.raises(ValueError, match="need scores for \\['harmless'\\]"):
        weighted_scores(scores, {"harmless": 1.0})


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_annotator_prefers_its_own_objective(objective):
    gen = TaskGenerator(objectives_task_config(), seed=1)
    pairs = objective_comparisons(gen, objective, 300, temperature=0.25)
    chosen = objective_scores([p.prompt for p in pairs], [p.chosen for p in pairs], [objective])
    rejected = objective_scores([p.prompt for p in pairs], [p.rejected for p in pairs], [objective])
    agree = (chosen[objective] > rejected[objective]).mean()
    assert 0.7 < agree < 1.0  # Bradley-Terry noise (sigmoid(0.25 / 0.25) = 0.73 at the finest step)
    assert all(p.oracle_margin == pytest.approx(c - r) for p, c, r in
               zip(pairs, chosen[objective], rejected[objective], strict=True))  # fmt: skip


def test_safety_filter_rewrites_or_rejects_banned_words():
    rewritten = safety_filter(DETAILED)
    assert rewritten == " the song was bad and awful and dull."
    assert objective_score("harmless", NEG, rewritten) == 0.0
    assert objective_score("helpful", NEG, rewritten) == pytest.approx(1.5 + 0.5)  # no emphasis
    assert safety_filter(DETAILED, "reject") is None
    assert safety_filter(PLAIN, "reject") == PLAIN and safety_filter(PLAIN) == PLAIN
    with pytest.raises(ValueError, match="'drop'"):
        safety_filter(PLAIN, "drop")


def test_constrained_reward_scores_what_the_filter_lets_through():
    from embodied_rl.llm.objectives import constrained_reward

    seen = []

    def helpful(prompts, responses):
        seen.append(list(responses))
        return np.array([objective_score("helpful", p, r) for p, r in zip(prompts, responses,
                                                                           strict=True)])  # fmt: skip

    rewrite = constrained_reward(helpful)
    scores = rewrite([NEG, NEG], [DETAILED, PLAIN])
    assert seen[-1] == [safety_filter(DETAILED), PLAIN]  # the reward never sees a banned word
    assert scores[0] == pytest.approx(objective_score("helpful", NEG, safety_filter(DETAILED)))
    assert scores[0] < objective_score("helpful", NEG, DETAILED)  # the emphasis bonus is gone
    reject = constrained_reward(helpful, "reject", refusal_score=-3.0)
    scores = reject([NEG, NEG], [DETAILED, PLAIN])
    assert seen[-1] == [PLAIN] and scores[0] == -3.0
    assert scores[1] == pytest.approx(objective_score("helpful", NEG, PLAIN))
    assert (reject([NEG], [DETAILED]) == -3.0).all() and seen[-1] == [PLAIN]  # nothing scored
    with pytest.raises(ValueError, match="'drop'"):
        constrained_reward(helpful, "drop")


def test_ratings_map_each_objective_onto_one_to_five():
    from embodied_rl.llm.objectives import objective_rating, rating_scorer

    assert [objective_rating(o, NEG, DETAILED) for o in OBJECTIVES] == [5, 3, 3]
    assert [objective_rating(o, NEG, PLAIN) for o in OBJECTIVES] == [4, 5, 5]  # 1.5 helpful
    assert (
        objective_rating("harmless", NEG, " the song was stupid and disgusting and hideous.") == 1
    )
    assert rating_scorer("concise")([NEG, NEG], [DETAILED, PLAIN]) == [3, 5]
    with pytest.raises(ValueError, match="'funny'"):
        rating_scorer("funny")


def test_weights_travel_in_the_prompt_and_set_the_reward():
    from embodied_rl.llm.objectives import conditioned_reward, parse_weights_prompt, weights_prompt

    prompt = weights_prompt(NEG, {"helpful": 2, "harmless": 1, "concise": 1})
    assert prompt.startswith("Weights: helpful 0.50 harmless 0.25 concise 0.25\n")
    assert parse_weights_prompt(prompt) == (
        {"helpful": 0.5, "harmless": 0.25, "concise": 0.25},
        NEG,
    )
    with pytest.raises(ValueError, match="does not start with"):
        parse_weights_prompt(NEG)
    reward = conditioned_reward(lambda p, r: objective_scores(p, r))
    prompts = [
        weights_prompt(NEG, {"helpful": 1}),
        weights_prompt(NEG, {"harmless": 1, "concise": 1}),
    ]
    got = reward(prompts, [DETAILED, DETAILED])
    np.testing.assert_allclose(got, [2.25, 0.5 * -1.0 + 0.5 * -0.5])  # each row its own weights


def test_weight_conditioned_examples_pick_each_weightings_best_sample():
    """One example per (weights, prompt): the prompt carries the weights, the response is
    the sample those weights score highest, so one prompt gets different responses."""
    from embodied_rl.llm.objectives import parse_weights_prompt, weight_conditioned_examples

    prompts = ["p0", "p1"]
    samples = [["long detailed", "middle", "short"], ["a", "b", "c"]]
    scores = {
        "helpful": np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]),
        "harmless": np.zeros((2, 3)),
        "concise": np.array([[-2.0, -1.0, 0.0], [0.0, -1.0, -3.0]]),
    }
    helpful, concise = {"helpful": 1.0}, {"concise": 2.0}
    examples = weight_conditioned_examples(prompts, samples, scores, [helpful, concise])
    assert [r for _, r in examples] == ["long detailed", "b", "short", "a"]
    weights, task = parse_weights_prompt(examples[2][0])
    assert task == "p0" and weights == {"helpful": 0.0, "harmless": 0.0, "concise": 1.0}
    with pytest.raises(ValueError, match="expected \\(prompts, samples\\)"):
        weight_conditioned_examples(prompts, samples, {"helpful": np.zeros((2, 2))}, [helpful])
    with pytest.raises(ValueError, match="sample lists"):
        weight_conditioned_examples(prompts, samples[:1], scores, [helpful])
