"""The MuJoCo backend of the language-conditioned tabletop suite."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from embodied_rl.envs.instructions import (
    CHARSET,
    MAX_INSTRUCTION_CHARS,
    MAX_INSTRUCTION_TOKENS,
    VOCABULARY,
    encode_instruction,
)
from embodied_rl.envs.rendering import RENDER_QUALITIES, FastRenderer
from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.scene import (
    CAMERAS,
    COLORS,
    EE_HOME,
    FINGER_MAX_OPENING,
    HIDDEN_GROUP,
    OBJECT_HALF_SIZE,
    SHAPES,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
    SceneConfig,
    build_mjcf,
)

logger = logging.getLogger(__name__)

OBS_MODES: tuple[str, ...] = ("state", "rgb", "rgb+state")
INSTRUCTION_MODES: tuple[str, ...] = ("text", "tokens", "none")
REWARD_TYPES: tuple[str, ...] = ("sparse", "dense")
MULTITASK = "multitask"
_UNSTABLE_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQACC,
)
_MAX_TARGET_LAG_M = 0.05  # anti-windup: the commanded position stays this close to the gripper


def _as_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
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
        for camera in self.camera:
            if camera not in CAMERAS:
                raise ValueError(f"camera={camera!r} is not in the scene; choose from {CAMERAS}")
        if not self.camera:
            raise ValueError("camera must name at least one camera")
        _as_image_size(self.image_size)
        _as_image_size(self.render_size)
        if self.horizon is not None and self.horizon <= 0:
            raise ValueError(f"horizon={self.horizon} must be a positive number of steps")
        if not 0 < self.max_delta_m <= 0.1:
            raise ValueError(f"max_delta_m={self.max_delta_m} must lie in (0, 0.1] metres")
        if self.n_substeps < 1:
            raise ValueError(f"n_substeps={self.n_substeps} must be >= 1")

    @property
    def families(self) -> tuple[str, ...]:
        return tasks.FAMILIES if self.task == MULTITASK else (self.task,)

    @property
    def max_horizon(self) -> int:
        return self.horizon or max(tasks.HORIZONS[f] for f in self.families)


class TabletopEnv(gym.Env):
    """Language-conditioned tabletop manipulation in MuJoCo.

    Observations are a Dict: ``state`` (proprioception, object poses and identities,
    fixture positions, task encoding) in state modes; ``image`` (uint8 ``(H, W, 3)``;
    ``image_<camera>`` for several cameras) and ``proprio`` in image modes; and
    ``instruction`` unless ``instruction_mode="none"``. Actions lie in ``[-1, 1]``:
    end-effector delta ``(dx, dy, dz[, dyaw])`` scaled by ``max_delta_m``, then the
    gripper (-1 open, +1 closed).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

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
            image_size=_as_image_size(image_size),
            render_size=_as_image_size(render_size),
            **config_fields,
        )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r}; choose one of {self.metadata['render_modes']}"
            )
        self.render_mode = render_mode
        cfg = self.config
        self.model = mujoco.MjModel.from_xml_string(
            build_mjcf(SceneConfig(n_objects=cfg.n_objects, control_yaw=cfg.control_yaw))
        )
        self.data = mujoco.MjData(self.model)
        self._index_model()
        self.control_hz = 1.0 / (cfg.n_substeps * self.model.opt.timestep)
        self._obs_renderer: FastRenderer | None = None
        self._video_renderer: FastRenderer | None = None
        if cfg.obs_mode != "state":
            h, w = cfg.image_size
            self._obs_renderer = FastRenderer(self.model, h, w, cfg.render_quality, (HIDDEN_GROUP,))
        n_act = 5 if cfg.control_yaw else 4
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n_act,), dtype=np.float32)
        self.observation_space = self._make_observation_space()
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)
        self.spec_: tasks.TaskSpec | None = None
        self.layout: tasks.Layout | None = None
        self._last_obs: dict[str, Any] | None = None

    # ------------------------------------------------------------------ model plumbing
    def _index_model(self) -> None:
        m, n = self.model, self.config.n_objects
        jnt = lambda name: m.joint(name)  # noqa: E731
        self._obj_qpos = [int(jnt(f"obj{i}_free").qposadr[0]) for i in range(n)]
        self._obj_pos_index = np.array([[a, a + 1, a + 2] for a in self._obj_qpos])
        self._obj_pose_index = np.array([list(range(a, a + 7)) for a in self._obj_qpos])
        self._obj_qvel = [int(jnt(f"obj{i}_free").dofadr[0]) for i in range(n)]
        self._ee_qpos = int(jnt("ee_x").qposadr[0])
        self._ee_qvel = int(jnt("ee_x").dofadr[0])
        assert (
            jnt("ee_y").qposadr[0] == self._ee_qpos + 1
            and jnt("ee_z").qposadr[0] == self._ee_qpos + 2
        )
        self._finger_qpos = int(jnt("finger_left").qposadr[0])
        self._finger_right_qpos = int(jnt("finger_right").qposadr[0])
        self._yaw_qpos = int(jnt("ee_yaw").qposadr[0]) if self.config.control_yaw else None
        self._geoms = [{shape: m.geom(f"obj{i}_{shape}").id for shape in SHAPES} for i in range(n)]
        self._bowl_body, self._plate_body = m.body("bowl").id, m.body("plate").id
        self._act_xyz = slice(m.actuator("act_x").id, m.actuator("act_z").id + 1)
        self._act_fingers = m.actuator("act_fingers").id
        self._act_yaw = m.actuator("act_yaw").id if self.config.control_yaw else None
        self._camera_ids = [m.camera(c).id for c in self.config.camera]
        self._ws_low, self._ws_high = np.array(WORKSPACE_LOW), np.array(WORKSPACE_HIGH)

    def _make_observation_space(self) -> spaces.Dict:
        cfg = self.config
        obs: dict[str, spaces.Space] = {}
        if cfg.obs_mode in ("state", "rgb+state"):
            obs["state"] = spaces.Box(-np.inf, np.inf, shape=(self.state_dim,), dtype=np.float32)
        if cfg.obs_mode in ("rgb", "rgb+state"):
            h, w = cfg.image_size
            image = spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8)
            for key in self._image_keys:
                obs[key] = image
            obs["proprio"] = spaces.Box(
                -np.inf, np.inf, shape=(self.proprio_dim,), dtype=np.float32
            )
        if cfg.instruction_mode == "text":
            obs["instruction"] = spaces.Text(
                max_length=MAX_INSTRUCTION_CHARS, min_length=1, charset=CHARSET
            )
        elif cfg.instruction_mode == "tokens":
            obs["instruction"] = spaces.Box(
                0, len(VOCABULARY) - 1, shape=(MAX_INSTRUCTION_TOKENS,), dtype=np.int64
            )
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
        plate positions (6) + task (object one-hot, target one-hot, goal 3, family one-hot)."""
        n = self.config.n_objects
        per_object = 7 + len(COLORS) + len(SHAPES)
        return self.proprio_dim + n * per_object + 6 + 2 * n + 3 + len(tasks.FAMILIES)

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
        self._apply_layout(self.layout, rng)
        self._horizon = self.config.horizon or tasks.HORIZONS[family]
        self._elapsed = 0
        self._warnings_seen = self._count_unstable_warnings()
        self._static_state = self._episode_constant_state()
        obs = self._observation()
        self._last_obs = obs
        return obs, self._info(success=False)

    def _apply_layout(self, layout: tasks.Layout, rng: np.random.Generator) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for i, geoms in enumerate(self._geoms):
            for shape, gid in geoms.items():
                active = shape == layout.shapes[i]
                m.geom_contype[gid] = m.geom_conaffinity[gid] = int(active)
                m.geom_group[gid] = 0 if active else HIDDEN_GROUP
                m.geom_rgba[gid, :3] = COLORS[layout.colors[i]]
            adr, yaw = self._obj_qpos[i], layout.yaws[i]
            d.qpos[adr : adr + 3] = (*layout.positions[i], OBJECT_HALF_SIZE)
            d.qpos[adr + 3 : adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        m.body_pos[self._bowl_body, :2] = layout.bowl_xy
        m.body_pos[self._plate_body, :2] = layout.plate_xy
        home = np.array(EE_HOME) + rng.uniform(-0.03, 0.03, size=3)
        d.qpos[self._ee_qpos : self._ee_qpos + 3] = home
        d.qpos[self._finger_qpos] = d.qpos[self._finger_right_qpos] = FINGER_MAX_OPENING
        self._target = home.copy()
        d.ctrl[self._act_xyz] = home
        d.ctrl[self._act_fingers] = FINGER_MAX_OPENING
        self._yaw_target = 0.0
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=2 * self.config.n_substeps)  # let contacts settle
        self._initial_object_pos = self._object_positions().copy()

    def _episode_constant_state(self) -> np.ndarray:
        """Object identities, task encoding: constant within an episode."""
        n, layout, spec = self.config.n_objects, self.layout, self.spec_
        colors = np.zeros((n, len(COLORS)), np.float32)
        shapes = np.zeros((n, len(SHAPES)), np.float32)
        for i in range(n):
            colors[i, list(COLORS).index(layout.colors[i])] = 1.0
            shapes[i, SHAPES.index(layout.shapes[i])] = 1.0
        task = np.zeros(2 * n + len(tasks.FAMILIES), np.float32)
        task[spec.object_slot] = 1.0
        if spec.target_slot is not None:
            task[n + spec.target_slot] = 1.0
        task[2 * n + tasks.FAMILIES.index(spec.family)] = 1.0
        self._instruction_tokens = encode_instruction(spec.instruction)
        return np.concatenate([colors, shapes], axis=1), task

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
        a = np.minimum(np.maximum(a, -1.0), 1.0)
        self._apply_action(a)
        time_before = self.data.time
        mujoco.mj_step(self.model, self.data, nstep=self.config.n_substeps)
        self._elapsed += 1
        error = self._physics_error(time_before)
        if error is not None:
            logger.warning("physics became unstable: %s; truncating the episode", error)
            info = self._info(success=False)
            info["physics_error"] = error
            return self._last_obs, 0.0, False, True, info
        state = self.scene_state()
        success = tasks.is_success(self.spec_, state)
        if self.config.reward_type == "sparse":
            reward = float(success)
        else:
            reward = 1.0 if success else tasks.dense_reward(self.spec_, state)
        obs = self._observation()
        self._last_obs = obs
        terminated = success and self.config.terminate_on_success
        truncated = self._elapsed >= self._horizon and not terminated
        return obs, reward, terminated, truncated, self._info(success)

    def _apply_action(self, a: np.ndarray) -> None:
        d = self.data
        ee = d.qpos[self._ee_qpos : self._ee_qpos + 3]
        target = np.minimum(
            np.maximum(self._target + a[:3] * self.config.max_delta_m, self._ws_low), self._ws_high
        )
        lag = target - ee
        dist = math.sqrt(lag[0] * lag[0] + lag[1] * lag[1] + lag[2] * lag[2])
        if dist > _MAX_TARGET_LAG_M:  # blocked (e.g. pressing on the table): do not wind up
            target = ee + lag * (_MAX_TARGET_LAG_M / dist)
        self._target = target
        d.ctrl[self._act_xyz] = target
        if self._act_yaw is not None:
            self._yaw_target = min(max(self._yaw_target + float(a[3]) * 0.1, -math.pi), math.pi)
            d.ctrl[self._act_yaw] = self._yaw_target
        d.ctrl[self._act_fingers] = FINGER_MAX_OPENING * 0.5 * (1.0 - float(a[-1]))

    def _count_unstable_warnings(self) -> int:
        return sum(int(self.data.warning[w].number) for w in _UNSTABLE_WARNINGS)

    def _physics_error(self, time_before: float) -> str | None:
        # On divergence MuJoCo warns and calls mj_resetData, which rewinds data.time:
        # comparing clocks is a cheap test; the warning counters say which check fired.
        expected = time_before + 0.5 * self.config.n_substeps * self.model.opt.timestep
        if self.data.time < expected:
            count = self._count_unstable_warnings()
            self._warnings_seen = count
            return (
                "MuJoCo reported an unstable simulation (bad qpos/qvel/qacc, "
                f"{count} warnings so far) and reset its state"
            )
        if not np.isfinite(self.data.qpos).all():
            return "simulation state contains NaN or inf"
        return None

    # ------------------------------------------------------------------ observations
    def _object_positions(self) -> np.ndarray:
        return self.data.qpos[self._obj_pos_index]  # (n_objects, 3), a copy

    def scene_state(self) -> tasks.SceneState:
        """Privileged simulator state, as used by success checks and scripted experts."""
        q = self.data.qpos
        return tasks.SceneState(
            ee_pos=q[self._ee_qpos : self._ee_qpos + 3].copy(),
            finger_opening=float(q[self._finger_qpos]),
            object_pos=self._object_positions(),
            initial_object_pos=self._initial_object_pos,
            bowl_pos=self.data.xpos[self._bowl_body].copy(),
            plate_pos=self.data.xpos[self._plate_body].copy(),
        )

    def _proprio(self) -> np.ndarray:
        q, v = self.data.qpos, self.data.qvel
        parts = [
            q[self._ee_qpos : self._ee_qpos + 3],
            v[self._ee_qvel : self._ee_qvel + 3],
            q[self._finger_qpos : self._finger_qpos + 1],
        ]
        if self._yaw_qpos is not None:
            yaw = q[self._yaw_qpos]
            parts.append(np.array([math.sin(yaw), math.cos(yaw)]))
        return np.concatenate(parts).astype(np.float32)

    def _state(self, proprio: np.ndarray) -> np.ndarray:
        q = self.data.qpos
        identities, task = self._static_state
        poses = q[self._obj_pose_index]
        fixtures = np.concatenate(
            [self.data.xpos[self._bowl_body], self.data.xpos[self._plate_body]]
        )
        goal = tasks.goal_position(self.spec_, self.scene_state())
        n = self.config.n_objects
        return np.concatenate(
            [
                proprio,
                np.concatenate([poses, identities], axis=1).ravel(),
                fixtures,
                task[: 2 * n],
                goal,
                task[2 * n :],
            ]
        ).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        cfg, obs = self.config, {}
        proprio = self._proprio()
        if cfg.obs_mode != "rgb":
            obs["state"] = self._state(proprio)
        if cfg.obs_mode != "state":
            for key, cam in zip(self._image_keys, self._camera_ids, strict=True):
                obs[key] = self._obs_renderer.render(self.data, cam)
            obs["proprio"] = proprio
        if cfg.instruction_mode == "text":
            obs["instruction"] = self.spec_.instruction
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

    # ------------------------------------------------------------------ rendering
    def render(self) -> np.ndarray | None:
        """An RGB frame from the first camera at ``render_size`` (for videos)."""
        if self.render_mode is None:
            return None
        if self._video_renderer is None:
            h, w = self.config.render_size
            self._video_renderer = FastRenderer(
                self.model, h, w, self.config.render_quality, (HIDDEN_GROUP,)
            )
        return self._video_renderer.render(self.data, self._camera_ids[0])

    def close(self) -> None:
        for renderer in (self._obs_renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._obs_renderer = self._video_renderer = None
        super().close()
