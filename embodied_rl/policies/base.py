"""The policy interface, the policy registry, and safetensors + JSON persistence."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from embodied_rl.utils.io import temp_dir_beside

FORMAT_VERSION = 1
CHECKPOINT_POINTER = "last"  # checkpoints/last names the newest checkpoint directory
_POLICIES: dict[str, type[Policy]] = {}


def register_policy(name: str):
    """Class decorator: make a policy buildable by name and rebuildable from its saved JSON."""

    def add(cls: type[Policy]) -> type[Policy]:
        if name in _POLICIES:
            raise ValueError(f"policy name {name!r} is taken by {_POLICIES[name].__qualname__}")
        _POLICIES[name] = cls
        cls.policy_type = name
        return cls

    return add


def policy_class(name: str) -> type[Policy]:
    """The registered policy class ``name`` (``KeyError`` naming the known ones otherwise)."""
    if name not in _POLICIES:
        raise KeyError(f"unknown policy type {name!r}; known: {sorted(_POLICIES)}")
    return _POLICIES[name]


def make_policy(name: str, config: Any) -> Policy:
    return policy_class(name)(config)


class Policy(nn.Module, ABC):
    """What every agent talks to.

    ``act(obs)`` takes one environment observation (numpy, unbatched) and returns an action;
    ``forward(batch)`` returns the head output for a training batch; ``log_prob``,
    ``entropy`` and ``value`` work on batches. ``reset()`` starts a new episode.
    """

    policy_type: str = ""
    config: Any

    @abstractmethod
    def forward(self, batch: dict[str, Any]) -> Tensor:
        """Head output for a batch (logits or mean actions); see each policy for shapes."""

    @abstractmethod
    def features(self, batch: dict[str, Any]) -> Tensor:
        """The trunk's features ``(B, width)`` (or ``(B, T, width)``) before the heads."""

    @abstractmethod
    def act(self, obs: dict[str, Any], deterministic: bool = True) -> np.ndarray:
        """One action for one observation."""

    def reset(self) -> None:
        """Forget the history of the previous episode (stateless policies: nothing)."""

    def env_options(self) -> dict[str, Any]:
        """The ``make(...)`` options whose observations this policy reads (state-based
        policies: ``obs_mode="state"``; image policies add their image size)."""
        return {"obs_mode": "state"}

    def log_prob(self, batch: dict[str, Any], actions: Tensor) -> Tensor:
        return self.head.log_prob(self(batch), actions)

    def entropy(self, batch: dict[str, Any]) -> Tensor:
        return self.head.entropy(self(batch))

    def value(self, batch: dict[str, Any]) -> Tensor:
        if getattr(self, "value_head", None) is None:
            raise ValueError(
                f"{type(self).__name__} was built without a value head (value_head=True)"
            )
        return self.value_head(self.features(batch)).squeeze(-1)

    # ------------------------------------------------------------------ persistence
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Weights to save: everything except frozen pretrained parts loaded from a path."""
        skip = tuple(self.frozen_prefixes())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def frozen_prefixes(self) -> list[str]:
        return []

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` atomically into ``directory``."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(directory)
        try:
            tensors = {
                k: v.detach().cpu().contiguous() for k, v in self.trainable_state_dict().items()
            }
            save_file(tensors, tmp / "model.safetensors")
            meta = {
                "type": self.policy_type,
                "format_version": FORMAT_VERSION,
                "config": _to_json(self.config),
            }
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory


def _to_json(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def check_observation(obs: Any, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``obs[key]`` as an array, checked: present, one observation of ``shape`` (not a batch),
    uint8 pixels for images (key ``image*``), finite values otherwise. A bare array (an
    environment with a plain ``Box`` observation space, e.g. gymnasium's MuJoCo bodies) is
    the value of a non-image ``key``. Errors name the value and the fix."""
    if isinstance(obs, np.ndarray) and not key.startswith("image"):
        obs = {key: obs}
    if not isinstance(obs, dict) or key not in obs:
        keys = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
        raise ValueError(
            f"the policy reads obs[{key!r}], which the observation lacks (it has {keys}); make "
            "the environment with the policy's options: make(task, **policy.env_options())"
        )
    value = np.asarray(obs[key])
    if shape is not None and value.shape != tuple(shape):
        batch = value.ndim == len(shape) + 1 and value.shape[1:] == tuple(shape)
        raise ValueError(
            f"obs[{key!r}] has shape {value.shape}; the policy expects {tuple(shape)}"
            + (
                "; act() takes one observation, call the policy on a batch dict instead"
                if batch
                else ""
            )
        )
    if key.startswith("image"):
        if value.dtype != np.uint8:
            raise ValueError(
                f"obs[{key!r}] is {value.dtype}; the policy reads uint8 pixels 0-255 (a float image "
                "in [0, 1] would look almost black): pass (image * 255).round().astype(np.uint8)"
            )
    elif not np.all(np.isfinite(value)):
        bad = np.flatnonzero(~np.isfinite(value.reshape(-1)))[:5].tolist()
        raise ValueError(f"obs[{key!r}] has non-finite values at entries {bad}")
    return value


