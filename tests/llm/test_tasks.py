import math

import pytest

from embodied_rl.llm.tasks import (
    TaskConfig,
    TaskGenerator,
    oracle_score,
    parse_prompt,
    preference_probability,
    response_words,
)

PROMPT = "Write a positive sentence about the hotel:"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (" the hotel was great.", 1.5),  # right sentiment and topic: the maximum
        (" the hotel was awful.", -0.5),  # sentiment -1, topic +0.5
        (" the hotel was great and awful.", 0.5),  # sentiment 0
        (" the pizza was great.", 1.0 - 0.5 - 0.25),  # wrong topic, one other topic
        (" the hotel was here.", -1.0 + 0.5),  # no adjective: sentiment -1
        (" the hotel was great", 1.5 - 0.5),  # no final period
        (" the hotel was great" + " and great" * 5 + ".", 1.5 - 0.15 * 2),  # 14 words
    ],
)
def test_oracle_score_by_hand(response, expected):
    assert oracle_score(PROMPT, response) == pytest.approx(expected)


def test_oracle_never_rewards_length():
    short = " the hotel was great."
    longer = " i think the hotel is really great and lovely and wonderful."  # 11 words
    assert oracle_score(PROMPT, longer) == oracle_score(PROMPT, short)


def test_parse_prompt_rejects_other_text():
    assert parse_prompt(PROMPT).topic == "hotel"
    with pytest.raises(ValueError, match="not a task prompt"):
        parse_prompt("Write a poem about the sea:")


def test_annotator_prefers_longer_at_equal_quality():
    short, longer = " the hotel was great.", " i think the hotel is great and lovely."
    assert oracle_score(PROMPT, short) == oracle_score(PROMPT, longer)
    p = preference_probability(PROMPT, longer, short)
    n_more = response_words([], [longer])[0] - response_words([], [short])[0]
    assert n_more == 4
    assert p == pytest.approx(1 / (1 + math.exp(-0.35 * n_more)))
    unbiased = TaskConfig(length_bias=0.0)
    assert preference_probability(PROMPT, longer, short, unbiased) == pytest.approx(0.5)


def test_generator_is_seeded_and_good_responses_are_perfect():
    a, b = TaskGenerator(seed=3), TaskGenerator(seed=3)
    assert a.demonstrations(5) == b.demonstrations(5)
    assert a.comparisons(5) == b.comparisons(5)
    request = TaskGenerator(seed=4).request()
    for _ in range(20):
        assert oracle_score(request.prompt, a.good_response(request)) == pytest.approx(1.5)


def test_comparisons_mostly_follow_the_oracle():
    pairs = TaskGenerator(seed=5).comparisons(300)
    agree = [p.oracle_margin > 0 for p in pairs if p.oracle_margin != 0]
    assert sum(agree) / len(agree) > 0.8
    assert all(p.p_chosen >= 0.0 for p in pairs)
    assert {p.margin for p in pairs} <= {0.0, 0.5, 1.0}


def test_task_config_validates():
    with pytest.raises(ValueError, match="p_right_topic"):
        TaskConfig(p_right_topic=1.5)


def test_annotate_labels_any_pair_at_the_annotators_rate():
    """annotate() is the comparisons' labeler for any two responses (online RLHF): the
    preferred response comes first, at preference_probability's rate, reproducibly."""
    from embodied_rl.llm.tasks import TaskGenerator, preference_probability

    prompt = "Write a positive sentence about the garden:"
    good, worse = "the garden is lovely.", "the garden is awful."
    p_good = preference_probability(prompt, good, worse)
    gen = TaskGenerator(seed=3)
    labels = [gen.annotate(prompt, good, worse) for _ in range(2000)]
    first = sum(c.chosen == good for c in labels) / len(labels)
    assert abs(first - p_good) < 0.04 and 0.5 < p_good < 1.0
    assert all({c.chosen, c.rejected} == {good, worse} for c in labels)
    assert all((c.oracle_margin > 0) == (c.chosen == good) for c in labels)
    again = TaskGenerator(seed=3)
    assert [again.annotate(prompt, good, worse).chosen for _ in range(50)] == [
        c.chosen for c in labels[:50]
    ]
