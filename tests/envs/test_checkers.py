"""Every registered env passes gymnasium's checker; numpy forms pass Stable-Baselines3's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from embodied_rl.envs import list_tasks, make

ALL_TASKS = list_tasks()


@pytest.mark.parametrize("task_id", ALL_TASKS)
def test_gymnasium_env_checker(task_id):
    env = make(task_id, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker warns about unbounded state boxes
        gym_check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("task_id", ["tabletop/pick-v0", "metaworld/drawer-open-v3"])
def test_gymnasium_env_checker_with_images_and_render(task_id):
    env = make(
        task_id,
        obs_mode="rgb+state",
        image_size=32,
        render_mode="rgb_array",
        render_size=32,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize(
    "task_id",
    [t for t in list_tasks("tabletop")] + ["metaworld/pick-place-v3", "metaworld/reach-v3"],
)
@pytest.mark.parametrize("instruction_mode", ["tokens", "none"])
def test_stable_baselines3_env_checker(task_id, instruction_mode):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make(task_id, instruction_mode=instruction_mode, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(env.unwrapped, warn=False)
    env.close()


def test_stable_baselines3_ppo_trains_on_a_tabletop_env():
    from stable_baselines3 import PPO

    env = make("tabletop/reach-v0", instruction_mode="tokens", reward_type="dense", seed=0)
    model = PPO(
        "MultiInputPolicy", env, n_steps=256, batch_size=64, n_epochs=2, seed=0, device="cpu"
    )
    model.learn(total_timesteps=1000)
    assert model.num_timesteps >= 1000
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))
    env.close()
