"""Questions about a tabletop scene, answered from the simulator's state: the vision-language
data RT-2 co-fine-tunes on beside robot data, generated instead of collected.

Every question has one correct short answer given the scene (ambiguous ones are not asked):
the colour of the only object of a shape, how many objects of a shape or colour there are,
which object is furthest left/right/front/back or closest to a fixture, whether one object
is left (or right, in front, behind) of another, and on which side of the plate the bowl is.
Directions are those of the instructions ("left" as seen from the front camera,
:data:`~embodied_rl.envs.tabletop.tasks.DIRECTIONS`); a relation is asked only when the
objects are at least ``margin`` apart along it, so that the image can decide it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embodied_rl.envs.tabletop.tasks import DIRECTIONS, FIXTURES, Layout, SceneState

QUESTION_KINDS = ("color", "count", "extreme", "closest", "relation", "fixtures")
NUMBERS = ("zero", "one", "two", "three", "four", "five")
_DIRECTION_WORDS = {"left": "left of", "right": "right of", "front": "in front of",
                    "back": "behind"}  # fmt: skip
_EXTREME_WORDS = {"left": "furthest to the left", "right": "furthest to the right",
                  "front": "closest to the camera", "back": "furthest from the camera"}  # fmt: skip


@dataclass(frozen=True)
class SceneQuestion:
    """A question about a scene, its answer, and which kind of question it is."""

    question: str
    answer: str
    kind: str


def scene_questions(layout: Layout, scene: SceneState, margin: float = 0.04) -> list[SceneQuestion]:
    """Every unambiguous question of :data:`QUESTION_KINDS` about the scene (positions from
    ``scene``, the objects' colours and shapes from ``layout``)."""
    if margin < 0:
        raise ValueError(f"margin={margin} m must be >= 0 (how far apart a relation must be)")
    xy = np.asarray(scene.object_pos)[:, :2]
    names = [layout.name(i) for i in range(len(layout.colors))]
    fixtures = {"bowl": np.asarray(scene.bowl_pos)[:2], "plate": np.asarray(scene.plate_pos)[:2]}
    out: list[SceneQuestion] = []
    for shape in sorted(set(layout.shapes)):
        slots = [i for i, s in enumerate(layout.shapes) if s == shape]
        if len(slots) == 1:
            out.append(SceneQuestion(f"what colour is the {shape}?", layout.colors[slots[0]],
                                     "color"))  # fmt: skip
        count = NUMBERS[min(len(slots), len(NUMBERS) - 1)]
        out.append(SceneQuestion(f"how many {shape}s are on the table?", count, "count"))
    for direction, (dx, dy) in DIRECTIONS.items():
        along = xy @ np.array([dx, dy])  # larger: further in that direction
        order = np.argsort(along)[::-1]
        if len(order) > 1 and along[order[0]] - along[order[1]] >= margin:
            out.append(SceneQuestion(f"which object is {_EXTREME_WORDS[direction]}?",
                                     f"the {names[order[0]]}", "extreme"))  # fmt: skip
    for fixture in FIXTURES:
        dist = np.linalg.norm(xy - fixtures[fixture], axis=1)
        order = np.argsort(dist)
        if len(order) == 1 or dist[order[1]] - dist[order[0]] >= margin:
            out.append(SceneQuestion(f"which object is closest to the {fixture}?",
                                     f"the {names[order[0]]}", "closest"))  # fmt: skip
    for a in range(len(names)):
        for b in range(len(names)):
            if a == b:
                continue
            for direction, (dx, dy) in DIRECTIONS.items():
                gap = float((xy[a] - xy[b]) @ np.array([dx, dy]))
                if abs(gap) >= margin:
                    out.append(SceneQuestion(
                        f"is the {names[a]} {_DIRECTION_WORDS[direction]} the {names[b]}?",
                        "yes" if gap > 0 else "no", "relation",
                    ))  # fmt: skip
    gap = float((fixtures["bowl"] - fixtures["plate"]) @ np.array(DIRECTIONS["left"]))
    if abs(gap) >= margin:
        side = "left" if gap > 0 else "right"
        out.append(SceneQuestion("is the bowl left or right of the plate?", side, "fixtures"))
    return out


def sample_questions(
    questions: list[SceneQuestion], n: int, rng: np.random.Generator
) -> list[SceneQuestion]:
    """``n`` questions drawn kind-first (each kind equally likely, then a question of it), so
    that the many yes/no relations do not crowd out the rest."""
    by_kind: dict[str, list[SceneQuestion]] = {}
    for q in questions:
        by_kind.setdefault(q.kind, []).append(q)
    if not by_kind:
        return []
    kinds = sorted(by_kind)
    picks = []
    for _ in range(n):
        options = by_kind[kinds[rng.integers(len(kinds))]]
        picks.append(options[rng.integers(len(options))])
    return picks


def collect_scene_questions(
    make_env: Callable[[], object],
    episodes: int,
    per_scene: int = 4,
    seed: int = 0,
    margin: float = 0.04,
) -> tuple[np.ndarray, list[SceneQuestion]]:
    """Images of ``episodes`` freshly reset scenes (``make_env()`` builds a tabletop env with
    ``obs_mode`` ``rgb`` or ``rgb+state``) and ``per_scene`` questions about each: ``images``
    uint8 ``(episodes * per_scene, H, W, 3)`` (one per question) and the questions. Reset
    seeds are ``seed .. seed + episodes - 1``: keep them apart from the robot data's."""
    env = make_env()
    rng = np.random.default_rng(seed)
    images, out = [], []
    try:
        for e in range(episodes):
            obs, _ = env.reset(seed=seed + e)
            base = env.unwrapped
            drawn = sample_questions(
                scene_questions(base.layout, base.scene_state(), margin), per_scene, rng
            )
            images += [obs["image"]] * len(drawn)
            out += drawn
    finally:
        env.close()
    return np.stack(images), out
