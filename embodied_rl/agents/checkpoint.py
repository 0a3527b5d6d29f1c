"""Training checkpoints of every agent, PPO included: a directory of safetensors and JSON,
written atomically (no pickle).

Layout of ``<run>/checkpoints/step_<N>/`` (and of ``PPO.save``'s directory):

- ``model.safetensors``: every network of the agent, keys ``<module>.<parameter>`` (PPO:
  ``policy`` and, with a KL penalty, ``reference``);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimisers' tensors (Adam moments,
  step counts) flattened to ``<optimizer>.state.<param>.<field>``, their non-tensor
  structure (param groups, scalar fields) as JSON;
- ``config.json``: agent type and config, policy type and config (rebuilds the agent), and
  the resolved run configuration when the caller gives one (``run``);
- ``state.json``: the step counter (gradient steps; PPO: environment steps), RNG states
  (python, numpy, torch, the sampler's; the environments' streams and ADR state when an env
  is given), the replay-buffer reference and whatever the trainer adds (the offline trainer:
  evaluation history, partial metric sums; PPO: its generator, KL coefficient, episode
  statistics and the ``learn`` call in progress);
- ``state.safetensors`` (when the trainer has tensor state; PPO: the actions every
  environment received and the last observation, see :mod:`embodied_rl.agents.ppo_checkpoint`).

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
    Policy,
    check_state_match,
    load_weights,
    policy_class,
)
from embodied_rl.utils.io import temp_dir_beside, write_text_atomic

FORMAT_VERSION = 1
LAST = CHECKPOINT_POINTER  # the file naming the newest checkpoint
STATE_TENSORS = "state.safetensors"  # a trainer's tensor state (PPO's recorded actions)


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
def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` to ``final``; an existing ``final`` is swapped out first."""
    old = final.with_name(f".{final.name}.old")
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(
    directory: str | os.PathLike, name: str, write: Callable[[Path], None], keep: int = 2
) -> Path:
    """Run ``write(tmp)`` in a hidden temporary directory, rename it to ``directory/name``,
    point ``directory/last`` at it and delete all but the newest ``keep`` checkpoints.

    A failure inside ``write`` leaves the previous checkpoint and ``last`` untouched."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = temp_dir_beside(final)
    try:
        write(tmp)
        _replace_dir(tmp, final)  # the same step again (a resumed, finished run): swapped
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_text_atomic(root / LAST, final.name + "\n")
    _prune(root, keep, final.name)
    return final


def _agent_writer(
    agent: Agent,
    where: str,
    sampler: Any = None,
    extra_state: dict[str, Any] | None = None,
    extra_tensors: Mapping[str, Tensor] | None = None,
    run_config: Mapping[str, Any] | None = None,
    env: Any = None,
    replay_buffer: str | os.PathLike | None = None,
) -> Callable[[Path], None]:
    """Capture ``agent``'s state now (refusing NaN or inf) and return ``write(directory)``."""
    tensors = {}
    for name, module in agent.modules().items():
        tensors.update(_module_tensors(name, module))
    opt_tensors, structure = _optimizer_files(agent.optimizers())
    extra_tensors = {k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
    check_finite({**tensors, **opt_tensors}, where)
    state = {
        "step": agent.step,
        "rng": rng_state(sampler),
        "env": env_rng_state(env) if env is not None else None,
        "replay_buffer": str(replay_buffer) if replay_buffer is not None else None,
        **(extra_state or {}),
    }
    config = checkpoint_config(agent, run_config)

    def write(directory: Path) -> None:
        save_file(tensors, directory / "model.safetensors")
        save_file(opt_tensors, directory / "optimizer.safetensors")
        (directory / "optimizer.json").write_text(json.dumps(structure, indent=1))
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        (directory / "state.json").write_text(json.dumps(state))
        if extra_tensors:
            save_file(extra_tensors, directory / STATE_TENSORS)

    return write


def save_checkpoint(
    agent: Agent,
    directory: str | os.PathLike,
    sampler: Any = None,
    extra_state: dict[str, Any] | None = None,
    keep: int = 2,
    *,
    extra_tensors: Mapping[str, Tensor] | None = None,
    run_config: Mapping[str, Any] | None = None,
    env: Any = None,
    replay_buffer: str | os.PathLike | None = None,
    where: str | None = None,
) -> Path:
    """Write ``directory/step_<N>`` atomically, point ``directory/last`` at it, and delete
    all but the newest ``keep`` checkpoints.

    ``extra_state`` (JSON) and ``extra_tensors`` hold the trainer's own state (see the module
    doc); ``run_config`` (the resolved run configuration) goes to ``config.json``; ``env`` (an
    env or sync vector env) adds its RNG streams and ADR state; ``replay_buffer`` records where
    a replay buffer was saved (the buffer is not copied into every checkpoint). ``where``
    names the step in the error when a tensor is not finite."""
    write = _agent_writer(
        agent, where or f"step {agent.step}", sampler, extra_state, extra_tensors, run_config,
        env, replay_buffer,
    )  # fmt: skip
    return write_checkpoint(directory, f"step_{agent.step:09d}", write, keep)


def save_agent(agent: Agent, directory: str | os.PathLike, **kwargs: Any) -> Path:
    """Write the files of a checkpoint (see the module doc) into ``directory`` itself,
    atomically, replacing what was there: an agent saved to be loaded again, outside a run's
    rotation of checkpoints. ``kwargs`` are :func:`save_checkpoint`'s."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    write = _agent_writer(agent, kwargs.pop("where", f"step {agent.step}"), **kwargs)
    tmp = temp_dir_beside(directory)
    try:
        write(tmp)
        _replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _prune(root: Path, keep: int, newest: str) -> None:
    done = sorted((p for p in root.glob("step_*") if p.is_dir()), key=_step_of)
    for old in done[: max(0, len(done) - keep)]:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)


def _step_of(path: Path) -> tuple[int, str]:
    number = path.name.removeprefix("step_")
    return (int(number), path.name) if number.isdigit() else (-1, path.name)


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


def read_checkpoint_config(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The checkpoint directory (resolving a ``last`` pointer) and its ``config.json``."""
    path = latest_checkpoint(path)
    meta = read_json(path / "config.json")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {meta['format_version']} > {FORMAT_VERSION}"
        )
    if "agent" not in meta or "policy" not in meta:
        raise CheckpointError(f"{path / 'config.json'} names no agent and policy: not a checkpoint")
    return path, meta


