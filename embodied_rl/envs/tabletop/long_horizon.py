"""Long-horizon tabletop tasks: two skills in one scene, done in order ("put the red block in
the bowl, then stack the blue cylinder on the green block"), and the rule-based planner that
splits such an instruction back into the skills the policies know.

:class:`LongHorizonTabletop` wraps any tabletop environment (MuJoCo or PyBullet, any
randomization). Each episode draws a *composition* (a first and a second task family) and
two tasks on the scene the wrapped environment drew, on different objects. The observation's
``instruction`` is the whole ``"<first>, then <second>"``; the task encoding inside
``state`` and the simulator's task (``env.unwrapped.spec_``, which the scripted experts read)
are the *current* step's. With ``task_encoding="episode"`` the ``state`` instead carries both
steps' states from the episode's start, constant in what they name, so a flat policy is told
the whole task but not which step it is on (the "policy given the whole instruction" baseline
of a planner over skills). A step is done when its own success test holds; the episode
succeeds when both are done in order, and the horizon is the sum of the two families'.

Splits are over compositions (RT-1's seen/unseen protocol one level up): a held-out set of
(first, second) family pairs never appears in ``split="seen"``; every family appears in the
seen compositions in both positions, so unseen episodes test new orders of known skills.
Objects are any combination.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied_rl.envs.tabletop import tasks

# pick leaves its object in the air, which no next step can build on
FIRST_FAMILIES: tuple[str, ...] = ("push", "push_next_to", "place", "stack")
SECOND_FAMILIES: tuple[str, ...] = tasks.FAMILIES
JOINER = ", then "
TASK_ENCODINGS: tuple[str, ...] = ("step", "episode")
_SPLIT_PATTERN = re.compile(r",?\s+(?:and\s+)?then\s+")


def composition_is_unseen(first: str, second: str) -> bool:
    """Whether the (first, second) family pair is held out (a fixed arithmetic rule, about a
    quarter of the pairs)."""
    i, j = tasks.FAMILIES.index(first), tasks.FAMILIES.index(second)
    return (i + 2 * j) % 4 == 1


def compositions(split: str) -> list[tuple[str, str]]:
    """The (first, second) family pairs of ``split`` (``"seen"``, ``"unseen"`` or ``"all"``)."""
    if split not in tasks.SPLITS:
        raise ValueError(f"split={split!r}; choose one of {tasks.SPLITS}")
    pairs = [(a, b) for a in FIRST_FAMILIES for b in SECOND_FAMILIES]
    if split == "all":
        return pairs
    return [p for p in pairs if composition_is_unseen(*p) == (split == "unseen")]


def decompose(instruction: str) -> list[str]:
    """The rule-based planner: a long instruction's skill instructions, in order
    (``"A, then B"``, ``"A and then B"``, ``"first A, then B"``)."""
    text = instruction.strip()
    if text.lower().startswith("first "):
        text = text[len("first ") :]
    steps = [s.strip() for s in _SPLIT_PATTERN.split(text) if s.strip()]
    if not steps:
        raise ValueError(f"instruction {instruction!r} names no step")
    return steps


def canonical_instruction(spec: tasks.TaskSpec, layout: tasks.Layout) -> str:
    """``spec``'s task in its family's first phrasing: the skill names a planner emits."""
    return tasks.task_spec(
        layout, spec.family, spec.object_slot, spec.target_slot, spec.direction, spec.fixture
    ).instruction


def skill_candidates(layout: tasks.Layout) -> list[str]:
    """Every single-skill task on ``layout`` in its first phrasing (a planner's options):
    reach, pick, push (4 directions), place (bowl, plate) per object; push next to and stack
    per ordered pair of objects."""
    return list(skill_specs(layout))


def skill_specs(layout: tasks.Layout) -> dict[str, tasks.TaskSpec]:
    """:func:`skill_candidates` with the task each names (what an executor does)."""
    n = len(layout.colors)
    out = {}
    for family in tasks.FAMILIES:
        for slot in range(n):
            targets = (
                [t for t in range(n) if t != slot]
                if family in ("push_next_to", "stack")
                else [None]
            )
            for target in targets:
                for direction in tasks.DIRECTIONS if family == "push" else [None]:
                    for fixture in tasks.FIXTURES if family == "place" else [None]:
                        spec = tasks.task_spec(layout, family, slot, target, direction, fixture)
                        out[spec.instruction] = spec
    return out


def _slots(spec: tasks.TaskSpec) -> tuple[int, ...]:
    return (spec.object_slot,) if spec.target_slot is None else (spec.object_slot, spec.target_slot)


class LongHorizonTabletop(gym.Wrapper):
    """Two tabletop skills in order in one scene (see the module docstring).

    ``info`` adds ``step_instruction`` (the current step's), ``steps_completed``, ``n_steps``,
    ``composition`` and ``step_success`` (the step that just finished); ``success`` is the
    whole task's. Rewards: sparse, 1 when the last step is done; dense, the fraction of steps
    done plus the wrapped environment's shaped progress on the current step over the number
    of steps.

    ``task_encoding``: ``"step"`` (default), the state encodes the current step's task (what a
    skill policy reads; the environment tells it when a step is done); ``"episode"``, the state
    is the concatenation of the wrapped environment's state for the first step and for the
    second, both with goals counted from the episode's start: twice the wrapped state's size,
    the same task features all episode (needs a ``state`` observation)."""

    def __init__(self, env: gym.Env, split: str = "seen", task_encoding: str = "step") -> None:
        super().__init__(env)
        from embodied_rl.envs.tabletop.base import TabletopEnvBase

        base = env.unwrapped
        if not isinstance(base, TabletopEnvBase):
            raise TypeError(f"LongHorizonTabletop wraps a tabletop environment, not {type(base)}")
        if base.config.n_objects < 3:
            raise ValueError(
                f"n_objects={base.config.n_objects}: two steps on different objects need >= 3"
            )
        if base.config.instruction_mode == "tokens":
            raise ValueError(
                "long instructions exceed the word-id encoding's 24 tokens: make the "
                "environment with instruction_mode='text' (or 'none')"
            )
        if task_encoding not in TASK_ENCODINGS:
            raise ValueError(f"task_encoding={task_encoding!r}; choose one of {TASK_ENCODINGS}")
        if task_encoding == "episode":
            if "state" not in base.observation_space.spaces:
                raise ValueError(
                    f"task_encoding='episode' builds on the state observation; the environment "
                    f"has obs_mode={base.config.obs_mode!r} (use 'state' or 'rgb+state')"
                )
            single = base.observation_space["state"]
            whole = spaces.Box(-np.inf, np.inf, shape=(2 * single.shape[0],), dtype=np.float32)
            self.observation_space = spaces.Dict({**base.observation_space.spaces, "state": whole})
        self.task_encoding = task_encoding
        self.pairs = compositions(split)
        self.split = split
        self._start: np.ndarray | None = None
        self.specs: list[tasks.TaskSpec] = []
        self.instruction = ""
        self.completed = 0

    @property
    def base(self):
        return self.env.unwrapped

    @property
    def canonical_steps(self) -> list[str]:
        """The episode's steps in their families' first phrasing (a planner's targets)."""
        return [canonical_instruction(s, self.layout) for s in self.specs]

    @property
    def step_instructions(self) -> list[str]:
        """The skill instructions of the current episode, in order."""
        return [s.instruction for s in self.specs]

    def _activate(self, index: int) -> None:
        """Make step ``index`` the simulator's task; its goals start from the scene as is."""
        base = self.base
        base.spec_ = self.specs[index]
        base._initial_object_pos = base._sim_object_poses()[:, :3].copy()
        base._static_state = base._episode_constant_state()

    def _observation(self) -> Any:
        base = self.base
        obs = base._observation()
        base._last_obs = obs
        if isinstance(obs, dict) and "instruction" in obs:
            obs["instruction"] = self.instruction
        if self.task_encoding == "episode":
            scene = dataclasses.replace(base.scene_state(), initial_object_pos=self._start)
            proprio = base._proprio()
            obs["state"] = np.concatenate([base._state(proprio, scene, s) for s in self.specs])
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        base = self.base
        for attempt in range(100):
            _, info = self.env.reset(seed=seed if attempt == 0 else None, options=options)
            rng = base.np_random
            first, second = self.pairs[int(rng.integers(len(self.pairs)))]
            one = tasks.sample_spec_on_layout(rng, base.layout, first)
            two = one and tasks.sample_spec_on_layout(
                rng, base.layout, second, _slots(one), exclude_fixture=one.fixture
            )
            if one is not None and two is not None:
                break
        else:
            raise RuntimeError("could not draw a feasible two-step task in 100 scenes")
        self.specs = [one, two]
        self.layout = base.layout
        self.composition = (first, second)
        self.instruction = JOINER.join(self.step_instructions)
        self.completed = 0
        base._horizon = base.config.horizon or sum(tasks.HORIZONS[f] for f in self.composition)
        self._activate(0)
        self._start = base._initial_object_pos.copy()
        return self._observation(), self._info(info, False, False)

    def _info(self, info: dict[str, Any], success: bool, step_success: bool) -> dict[str, Any]:
        return {
            **info,
            "success": success,
            "is_success": success,
            "step_success": step_success,
            "instruction": self.instruction,
            "step_instruction": self.specs[min(self.completed, len(self.specs) - 1)].instruction,
            "steps_completed": self.completed,
            "n_steps": len(self.specs),
            "composition": "+".join(self.composition),
            "task": "long_horizon",
            "unseen": composition_is_unseen(*self.composition),
        }

    def step(self, action):
        if not self.specs:
            raise RuntimeError("call reset() before step()")
        _, reward, _, truncated, info = self.env.step(action)
        step_success = bool(info["success"])
        if step_success:
            self.completed += 1
            if self.completed < len(self.specs):
                self._activate(self.completed)
        success = self.completed == len(self.specs)
        obs = self._observation()  # the current step's task encoding
        if self.base.config.reward_type == "sparse":
            reward = float(success)
        else:
            progress = 0.0 if step_success or success else float(reward)
            reward = (self.completed + progress) / len(self.specs)
        terminated = success and self.base.config.terminate_on_success
        truncated = bool(truncated or info.get("physics_error")) and not terminated
        if self.completed < len(self.specs) and not truncated:
            truncated = self.base._elapsed >= self.base._horizon
        return obs, reward, terminated, truncated, self._info(info, success, step_success)
