"""embodied-rl: multimodal embodied reinforcement learning."""

from importlib import metadata as _metadata

from embodied_rl.envs.rendering import configure_gl as _configure_gl

# MuJoCo reads MUJOCO_GL when it is first imported: choose a headless backend first.
_configure_gl()

try:  # one source of truth: the installed distribution's metadata (pyproject.toml)
    __version__ = _metadata.version("embodied-rl")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