def build_policy(entry: Mapping[str, Any], source: str | os.PathLike) -> Policy:
    """A fresh policy from a ``{"type": ..., "config": ...}`` entry of ``config.json``."""
    try:
        cls = policy_class(entry["type"])
    except KeyError as error:
        raise ValueError(f"{source}: {error.args[0]}") from None
    return cls(config_from_dict(cls.config_class, entry["config"], str(source)))


def read_state_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """A checkpoint's ``state.safetensors`` (empty when the trainer wrote none)."""
    file = latest_checkpoint(path) / STATE_TENSORS
    return read_tensors(file) if file.exists() else {}


def load_agent(path: str | os.PathLike) -> Agent:
    """Rebuild an agent (policy included) from a checkpoint's ``config.json`` and load it."""
    path, meta = read_checkpoint_config(path)
    if meta["agent"]["type"] == "ppo":
        raise CheckpointError(
            f"{path} is a PPO checkpoint, and PPO needs its environments: rebuild it with "
            "PPO.load(path, envs) or PPO.resume(checkpoints, envs); load_policy(path) gives "
            "its policy"
        )
    policy = build_policy(meta["policy"], path)
    cls = agent_class(meta["agent"]["type"])
    agent = cls(policy, config_from_dict(cls.config_class, meta["agent"]["config"], str(path)))
    load_checkpoint(agent, path, restore_rng=False)
    return agent
