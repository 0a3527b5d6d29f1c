"""SayCan's learned affordance and Inner Monologue's learned success detector: skill features,
executions labelled by the expert, a success classifier that learns, its ROC AUC, and the
planner hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_rl.envs import make, make_expert
from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.long_horizon import LongHorizonTabletop, skill_specs
from embodied_rl.llm.affordance import (
    AffordanceConfig,
    AffordanceExamples,
    affordance_examples,
    classification_metrics,
    detector_examples,
    detector_features,
    scene_features,
    skill_features,
    train_affordance,
)
from embodied_rl.llm.planner import DONE, execute_skill, run_plan, simulator_success


@pytest.fixture(scope="module")
def env():
    env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split="seen")
    yield env
    env.close()


def test_skill_features_tell_every_candidate_apart(env):
    env.reset(seed=3)
    specs = skill_specs(env.layout)
    feats = np.stack([skill_features(s, 4) for s in specs.values()])
    assert len(np.unique(feats, axis=0)) == len(specs) == 56
    assert set(np.unique(feats)) == {0.0, 1.0} and (feats.sum(1) == 5).all()  # five one-hots
    families = feats[:, : len(tasks.FAMILIES)].argmax(1)
    assert [tasks.FAMILIES[i] for i in families] == [s.family for s in specs.values()]


def test_examples_label_executions_from_both_stages(env):
    expert = make_expert(env)
    examples = affordance_examples(env, expert, seeds=[0, 1], skills_per_state=3)
    assert examples.scene.shape[1] == scene_features(env).shape[0]
    assert len(examples) <= 12 and set(np.unique(examples.stage)) <= {0, 1}
    assert set(np.unique(examples.success)) <= {0.0, 1.0}
    # the first row of an episode is its true first step from the reset scene, re-executed
    env.reset(seed=0)
    first = skill_specs(env.layout)[env.canonical_steps[0]]
    np.testing.assert_array_equal(examples.skill[0], skill_features(first, 4))
    np.testing.assert_allclose(examples.scene[0], scene_features(env))
    assert examples.success[0] == float(execute_skill(env, expert, first)[0])
    with pytest.raises(ValueError, match="skills_per_state"):
        affordance_examples(env, expert, seeds=[0], skills_per_state=0)


def test_classifier_learns_which_skills_fail_where():
    """Synthetic rule: a skill fails when its object sits right of x = 0 and it is a pick.
    The classifier must separate held-out examples well above chance."""
    rng = np.random.default_rng(0)
    n, n_skill = 3000, 8
    scene = rng.normal(size=(n, 6)).astype(np.float32)
    skill = np.eye(n_skill, dtype=np.float32)[rng.integers(n_skill, size=n)]
    fails = (skill[:, 0] == 1) & (scene[:, 0] > 0)
    examples = AffordanceExamples(scene, skill, (~fails).astype(np.float32),
                                  np.arange(n), np.zeros(n, int))  # fmt: skip
    train, test = examples.subset(np.arange(n) < 2500), examples.subset(np.arange(n) >= 2500)
    model = train_affordance(train, AffordanceConfig(hidden=(64, 64), steps=600))
    metrics = classification_metrics(model.probabilities(test.scene, test.skill), test.success)
    assert metrics["auc"] > 0.95 and metrics["accuracy"] > 0.95
    assert metrics["base_rate"] < 0.95  # the rule makes failures (~6%)


def test_classification_metrics_follow_their_definitions():
    probs, labels = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1.0, 0.0, 1.0, 0.0])
    m = classification_metrics(probs, labels)
    assert m["auc"] == pytest.approx(0.75)  # 3 of 4 (success, failure) pairs ordered
    assert m["accuracy"] == pytest.approx(0.5) and m["base_rate"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx(np.mean([0.01, 0.64, 0.49, 0.01]))
    assert classification_metrics(np.array([0.5, 0.5]), np.array([1.0, 0.0]))["auc"] == 0.5


def test_for_env_scores_the_scene_candidates_and_done(env):
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    skill_dim = len(skill_features(next(iter(skill_specs(env.layout).values())), 4))
    examples = AffordanceExamples(
        rng.normal(size=(8, scene_features(env).shape[0])).astype(np.float32),
        np.eye(8, skill_dim, dtype=np.float32), np.ones(8, np.float32),
        np.arange(8), np.zeros(8, int),
    )  # fmt: skip
    model = train_affordance(examples, AffordanceConfig(hidden=(8,), steps=5))
    affordance = model.for_env(env)
    skills = [*list(skill_specs(env.layout))[:3], DONE]
    values = affordance(skills)
    assert values.shape == (4,) and values[-1] == 1.0
    assert ((values > 0) & (values <= 1)).all()
    with pytest.raises(ValueError, match="not among the scene's candidates"):
        affordance(["fly to the moon"])
    with pytest.raises(ValueError, match="steps=0"):
        AffordanceConfig(steps=0)
    assert torch.is_tensor(values)


def test_detector_examples_label_every_step_by_the_success_test(env):
    """Each execution contributes one row per step, labelled by the skill's own test, and
    stops ``after`` steps past its first success; the first execution of a seed is its true
    first step from the reset scene."""
    expert = make_expert(env)
    examples = detector_examples(env, expert, seeds=[4], skills_per_state=2, after=3)
    env.reset(seed=4)
    spec = skill_specs(env.layout)[env.canonical_steps[0]]
    start = env.unwrapped.scene_state()
    expert.follow(spec)
    labels, feats = [], []
    for _ in range(tasks.HORIZONS[spec.family]):
        env.step(expert.act())
        labels.append(simulator_success(env, spec, start))
        feats.append(detector_features(env, spec, start))
        if sum(labels) and len(labels) - labels.index(True) > 3:
            break
    expert.follow(None)
    assert True in labels  # the expert does this first step
    rows = len(labels)
    np.testing.assert_array_equal(examples.success[:rows], np.array(labels, np.float32))
    np.testing.assert_allclose(examples.scene[:rows], np.stack(feats))
    assert (examples.skill[:rows] == skill_features(spec, 4)).all()
    assert len(examples) > rows and set(np.unique(examples.stage)) == {0, 1}
    with pytest.raises(ValueError, match="after=-1"):
        detector_examples(env, expert, seeds=[0], after=-1)


def test_a_learned_detector_generalises_and_run_plan_obeys_it(env):
    """A detector trained on 16 scenes' executions ranks held-out steps well above chance;
    run_plan ends each skill when its detector says so (one that always says done ends every
    skill after one step and the task fails); the simulator's test is the default."""
    expert = make_expert(env)
    train = detector_examples(env, expert, seeds=range(16), skills_per_state=2)
    held_out = detector_examples(env, expert, seeds=range(100, 106), skills_per_state=2)
    model = train_affordance(train, AffordanceConfig(hidden=(64, 64), steps=500))
    auc = classification_metrics(model.probabilities(held_out.scene, held_out.skill),
                                 held_out.success)["auc"]  # fmt: skip
    assert auc > 0.7  # 0.78 measured; 0.5 is chance

    def oracle(task, done, options):
        return [*env.canonical_steps, DONE][min(len(done), 2)]

    env.reset(seed=7)
    default = run_plan(env, oracle, expert)
    env.reset(seed=7)
    assert run_plan(env, oracle, expert, detector=simulator_success) == default
    assert default.success
    env.reset(seed=7)
    hasty = run_plan(env, oracle, expert, detector=lambda env, spec, start: True)
    assert hasty.done == env.canonical_steps and not hasty.success
    env.reset(seed=7)
    learned = run_plan(env, oracle, expert, detector=model.detector())
    assert learned.done or learned.failed
    affordance = train_affordance(
        affordance_examples(env, expert, seeds=[0], skills_per_state=2),
        AffordanceConfig(hidden=(8,), steps=2),
    )
    env.reset(seed=7)
    with pytest.raises(ValueError, match="detector_examples"):
        run_plan(env, oracle, expert, detector=affordance.detector())
    with pytest.raises(ValueError, match="threshold=1.0"):
        model.detector(threshold=1.0)


def test_confirm_asks_the_detector_to_agree_on_consecutive_steps(env):
    """With ``confirm=k`` a skill ends once the detector says done on k steps in a row: a
    detector that flickers never confirms twice; one that holds from its 3rd call on ends the
    skill at the 4th call with k=2."""
    expert = make_expert(env)
    calls: list[int] = []

    def flicker(env, spec, start) -> bool:
        calls.append(1)
        return len(calls) % 2 == 0

    def holds_from_third(env, spec, start) -> bool:
        calls.append(1)
        return len(calls) >= 3

    def run(detector, confirm):
        env.reset(seed=7)
        calls.clear()
        spec = skill_specs(env.layout)[env.canonical_steps[0]]
        achieved, _, _ = execute_skill(env, expert, spec, detector, confirm)
        return achieved, len(calls), tasks.HORIZONS[spec.family]

    assert run(flicker, 1)[:2] == (True, 2)
    achieved, n_calls, horizon = run(flicker, 2)
    assert not achieved and n_calls == horizon
    assert run(holds_from_third, 2)[:2] == (True, 4)
    env.reset(seed=7)
    with pytest.raises(ValueError, match="confirm=0"):
        run_plan(env, lambda task, done, options: options[0], expert, confirm=0)
