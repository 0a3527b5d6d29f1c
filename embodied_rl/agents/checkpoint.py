"""Training checkpoints: a directory of safetensors and JSON, written atomically (no pickle).

Layout of ``<run>/checkpoints/step_<N>/``:

- ``model.safetensors``: every network of the agent, keys ``<module>.<parameter>``;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimisers' tensors (Adam moments,
  step counts) flattened to ``<optimizer>.state.<param>.<field>``, their non-tensor
  structure (param groups, scalar fields) as JSON;
- ``config.json``: agent type and config, policy type and config (rebuilds the agent), and
  the resolved run configuration when the caller gives one (``run``);
- ``state.json``: step counters, RNG states (python, numpy, torch, the sampler's; the
  environments' streams and ADR state when an env is given), the replay-buffer reference
  and whatever the caller adds (the trainer: evaluation history, partial metric sums).

Each checkpoint is written into a hidden temporary directory and renamed into place; the
``last`` file names the newest complete checkpoint and is replaced (atomically) only after
the rename, so a crash mid-write leaves the previous checkpoint and pointer intact. A
checkpoint whose tensors hold NaN or inf is never written. Loading is strict: a truncated or
corrupt file, or another architecture, raises :class:`CheckpointError` naming the file or
the mismatched keys.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from embodied_rl.agents.base import Agent, agent_class, config_from_dict
from embodied_rl.agents.env_state import env_rng_state, restore_env_rng_state
from embodied_rl.policies.base import (
    CHECKPOINT_POINTER,
    check_state_match,
    load_weights,
    policy_class,
)
from embodied_rl.utils.io import temp_dir_beside, write_text_atomic

FORMAT_VERSION = 1
LAST = CHECKPOINT_POINTER  # the file naming the newest checkpoint


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or corrupt, or does not fit what loads it."""


class NonFiniteStateError(FloatingPointError):
    """A tensor about to be checkpointed holds NaN or inf; nothing was written."""


# ---------------------------------------------------------------------- reading files
def read_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """``load_file`` with an error naming the file when it is missing, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own types, without the file name
        raise CheckpointError(
            f"{path} is truncated or corrupt ({error}); resume from an earlier checkpoint: "
            "train(..., resume=<checkpoints>/step_N) or erl train ... --resume-from "
            "<checkpoints>/step_N"
        ) from error


def read_json(path: str | os.PathLike) -> Any:
    """``json.loads`` of a file, with an error naming the file when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: {error}") from error


