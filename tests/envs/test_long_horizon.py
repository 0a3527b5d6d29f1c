"""Long-horizon tabletop tasks: two skills in order in one scene, composition splits, the
rule-based planner's decomposition, and the chained scripted experts."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_rl.envs import make, make_expert
from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.long_horizon import (
    FIRST_FAMILIES,
    LongHorizonTabletop,
    composition_is_unseen,
    compositions,
    decompose,
    skill_candidates,
)


def long_env(**kwargs) -> LongHorizonTabletop:
    split = kwargs.pop("split", "all")
    return LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4, **kwargs), split=split)


def test_composition_splits_partition_the_pairs_and_keep_every_skill_seen():
    seen, unseen = set(compositions("seen")), set(compositions("unseen"))
    assert seen and unseen and not seen & unseen
    assert seen | unseen == set(compositions("all"))
    assert {a for a, _ in seen} == set(FIRST_FAMILIES)
    assert {b for _, b in seen} == set(tasks.FAMILIES)
    with pytest.raises(ValueError, match="split='both'"):
        compositions("both")


def test_the_rule_based_planner_splits_long_instructions():
    assert decompose("push the red block to the left, then touch the blue cylinder") == [
        "push the red block to the left",
        "touch the blue cylinder",
    ]
    assert decompose("first reach the red block and then reach the green block") == [
        "reach the red block",
        "reach the green block",
    ]
    with pytest.raises(ValueError, match="names no step"):
        decompose("  ")


def test_the_chained_experts_do_both_steps_in_order():
    """Each episode: two tasks on different objects; the instruction is both; success (and
    the sparse reward) only once the second step is done, after the first; the state's task
    encoding and the simulator's task switch at the first step's success."""
    env = long_env()
    expert = make_expert(env)
    successes = 0
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        one, two = env.specs
        assert {one.object_slot, one.target_slot} & {two.object_slot, two.target_slot} <= {None}
        assert obs["instruction"] == f"{one.instruction}, then {two.instruction}"
        assert decompose(obs["instruction"]) == env.step_instructions
        candidates = skill_candidates(env.layout)  # every task on 4 objects, first phrasing
        assert len(set(candidates)) == len(candidates) == 56
        assert set(env.canonical_steps) <= set(candidates)
        assert info["steps_completed"] == 0 and info["step_instruction"] == one.instruction
        first_task, switched_at = env.unwrapped._static_state[1].copy(), None
        for t in range(env.unwrapped._horizon):
            obs, reward, terminated, truncated, info = env.step(expert.act(obs))
            assert obs["instruction"] == env.instruction
            if info["step_success"] and switched_at is None:
                switched_at = t
                assert env.unwrapped.spec_ is two and info["step_instruction"] == two.instruction
                assert not np.array_equal(env.unwrapped._static_state[1], first_task)
            assert reward == float(info["success"])  # sparse: the whole task only
            if terminated or truncated:
                break
        if info["success"]:
            successes += 1
            assert terminated and info["steps_completed"] == 2 and switched_at < t
        else:
            assert truncated and info["steps_completed"] < 2
    assert successes >= 5  # ~90% over 60 seeds of all compositions


def test_splits_dense_reward_and_bad_settings():
    env = long_env(split="unseen", reward_type="dense")
    for seed in range(3):
        _, info = env.reset(seed=seed)
        assert info["unseen"] and composition_is_unseen(*env.composition)
        _, reward, *_ = env.step(np.zeros(4, np.float32))
        assert 0.0 <= reward < 0.5  # no step done: the first step's progress over 2
    env = long_env(split="seen")
    for seed in range(3):
        _, info = env.reset(seed=seed)
        assert not info["unseen"]
    with pytest.raises(ValueError, match="instruction_mode='text'"):
        long_env(instruction_mode="tokens")
    with pytest.raises(ValueError, match="n_objects=2"):
        LongHorizonTabletop(make("tabletop/reach-v0", n_objects=2))
    with pytest.raises(RuntimeError, match="reset"):
        long_env().step(np.zeros(4, np.float32))


def _task_one_hots(env, state: np.ndarray) -> np.ndarray:
    """The object, target and family one-hots of a (single-step) tabletop state."""
    from embodied_rl.envs.tabletop.base import COLORS, SHAPES

    base = env.unwrapped
    n = base.config.n_objects
    at = base.proprio_dim + n * (7 + len(COLORS) + len(SHAPES)) + 6
    family = at + 2 * n + 3
    return np.concatenate([state[at : at + 2 * n], state[family : family + len(tasks.FAMILIES)]])


def test_the_episode_task_encoding_names_both_steps_all_episode():
    """task_encoding='episode': the state is the step-encoded state of the first step and of
    the second, both from the episode's start; while the first step runs its first half is the
    step encoding bit for bit, and what it names never switches at the first step's success,
    while the step encoding does (a flat policy must tell the step from the scene)."""
    step_env = long_env()
    whole_env = LongHorizonTabletop(
        make("tabletop/reach-v0", n_objects=4), split="all", task_encoding="episode"
    )
    expert = make_expert(step_env)
    n = step_env.observation_space["state"].shape[0]
    assert whole_env.observation_space["state"].shape == (2 * n,)
    obs, _ = step_env.reset(seed=3)
    whole, _ = whole_env.reset(seed=3)
    assert whole_env.observation_space.contains(whole)
    names = [
        _task_one_hots(step_env, whole["state"][:n]),
        _task_one_hots(step_env, whole["state"][n:]),
    ]
    assert not np.array_equal(*names)
    switched = False
    for _ in range(step_env.unwrapped._horizon):
        if not switched:
            np.testing.assert_array_equal(whole["state"][:n], obs["state"])
        action = expert.act(obs)
        obs, _, terminated, truncated, info = step_env.step(action)
        whole, _, *_ = whole_env.step(action)
        switched = switched or info["steps_completed"] == 1
        halves = [whole["state"][:n], whole["state"][n:]]
        assert all(
            np.array_equal(_task_one_hots(step_env, h), m)
            for h, m in zip(halves, names, strict=True)
        )
        if terminated or truncated:
            break
    assert switched and info["success"]
    np.testing.assert_array_equal(_task_one_hots(step_env, obs["state"]), names[1])
    with pytest.raises(ValueError, match="task_encoding='both'"):
        LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), task_encoding="both")
    with pytest.raises(ValueError, match="obs_mode='rgb'"):
        LongHorizonTabletop(
            make("tabletop/reach-v0", n_objects=4, obs_mode="rgb"), task_encoding="episode"
        )
