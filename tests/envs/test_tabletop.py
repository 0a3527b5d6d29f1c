"""Behaviour of the MuJoCo tabletop suite: spaces, seeding, tasks, errors, physics faults."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from embodied_rl.envs import list_tasks, make, make_expert
from embodied_rl.envs.instructions import VOCABULARY, decode_instruction
from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.scene import COLORS, SHAPES
from embodied_rl.evaluation.rollout import run_episodes

TABLETOP = [t for t in list_tasks("tabletop")]


def rollout(env, actions):
    """Observations, rewards and flags of a fixed action sequence (resetting when done)."""
    trace = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            env.reset()
    return trace


def assert_same_obs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], str):
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_task_ids_cover_six_families_and_multitask():
    assert set(TABLETOP) == {
        "tabletop/reach-v0",
        "tabletop/push-v0",
        "tabletop/push-next-to-v0",
        "tabletop/pick-v0",
        "tabletop/place-v0",
        "tabletop/stack-v0",
        "tabletop/multitask-v0",
    }


@pytest.mark.parametrize("obs_mode", ["state", "rgb", "rgb+state"])
def test_observation_modes_match_their_spaces(obs_mode):
    env = make("tabletop/pick-v0", obs_mode=obs_mode, image_size=48, seed=1)
    obs, info = env.reset()
    assert env.observation_space.contains(obs)
    assert obs["instruction"] == info["instruction"]
    assert ("image" in obs) == (obs_mode != "state")
    assert ("state" in obs) == (obs_mode != "rgb")
    if "image" in obs:
        assert obs["image"].shape == (48, 48, 3) and obs["image"].dtype == np.uint8
        assert obs["image"].std() > 5  # a real scene, not a blank buffer
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    env.close()


def test_multiple_cameras_give_distinct_images():
    env = make(
        "tabletop/stack-v0", obs_mode="rgb", camera=("front", "top", "side", "wrist"), seed=0
    )
    obs, _ = env.reset()
    images = [obs[f"image_{c}"] for c in ("front", "top", "side", "wrist")]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i].astype(int) - images[j].astype(int)).mean() > 5
    env.close()


def test_instruction_modes():
    tokens_env = make("tabletop/place-v0", instruction_mode="tokens", seed=3)
    text_env = make("tabletop/place-v0", instruction_mode="text", seed=3)
    none_env = make("tabletop/place-v0", instruction_mode="none", seed=3)
    tokens, _ = tokens_env.reset()
    text, _ = text_env.reset()
    none, _ = none_env.reset()
    assert tokens["instruction"].dtype == np.int64
    assert decode_instruction(tokens["instruction"]) == text["instruction"]
    assert "instruction" not in none
    np.testing.assert_array_equal(tokens["state"], none["state"])


def test_same_seed_reproduces_100_steps_of_images_and_rewards():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(100, 4)).astype(np.float32)
    traces = []
    for _ in range(2):
        env = make("tabletop/push-v0", obs_mode="rgb+state", reward_type="dense", seed=7)
        env.reset()
        traces.append(rollout(env, actions))
        env.close()
    for (obs_a, r_a, te_a, tr_a), (obs_b, r_b, te_b, tr_b) in zip(*traces, strict=True):
        assert_same_obs(obs_a, obs_b)
        assert (r_a, te_a, tr_a) == (r_b, te_b, tr_b)


def test_different_seeds_give_different_episodes():
    env = make("tabletop/pick-v0", obs_mode="rgb+state")
    first, _ = env.reset(seed=1)
    second, _ = env.reset(seed=2)
    assert not np.array_equal(first["state"], second["state"])
    assert not np.array_equal(first["image"], second["image"])
    env.close()


def test_make_seed_seeds_the_first_reset():
    a, _ = make("tabletop/reach-v0", seed=11).reset()
    b, _ = make("tabletop/reach-v0").reset(seed=11)
    assert_same_obs(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_id": "tabletop/pick-up-v0"}, "task_id"),
        ({"obs_mode": "depth"}, "obs_mode"),
        ({"obs_mode": "rgb", "image_size": 0}, "image_size"),
        ({"camera": "ceiling"}, "camera"),
        ({"split": "train"}, "split"),
        ({"instruction_mode": "bert"}, "instruction_mode"),
        ({"backend": "isaac"}, "backend"),
        ({"horizon": 0}, "horizon"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    task_id = kwargs.pop("task_id", "tabletop/pick-v0")
    with pytest.raises(ValueError, match=message):
        make(task_id, **kwargs)


def test_unknown_task_suggests_close_ids():
    with pytest.raises(ValueError, match="did you mean.*tabletop/pick-v0"):
        make("tabletop/pik-v0")


def test_wrong_action_shape_and_nan_are_rejected():
    env = make("tabletop/reach-v0", seed=0).unwrapped
    env.reset()
    with pytest.raises(ValueError, match=r"action has shape \(3,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, 0, np.nan, 0]))


def test_step_before_reset_is_an_error():
    env = make("tabletop/reach-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4))


def test_physics_divergence_truncates_with_a_message():
    env = make("tabletop/pick-v0", seed=0).unwrapped
    obs, _ = env.reset()
    env.data.qvel[:] = 1e12  # drive the integrator to divergence
    next_obs, reward, terminated, truncated, info = env.step(np.zeros(4))
    assert truncated and not terminated and reward == 0.0
    assert "unstable" in info["physics_error"]
    assert np.isfinite(next_obs["state"]).all()
    env.reset()  # the env remains usable
    assert np.isfinite(env.step(np.zeros(4))[0]["state"]).all()


def test_control_yaw_adds_an_action_dimension_that_turns_the_gripper():
    env = make("tabletop/reach-v0", control_yaw=True, seed=0)
    obs, _ = env.reset()
    assert env.action_space.shape == (5,)
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 1.0, 0], dtype=np.float32))
    sin_yaw = obs["state"][7]
    assert sin_yaw > 0.5


def test_truncation_at_the_task_horizon():
    env = make("tabletop/stack-v0", seed=0, horizon=7)
    env.reset()
    flags = [env.step(np.zeros(4, dtype=np.float32))[3] for _ in range(7)]
    assert flags == [False] * 6 + [True]


def test_gripper_tracks_commanded_displacement():
    env = make("tabletop/reach-v0", seed=0).unwrapped
    obs, _ = env.reset()
    start = env.scene_state().ee_pos
    for _ in range(5):
        env.step(np.array([1.0, 0, 0, -1], dtype=np.float32))
    for _ in range(5):  # let the position controller settle
        env.step(np.array([0.0, 0, 0, -1], dtype=np.float32))
    moved = env.scene_state().ee_pos - start
    assert moved[0] == pytest.approx(5 * env.config.max_delta_m, abs=0.004)
    assert abs(moved[1]) < 0.003 and abs(moved[2]) < 0.003


def test_dense_reward_grows_as_the_expert_approaches():
    env = make("tabletop/reach-v0", reward_type="dense", seed=4)
    expert = make_expert(env)
    obs, _ = env.reset()
    rewards = []
    for _ in range(40):
        obs, reward, terminated, truncated, _ = env.step(expert.act(obs))
        rewards.append(reward)
        if terminated:
            break
    assert terminated and rewards[-1] == 1.0
    assert 0.0 <= rewards[0] < rewards[-2] < 1.0


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_splits_partition_object_combinations(family):
    seen = set(tasks.combinations(family, "seen"))
    unseen = set(tasks.combinations(family, "unseen"))
    assert seen and unseen and not seen & unseen
    assert seen | unseen == set(tasks.combinations(family, "all"))
    # Every colour and shape stays seen, so unseen means a new combination, not a new word.
    assert {c for c, _ in seen} == set(COLORS) and {s for _, s in seen} == set(SHAPES)


@pytest.mark.parametrize("split", ["seen", "unseen"])
def test_episodes_respect_the_split(split):
    env = make("tabletop/multitask-v0", split=split, seed=0).unwrapped
    for seed in range(30):
        env.reset(seed=seed)
        spec, layout = env.spec_, env.layout
        combo = (layout.colors[spec.object_slot], layout.shapes[spec.object_slot])
        assert tasks.is_unseen(spec.family, *combo) == (split == "unseen")
        assert layout.name(spec.object_slot) in spec.instruction


def test_instructions_use_several_paraphrases_and_known_words():
    env = make("tabletop/multitask-v0", split="all", seed=0).unwrapped
    phrasings = {}
    for seed in range(200):
        env.reset(seed=seed)
        phrasings.setdefault(env.spec_.family, set()).add(env.spec_.template_index)
        assert all(word in VOCABULARY for word in env.spec_.instruction.split())
    assert all(len(p) >= 3 for p in phrasings.values()), phrasings


def test_state_encodes_the_task_and_object_identities():
    env = make("tabletop/stack-v0", seed=5).unwrapped
    obs, _ = env.reset()
    n, state = env.config.n_objects, obs["state"]
    per_object = 7 + len(COLORS) + len(SHAPES)
    offset = env.proprio_dim + n * per_object + 6
    assert state.shape == (env.state_dim,)
    assert np.argmax(state[offset : offset + n]) == env.spec_.object_slot
    assert np.argmax(state[offset + n : offset + 2 * n]) == env.spec_.target_slot
    colour_block = state[env.proprio_dim + 7 : env.proprio_dim + 7 + len(COLORS)]
    assert list(COLORS)[int(np.argmax(colour_block))] == env.layout.colors[0]


@pytest.mark.parametrize("task_id", ["tabletop/push-v0", "tabletop/stack-v0"])
def test_state_ends_with_the_named_object_relative_to_fingertips_and_goal(task_id):
    env = make(task_id, seed=3).unwrapped
    env.reset()
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
    scene, state = env.scene_state(), obs["state"]
    named = scene.object_pos[env.spec_.object_slot]
    np.testing.assert_allclose(state[-6:-3], named - scene.ee_pos, atol=1e-5)
    np.testing.assert_allclose(state[-3:], tasks.goal_position(env.spec_, scene) - named, atol=1e-5)


def test_task_observation_views_the_scene_through_another_task():
    """task_observation(spec) is the observation the environment would give with ``spec`` as
    its task: the environment's own task gives its own observation back bit for bit, another
    task changes only the task's entries (slots, family, goal, relative vectors) and the
    instruction, and the environment's task and later observations are untouched."""
    env = make("tabletop/stack-v0", seed=2, obs_mode="rgb+state", instruction_mode="text")
    base = env.unwrapped
    env.reset()
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
    assert_same_obs(base.task_observation(base.spec_), obs)
    own = base.spec_
    other = tasks.task_spec(base.layout, "push", (own.object_slot + 1) % 4, None, "left", None)
    view = base.task_observation(other, base.scene_state().object_pos)
    assert base.spec_ is own and view["instruction"] == other.instruction != obs["instruction"]
    np.testing.assert_array_equal(view["image"], obs["image"])
    n = base.config.n_objects
    offset = base.proprio_dim + n * (7 + len(COLORS) + len(SHAPES)) + 6
    np.testing.assert_array_equal(view["state"][:offset], obs["state"][:offset])
    assert np.argmax(view["state"][offset : offset + n]) == other.object_slot
    assert not view["state"][offset + n : offset + 2 * n].any()  # push names no target
    scene = base.scene_state()
    named = scene.object_pos[other.object_slot]
    np.testing.assert_allclose(view["state"][-6:-3], named - scene.ee_pos, atol=1e-5)
    # goals count from the given start: the push goal lies its distance to the left of it
    push = np.array([*(tasks.PUSH_DISTANCE + 0.02) * np.asarray(tasks.DIRECTIONS["left"]), 0.0])
    np.testing.assert_allclose(view["state"][-3:], push, atol=1e-5)
    after, *_ = env.step(np.zeros(4))
    np.testing.assert_array_equal(
        after["state"][offset : offset + n], obs["state"][offset : offset + n]
    )
    with pytest.raises(ValueError, match="beyond this scene's"):
        base.task_observation(dataclasses.replace(other, object_slot=9))


