"""The B-Pref scripted teacher, judge-answer parsing, the AI-feedback labeler, agreement."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from gymnasium import spaces

from embodied_rl.datasets import Episode, OfflineDataset
from embodied_rl.preference.data import Segments, random_pairs, sample_segments
from embodied_rl.preference.describe import METAWORLD_LAYOUT, describe_segment, tabletop_layout
from embodied_rl.preference.labelers import (
    DEFAULT_CONSTITUTION,
    AIFeedbackLabeler,
    ScriptedTeacher,
    TeacherConfig,
    UnparseableJudgement,
    agreement,
    build_prompt,
    parse_judgement,
)


# ---------------------------------------------------------------------- scripted teacher
def _windows(*returns: float, length: int = 4) -> np.ndarray:
    """Reward windows whose sums are ``returns`` (spread evenly over the steps)."""
    return np.repeat(np.array(returns, dtype=np.float64)[:, None] / length, length, axis=1)


def test_rational_teacher_prefers_the_higher_return():
    teacher = ScriptedTeacher()
    labels = teacher.label_rewards(_windows(3, 1, 2), _windows(1, 3, 2))
    assert labels.tolist() == [1.0, 0.0, 0.5]  # exact ties are equal


def test_equal_and_skip_thresholds_are_relative_to_the_mean_return():
    ra, rb = _windows(10, 9, 1), _windows(9.5, 2, 2)
    cfg = TeacherConfig(equal_threshold=0.1, skip_threshold=0.5)
    labels = ScriptedTeacher(cfg).label_rewards(ra, rb, scale=5.5)
    # |10 - 9.5| < 0.55 -> equal; 9 vs 2 -> a; max(1, 2) < 2.75 -> skip
    assert labels[:2].tolist() == [0.5, 1.0] and math.isnan(labels[2])
    # the default scale, the mean |return| of the given segments, is 33.5 / 6 = 5.58 here
    assert np.array_equal(ScriptedTeacher(cfg).label_rewards(ra, rb), labels, equal_nan=True)


def test_myopic_teacher_weighs_recent_steps():
    ra = np.array([[1.0, 0.0, 0.0, 0.0]])  # early reward
    rb = np.array([[0.0, 0.0, 0.0, 0.9]])  # less reward, but late
    assert ScriptedTeacher().label_rewards(ra, rb).tolist() == [1.0]
    myopic = ScriptedTeacher(TeacherConfig(gamma=0.9))  # 0.9^3 = 0.729 < 0.9
    assert myopic.label_rewards(ra, rb).tolist() == [0.0]


def test_mistake_rate_flips_that_fraction():
    n = 20_000
    teacher = ScriptedTeacher(TeacherConfig(mistake_rate=0.2, seed=1))
    labels = teacher.label_rewards(_windows(*[2.0] * n), _windows(*[1.0] * n))
    assert np.mean(labels == 0.0) == pytest.approx(0.2, abs=0.015)


def test_boltzmann_teacher_matches_the_logistic_probability():
    n = 20_000
    teacher = ScriptedTeacher(TeacherConfig(beta=2.0, seed=0))
    labels = teacher.label_rewards(_windows(*[1.5] * n), _windows(*[1.0] * n))
    assert np.mean(labels == 1.0) == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.015)


def test_teacher_is_seeded():
    cfg = TeacherConfig(beta=1.0, mistake_rate=0.1, seed=5)
    ra, rb = _windows(*np.linspace(0, 2, 50)), _windows(*np.linspace(2, 0, 50))
    assert np.array_equal(
        ScriptedTeacher(cfg).label_rewards(ra, rb), ScriptedTeacher(cfg).label_rewards(ra, rb)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 0.0}, "beta=0.0"),
        ({"gamma": 1.5}, "gamma=1.5"),
        ({"mistake_rate": 0.7}, "mistake_rate=0.7"),
        ({"equal_threshold": -1}, "equal_threshold=-1"),
    ],
)
def test_teacher_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeacherConfig(**kwargs)


def test_teacher_labels_pairs_of_a_dataset(toy_data):
    segments = sample_segments(toy_data, 40, length=8, seed=0)
    first, second = random_pairs(40, 100, seed=0)
    prefs = ScriptedTeacher().label_pairs(segments, first, second)
    returns = segments.returns()
    assert np.array_equal(prefs.labels == 1.0, returns[first] > returns[second])


# ---------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("answer", "choice"),
    [
        ("Preference: A\nRationale: A reaches the goal.", "a"),
        ("preference: b\nrationale: closer", "b"),
        ("**Preference:** **Candidate B**\n**Rationale:** B is smoother.", "b"),
        ("I looked at both.\nFinal answer: equal\nReason: same progress", "equal"),
        ('Verdict - "A".', "a"),
        ("Preference: tie", "equal"),
        ("B", "b"),
        ("  a.  ", "a"),
    ],
)
def test_parse_judgement_variants(answer, choice):
    assert parse_judgement(answer).choice == choice


def test_parse_judgement_keeps_the_rationale():
    judgement = parse_judgement("Preference: A\nRationale: it grasps the block.\nIt is faster.")
    assert judgement.rationale == "it grasps the block.\nIt is faster."
    assert judgement.label == 1.0


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ("Both have merits and I cannot decide which is better overall.", "no preference line"),
        ("Preference: A\nPreference: B", "conflicting preferences"),
        ("Preference: the robot on the left", "no preference line"),
        ("", "no preference line"),
    ],
)
def test_parse_judgement_errors(answer, match):
    with pytest.raises(UnparseableJudgement, match=match):
        parse_judgement(answer)


def test_prompt_lists_principles_and_candidates():
    prompt = build_prompt("open the drawer", "went left", "went right", ["be fast", "be safe"])
    assert "1. be fast\n2. be safe" in prompt
    assert "Instruction given to the robot: open the drawer" in prompt
    assert prompt.index("went left") < prompt.index("went right")
    with pytest.raises(ValueError, match="at least one principle"):
        build_prompt("x", "a", "b", [])


# ---------------------------------------------------------------------- describing segments
def _metaworld_like_dataset(n_episodes: int = 6, length: int = 12) -> OfflineDataset:
    """39-D states in Meta-World's layout: the hand moves toward the goal at a speed that
    grows with the episode index, so later episodes make more progress."""
    goal = np.array([0.1, 0.8, 0.2])
    episodes = []
    for e in range(n_episodes):
        state = np.zeros((length + 1, 39), dtype=np.float32)
        start = np.array([-0.1, 0.5, 0.2])
        hand = start + (goal - start) * np.clip(np.arange(length + 1) * 0.02 * e, 0, 1)[:, None]
        state[:, 0:3], state[:, 4:7], state[:, 36:39] = hand, hand, goal
        success = np.linalg.norm(hand - goal, axis=1) < 0.05
        episodes.append(
            Episode(
                observations={"state": state},
                actions=np.full((length, 4), 0.1 * e, dtype=np.float32),
                rewards=-np.linalg.norm(hand[1:] - goal, axis=1),
                terminations=np.zeros(length, dtype=bool),
                truncations=np.eye(length, dtype=bool)[-1],
                infos={"success": success},
                metadata={"instruction": "reach the goal"},
            )
        )
    obs_space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (39,), np.float32)})
    meta = {"embodied_rl": {"collection": {"env_id": "metaworld/reach-v3"}}}
    return OfflineDataset.from_episodes(
        episodes, obs_space, spaces.Box(-1.0, 1.0, (4,), np.float32), metadata=meta
    )


def test_describe_segment_reports_distances_and_success():
    data = _metaworld_like_dataset()
    segments = Segments(data, data.episode_starts[[0, 5]], length=12)
    still, fast = describe_segment(segments, 0), describe_segment(segments, 1)
    start_distance = np.linalg.norm([0.2, 0.3, 0.0]) * 100  # 36.1 cm
    assert (
        f"Hand-to-goal distance: {start_distance:.1f} cm at the start, {start_distance:.1f}"
        in still
    )
    assert "not accomplished" in still
    assert re.search(r"accomplished at step \d+ of 12", fast)
    assert "reward" not in fast.lower()


def test_tabletop_layout_matches_the_documented_state():
    layout = tabletop_layout(n_objects=4)
    assert layout.goal == slice(81, 84)  # 7 + 4 * 15 + 6 + 2 * 4
    assert layout.object_slots[2] == slice(37, 40)
    state = np.zeros((2, 90))
    state[:, 73 + 2] = 1.0  # manipulated object: slot 2
    state[:, 37:40] = [1.0, 2.0, 3.0]
    assert layout.object_position(state).tolist() == [[1.0, 2.0, 3.0]] * 2
    assert METAWORLD_LAYOUT.goal == slice(36, 39)


# ---------------------------------------------------------------------- AI feedback
def _distance_judge(prompt: str) -> str:
    """A deterministic judge: prefers the candidate that ends closer to the goal."""
    ends = [float(x) for x in re.findall(r"cm at the start, ([\d.]+) cm", prompt)]
    a_end, b_end = ends[0], ends[2]  # hand-to-goal lines of A and B
    if abs(a_end - b_end) < 0.05:
        return "Preference: equal\nRationale: both end equally close."
    better = "A" if a_end < b_end else "B"
    return f"Preference: {better}\nRationale: {better} ends closer to the goal."


def test_ai_feedback_agrees_with_the_teacher_on_progress():
    data = _metaworld_like_dataset(n_episodes=6)
    segments = Segments(data, data.episode_starts[:-1], length=12)
    first, second = random_pairs(len(segments), 30, seed=0)
    labeler = AIFeedbackLabeler(_distance_judge)
    ai, judgements = labeler.label_pairs(segments, first, second)
    teacher = ScriptedTeacher(TeacherConfig(equal_threshold=0.01)).label_pairs(
        segments, first, second
    )
    stats = agreement(ai.labels, teacher.labels)
    assert stats["agreement"] == 1.0 and stats["coverage_x"] == 1.0
    assert all("closer" in j.rationale or "equally" in j.rationale for j in judgements)


def test_unparseable_answers_become_skips_or_raise():
    data = _metaworld_like_dataset(n_episodes=3)
    segments = Segments(data, data.episode_starts[:-1], length=12)
    first, second = np.array([0, 1]), np.array([1, 2])
    rambling = AIFeedbackLabeler(lambda prompt: "Hard to say; both robots move.")
    prefs, judgements = rambling.label_pairs(segments, first, second)
    assert np.isnan(prefs.labels).all() and judgements[0].choice == "skip"
    assert "no preference line" in judgements[0].rationale
    strict = AIFeedbackLabeler(lambda prompt: "no idea", on_unparseable="raise")
    with pytest.raises(UnparseableJudgement, match="'no idea'"):
        strict.label_pairs(segments, first, second)


def test_both_orders_turns_position_bias_into_equal():
    always_a = AIFeedbackLabeler(lambda p: "Preference: A", both_orders=True)
    assert always_a.judge_pair("task", "x", "y").choice == "equal"
    consistent = AIFeedbackLabeler(
        lambda p: "Preference: A" if p.index("good") < p.index("bad") else "Preference: B",
        both_orders=True,
    )
    assert consistent.judge_pair("task", "good", "bad").choice == "a"
    assert consistent.judge_pair("task", "bad", "good").choice == "b"


def test_labeler_argument_errors():
    with pytest.raises(TypeError, match="callable"):
        AIFeedbackLabeler("not a judge")
    with pytest.raises(ValueError, match="on_unparseable='ignore'"):
        AIFeedbackLabeler(lambda p: "", on_unparseable="ignore")
    with pytest.raises(TypeError, match="returned int"):
        AIFeedbackLabeler(lambda p: 3).judge_pair("t", "a", "b")
    assert len(DEFAULT_CONSTITUTION) >= 2


def test_agreement_counts_and_kappa():
    x = np.array([1.0, 0.0, 1.0, 0.5, np.nan, 1.0])
    y = np.array([1.0, 1.0, 1.0, 0.5, 0.0, np.nan])
    stats = agreement(x, y)
    assert stats["both_labelled"] == 4 and stats["agreement"] == 0.75
    assert stats["strict_agreement"] == pytest.approx(2 / 3)
    # kappa: observed 0.75; chance = P(x=1)P(y=1) + P(x=0)P(y=0) + P(x=.5)P(y=.5) over the 4
    chance = 0.5 * 0.75 + 0.25 * 0.0 + 0.25 * 0.25
    assert stats["kappa"] == pytest.approx((0.75 - chance) / (1 - chance))
    assert stats["coverage_x"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="differ in shape"):
        agreement(np.zeros(2), np.zeros(3))
