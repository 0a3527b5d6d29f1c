"""One episode of experience and the schema every stored episode must follow.

Layout (Minari's): ``observations`` hold ``T + 1`` rows (the reset observation and one
per step); ``actions``, ``rewards``, ``terminations`` and ``truncations`` hold ``T``;
``infos`` hold ``T + 1`` (reset info and one per step). ``check_episode`` works on an
:class:`Episode` as well as on an ``h5py.Group`` read from disk, so the writer and the
loader report a bad episode with the same precise message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

EPISODE_KEYS: tuple[str, ...] = (
    "observations",
    "actions",
    "rewards",
    "terminations",
    "truncations",
)
# ``infos/expert_action`` (T + 1 rows): the expert's noise-free action at each observation,
# written when the collecting policy exposes one (the DART label of noisy demonstrations).
EXPERT_ACTION = "expert_action"


class DatasetSchemaError(ValueError):
    """A dataset or episode does not follow the expected layout (the message says where)."""


class DatasetChecksumError(DatasetSchemaError):
    """The stored data does not hash to the checksum recorded in ``metadata.json``."""


@dataclass
class Episode:
    """Arrays of one episode, ready to write (see the module docstring for lengths)."""

    observations: dict[str, Any] | np.ndarray  # (T+1, ...) per key; text keys: list of str
    actions: np.ndarray  # (T, *action_shape)
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    infos: dict[str, np.ndarray] = field(default_factory=dict)  # (T+1, ...) per key
    metadata: dict[str, Any] = field(default_factory=dict)  # seed, instruction, task, ...

    def __len__(self) -> int:
        return len(self.rewards)

    def as_mapping(self) -> dict[str, Any]:
        """The episode keyed like an HDF5 episode group (for :func:`check_episode`)."""
        return {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminations": self.terminations,
            "truncations": self.truncations,
        }


def is_image_space(space: spaces.Space) -> bool:
    """Minari's test for an image space: a uint8 Box of at least 32x32 over [0, 255]."""
    return (
        isinstance(space, spaces.Box)
        and len(space.shape) in (2, 3)
        and space.shape[0] >= 32
        and space.shape[1] >= 32
        and space.dtype == np.uint8
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


def _length(node: Any) -> int:
    shape = getattr(node, "shape", None)
    return int(shape[0]) if shape else len(node)


def _is_mapping(node: Any) -> bool:
    return isinstance(node, Mapping) or hasattr(node, "keys") and not hasattr(node, "shape")


def check_space_data(
    path: str, node: Any, space: spaces.Space, n_rows: int, jpeg_images: bool = False
) -> None:
    """Check that ``node`` holds ``n_rows`` samples of ``space``; raise naming ``path``."""
    if isinstance(space, spaces.Dict | spaces.Tuple):
        if not _is_mapping(node):
            raise DatasetSchemaError(
                f"{path} is a single array; the {type(space).__name__} space needs a group "
                "with one entry per key"
            )
        items = (
            list(space.spaces.items())
            if isinstance(space, spaces.Dict)
            else [(f"_index_{i}", sub) for i, sub in enumerate(space.spaces)]
        )
        present = sorted(node.keys())
        for key, sub in items:
            if key not in node:
                raise DatasetSchemaError(f"{path} is missing key {key!r}; it has {present}")
            check_space_data(f"{path}/{key}", node[key], sub, n_rows, jpeg_images)
        extra = sorted(set(present) - {key for key, _ in items})
        if extra:
            raise DatasetSchemaError(f"{path} has keys {extra} that the space does not declare")
        return
    if _is_mapping(node):
        raise DatasetSchemaError(
            f"{path} is a group; the {type(space).__name__} space needs an array"
        )
    length = _length(node)
    if length != n_rows:
        raise DatasetSchemaError(f"{path} has {length} rows; expected {n_rows}")
    if isinstance(space, spaces.Text) or (jpeg_images and is_image_space(space)):
        return  # strings / encoded frames: the row count is all there is to check
    expected_shape = (n_rows, *space.shape)
    if tuple(node.shape) != expected_shape:
        raise DatasetSchemaError(
            f"{path} has shape {tuple(node.shape)}; expected {expected_shape} "
            f"({n_rows} rows of the space's shape {tuple(space.shape)})"
        )
    if np.dtype(node.dtype) != np.dtype(space.dtype):
        raise DatasetSchemaError(
            f"{path} has dtype {np.dtype(node.dtype)}; the space declares {np.dtype(space.dtype)}"
        )


def check_episode(
    name: str,
    group: Any,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    jpeg_images: bool = False,
) -> int:
    """Check keys, row counts, shapes and dtypes of one episode; return its step count ``T``."""
    for key in EPISODE_KEYS:
        if key not in group:
            raise DatasetSchemaError(f"{name} is missing {key!r}; it has {sorted(group.keys())}")
    rewards = group["rewards"]
    if len(rewards.shape) != 1 or np.dtype(rewards.dtype).kind != "f":
        raise DatasetSchemaError(
            f"{name}/rewards must be a 1-D float array; got shape {tuple(rewards.shape)} "
            f"dtype {np.dtype(rewards.dtype)}"
        )
    n_steps = int(rewards.shape[0])
    if n_steps < 1:
        raise DatasetSchemaError(f"{name} has no steps; every episode needs at least one")
    for key in ("terminations", "truncations"):
        flags = group[key]
        if tuple(flags.shape) != (n_steps,) or np.dtype(flags.dtype) != np.bool_:
            raise DatasetSchemaError(
                f"{name}/{key} has shape {tuple(flags.shape)} dtype {np.dtype(flags.dtype)}; "
                f"expected ({n_steps},) bool like rewards"
            )
    check_space_data(f"{name}/actions", group["actions"], action_space, n_steps, jpeg_images)
    check_space_data(
        f"{name}/observations", group["observations"], observation_space, n_steps + 1, jpeg_images
    )
    return n_steps