def resolve_policy_path(path: str | os.PathLike) -> tuple[Path, bool]:
    """The directory holding a policy's ``config.json`` and ``model.safetensors``, and
    whether it is a training checkpoint (weights under ``policy.``) rather than a saved
    policy. Accepts a saved policy, a checkpoint, a ``checkpoints/`` directory (its ``last``
    pointer), or a run directory (its ``policy/``, else ``checkpoints/``; ``erl finetune ppo``
    runs keep theirs in ``agent/``)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"policy {root} does not exist")
    for candidate in (root, root / "policy", root / "agent" / "policy"):
        if (candidate / "config.json").is_file():
            meta = json.loads((candidate / "config.json").read_text())
            return candidate, "agent" in meta  # a checkpoint names its agent too
    for checkpoints in (root, root / "checkpoints", root / "agent" / "checkpoints"):
        pointer = checkpoints / CHECKPOINT_POINTER
        if pointer.is_file():
            target = checkpoints / pointer.read_text().strip()
            if not target.is_dir():
                raise FileNotFoundError(f"{pointer} names {target.name}, which does not exist")
            return resolve_policy_path(target)  # an agent's checkpoint, or PPO's (policy/)
    raise FileNotFoundError(
        f"{root} is not a saved policy: no config.json there, no policy/ and no "
        f"checkpoints/{CHECKPOINT_POINTER} in it (pass a policy, checkpoint or run directory)"
    )


def load_policy(path: str | os.PathLike, map_location: str = "cpu") -> Policy:
    """Rebuild a saved policy from ``config.json`` and load ``model.safetensors`` (no pickle).

    ``path`` is a saved policy (``Policy.save``), a training checkpoint, or a run directory
    (see :func:`resolve_policy_path`). Errors name what is wrong: a missing file, an unknown
    type, a newer format, or the parameter names and shapes that do not match the
    architecture in the config.
    """
    directory, is_checkpoint = resolve_policy_path(path)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a saved policy: {name} is missing")
    meta = json.loads((directory / "config.json").read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{directory} has policy format {meta['format_version']}; this version reads <= {FORMAT_VERSION}"
        )
    if is_checkpoint:
        meta = meta.get("policy") or {}
    try:
        cls = policy_class(meta.get("type"))
    except KeyError as error:
        raise ValueError(f"{directory}: {error.args[0]}") from None
    policy = cls(cls.config_class(**_config_from_json(cls.config_class, meta["config"])))
    try:
        tensors = load_file(directory / "model.safetensors", device=map_location)
    except Exception as error:  # safetensors raises its own error types for truncated files
        raise ValueError(
            f"{directory / 'model.safetensors'} is unreadable or truncated: {error}"
        ) from error
    if is_checkpoint:  # the checkpoint's modules are prefixed by their names
        tensors = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
    load_weights(policy, tensors, source=str(directory))
    return policy


def check_state_match(expected: dict[str, Tensor], tensors: dict[str, Tensor], source: str) -> None:
    """Raise a ``ValueError`` naming missing, unexpected and mis-shaped keys, if any."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: saved {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if tensors[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source} does not match this architecture: missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}, shape mismatches {mismatched[:10]}"
        )


def load_weights(policy: Policy, tensors: dict[str, Tensor], source: str = "weights") -> None:
    """Load ``tensors`` into ``policy``, naming missing, unexpected and mis-shaped keys."""
    check_state_match(policy.trainable_state_dict(), tensors, source)
    policy.load_state_dict(tensors, strict=False)


def _config_from_json(config_class, data: dict[str, Any]) -> dict[str, Any]:
    """Turn JSON lists back into tuples where the dataclass field default is a tuple."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"saved config has unknown fields {unknown} for {config_class.__name__}")
    out = {}
    for key, value in data.items():
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def obs_to_tensor(value: Any, device: torch.device | str = "cpu") -> Tensor:
    """Numpy (or list) to a tensor on ``device``; uint8 stays uint8."""
    return torch.as_tensor(np.asarray(value), device=device)
