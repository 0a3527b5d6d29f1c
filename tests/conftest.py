import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")

import embodied_rl  # noqa: E402,F401  (chooses the GL backend before any test imports mujoco)