@pytest.mark.parametrize("task_id", [t for t in TABLETOP if "multitask" not in t])
def test_expert_solves_the_family(task_id):
    """Guard for the >= 95% figure (100 episodes per family in benchmarks/results)."""
    assert sum(expert_wins(make(task_id, seed=0), 10, seed=1000)) >= 9


def expert_wins(env, n_episodes: int, seed: int = 0, **expert_kwargs) -> list[bool]:
    """Success of each of ``n_episodes`` expert episodes with seeds ``seed, seed + 1, ...``."""
    results = run_episodes(
        env, make_expert(env, **expert_kwargs), n_episodes, seed=seed, progress=False
    )
    return [r.success for r in results]


_NOISY_EXPERT_SCRIPT = """
from embodied_rl.envs import make, make_expert
from embodied_rl.evaluation.rollout import run_episodes
env = make("tabletop/place-v0", seed=0)
results = run_episodes(env, make_expert(env, noise=1.0, seed=3), 8, progress=False)
print([(r.success, r.length, round(r.episode_return, 6)) for r in results])
"""


def test_noisy_expert_is_worse_but_reproducible():
    import ast
    import subprocess
    import sys

    # Fresh interpreters: the full suite showed a rare in-process divergence after other
    # tests ran (under investigation); a seeded run must reproduce across processes.
    runs = [
        subprocess.run(
            [sys.executable, "-c", _NOISY_EXPERT_SCRIPT],
            capture_output=True,
            text=True,
            timeout=300,
        )
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    noisy = ast.literal_eval(runs[0].stdout)
    assert sum(s for s, _, _ in noisy) < sum(expert_wins(make("tabletop/place-v0", seed=0), 8))


@pytest.mark.parametrize("task_id", ["tabletop/pick-v0", "tabletop/stack-v0"])
def test_expert_tolerates_two_steps_of_action_latency(task_id):
    """The expert corrects a fraction of its error per step, so delayed actions do not make
    it oscillate (a deadbeat controller fails every episode here)."""
    env = make(task_id, randomization={"action_latency_steps": [2, 2]}, seed=0)
    assert sum(expert_wins(env, 5)) >= 4
