"""Text descriptions of segments for judges that read rather than watch.

A description states what a video would show: where the hand went, how far the hand and the
manipulated object are from the goal at the start and the end, and whether and when the task
succeeded. It never mentions the reward, so a judge that agrees with the reward-based teacher
does so from behaviour alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embodied_rl.preference.data import Segments

TABLETOP_PROPRIO = 7  # ee position (3), ee velocity (3), finger opening (1)
TABLETOP_SLOT = 15  # per object: position (3), quaternion (4), colour (6), shape (2)


@dataclass(frozen=True)
class StateLayout:
    """Where the hand, the manipulated object and the goal sit in a flat ``state`` vector.

    ``object_slots`` / ``slot_onehot``: with several objects, the slot whose position is read
    is the argmax of ``state[slot_onehot]`` (tabletop); else ``object`` is used directly.
    """

    hand: slice
    goal: slice
    object: slice | None = None
    object_slots: tuple[slice, ...] = ()
    slot_onehot: slice | None = None

    def object_position(self, state: np.ndarray) -> np.ndarray:
        """``(T, 3)`` manipulated-object positions for states ``(T, D)``."""
        if self.slot_onehot is not None:
            slot = int(np.argmax(state[0, self.slot_onehot]))
            return state[:, self.object_slots[slot]]
        if self.object is None:
            raise ValueError("this layout has no object position")
        return state[:, self.object]


METAWORLD_LAYOUT = StateLayout(hand=slice(0, 3), object=slice(4, 7), goal=slice(36, 39))


def tabletop_layout(n_objects: int = 4, control_yaw: bool = False) -> StateLayout:
    """The tabletop suite's ``state`` layout (docs/environments.md)."""
    proprio = TABLETOP_PROPRIO + (2 if control_yaw else 0)
    slots = tuple(
        slice(proprio + TABLETOP_SLOT * k, proprio + TABLETOP_SLOT * k + 3)
        for k in range(n_objects)
    )
    onehot = proprio + TABLETOP_SLOT * n_objects + 6  # after the bowl and plate positions
    goal = onehot + 2 * n_objects
    return StateLayout(
        hand=slice(0, 3),
        goal=slice(goal, goal + 3),
        object_slots=slots,
        slot_onehot=slice(onehot, onehot + n_objects),
    )


def layout_for(segments: Segments) -> StateLayout:
    """The layout of the dataset's environment (from the collection metadata)."""
    collection = segments.data.metadata.get("embodied_rl", {}).get("collection", {})
    env_id = str(collection.get("env_id", ""))
    kwargs = collection.get("env_kwargs") or {}
    if env_id.startswith("metaworld/"):
        return METAWORLD_LAYOUT
    if env_id.startswith("tabletop/"):
        return tabletop_layout(int(kwargs.get("n_objects", 4)), bool(kwargs.get("control_yaw")))
    dim = segments.data.observations.get("state", np.empty((0, 0))).shape[-1]
    if dim == 39:
        return METAWORLD_LAYOUT
    if dim in (90, 96):  # four objects; 90: collected before the task-relative vectors
        return tabletop_layout()
    raise ValueError(
        f"cannot tell the state layout of environment {env_id!r} (state size {dim}); "
        "pass describe= with your own describer"
    )


def _successes(segments: Segments, index: int) -> np.ndarray:
    """``(L,)`` success flag after each step, if the dataset stored ``infos['success']``."""
    if "success" not in segments.data.infos:
        return np.zeros(segments.length, dtype=bool)
    rows = segments.data.obs_index[segments.starts[index]] + 1 + np.arange(segments.length)
    return segments.data.infos["success"][rows].astype(bool)


def _position(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:+.2f}" for v in p) + ")"


def describe_segment(segments: Segments, index: int, layout: StateLayout | None = None) -> str:
    """A few lines describing segment ``index`` (distances in centimetres)."""
    layout = layout or layout_for(segments)
    state = segments.observations("state")[index].astype(np.float64)  # (L, D)
    hand, goal = state[:, layout.hand], state[:, layout.goal]
    hand_goal = np.linalg.norm(hand - goal, axis=1) * 100
    path = np.linalg.norm(np.diff(hand, axis=0), axis=1).sum() * 100
    net = np.linalg.norm(hand[-1] - hand[0]) * 100
    actions = segments.actions()[index]
    jerk = float(np.abs(np.diff(actions, axis=0)).mean()) if len(actions) > 1 else 0.0
    lines = [
        f"The hand moves from {_position(hand[0])} to {_position(hand[-1])}: "
        f"{path:.1f} cm of path for {net:.1f} cm of net displacement.",
        f"Hand-to-goal distance: {hand_goal[0]:.1f} cm at the start, {hand_goal[-1]:.1f} cm "
        f"at the end (closest {hand_goal.min():.1f} cm).",
    ]
    try:
        obj = layout.object_position(state)
    except ValueError:
        obj = None
    if obj is not None:
        obj_goal = np.linalg.norm(obj - goal, axis=1) * 100
        moved = np.linalg.norm(obj[-1] - obj[0]) * 100
        lines.append(
            f"Object-to-goal distance: {obj_goal[0]:.1f} cm at the start, {obj_goal[-1]:.1f} cm "
            f"at the end; the object moves {moved:.1f} cm."
        )
    success = _successes(segments, index)
    if success.any():
        lines.append(
            f"The task is accomplished at step {int(np.argmax(success)) + 1} of {len(success)}."
        )
    else:
        lines.append(f"The task is not accomplished within these {len(success)} steps.")
    lines.append(f"Mean change of the action between steps: {jerk:.2f} (higher is jerkier).")
    return "\n".join(lines)
