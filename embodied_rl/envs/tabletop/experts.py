"""Scripted experts for the tabletop families.

Each expert is a small closed-loop state machine over the privileged simulator state
(``env.scene_state()``): it recomputes its waypoint every step, so a pushed object that
drifts or a slipping grasp is corrected instead of replayed blindly.
"""

from __future__ import annotations

import numpy as np

from embodied_rl.envs.tabletop import tasks

CARRY_Z = 0.12  # m: fingertip height when moving over other objects
HOVER_Z = 0.07  # m: fingertip height when repositioning for a push
PUSH_Z = 0.012  # m: fingertip height while pushing
GRASP_DEPTH = 0.012  # m: fingertips this far below the object's centre when grasping
PUSHER_HALF_WIDTH = 0.012  # m: half width of the closed fingers
XY_TOLERANCE = 0.008  # m
CLOSE_STEPS = 6  # control steps to squeeze before lifting


class TabletopExpert:
    """Scripted expert for :class:`~embodied_rl.envs.tabletop.mujoco_env.TabletopEnv`.

    ``noise`` is the standard deviation of Gaussian noise added to each action (before
    clipping); 0 gives the nominal expert. ``gain`` is the fraction of the position error
    corrected per step. After each :meth:`act`, ``clean_action`` holds the noise-free action
    for the same state: the label of noise-injected demonstrations (DART, Laskey et al. 2017).
    """

    def __init__(
        self, env, noise: float = 0.0, seed: int | None = None, gain: float = 0.35
    ) -> None:
        if noise < 0:
            raise ValueError(f"noise={noise} must be >= 0")
        if not 0 < gain <= 1:
            raise ValueError(f"gain={gain} must lie in (0, 1]")
        self.gain = gain
        self.env = env
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self._episode: object | None = None
        self.task = None  # a TaskSpec to do instead of the environment's (follow())

    def follow(self, task) -> None:
        """Do ``task`` (a :class:`~embodied_rl.envs.tabletop.tasks.TaskSpec` on the current
        scene, e.g. a planner's chosen skill) instead of the environment's own; None goes
        back to the environment's."""
        self.task = task

    def _spec(self):
        return self.task if self.task is not None else self.env.spec_

    def reset(self) -> None:
        """Forget the phase of the previous task (also done automatically when it changes)."""
        self._episode = self._spec()
        self._phase = "approach"
        self._closed_steps = 0
        self._grasp_offset = np.zeros(3)

    def act(self, obs=None) -> np.ndarray:
        """The expert action for the current state of ``env`` (``obs`` is not needed)."""
        if self.env.spec_ is None:
            raise RuntimeError("reset the environment before asking the expert for an action")
        if self._episode is not self._spec():
            self.reset()
        s = self.env.scene_state()
        spec = self._spec()
        if spec.family == "reach":
            target, grip, speed = self._reach(spec, s)
        elif spec.family in ("push", "push_next_to"):
            target, grip, speed = self._push(spec, s)
        else:
            target, grip, speed = self._pick_and_place(spec, s)
        action = np.zeros(self.env.action_space.shape, dtype=np.float32)
        # A fraction of the remaining error per step, not all of it: a deadbeat controller
        # overshoots and oscillates as soon as actions arrive a step late (latency).
        step = self.gain * (target - s.ee_pos) / self.env.config.max_delta_m
        norm = float(np.linalg.norm(step))
        action[:3] = step * (speed / norm) if norm > speed else step
        action[-1] = grip
        self.clean_action = np.clip(action, -1.0, 1.0)
        if self.noise > 0:
            action += self.rng.normal(0.0, self.noise, size=action.shape).astype(np.float32)
        return np.clip(action, -1.0, 1.0)

    # ---------------------------------------------------------------- reach
    def _reach(self, spec, s):
        goal = tasks.goal_position(spec, s)
        if np.linalg.norm(goal[:2] - s.ee_pos[:2]) > 0.02:
            return np.array([goal[0], goal[1], max(s.ee_pos[2], HOVER_Z)]), -1.0, 1.0
        return goal + np.array([0.0, 0.0, 0.005]), -1.0, 1.0

    # ---------------------------------------------------------------- push
    def _push(self, spec, s):
        obj = s.object_pos[spec.object_slot]
        goal = tasks.goal_position(spec, s)
        u = goal[:2] - obj[:2]
        u /= max(np.linalg.norm(u), 1e-9)
        standoff = s.object_half_size * 1.42 + PUSHER_HALF_WIDTH + 0.006
        behind = obj[:2] - u * standoff
        rel = obj[:2] - s.ee_pos[:2]
        lateral = abs(rel[0] * u[1] - rel[1] * u[0])
        if self._phase == "pushing" and (lateral > 0.015 or rel @ u < 0.015):
            self._phase = "approach"  # lost the object: go around again
        if self._phase == "approach":
            if np.linalg.norm(s.ee_pos[:2] - behind) > XY_TOLERANCE:
                z = HOVER_Z if np.linalg.norm(s.ee_pos[:2] - behind) > 0.02 else s.ee_pos[2]
                if s.ee_pos[2] < HOVER_Z - 0.01 and np.linalg.norm(s.ee_pos[:2] - behind) > 0.02:
                    return np.array([*s.ee_pos[:2], HOVER_Z]), 1.0, 1.0  # rise before moving
                return np.array([*behind, z]), 1.0, 1.0
            if s.ee_pos[2] > PUSH_Z + 0.006:
                return np.array([*behind, PUSH_Z]), 1.0, 1.0
            self._phase = "pushing"
        through = obj[:2] + u * 0.03
        return np.array([*through, PUSH_Z]), 1.0, 0.45

    # ---------------------------------------------------------------- pick, place, stack
    def _pick_and_place(self, spec, s):
        obj = s.object_pos[spec.object_slot]
        if self._phase == "approach":
            if np.linalg.norm(obj[:2] - s.ee_pos[:2]) > XY_TOLERANCE:
                z = (
                    max(s.ee_pos[2], HOVER_Z)
                    if np.linalg.norm(obj[:2] - s.ee_pos[:2]) > 0.02
                    else s.ee_pos[2]
                )
                return np.array([obj[0], obj[1], z]), -1.0, 1.0
            grasp_z = obj[2] - GRASP_DEPTH
            if s.ee_pos[2] > grasp_z + 0.004:
                return np.array([obj[0], obj[1], grasp_z]), -1.0, 1.0
            self._phase, self._closed_steps = "close", 0
        if self._phase == "close":
            self._closed_steps += 1
            if self._closed_steps >= CLOSE_STEPS:
                self._phase = "lift"
                self._grasp_offset = obj - s.ee_pos
            return s.ee_pos.copy(), 1.0, 1.0
        if (
            self._phase in ("lift", "carry", "lower")
            and obj[2] < s.object_half_size + 0.005
            and (s.ee_pos[2] > obj[2] + 0.03 or np.linalg.norm(obj[:2] - s.ee_pos[:2]) > 0.03)
        ):
            self._phase = "approach"  # dropped it: start over
            return np.array([*s.ee_pos[:2], CARRY_Z]), -1.0, 1.0
        if spec.family == "pick":
            return np.array([*s.ee_pos[:2], CARRY_Z + 0.03]), 1.0, 1.0
        return self._carry_and_release(spec, s, obj)

    def _carry_and_release(self, spec, s, obj):
        if spec.family == "place":
            base = s.bowl_pos if spec.fixture == "bowl" else s.plate_pos
            drop = np.array([base[0], base[1], 0.006 + s.object_half_size + 0.012])
        else:
            below = s.object_pos[spec.target_slot]
            drop = below + np.array([0.0, 0.0, 2 * s.object_half_size + 0.006])
        # Where the fingertips must be for the held object to sit at `drop`.
        ee_goal = drop - self._grasp_offset
        if self._phase == "lift":
            if s.ee_pos[2] < CARRY_Z - 0.01:
                return np.array([*s.ee_pos[:2], CARRY_Z]), 1.0, 1.0
            self._phase = "carry"
        xy = s.ee_pos[:2] + (drop[:2] - obj[:2])  # moves the held object over `drop`
        if self._phase == "carry":
            if np.linalg.norm(obj[:2] - drop[:2]) > 0.006:
                return np.array([*xy, CARRY_Z]), 1.0, 1.0
            self._phase = "lower"
        if self._phase == "lower":
            if obj[2] > drop[2] + 0.004:
                return np.array([*xy, ee_goal[2]]), 1.0, 0.5
            self._phase = "release"
        if self._phase == "release" and s.finger_opening < tasks.RELEASED_OPENING + 0.005:
            return s.ee_pos.copy(), -1.0, 1.0
        self._phase = "retreat"
        return np.array([*s.ee_pos[:2], CARRY_Z]), -1.0, 1.0
