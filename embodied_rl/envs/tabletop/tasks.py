"""Tabletop task families: episode sampling, seen/unseen splits, success and rewards.

Six families: ``reach``, ``push`` (to the left/right/front/back), ``push_next_to``,
``pick``, ``place`` (in the bowl / on the plate) and ``stack``. An episode draws a
layout (colours, shapes, poses of the objects and fixtures) and a :class:`TaskSpec`
(which object, which target, which phrasing).

Splits follow RT-1's seen/unseen protocol: each (family, colour, shape) combination of
the manipulated object is either *seen* (for training) or *unseen* (held out). Every
colour and every shape appears in the seen set of every family, so unseen episodes
test new *combinations* of skills and objects, not new words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embodied_rl.envs.instructions import FIXTURE_PHRASES, TEMPLATES
from embodied_rl.envs.tabletop.scene import (
    BOWL_INNER_HALF,
    COLORS,
    OBJECT_HALF_SIZE,
    PLATE_RADIUS,
    SHAPES,
)

FAMILIES: tuple[str, ...] = ("reach", "push", "push_next_to", "pick", "place", "stack")
SPLITS: tuple[str, ...] = ("seen", "unseen", "all")
HORIZONS: dict[str, int] = {
    "reach": 50,
    "push": 100,
    "push_next_to": 120,
    "pick": 80,
    "place": 150,
    "stack": 150,
}
# Unit vectors in the table frame, as seen from the front camera.
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "front": (0.0, -1.0),
    "back": (0.0, 1.0),
}
FIXTURES: tuple[str, ...] = ("bowl", "plate")

PUSH_DISTANCE = 0.10  # m the object must travel along the asked direction
PUSH_MAX_LATERAL = 0.06  # m of sideways drift allowed during a push
NEXT_TO_DISTANCE = 0.075  # m between centres for "next to"
LIFT_HEIGHT = 0.06  # m above the resting height for "pick up"
REACH_DISTANCE = 0.03  # m between the fingertips and the top of the object
STACK_XY_TOLERANCE = 0.02  # m
RELEASED_OPENING = 0.025  # m per finger: the gripper has let go of the object

_OBJECT_X = (-0.2, 0.2)
_OBJECT_Y = (-0.12, 0.15)
_MIN_OBJECT_GAP = 0.075
_MIN_FIXTURE_GAP = 0.125
_PATH_CLEARANCE = 0.065


def is_unseen(family: str, color: str, shape: str) -> bool:
    """Whether the (family, colour, shape) combination is held out as *unseen*.

    A fixed arithmetic rule (about 30% held out per family) that never holds out both
    shapes of one colour, so each colour and shape stays seen within each family.
    """
    f, c, s = FAMILIES.index(family), list(COLORS).index(color), SHAPES.index(shape)
    return (f + c + 3 * s) % 4 == 0


def combinations(family: str, split: str) -> list[tuple[str, str]]:
    """The (colour, shape) combinations of the manipulated object allowed in ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; choose one of {SPLITS}")
    combos = [(c, s) for c in COLORS for s in SHAPES]
    if split == "all":
        return combos
    return [combo for combo in combos if is_unseen(family, *combo) == (split == "unseen")]


@dataclass(frozen=True)
class Layout:
    """Per-episode scene content; slot ``i`` holds ``colors[i] shapes[i]``."""

    colors: tuple[str, ...]
    shapes: tuple[str, ...]
    positions: np.ndarray  # (n_objects, 2) xy on the table
    yaws: np.ndarray  # (n_objects,) rad
    bowl_xy: np.ndarray  # (2,)
    plate_xy: np.ndarray  # (2,)

    def name(self, slot: int) -> str:
        return f"{self.colors[slot]} {self.shapes[slot]}"


@dataclass(frozen=True)
class TaskSpec:
    """What the episode asks for, in symbols and in words."""

    family: str
    object_slot: int
    instruction: str
    target_slot: int | None = None  # push_next_to, stack
    direction: str | None = None  # push
    fixture: str | None = None  # place
    template_index: int = 0
    unseen: bool = False


