"""Task ids, gymnasium registration and ``make``.

Ids: ``tabletop/<family>-v0`` (``reach``, ``push``, ``push-next-to``, ``pick``, ``place``,
``stack``, ``multitask``) and ``metaworld/<task>`` for the 50 Meta-World v3 tasks
(e.g. ``metaworld/pick-place-v3``). All are gymnasium ids, so ``gymnasium.make`` works
too once ``embodied_rl.envs`` is imported. The tabletop suite also runs on PyBullet:
``make(task_id, backend="pybullet")``, registered as ``tabletop-pybullet/<family>-v0``.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym

from embodied_rl.envs.tabletop.tasks import FAMILIES

TABLETOP_VERSION = 0
BACKENDS: tuple[str, ...] = ("mujoco", "pybullet")
_TABLETOP_ENTRY_POINTS = {
    "mujoco": "embodied_rl.envs.tabletop.mujoco_env:TabletopEnv",
    "pybullet": "embodied_rl.envs.tabletop.pybullet_env:PyBulletTabletopEnv",
}


def tabletop_id(family: str) -> str:
    return f"tabletop/{family.replace('_', '-')}-v{TABLETOP_VERSION}"


def backend_id(task_id: str, backend: str) -> str:
    """Gymnasium id of tabletop ``task_id`` on ``backend``: MuJoCo keeps ``task_id``, others
    get their own namespace (``tabletop-pybullet/pick-v0``)."""
    if backend == "mujoco":
        return task_id
    return task_id.replace("tabletop/", f"tabletop-{backend}/", 1)


def _tabletop_ids() -> dict[str, str]:
    return {tabletop_id(f): f for f in (*FAMILIES, "multitask")}


def _metaworld_ids() -> dict[str, str]:
    from embodied_rl.envs.metaworld import metaworld_tasks

    return {f"metaworld/{task}": task for task in metaworld_tasks()}


def list_tasks(suite: str | None = None) -> list[str]:
    """Every task id, or those of one ``suite`` (``"tabletop"`` or ``"metaworld"``)."""
    suites = {"tabletop": _tabletop_ids, "metaworld": _metaworld_ids}
    if suite is not None and suite not in suites:
        raise ValueError(f"suite={suite!r}; choose one of {sorted(suites)}")
    chosen = [suite] if suite else list(suites)
    return [task_id for name in chosen for task_id in suites[name]()]


def register_all() -> None:
    """Register every task id with gymnasium (idempotent)."""
    for task_id, family in _tabletop_ids().items():
        for backend, entry_point in _TABLETOP_ENTRY_POINTS.items():
            if backend_id(task_id, backend) not in gym.registry:
                gym.register(
                    id=backend_id(task_id, backend),
                    entry_point=entry_point,
                    kwargs={"task": family},
                )
    for task_id, task in _metaworld_ids().items():
        if task_id not in gym.registry:
            gym.register(
                id=task_id,
                entry_point="embodied_rl.envs.metaworld:MetaWorldEnv",
                kwargs={"task": task},
            )


def make(
    task_id: str,
    *,
    obs_mode: str = "state",
    image_size: int | tuple[int, int] = 64,
    camera: str | None = None,
    seed: int | None = None,
    backend: str = "mujoco",
    randomization: Any = None,
    adr: Any = None,
    **kwargs: Any,
) -> gym.Env:
    """Build a registered task.

    Args:
        task_id: an id from :func:`list_tasks`, e.g. ``"tabletop/pick-v0"``.
        obs_mode: ``"state"``, ``"rgb"`` or ``"rgb+state"``.
        image_size: side (or ``(height, width)``) of image observations.
        camera: camera of image observations; default ``"front"`` (tabletop) or
            ``"corner"`` (Meta-World).
        seed: seeds the first ``reset()`` and the action space.
        backend: physics engine of the tabletop suite.
        randomization: domain randomization: a preset (``"none"``, ``"light"``, ``"default"``,
            ``"heavy"``), a YAML path, a dict of overrides (``{"preset": "default",
            "friction_scale": [0.5, 2.0]}``) or a ``RandomizationConfig``; see
            :mod:`embodied_rl.envs.randomization`.
        adr: an :class:`~embodied_rl.envs.randomization.ADR` (or ``True`` for one whose
            limits are ``randomization``'s ranges) to grow the ranges automatically.
        **kwargs: further options of the environment class (``instruction_mode``,
            ``split``, ``reward_type``, ``render_mode``, ...).
    """
    for other in BACKENDS:  # a backend's own gymnasium id: tabletop-pybullet/pick-v0
        prefix = f"tabletop-{other}/"
        if other != "mujoco" and task_id.startswith(prefix):
            if backend not in ("mujoco", other):
                raise ValueError(f"task_id={task_id!r} runs on {other}, not backend={backend!r}")
            task_id, backend = "tabletop/" + task_id[len(prefix) :], other
    ids = list_tasks()
    if task_id not in ids:
        close = difflib.get_close_matches(task_id, ids, n=3)
        hint = f"; did you mean {close}?" if close else "; see embodied_rl.envs.list_tasks()"
        raise ValueError(f"unknown task_id={task_id!r}{hint}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; choose one of {BACKENDS}")
    if backend != "mujoco" and task_id not in _tabletop_ids():
        raise ValueError(
            f"backend={backend!r} runs the tabletop suite only; {task_id!r} needs backend='mujoco'"
        )
    if camera is not None:
        kwargs["camera"] = camera
    register_all()
    task_id = backend_id(task_id, backend)  # each backend registers its own gymnasium ids
    env = gym.make(task_id, obs_mode=obs_mode, image_size=image_size, seed=seed, **kwargs)
    return _randomize(env, randomization, adr, seed)


def _randomize(env: gym.Env, randomization: Any, adr: Any, seed: int | None) -> gym.Env:
    """Wrap ``env`` in domain randomization when asked to."""
    from embodied_rl.envs.randomization import ADR, DomainRandomization, resolve_randomization

    config = resolve_randomization(randomization)
    if adr is True:
        if config is None or not config.ranges:
            raise ValueError(
                "adr=True needs randomization ranges as ADR's limits, e.g. randomization='heavy'"
            )
        adr = ADR.from_config(config)
    elif adr is not None and not isinstance(adr, ADR):
        raise TypeError(f"adr must be True, None or an ADR instance, got {type(adr).__name__}")
    if config is None and adr is None:
        return env
    return DomainRandomization(env, config, seed=seed, adr=adr)
