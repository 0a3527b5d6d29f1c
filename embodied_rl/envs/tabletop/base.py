"""Backend-independent half of the tabletop suite: config, spaces, episodes, observations.

A physics backend (MuJoCo in ``mujoco_env.py``, PyBullet in ``pybullet_env.py``) subclasses
:class:`TabletopEnvBase` and implements the ``_sim_*`` primitives below. Everything an agent
sees (observation layout, action semantics, instructions, success, reward, truncation) is
defined here once, so a policy trained on one backend runs unchanged on the other.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied_rl.envs.domain import (
    ENV_GROUPS,
    PARAMETERS,
    check_parameter_names,
    nominal_parameters,
)
from embodied_rl.envs.instructions import encode_instruction, instruction_space
from embodied_rl.envs.rendering import RENDER_QUALITIES
from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.scene import (
    CAMERAS,
    COLORS,
    EE_HOME,
    FINGER_MAX_OPENING,
    OBJECT_HALF_SIZE,
    SHAPES,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
)

OBS_MODES: tuple[str, ...] = ("state", "rgb", "rgb+state")
INSTRUCTION_MODES: tuple[str, ...] = ("text", "tokens", "none")
REWARD_TYPES: tuple[str, ...] = ("sparse", "dense")
MULTITASK = "multitask"
MAX_TARGET_LAG_M = 0.05  # anti-windup: the commanded position stays this close to the gripper
YAW_STEP_RAD = 0.1  # yaw change per step at |action| = 1


@dataclass
class DomainColors:
    """Per-episode colour offsets drawn from the ``*_color_jitter`` parameters (RGB, added)."""

    objects: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (n_objects, 3)
    table: np.ndarray = field(default_factory=lambda: np.zeros(3))
    background: np.ndarray = field(default_factory=lambda: np.zeros(3))


def as_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise an int or ``(height, width)`` to a validated ``(height, width)``."""
    if isinstance(image_size, int | np.integer):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size={image_size!r} must be a positive int or (height, width)")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class TabletopConfig:
    """Everything that defines a tabletop environment instance."""

    task: str = "reach"  # a family from tasks.FAMILIES, or "multitask" (a family per episode)
    obs_mode: str = "state"  # "state" | "rgb" | "rgb+state"
    image_size: tuple[int, int] = (64, 64)  # (height, width) of image observations
    camera: tuple[str, ...] = ("front",)  # cameras in image observations
    instruction_mode: str = "text"  # "text" (Text space) | "tokens" (int64 word ids) | "none"
    split: str = "seen"  # object combinations: "seen" | "unseen" | "all"
    reward_type: str = "sparse"  # "sparse" (1 on success) | "dense" (shaped progress)
    n_objects: int = 4
    control_yaw: bool = False  # 5-D actions (xyz, yaw, gripper) instead of 4-D
    horizon: int | None = None  # steps before truncation; None uses the family's default
    max_delta_m: float = 0.02  # end-effector displacement per step at |action| = 1
    n_substeps: int = 10  # physics steps of 2 ms per control step (50 Hz control)
    terminate_on_success: bool = True
    render_quality: str = "fast"  # "fast" (no shadows, no MSAA; CPU) | "high"
    render_size: tuple[int, int] = (256, 256)  # env.render() frames, for videos

    def __post_init__(self) -> None:
        checks = (
            ("task", self.task, (*tasks.FAMILIES, MULTITASK)),
            ("obs_mode", self.obs_mode, OBS_MODES),
            ("instruction_mode", self.instruction_mode, INSTRUCTION_MODES),
            ("split", self.split, tasks.SPLITS),
            ("reward_type", self.reward_type, REWARD_TYPES),
            ("render_quality", self.render_quality, RENDER_QUALITIES),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")
        if not self.camera:
            raise ValueError("camera must name at least one camera")
        for camera in self.camera:
            if camera not in CAMERAS:
                raise ValueError(f"camera={camera!r} is not in the scene; choose from {CAMERAS}")
        as_image_size(self.image_size)
        as_image_size(self.render_size)
        if not 1 <= self.n_objects <= 6:
            raise ValueError(f"n_objects={self.n_objects} must lie in [1, {len(COLORS)}]")
        if self.horizon is not None and self.horizon <= 0:
            raise ValueError(f"horizon={self.horizon} must be a positive number of steps")
        if not 0 < self.max_delta_m <= 0.1:
            raise ValueError(f"max_delta_m={self.max_delta_m} must lie in (0, 0.1] metres")
        if self.n_substeps < 1:
            raise ValueError(f"n_substeps={self.n_substeps} must be >= 1")

    @property
    def families(self) -> tuple[str, ...]:
        return tasks.FAMILIES if self.task == MULTITASK else (self.task,)


class TabletopEnvBase(gym.Env, ABC):
    """Language-conditioned tabletop manipulation; physics comes from a subclass.

    Observations are a Dict: ``state`` (proprioception, object poses and identities,
    fixture positions, task encoding) in state modes; ``image`` (uint8 ``(H, W, 3)``;
    ``image_<camera>`` for several cameras) and ``proprio`` in image modes; and
    ``instruction`` unless ``instruction_mode="none"``. Actions lie in ``[-1, 1]``:
    end-effector delta ``(dx, dy, dz[, dyaw])`` scaled by ``max_delta_m``, then the
    gripper (-1 open, +1 closed).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    backend: str = ""

    def __init__(
        self,
        task: str = "reach",
        *,
        render_mode: str | None = None,
        seed: int | None = None,
        camera: str | tuple[str, ...] | list[str] = "front",
        image_size: int | tuple[int, int] = 64,
        render_size: int | tuple[int, int] = 256,
        **config_fields: Any,
    ) -> None:
        cameras = (camera,) if isinstance(camera, str) else tuple(camera)
        self.config = TabletopConfig(
            task=task,
            camera=cameras,
            image_size=as_image_size(image_size),
            render_size=as_image_size(render_size),
            **config_fields,
        )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r}; choose one of {self.metadata['render_modes']}"
            )
        self.render_mode = render_mode
        n_act = 5 if self.config.control_yaw else 4
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n_act,), dtype=np.float32)
        self.observation_space = self._make_observation_space()
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)
        self.spec_: tasks.TaskSpec | None = None
        self.layout: tasks.Layout | None = None
        self._last_obs: dict[str, Any] | None = None
        self._ws_low, self._ws_high = np.array(WORKSPACE_LOW), np.array(WORKSPACE_HIGH)
        self._episode_id = 0
        self.domain: dict[str, float] = nominal_parameters()
        self._domain_colors = DomainColors(objects=np.zeros((self.config.n_objects, 3)))
        self.n_substeps_now = self.config.n_substeps  # physics steps in the current control step

    # ------------------------------------------------------------------ backend primitives
    @abstractmethod
    def _sim_reset(self, layout: tasks.Layout, ee_home: np.ndarray) -> None:
        """Place objects and fixtures as in ``layout``, the gripper at ``ee_home`` with open
        fingers, and let contacts settle."""

    @abstractmethod
    def _sim_set_controls(
        self, ee_target: np.ndarray, yaw_target: float, finger_opening: float
    ) -> None:
        """Command the gripper: fingertip-centre position (m), yaw (rad), opening per finger (m)."""

    @abstractmethod
    def _sim_step(self) -> str | None:
        """Advance one control step; return a message if the simulation diverged, else None."""

    @abstractmethod
    def _sim_ee(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Fingertip-centre position (3,), its velocity (3,), opening per finger (m), yaw (rad)."""

    @abstractmethod
    def _sim_object_poses(self) -> np.ndarray:
        """``(n_objects, 7)``: position and unit quaternion ``(w, x, y, z)`` of each slot."""

    @abstractmethod
    def _sim_fixture_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Bowl and plate base positions, each ``(3,)``."""

    @abstractmethod
    def _sim_render(self, camera: str, size: tuple[int, int], video: bool) -> np.ndarray:
        """uint8 ``(H, W, 3)`` image from ``camera`` (``video``: the render() stream)."""

    @abstractmethod
    def _sim_apply_domain(self, params: Mapping[str, float], colors: DomainColors) -> None:
        """Apply the ``physics`` and ``visual`` parameters of :mod:`embodied_rl.envs.domain`
        relative to the scene's nominal values, and set the object colours of ``self.layout``
        (idempotent; called before every ``_sim_reset`` and whenever ``set_domain`` changes
        them mid-episode). ``_sim_step`` must run
        ``self.n_substeps_now`` physics steps."""

    # ------------------------------------------------------------------ domain
    def set_domain(
        self, params: Mapping[str, float], rng: np.random.Generator | None = None
    ) -> None:
        """Set physics, visual and actuation parameters (others keep their nominal value).

        Takes effect at once (mid-episode too) and persists across resets until changed.
        ``rng`` draws the colour offsets of the ``*_color_jitter`` parameters.
        """
        check_parameter_names(params)
        sensor = sorted(k for k in params if PARAMETERS[k].group not in ENV_GROUPS)
        if sensor:
            raise ValueError(
                f"{sensor} are sensor parameters: apply them with the DomainRandomization wrapper"
            )
        self.domain = {**nominal_parameters(), **{k: float(v) for k, v in params.items()}}
        rng = rng if rng is not None else self.np_random
        jitter = lambda name, shape: rng.uniform(-1.0, 1.0, size=shape) * self.domain[name]  # noqa: E731
        self._domain_colors = DomainColors(
            objects=jitter("object_color_jitter", (self.config.n_objects, 3)),
            table=jitter("table_color_jitter", 3),
            background=jitter("background_color_jitter", 3),
        )
        if self.spec_ is not None:
            self._sim_apply_domain(self.domain, self._domain_colors)

    @property
    def object_half_size(self) -> float:
        """Half size of the objects under the current ``object_size_scale``."""
        return OBJECT_HALF_SIZE * self.domain["object_size_scale"]

    # ------------------------------------------------------------------ spaces
    def _make_observation_space(self) -> spaces.Dict:
        cfg = self.config
        obs: dict[str, spaces.Space] = {}
        if cfg.obs_mode in ("state", "rgb+state"):
            obs["state"] = spaces.Box(-np.inf, np.inf, shape=(self.state_dim,), dtype=np.float32)
        if cfg.obs_mode in ("rgb", "rgb+state"):
            image = spaces.Box(0, 255, shape=(*cfg.image_size, 3), dtype=np.uint8)
            for key in self._image_keys:
                obs[key] = image
            obs["proprio"] = spaces.Box(
                -np.inf, np.inf, shape=(self.proprio_dim,), dtype=np.float32
            )
        if cfg.instruction_mode != "none":
            obs["instruction"] = instruction_space(cfg.instruction_mode)
        return spaces.Dict(obs)

    @property
    def _image_keys(self) -> list[str]:
        cams = self.config.camera
        return ["image"] if len(cams) == 1 else [f"image_{c}" for c in cams]

    @property
    def proprio_dim(self) -> int:
        """ee position (3), ee velocity (3), finger opening (1)[, sin/cos yaw (2)]."""
        return 9 if self.config.control_yaw else 7

    @property
    def state_dim(self) -> int:
        """proprio + per object (pos 3, quat 4, colour one-hot, shape one-hot) + bowl and
        plate positions (6) + task (object one-hot, target one-hot, goal 3, family one-hot)
        + task-relative vectors (the named object minus the fingertips, the goal minus the
        named object: 6)."""
        n = self.config.n_objects
        per_object = 7 + len(COLORS) + len(SHAPES)
        return self.proprio_dim + n * per_object + 6 + 2 * n + 3 + len(tasks.FAMILIES) + 6

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        super().reset(seed=seed)
        rng = self.np_random
        families = self.config.families
        family = families[int(rng.integers(len(families)))] if len(families) > 1 else families[0]
        self.layout, self.spec_ = tasks.sample_episode(
            rng, family, self.config.split, self.config.n_objects
        )
        ee_home = np.array(EE_HOME) + rng.uniform(-0.03, 0.03, size=3)
        self._target, self._yaw_target = ee_home.copy(), 0.0
        self._sim_apply_domain(self.domain, self._domain_colors)  # physics in place before settling
        self._sim_reset(self.layout, ee_home)
        self._initial_object_pos = self._sim_object_poses()[:, :3].copy()
        self._horizon = self.config.horizon or tasks.HORIZONS[family]
        self._elapsed = 0
        self._episode_id += 1
        self._static_state = self._episode_constant_state()
        obs = self._observation()
        self._last_obs = obs
        return obs, self._info(success=False)

    def _episode_constant_state(
        self, spec: tasks.TaskSpec | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Object identities and the encoding of ``spec`` (default: the task): constant
        within an episode."""
        n, layout, spec = self.config.n_objects, self.layout, spec or self.spec_
        identities = np.zeros((n, len(COLORS) + len(SHAPES)), np.float32)
        for i in range(n):
            identities[i, list(COLORS).index(layout.colors[i])] = 1.0
            identities[i, len(COLORS) + SHAPES.index(layout.shapes[i])] = 1.0
        task = np.zeros(2 * n + len(tasks.FAMILIES), np.float32)
        task[spec.object_slot] = 1.0
        if spec.target_slot is not None:
            task[n + spec.target_slot] = 1.0
        task[2 * n + tasks.FAMILIES.index(spec.family)] = 1.0
        if spec is self.spec_:
            self._instruction_tokens = encode_instruction(spec.instruction)
        return identities, task

    # ------------------------------------------------------------------ stepping
    def step(self, action):
        if self.spec_ is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action has shape {a.shape}; this env expects {self.action_space.shape} "
                f"(dx, dy, dz{', dyaw' if self.config.control_yaw else ''}, gripper)"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"action contains NaN or inf: {a}")
        self._command(np.minimum(np.maximum(a, -1.0), 1.0))
        jitter = self.domain["control_jitter"]
        if jitter > 0:  # a late or early control tick: fewer or more physics steps
            scale = 1.0 + self.np_random.uniform(-jitter, jitter)
            self.n_substeps_now = max(1, round(self.config.n_substeps * scale))
        error = self._sim_step()
        self._elapsed += 1
        if error is not None:
            info = self._info(success=False)
            info["physics_error"] = error
            return self._last_obs, 0.0, False, True, info
        state = self.scene_state()
        success = tasks.is_success(self.spec_, state)
        if self.config.reward_type == "sparse":
            reward = float(success)
        else:
            reward = 1.0 if success else tasks.dense_reward(self.spec_, state)
        obs = self._observation(state)
        self._last_obs = obs
        terminated = success and self.config.terminate_on_success
        truncated = self._elapsed >= self._horizon and not terminated
        return obs, reward, terminated, truncated, self._info(success)

    def _command(self, a: np.ndarray) -> None:
        """Integrate the action into position targets (with anti-windup) and send them."""
        ee = self._sim_ee()[0]
        target = self._target + a[:3] * (self.config.max_delta_m * self.domain["control_scale"])
        target = np.minimum(np.maximum(target, self._ws_low), self._ws_high)
        lag = target - ee
        dist = math.sqrt(lag[0] * lag[0] + lag[1] * lag[1] + lag[2] * lag[2])
        if dist > MAX_TARGET_LAG_M:  # blocked (e.g. pressing on the table): do not wind up
            target = ee + lag * (MAX_TARGET_LAG_M / dist)
        self._target = target
        if self.config.control_yaw:
            self._yaw_target = min(
                max(self._yaw_target + float(a[3]) * YAW_STEP_RAD, -math.pi), math.pi
            )
        self._sim_set_controls(
            target, self._yaw_target, FINGER_MAX_OPENING * 0.5 * (1.0 - float(a[-1]))
        )

    # ------------------------------------------------------------------ observations
    def scene_state(self) -> tasks.SceneState:
        """Privileged simulator state, as used by success checks and scripted experts."""
        ee_pos, _, opening, _ = self._sim_ee()
        bowl, plate = self._sim_fixture_positions()
        return tasks.SceneState(
            ee_pos=ee_pos.copy(),
            finger_opening=opening,
            object_pos=self._sim_object_poses()[:, :3].copy(),
            initial_object_pos=self._initial_object_pos,
            bowl_pos=bowl,
            plate_pos=plate,
            object_half_size=self.object_half_size,
        )

    def _proprio(self) -> np.ndarray:
        ee_pos, ee_vel, opening, yaw = self._sim_ee()
        parts = [ee_pos, ee_vel, (opening,)]
        if self.config.control_yaw:
            parts.append((math.sin(yaw), math.cos(yaw)))
        return np.concatenate(parts).astype(np.float32)

    def task_observation(
        self, spec: tasks.TaskSpec, initial_object_pos: np.ndarray | None = None
    ) -> dict[str, Any]:
        """The observation of the current scene as if ``spec`` (a task on this episode's
        layout, e.g. a planner's chosen skill) were the task, its goals counted from the
        object positions ``initial_object_pos`` (default: the episode's start). The
        environment's own task is unchanged: a learned policy conditioned on the task executes
        another one with it (``llm.planner.PolicyExecutor``). It is this environment's own
        observation: wrappers that change observations (sensor noise, latency) do not apply."""
        if self.spec_ is None:
            raise RuntimeError("reset the environment before asking for an observation")
        if spec.object_slot >= self.config.n_objects or (
            spec.target_slot is not None and spec.target_slot >= self.config.n_objects
        ):
            raise ValueError(
                f"task {spec.instruction!r} names object slots beyond this scene's "
                f"{self.config.n_objects} objects"
            )
        scene = self.scene_state()
        if initial_object_pos is not None:
            scene = replace(scene, initial_object_pos=np.asarray(initial_object_pos))
        obs = self._observation(scene, spec)
        if self.config.instruction_mode == "tokens":
            obs["instruction"] = encode_instruction(spec.instruction)
        return obs

    def _state(
        self, proprio: np.ndarray, scene: tasks.SceneState, spec: tasks.TaskSpec | None = None
    ) -> np.ndarray:
        identities, task = (
            self._static_state if spec is None else self._episode_constant_state(spec)
        )
        spec = spec or self.spec_
        poses = self._sim_object_poses()
        goal = tasks.goal_position(spec, scene)
        n = self.config.n_objects
        objects = np.concatenate([poses, identities], axis=1).ravel()
        fixtures = np.concatenate([scene.bowl_pos, scene.plate_pos])
        # The named object relative to the fingertips and the goal relative to the object:
        # without them an MLP must select the object's pose by its one-hot slot (a product of
        # inputs), which BC on a few hundred push demonstrations did not learn (3/50 held-out
        # successes with, 37/50 without that burden; benchmarks/results/vla_learning_push.md).
        target = poses[spec.object_slot, :3]
        relative = np.concatenate([target - scene.ee_pos, goal - target])
        return np.concatenate(
            [proprio, objects, fixtures, task[: 2 * n], goal, task[2 * n :], relative]
        ).astype(np.float32)

    def _observation(
        self, scene: tasks.SceneState | None = None, spec: tasks.TaskSpec | None = None
    ) -> dict[str, Any]:
        cfg, obs = self.config, {}
        proprio = self._proprio()
        if cfg.obs_mode != "rgb":
            obs["state"] = self._state(proprio, scene or self.scene_state(), spec)
        if cfg.obs_mode != "state":
            for key, camera in zip(self._image_keys, cfg.camera, strict=True):
                obs[key] = self._sim_render(camera, cfg.image_size, video=False)
            obs["proprio"] = proprio
        if cfg.instruction_mode == "text":
            obs["instruction"] = (spec or self.spec_).instruction
        elif cfg.instruction_mode == "tokens":
            obs["instruction"] = self._instruction_tokens.copy()
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        spec = self.spec_
        return {
            "success": success,
            "is_success": success,
            "instruction": spec.instruction,
            "task": spec.family,
            "unseen": spec.unseen,
        }

    def render(self) -> np.ndarray | None:
        """An RGB frame from the first camera at ``render_size`` (for videos)."""
        if self.render_mode is None:
            return None
        return self._sim_render(self.config.camera[0], self.config.render_size, video=True)