def _sample_positions(
    rng: np.random.Generator, n: int, fixtures: list[np.ndarray]
) -> np.ndarray | None:
    positions: list[np.ndarray] = []
    for _ in range(n):
        for _attempt in range(200):
            p = rng.uniform((_OBJECT_X[0], _OBJECT_Y[0]), (_OBJECT_X[1], _OBJECT_Y[1]))
            if all(np.linalg.norm(p - q) >= _MIN_OBJECT_GAP for q in positions) and all(
                np.linalg.norm(p - f) >= _MIN_FIXTURE_GAP for f in fixtures
            ):
                positions.append(p)
                break
        else:
            return None
    return np.asarray(positions)


def _segment_clear(a: np.ndarray, b: np.ndarray, obstacles: list[np.ndarray]) -> bool:
    """True when every obstacle lies at least ``_PATH_CLEARANCE`` from segment a-b."""
    ab = b - a
    length2 = float(ab @ ab) or 1e-12
    for o in obstacles:
        t = np.clip((o - a) @ ab / length2, 0.0, 1.0)
        if np.linalg.norm(a + t * ab - o) < _PATH_CLEARANCE:
            return False
    return True


def sample_layout(rng: np.random.Generator, n_objects: int) -> Layout:
    """Draw colours (all distinct), shapes and non-overlapping poses."""
    side = rng.choice([-1.0, 1.0])
    bowl = np.array([side * rng.uniform(0.13, 0.22), rng.uniform(0.1, 0.18)])
    plate = np.array([-side * rng.uniform(0.13, 0.22), rng.uniform(0.1, 0.18)])
    while (positions := _sample_positions(rng, n_objects, [bowl, plate])) is None:
        pass
    colors = tuple(str(c) for c in rng.choice(list(COLORS), size=n_objects, replace=False))
    shapes = tuple(str(s) for s in rng.choice(SHAPES, size=n_objects))
    yaws = rng.uniform(-math.pi / 4, math.pi / 4, size=n_objects)
    return Layout(colors, shapes, positions, yaws, bowl, plate)


def _path_is_clear(spec: TaskSpec, layout: Layout) -> bool:
    """Pushes need a free corridor; otherwise the layout is redrawn."""
    start = layout.positions[spec.object_slot]
    others = [p for i, p in enumerate(layout.positions) if i != spec.object_slot]
    fixtures = [layout.bowl_xy, layout.plate_xy]
    if spec.family == "push":
        direction = np.asarray(DIRECTIONS[spec.direction])
        end = start + (PUSH_DISTANCE + 0.04) * direction
        lo, hi = np.array([-0.3, -0.22]), np.array([0.3, 0.25])
        inside = bool(np.all(end >= lo) and np.all(end <= hi))
        # The corridor starts behind the object, where the gripper lowers to push.
        return inside and _segment_clear(start - 0.06 * direction, end, others + fixtures)
    if spec.family == "push_next_to":
        target = layout.positions[spec.target_slot]
        obstacles = [
            p
            for i, p in enumerate(layout.positions)
            if i not in (spec.object_slot, spec.target_slot)
        ]
        behind = start - 0.06 * (target - start) / max(np.linalg.norm(target - start), 1e-9)
        return _segment_clear(behind, target, obstacles + fixtures)
    return True


def task_spec(
    layout: Layout,
    family: str,
    slot: int,
    target: int | None = None,
    direction: str | None = None,
    fixture: str | None = None,
    template_index: int = 0,
) -> TaskSpec:
    """The task of ``family`` on ``slot`` (and ``target``, ``direction``, ``fixture``) of
    ``layout``, phrased with template ``template_index``."""
    fill = {
        "obj": layout.name(slot),
        "target": layout.name(target) if target is not None else "",
        "direction": direction or "",
        "fixture": FIXTURE_PHRASES[fixture] if fixture else "",
    }
    return TaskSpec(
        family=family,
        object_slot=slot,
        instruction=TEMPLATES[family][template_index].format(**fill),
        target_slot=target,
        direction=direction,
        fixture=fixture,
        template_index=template_index,
        unseen=is_unseen(family, layout.colors[slot], layout.shapes[slot]),
    )


