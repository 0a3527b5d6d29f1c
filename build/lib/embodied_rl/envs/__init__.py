"""Environments: the language-conditioned tabletop suite and the Meta-World adapter.

``make(task_id, ...)`` builds any registered task; ``list_tasks()`` lists them;
``make_expert(env)`` returns the scripted expert for an environment.
"""

from embodied_rl.envs.rendering import configure_gl

configure_gl()  # must precede the first `import mujoco`

from embodied_rl.envs.experts import make_expert  # noqa: E402
from embodied_rl.envs.registration import list_tasks, make, register_all  # noqa: E402

register_all()

__all__ = ["list_tasks", "make", "make_expert", "register_all"]
