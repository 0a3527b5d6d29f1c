"""Image environments in forked vector-env workers never hang (renderers are made lazily, so
no GL context is copied into a child). Run in a subprocess with a timeout: a hang fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import gymnasium as gym
    import numpy as np

    import embodied_rl  # headless GL before mujoco
    from embodied_rl.agents.ppo_rollout import make_vec_env
    from embodied_rl.envs import make

    TASK = {task!r}
    kwargs = dict(obs_mode="rgb+state", image_size=32, horizon=8)
    envs = gym.vector.AsyncVectorEnv(
        [lambda: make(TASK, **kwargs)] * 2, context="fork"
    )  # gymnasium first builds a throw-away env in the parent
    obs, _ = envs.reset(seed=0)
    assert obs["image"].shape == (2, 32, 32, 3) and obs["image"].any()
    envs.step(envs.action_space.sample())
    envs.close()
    envs = make_vec_env(TASK, 2, "async", **kwargs)
    obs, _ = envs.reset(seed=0)
    assert obs["image"].any()
    envs.close()
    print("ok")
    """
)


@pytest.mark.parametrize("task", ["tabletop/reach-v0", "metaworld/reach-v3"])
def test_forked_async_vector_env_renders_images(task):
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(task=task)],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"AsyncVectorEnv (fork) over {task} images hung for 180 s")
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
