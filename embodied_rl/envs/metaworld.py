"""Meta-World v3 adapter: the 50 tasks with our observation modes, instructions and experts.

``make("metaworld/pick-place-v3", obs_mode="rgb", ...)`` wraps Meta-World's task class
with goal-observable state (39-D), a seeded random goal per episode, an instruction
string, image observations rendered with CPU-friendly settings, and Meta-World's own
scripted policies as experts.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied_rl.envs.instructions import (
    METAWORLD_INSTRUCTIONS,
    encode_instruction,
    instruction_space,
)
from embodied_rl.envs.rendering import RENDER_QUALITIES, FastRenderer
from embodied_rl.envs.tabletop.base import INSTRUCTION_MODES, OBS_MODES, as_image_size

logger = logging.getLogger(__name__)

_POLICY_ALIASES = {"peg-insertion-side-v3": "peg-insert-side-v3"}


def metaworld_tasks() -> tuple[str, ...]:
    """All Meta-World v3 task names, e.g. ``"pick-place-v3"``."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


def task_set(name: str) -> tuple[str, ...]:
    """The task names of a Meta-World multi-task benchmark: ``"MT10"``, ``"MT25"`` or ``"MT50"``."""
    from metaworld import env_dict

    sets = {"MT10": env_dict.MT10_V3, "MT25": env_dict.MT25_V3, "MT50": env_dict.MT50_V3}
    if name not in sets:
        raise ValueError(f"task set {name!r}; choose one of {sorted(sets)}")
    return tuple(sets[name])


