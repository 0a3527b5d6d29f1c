import subprocess
import sys

import numpy as np
import pytest

from embodied_rl.envs.rendering import FastRenderer


def test_exit_without_close_prints_no_gl_errors():
    """Renderers left open at interpreter exit are closed before EGL shuts down."""
    code = (
        "from embodied_rl.envs import make\n"
        "env = make('tabletop/reach-v0', obs_mode='rgb', render_mode='rgb_array', seed=0)\n"
        "env.reset(); env.render()\n"
        "meta = make('metaworld/reach-v3', obs_mode='rgb', seed=0); meta.reset()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_renderer_rejects_bad_sizes_and_quality():
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
    with pytest.raises(ValueError, match="image size"):
        FastRenderer(model, 0, 64)
    with pytest.raises(ValueError, match="quality"):
        FastRenderer(model, 64, 64, quality="ultra")


def test_interleaved_envs_render_the_same_as_alone():
    """Freeing one env's GL context must not corrupt another env's images."""
    import gc

    from embodied_rl.envs import make

    def first_image(**kwargs):
        env = make("tabletop/pick-v0", obs_mode="rgb", image_size=32, **kwargs)
        image = env.reset(seed=0)[0]["image"]
        env.close()
        return image

    alone = first_image()
    a = make("tabletop/pick-v0", obs_mode="rgb", image_size=32)
    b = make("tabletop/pick-v0", obs_mode="rgb", image_size=32)
    a.reset(seed=1)
    del b  # dropped without close(): its context is freed by garbage collection
    gc.collect()
    np.testing.assert_array_equal(a.reset(seed=0)[0]["image"], alone)
