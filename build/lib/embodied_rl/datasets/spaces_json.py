"""Gymnasium spaces to and from the JSON that Minari stores in ``metadata.json``.

The encoding matches ``minari/serialization.py`` (minari 0.5.4) field for field, so
``minari.load_dataset`` rebuilds our spaces, without importing minari here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from gymnasium import spaces


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """The Minari JSON form of ``space`` as a dict (Box, Discrete, MultiDiscrete,
    MultiBinary, Dict, Tuple, Text)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "dtype": str(space.dtype),
            "shape": list(space.shape),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "dtype": "int64", "start": int(space.start), "n": int(space.n)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "dtype": str(space.dtype),
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": space.n}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "subspaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "subspaces": [space_to_dict(s) for s in space.spaces]}
    if isinstance(space, spaces.Text):
        return {
            "type": "Text",
            "max_length": space.max_length,
            "min_length": space.min_length,
            "charset": space.characters,
        }
    raise TypeError(
        f"cannot store a {type(space).__name__} space in a Minari dataset; supported: "
        "Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple, Text"
    )


def serialize_space(space: spaces.Space) -> str:
    """The JSON string Minari keeps under ``observation_space`` / ``action_space``."""
    return json.dumps(space_to_dict(space))


def space_from_dict(data: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_dict`."""
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        low = np.array(data["low"], dtype=dtype)
        high = np.array(data["high"], dtype=dtype)
        return spaces.Box(low=low, high=high, shape=tuple(data["shape"]), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(n=data["n"], start=data["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(nvec=data["nvec"], dtype=data["dtype"], start=data["start"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(n=data["n"])
    if kind == "Dict":
        return spaces.Dict({k: space_from_dict(v) for k, v in data["subspaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple(tuple(space_from_dict(v) for v in data["subspaces"]))
    if kind == "Text":
        return spaces.Text(
            max_length=data["max_length"], min_length=data["min_length"], charset=data["charset"]
        )
    raise ValueError(f"unknown space type {kind!r} in dataset metadata: {data}")


def deserialize_space(text: str) -> spaces.Space:
    """Inverse of :func:`serialize_space`."""
    return space_from_dict(json.loads(text))