def _policy_classes() -> dict[str, type]:
    """Map task name -> Meta-World scripted policy class, from the classes' names."""
    import metaworld.policies as policies

    mapping = {}
    for cls_name in dir(policies):
        match = re.fullmatch(r"Sawyer(\w+)V3Policy", cls_name)
        if match:
            task = re.sub(r"(?<!^)(?=[A-Z])", "-", match.group(1)).lower() + "-v3"
            mapping[_POLICY_ALIASES.get(task, task)] = getattr(policies, cls_name)
    return mapping


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task behind the toolkit's observation and instruction options.

    Observations: ``state`` (Meta-World's 39-D goal-observable vector, float32), ``image``
    and ``proprio`` (hand position and gripper opening, 4-D), ``instruction``. Actions:
    Meta-World's 4-D Box (xyz delta, gripper). Reward: sparse success by default, or
    Meta-World's shaped reward (``reward_type="dense"``, in [0, 10]).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        *,
        obs_mode: str = "state",
        image_size: int | tuple[int, int] = 64,
        camera: str = "corner",
        instruction_mode: str = "text",
        reward_type: str = "sparse",
        horizon: int | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        render_size: int | tuple[int, int] = 256,
        render_quality: str = "fast",
        seed: int | None = None,
    ) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task {task!r}; see metaworld_tasks()")
        for name, value, allowed in (
            ("obs_mode", obs_mode, OBS_MODES),
            ("instruction_mode", instruction_mode, INSTRUCTION_MODES),
            ("reward_type", reward_type, ("sparse", "dense")),
            ("render_quality", render_quality, RENDER_QUALITIES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r}; choose one of {self.metadata['render_modes']}"
            )
        self.task = task
        self.instruction = METAWORLD_INSTRUCTIONS[task]
        self.obs_mode, self.instruction_mode, self.reward_type = (
            obs_mode,
            instruction_mode,
            reward_type,
        )
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        inner = ALL_V3_ENVIRONMENTS[task]()
        # Goal-observable, a fresh seeded goal every reset (as Meta-World's MT1 tasks).
        inner._partially_observable = False
        # The observation bounds are a cached property computed while the goal was hidden;
        # drop them or step() clips the goal to zeros (Meta-World's own goal-observable
        # classes do the same).
        inner.__dict__.pop("sawyer_observation_space", None)
        inner._freeze_rand_vec = False
        inner.seeded_rand_vec = True
        inner._set_task_called = True
        self.inner = inner
        self.horizon = horizon or inner.max_path_length
        if not 0 < self.horizon <= inner.max_path_length:
            raise ValueError(f"horizon={horizon} must lie in [1, {inner.max_path_length}]")
        cameras = [inner.model.camera(i).name for i in range(inner.model.ncam)]
        if camera not in cameras:
            raise ValueError(f"camera={camera!r}; Meta-World cameras are {cameras}")
        self._camera = inner.model.camera(camera).id
        self.image_size = as_image_size(image_size)
        self.render_size = as_image_size(render_size)
        self.render_quality = render_quality
        # made on first use: a GL context made here would be copied into forked vector-env
        # workers (and a throw-away env's closed context can hang their first render)
        self._obs_renderer: FastRenderer | None = None
        self._video_renderer: FastRenderer | None = None
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = self._make_observation_space()
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)
        self.last_raw_obs: np.ndarray | None = None
        self._elapsed = 0

    def _make_observation_space(self) -> spaces.Dict:
        obs: dict[str, spaces.Space] = {}
        if self.obs_mode != "rgb":
            obs["state"] = spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float32)
        if self.obs_mode != "state":
            obs["image"] = spaces.Box(0, 255, shape=(*self.image_size, 3), dtype=np.uint8)
            obs["proprio"] = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        if self.instruction_mode != "none":
            obs["instruction"] = instruction_space(self.instruction_mode)
        return spaces.Dict(obs)

    def _render_image(self, renderer: FastRenderer) -> np.ndarray:
        # Meta-World's cameras are mounted upside down relative to image convention.
        return np.ascontiguousarray(renderer.render(self.inner.data, self._camera)[::-1])

    def _observation(self, raw: np.ndarray) -> dict[str, Any]:
        self.last_raw_obs = raw
        obs: dict[str, Any] = {}
        if self.obs_mode != "rgb":
            obs["state"] = raw.astype(np.float32)
        if self.obs_mode != "state":
            if self._obs_renderer is None:
                self._obs_renderer = FastRenderer(
                    self.inner.model, *self.image_size, self.render_quality
                )
            obs["image"] = self._render_image(self._obs_renderer)
            obs["proprio"] = raw[:4].astype(np.float32)
        if self.instruction_mode == "text":
            obs["instruction"] = self.instruction
        elif self.instruction_mode == "tokens":
            obs["instruction"] = encode_instruction(self.instruction)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        super().reset(seed=seed)
        if seed is not None:
            self.inner.seed(seed)
        raw, _ = self.inner.reset()
        self._elapsed = 0
        self._last_obs = self._observation(raw)
        return self._last_obs, self._info(False)

    def step(self, action):
        if self.last_raw_obs is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (4,):
            raise ValueError(
                f"action has shape {a.shape}; Meta-World expects (4,) (dx, dy, dz, gripper)"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {a}")
        raw, shaped, _, _, inner_info = self.inner.step(np.clip(a, -1.0, 1.0))
        self._elapsed += 1
        if self.inner._did_see_sim_exception:
            info = self._info(False)
            info["physics_error"] = "MuJoCo raised an exception inside Meta-World's step"
            logger.warning("Meta-World simulation became unstable; truncating the episode")
            return self._last_obs, 0.0, False, True, info
        success = bool(inner_info["success"])
        reward = float(success) if self.reward_type == "sparse" else float(shaped)
        self._last_obs = self._observation(raw)
        terminated = success and self.terminate_on_success
        truncated = self._elapsed >= self.horizon and not terminated
        return self._last_obs, reward, terminated, truncated, self._info(success)

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "success": success,
            "is_success": success,
            "instruction": self.instruction,
            "task": self.task,
        }

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._video_renderer is None:
            self._video_renderer = FastRenderer(
                self.inner.model, *self.render_size, self.render_quality
            )
        return self._render_image(self._video_renderer)

    def close(self) -> None:
        for renderer in (self._obs_renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._obs_renderer = self._video_renderer = None
        self.inner.close()
        super().close()


class MetaWorldExpert:
    """Meta-World's own scripted policy for the task, behind the toolkit's expert interface."""

    def __init__(self, env: MetaWorldEnv, noise: float = 0.0, seed: int | None = None) -> None:
        if noise < 0:
            raise ValueError(f"noise={noise} must be >= 0")
        classes = _policy_classes()
        if env.task not in classes:
            raise ValueError(f"Meta-World ships no scripted policy for {env.task!r}")
        self.env, self.noise = env, noise
        self.policy = classes[env.task]()
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Meta-World's policies are stateless."""

    def act(self, obs=None) -> np.ndarray:
        if self.env.last_raw_obs is None:
            raise RuntimeError("reset the environment before asking the expert for an action")
        action = np.asarray(self.policy.get_action(self.env.last_raw_obs), dtype=np.float32)
        self.clean_action = np.clip(action, -1.0, 1.0)  # the DART label (see TabletopExpert)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=4).astype(np.float32)
        return np.clip(action, -1.0, 1.0)
