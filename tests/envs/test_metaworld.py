"""Meta-World adapter: all 50 tasks, task sets, instructions, images and scripted experts."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_rl.envs import list_tasks, make, make_expert
from embodied_rl.envs.instructions import METAWORLD_INSTRUCTIONS
from embodied_rl.envs.metaworld import _policy_classes, metaworld_tasks, task_set


def test_all_fifty_tasks_are_registered_with_instructions_and_experts():
    tasks = metaworld_tasks()
    assert len(tasks) == 50
    assert set(list_tasks("metaworld")) == {f"metaworld/{t}" for t in tasks}
    assert set(METAWORLD_INSTRUCTIONS) == set(tasks)
    assert set(_policy_classes()) == set(tasks)


def test_task_sets():
    assert len(task_set("MT10")) == 10 and "pick-place-v3" in task_set("MT10")
    assert set(task_set("MT50")) == set(metaworld_tasks())
    with pytest.raises(ValueError, match="task set"):
        task_set("MT7")


def test_image_observation_is_seeded_and_flipped_upright():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    a = make("metaworld/pick-place-v3", obs_mode="rgb+state", image_size=64, seed=3)
    b = make("metaworld/pick-place-v3", obs_mode="rgb+state", image_size=64, seed=3)
    obs_a, info = a.reset()
    obs_b, _ = b.reset()
    np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
    assert (
        obs_a["instruction"] == info["instruction"] == "pick up the puck and place it at the goal"
    )
    other, _ = a.reset(seed=4)
    assert not np.array_equal(other["state"], obs_a["state"])  # goals differ by seed

    # Meta-World's own renderer returns the corner camera upside down; ours is its mirror.
    inner = ALL_V3_ENVIRONMENTS["pick-place-v3"](
        render_mode="rgb_array", camera_name="corner", width=64, height=64
    )
    inner._partially_observable, inner._freeze_rand_vec = False, False
    inner.seeded_rand_vec, inner._set_task_called = True, True
    inner.seed(3)
    inner.reset()
    theirs = inner.render().astype(float)
    inner.close()
    ours = obs_b["image"].astype(float)
    corr = lambda x, y: np.corrcoef(x.ravel(), y.ravel())[0, 1]  # noqa: E731
    assert corr(ours, theirs[::-1]) > 0.8 > corr(ours, theirs)
    a.close()
    b.close()


@pytest.mark.parametrize(
    "task_id",
    ["metaworld/reach-v3", "metaworld/drawer-close-v3", "metaworld/button-press-topdown-v3"],
)
def test_metaworld_expert_succeeds(task_id):
    env = make(task_id, seed=0)
    expert = make_expert(env)
    obs, _ = env.reset()
    for _ in range(500):
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            break
    assert info["success"] and terminated and reward == 1.0


def test_bad_metaworld_arguments():
    with pytest.raises(ValueError, match="camera"):
        make("metaworld/reach-v3", camera="front")
    with pytest.raises(ValueError, match="horizon"):
        make("metaworld/reach-v3", horizon=10_000)
    env = make("metaworld/reach-v3", seed=0)
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.unwrapped.step(np.zeros(5))
