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