def _draw_task(
    rng: np.random.Generator,
    layout: Layout,
    family: str,
    slot: int,
    target: int | None,
    fixtures: tuple[str, ...],
) -> TaskSpec:
    """The rest of a task on ``slot`` (and ``target``), drawn in this order: a push's
    direction, a place's fixture, the phrasing."""
    direction = str(rng.choice(list(DIRECTIONS))) if family == "push" else None
    fixture = str(rng.choice(fixtures)) if family == "place" else None
    template_index = int(rng.integers(len(TEMPLATES[family])))
    return task_spec(layout, family, slot, target, direction, fixture, template_index)


def sample_episode(
    rng: np.random.Generator, family: str, split: str, n_objects: int
) -> tuple[Layout, TaskSpec]:
    """Draw a layout and a task of ``family`` whose object combination is in ``split``."""
    if family not in FAMILIES:
        raise ValueError(f"task family {family!r}; choose one of {FAMILIES}")
    needs_target = family in ("push_next_to", "stack")
    if needs_target and n_objects < 2:
        raise ValueError(f"family {family!r} needs n_objects >= 2, got {n_objects}")
    allowed = combinations(family, split)
    for _attempt in range(1000):
        layout = sample_layout(rng, n_objects)
        color, shape = allowed[rng.integers(len(allowed))]
        slot = int(rng.integers(n_objects))
        # Give the drawn combination to the manipulated slot; colours stay distinct.
        colors, shapes = list(layout.colors), list(layout.shapes)
        if color in colors:
            colors[colors.index(color)] = colors[slot]
        colors[slot], shapes[slot] = color, shape
        layout = Layout(
            tuple(colors),
            tuple(shapes),
            layout.positions,
            layout.yaws,
            layout.bowl_xy,
            layout.plate_xy,
        )
        target = None
        if needs_target:
            target = int(rng.choice([i for i in range(n_objects) if i != slot]))
        spec = _draw_task(rng, layout, family, slot, target, FIXTURES)
        if _path_is_clear(spec, layout):
            return layout, spec
    raise RuntimeError(f"could not sample a feasible {family!r} episode in 1000 attempts")


def sample_spec_on_layout(
    rng: np.random.Generator,
    layout: Layout,
    family: str,
    exclude_slots: tuple[int, ...] = (),
    attempts: int = 100,
    exclude_fixture: str | None = None,
) -> TaskSpec | None:
    """A task of ``family`` on an existing ``layout`` (the next step of a long-horizon task),
    its object and target drawn among the slots not in ``exclude_slots``; ``unseen`` says
    whether the object's combination is held out for the family; a place never targets
    ``exclude_fixture`` (taken by an earlier step). None when no draw in ``attempts`` is
    feasible (a push without a free corridor, too few free objects)."""
    if family not in FAMILIES:
        raise ValueError(f"task family {family!r}; choose one of {FAMILIES}")
    free = [i for i in range(len(layout.colors)) if i not in exclude_slots]
    needs_target = family in ("push_next_to", "stack")
    if len(free) < (2 if needs_target else 1):
        return None
    for _attempt in range(attempts):
        slot = int(rng.choice(free))
        target = int(rng.choice([i for i in free if i != slot])) if needs_target else None
        fixtures = tuple(f for f in FIXTURES if f != exclude_fixture)
        spec = _draw_task(rng, layout, family, slot, target, fixtures)
        if _path_is_clear(spec, layout):
            return spec
    return None


@dataclass
class SceneState:
    """The privileged quantities success and reward are computed from."""

    ee_pos: np.ndarray  # (3,)
    finger_opening: float  # m per finger
    object_pos: np.ndarray  # (n_objects, 3)
    initial_object_pos: np.ndarray  # (n_objects, 3) at the start of the episode
    bowl_pos: np.ndarray  # (3,)
    plate_pos: np.ndarray  # (3,)
    object_half_size: float = OBJECT_HALF_SIZE  # m, under domain randomization of size


