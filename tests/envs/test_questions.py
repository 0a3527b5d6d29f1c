"""Scene questions for co-fine-tuning: answers follow the simulator state, ambiguous
questions are not asked, and "left"/"behind" agree with what the front camera shows."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_rl.envs.tabletop.questions import (
    QUESTION_KINDS,
    collect_scene_questions,
    sample_questions,
    scene_questions,
)
from embodied_rl.envs.tabletop.tasks import Layout, SceneState


def scene(xy: list[tuple[float, float]], bowl=(0.15, 0.15), plate=(-0.15, 0.1)) -> SceneState:
    pos = np.array([[x, y, 0.02] for x, y in xy])
    return SceneState(ee_pos=np.zeros(3), finger_opening=0.0, object_pos=pos,
                      initial_object_pos=pos, bowl_pos=np.array([*bowl, 0.0]),
                      plate_pos=np.array([*plate, 0.0]))  # fmt: skip


def layout(colors, shapes) -> Layout:
    n = len(colors)
    return Layout(tuple(colors), tuple(shapes), np.zeros((n, 2)), np.zeros(n),
                  np.zeros(2), np.zeros(2))  # fmt: skip


def answers(questions) -> dict[str, str]:
    return {q.question: q.answer for q in questions}


def test_answers_follow_the_scene():
    lay = layout(["red", "green", "blue"], ["block", "block", "cylinder"])
    qa = answers(scene_questions(lay, scene([(-0.15, 0.0), (0.0, 0.1), (0.16, 0.12)])))
    assert qa["what colour is the cylinder?"] == "blue"
    assert "what colour is the block?" not in qa  # two blocks: ambiguous, not asked
    assert qa["how many blocks are on the table?"] == "two"
    assert qa["how many cylinders are on the table?"] == "one"
    assert qa["which object is furthest to the left?"] == "the red block"
    assert qa["which object is furthest to the right?"] == "the blue cylinder"
    assert qa["which object is closest to the camera?"] == "the red block"
    assert qa["which object is closest to the bowl?"] == "the blue cylinder"
    assert qa["which object is closest to the plate?"] == "the red block"
    assert qa["is the red block left of the green block?"] == "yes"
    assert qa["is the green block left of the red block?"] == "no"
    assert qa["is the green block behind the red block?"] == "yes"
    assert qa["is the bowl left or right of the plate?"] == "right"
    # green and blue are 0.02 m apart front-to-back: below the margin, so not asked
    assert "is the blue cylinder behind the green block?" not in qa
    assert "which object is furthest from the camera?" not in qa  # blue vs green: 0.02 m
    assert {q.kind for q in scene_questions(lay, scene([(-0.15, 0.0), (0.0, 0.1),
                                                        (0.16, 0.12)]))} == set(QUESTION_KINDS)  # fmt: skip


def test_sampling_is_balanced_across_kinds():
    lay = layout(["red", "green", "blue", "yellow"], ["block", "cylinder", "block", "block"])
    questions = scene_questions(lay, scene([(-0.2, 0.0), (-0.05, 0.1), (0.1, -0.1), (0.2, 0.05)]))
    drawn = sample_questions(questions, 600, np.random.default_rng(0))
    kinds = {k: sum(q.kind == k for q in drawn) for k in {q.kind for q in questions}}
    relations = sum(q.kind == "relation" for q in questions)
    assert relations > len(questions) / 2  # relations dominate the full list ...
    assert max(kinds.values()) < 2 * min(kinds.values())  # ... not the sample


def colour_column(image: np.ndarray, rgb: tuple[float, float, float]) -> float | None:
    """Mean image column of the pixels whose chromaticity matches ``rgb``."""
    img = image.astype(np.float64)
    chroma = img / (img.sum(-1, keepdims=True) + 1e-6)
    ref = np.asarray(rgb) / sum(rgb)
    ys, xs = np.nonzero(np.linalg.norm(chroma - ref, axis=-1) < 0.08)
    return float(xs.mean()) if len(xs) >= 5 else None


def test_left_and_right_match_the_front_camera():
    from embodied_rl.envs import make
    from embodied_rl.envs.tabletop.scene import COLORS

    images, questions = collect_scene_questions(
        lambda: make("tabletop/reach-v0", obs_mode="rgb", image_size=64), episodes=6,
        per_scene=40, seed=100,
    )  # fmt: skip
    assert images.dtype == np.uint8 and images.shape == (len(questions), 64, 64, 3)
    checked = 0
    for image, q in zip(images, questions, strict=True):
        if q.kind != "extreme" or "camera" in q.question:
            continue
        colour = q.answer.split()[1]  # "the red block"
        column = colour_column(image, COLORS[colour])
        if column is None:
            continue
        others = [colour_column(image, COLORS[c]) for c in COLORS if c != colour]
        others = [c for c in others if c is not None]
        if "left" in q.question:
            assert column <= min(others, default=column)
        else:
            assert column >= max(others, default=column)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("margin", [-0.01])
def test_margin_must_not_be_negative(margin):
    with pytest.raises(ValueError, match="margin"):
        scene_questions(layout(["red"], ["block"]), scene([(0.0, 0.0)]), margin)