def check_finite(tensors: Mapping[str, Tensor], where: str) -> None:
    """Raise :class:`NonFiniteStateError` naming the tensors that hold NaN or inf."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteStateError(
            f"{where}: {bad[:5]} hold NaN or inf; the checkpoint was not written (the last "
            "good one is kept)"
        )


def last_checkpoint_note(directory: str | os.PathLike) -> str:
    """``"last good checkpoint: <path>"`` (or that none was written yet), for error messages."""
    pointer = Path(directory) / LAST
    kept = Path(directory) / pointer.read_text().strip() if pointer.is_file() else None
    return f"last good checkpoint: {kept if kept else 'none written yet'}"


# ---------------------------------------------------------------------- state <-> files
def _module_tensors(name: str, module: nn.Module) -> dict[str, Tensor]:
    state = (
        module.trainable_state_dict()
        if hasattr(module, "trainable_state_dict")
        else module.state_dict()
    )
    return {f"{name}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def _optimizer_files(optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    tensors: dict[str, Tensor] = {}
    structure: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, fields in state["state"].items():
            for field, value in fields.items():
                if isinstance(value, Tensor):
                    tensors[f"{name}.state.{pid}.{field}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[field] = value
        structure[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, structure


def rng_state(sampler: Any = None) -> dict[str, Any]:
    """The global python, numpy and torch RNG states (and ``sampler``'s) as JSON."""
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state()  # noqa: NPY002
    out = {
        "python": [version, list(internal), gauss],
        "numpy": [legacy[0], legacy[1].tolist(), *legacy[2:]],
        "torch": torch.get_rng_state().tolist(),
    }
    if sampler is not None and hasattr(sampler, "rng"):
        out["sampler"] = sampler.rng.bit_generator.state
        block = getattr(sampler, "_block", None)  # indices drawn ahead, not yet used
        if block is not None:
            out["sampler_block"] = block.tolist()
    return out


def restore_rng_state(state: dict[str, Any], sampler: Any = None) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    legacy = state["numpy"]
    np.random.set_state((legacy[0], np.asarray(legacy[1], dtype=np.uint32), *legacy[2:]))  # noqa: NPY002
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if sampler is not None and "sampler" in state:
        sampler.rng.bit_generator.state = state["sampler"]
        if "sampler_block" in state:
            sampler._block = np.asarray(state["sampler_block"], dtype=np.int64)


def checkpoint_config(agent: Agent, run_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config.json``: agent and policy type and config, and the run's resolved config."""
    out = {
        "format_version": FORMAT_VERSION,
        "agent": {"type": agent.agent_type, "config": dataclasses.asdict(agent.config)},
        "policy": {
            "type": agent.policy.policy_type,
            "config": dataclasses.asdict(agent.policy.config),
        },
    }
    if run_config is not None:
        out["run"] = dict(run_config)
    return json.loads(json.dumps(out, default=str))  # JSON types (tuples become lists)


# ---------------------------------------------------------------------- save
def write_checkpoint(
    directory: str | os.PathLike, name: str, write: Callable[[Path], None], keep: int = 2
) -> Path:
    """Run ``write(tmp)`` in a hidden temporary directory, rename it to ``directory/name``,
    point ``directory/last`` at it and delete all but the newest ``keep`` checkpoints.

    A failure inside ``write`` leaves the previous checkpoint and ``last`` untouched."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = temp_dir_beside(root / name)
    old = root / f".{name}.old"
    try:
        write(tmp)
        if final.exists():  # the same step again (a resumed, finished run): swap, then delete
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    write_text_atomic(root / LAST, final.name + "\n")
    _prune(root, keep, final.name)
    return final


def save_checkpoint(
    agent: Agent,
    directory: str | os.PathLike,
    sampler: Any = None,
    extra_state: dict[str, Any] | None = None,
    keep: int = 2,
    *,
    run_config: Mapping[str, Any] | None = None,
    env: Any = None,
    replay_buffer: str | os.PathLike | None = None,
) -> Path:
    """Write ``directory/step_<N>`` atomically, point ``directory/last`` at it, and delete
    all but the newest ``keep`` checkpoints.

    ``run_config`` (the resolved run configuration) goes to ``config.json``; ``env`` (an env
    or sync vector env) adds its RNG streams and ADR state; ``replay_buffer`` records where
    a replay buffer was saved (the buffer is not copied into every checkpoint)."""
    tensors = {}
    for name, module in agent.modules().items():
        tensors.update(_module_tensors(name, module))
    opt_tensors, structure = _optimizer_files(agent.optimizers())
    check_finite({**tensors, **opt_tensors}, f"step {agent.step}")
    state = {
        "step": agent.step,
        "rng": rng_state(sampler),
        "env": env_rng_state(env) if env is not None else None,
        "replay_buffer": str(replay_buffer) if replay_buffer is not None else None,
        **(extra_state or {}),
    }

    def write(tmp: Path) -> None:
        save_file(tensors, tmp / "model.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(structure, indent=1))
        (tmp / "config.json").write_text(json.dumps(checkpoint_config(agent, run_config), indent=2))
        (tmp / "state.json").write_text(json.dumps(state))

    return write_checkpoint(directory, f"step_{agent.step:09d}", write, keep)


def _prune(root: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[: max(0, len(done) - keep)]:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(directory: str | os.PathLike) -> Path:
    """The checkpoint named by ``directory/last`` (or ``directory`` itself if it is one)."""
    root = Path(directory)
    if (root / "state.json").is_file() or (root / "model.safetensors").is_file():
        return root
    pointer = root / LAST
    if not pointer.is_file():
        raise FileNotFoundError(f"{root} holds no checkpoint: {LAST} is missing")
    path = root / pointer.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist")
    return path


# ---------------------------------------------------------------------- load
def _load_module(module: nn.Module, tensors: dict[str, Tensor], name: str, source: str) -> None:
    if hasattr(module, "trainable_state_dict"):
        load_weights(module, tensors, source=f"{source} [{name}]")
        return
    check_state_match(module.state_dict(), tensors, f"{source} [{name}]")
    module.load_state_dict(tensors)


def _split(tensors: dict[str, Tensor], names: list[str]) -> dict[str, dict[str, Tensor]]:
    out: dict[str, dict[str, Tensor]] = {n: {} for n in names}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        out.setdefault(head, {})[rest] = value
    return out


def _load_optimizer(
    optimizer: torch.optim.Optimizer,
    name: str,
    tensors: dict[str, Tensor],
    structure: dict[str, Any],
    path: Path,
) -> None:
    if name not in structure:
        raise CheckpointError(f"{path} has no state for optimizer {name!r}")
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}.state."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, _, field = key[len(prefix) :].partition(".")
            state.setdefault(int(pid), {})[field] = value
    for pid, scalars in structure[name]["scalars"].items():
        state.setdefault(int(pid), {}).update(scalars)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in structure[name]["param_groups"]
    ]  # JSON turned tuples (Adam's betas) into lists
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path}: optimizer {name!r} does not fit this agent's parameters: {error}"
        ) from error


def load_checkpoint(
    agent: Agent,
    path: str | os.PathLike,
    sampler: Any = None,
    restore_rng: bool = True,
    env: Any = None,
) -> dict[str, Any]:
    """Load a checkpoint (or a run's ``last`` one) into ``agent``; returns ``state.json``.

    With ``restore_rng`` the global and ``sampler`` RNGs are restored, and ``env``'s RNG
    streams and ADR state when the checkpoint holds them. Errors name the file that is
    missing or corrupt, or the mismatching modules and keys when the architecture differs."""
    path = latest_checkpoint(path)
    meta = read_json(path / "state.json")
    modules = agent.modules()
    saved = _split(read_tensors(path / "model.safetensors"), list(modules))
    extra = sorted(set(saved) - set(modules))
    if extra:
        raise CheckpointError(f"{path} has modules {extra} that {type(agent).__name__} lacks")
    for name, module in modules.items():
        _load_module(module, saved[name], name, str(path))
    opt_tensors = read_tensors(path / "optimizer.safetensors")
    structure = read_json(path / "optimizer.json")
    for name, optimizer in agent.optimizers().items():
        _load_optimizer(optimizer, name, opt_tensors, structure, path)
    agent.step = int(meta["step"])
    if restore_rng:
        restore_rng_state(meta["rng"], sampler)
        if env is not None and meta.get("env") is not None:
            restore_env_rng_state(env, meta["env"])
    return meta


def load_agent(path: str | os.PathLike) -> Agent:
    """Rebuild an agent (policy included) from a checkpoint's ``config.json`` and load it."""
    path = latest_checkpoint(path)
    meta = read_json(path / "config.json")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {meta['format_version']} > {FORMAT_VERSION}"
        )
    try:
        policy_cls = policy_class(meta["policy"]["type"])
    except KeyError as error:
        raise ValueError(f"{path}: {error.args[0]}") from None
    policy = policy_cls(
        config_from_dict(policy_cls.config_class, meta["policy"]["config"], str(path))
    )
    cls = agent_class(meta["agent"]["type"])
    agent = cls(policy, config_from_dict(cls.config_class, meta["agent"]["config"], str(path)))
    load_checkpoint(agent, path, restore_rng=False)
    return agent