def goal_position(spec: TaskSpec, s: SceneState) -> np.ndarray:
    """Where the task wants the manipulated object (or, for reach, the fingertips)."""
    obj = s.object_pos[spec.object_slot]
    if spec.family == "reach":
        return obj + np.array([0.0, 0.0, s.object_half_size])
    if spec.family == "push":
        d = np.asarray(DIRECTIONS[spec.direction])
        start = s.initial_object_pos[spec.object_slot]
        return start + np.array([*(PUSH_DISTANCE + 0.02) * d, 0.0])
    if spec.family == "push_next_to":
        return s.object_pos[spec.target_slot].copy()
    if spec.family == "pick":
        return s.initial_object_pos[spec.object_slot] + np.array([0.0, 0.0, LIFT_HEIGHT + 0.02])
    if spec.family == "place":
        base = s.bowl_pos if spec.fixture == "bowl" else s.plate_pos
        return base + np.array([0.0, 0.0, s.object_half_size + 0.006])
    if spec.family == "stack":
        return s.object_pos[spec.target_slot] + np.array([0.0, 0.0, 2 * s.object_half_size])
    raise ValueError(spec.family)


def is_success(spec: TaskSpec, s: SceneState) -> bool:
    """Whether the scene satisfies the instruction."""
    obj = s.object_pos[spec.object_slot]
    resting = obj[2] < s.object_half_size + 0.015
    if spec.family == "reach":
        return bool(np.linalg.norm(s.ee_pos - goal_position(spec, s)) < REACH_DISTANCE)
    if spec.family == "push":
        d = np.asarray(DIRECTIONS[spec.direction])
        moved = obj[:2] - s.initial_object_pos[spec.object_slot, :2]
        along, lateral = float(moved @ d), abs(float(moved[0] * d[1] - moved[1] * d[0]))
        return bool(resting and along >= PUSH_DISTANCE and lateral <= PUSH_MAX_LATERAL)
    if spec.family == "push_next_to":
        gap = np.linalg.norm(obj[:2] - s.object_pos[spec.target_slot, :2])
        return bool(resting and gap <= NEXT_TO_DISTANCE)
    if spec.family == "pick":
        return bool(obj[2] >= s.initial_object_pos[spec.object_slot, 2] + LIFT_HEIGHT)
    released = s.finger_opening >= RELEASED_OPENING
    if spec.family == "place":
        if spec.fixture == "bowl":
            offset = np.abs(obj[:2] - s.bowl_pos[:2])
            inside = bool(np.all(offset <= BOWL_INNER_HALF - 0.5 * s.object_half_size))
        else:
            inside = bool(np.linalg.norm(obj[:2] - s.plate_pos[:2]) <= PLATE_RADIUS)
        return inside and obj[2] < s.object_half_size + 0.02 and released
    if spec.family == "stack":
        below = s.object_pos[spec.target_slot]
        aligned = np.linalg.norm(obj[:2] - below[:2]) <= STACK_XY_TOLERANCE
        on_top = abs(obj[2] - below[2] - 2 * s.object_half_size) <= 0.01
        return bool(aligned and on_top and released)
    raise ValueError(spec.family)


def _closeness(distance: float, scale: float = 10.0) -> float:
    return 1.0 - math.tanh(scale * distance)


def dense_reward(spec: TaskSpec, s: SceneState) -> float:
    """Shaped progress in [0, 1): approach the object, then move it to the goal."""
    obj = s.object_pos[spec.object_slot]
    goal = goal_position(spec, s)
    if spec.family == "reach":
        return 0.99 * _closeness(float(np.linalg.norm(s.ee_pos - goal)))
    approach = _closeness(float(np.linalg.norm(s.ee_pos - obj)))
    if spec.family in ("push", "push_next_to"):
        progress = _closeness(float(np.linalg.norm(obj[:2] - goal[:2])), 5.0)
    else:
        progress = _closeness(float(np.linalg.norm(obj - goal)), 5.0)
    return 0.99 * (0.3 * approach + 0.7 * progress)
