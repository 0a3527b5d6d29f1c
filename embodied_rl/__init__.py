"""embodied-rl: multimodal embodied reinforcement learning."""

from embodied_rl.envs.rendering import configure_gl as _configure_gl

# MuJoCo reads MUJOCO_GL when it is first imported: choose a headless backend first.
_configure_gl()

__version__ = "0.1.0"
