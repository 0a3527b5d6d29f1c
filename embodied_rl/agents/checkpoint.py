"""Training checkpoints: a directory of safetensors and JSON, written atomically (no pickle).

Layout of ``<run>/checkpoints/step_<N>/``:

- ``model.safetensors``: every network of the agent, keys ``<module>.<parameter>``;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimisers' tensors (Adam moments,
  step counts) flattened to ``<optimizer>.state.<param>.<field>``, their non-tensor
  structure (param groups, scalar fields) as JSON;
- ``config.json``: agent type and config, policy type and config (rebuilds the agent);
- ``state.json``: step counters and RNG states (python, numpy, torch, the sampler's).

Each checkpoint is written into a hidden temporary directory and renamed into place; the
``last`` file names the newest complete checkpoint and is replaced (atomically) only after
the rename, so a crash mid-write leaves the previous checkpoint and pointer intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from embodied_rl.agents.base import Agent, agent_class, config_from_dict
from embodied_rl.policies.base import check_state_match, load_weights, policy_class
from embodied_rl.utils.io import write_text_atomic

FORMAT_VERSION = 1
LAST = "last"


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


def _rng_state(sampler: Any = None) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state()  # noqa: NPY002
    out = {
        "python": [version, list(internal), gauss],
        "numpy": [legacy[0], legacy[1].tolist(), *legacy[2:]],
        "torch": torch.get_rng_state().tolist(),
    }
    if sampler is not None and hasattr(sampler, "rng"):
        out["sampler"] = sampler.rng.bit_generator.state
        out["sampler_block"] = sampler._block.tolist()  # indices drawn ahead, not yet used
    return out


def _set_rng_state(state: dict[str, Any], sampler: Any = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    legacy = state["numpy"]
    np.random.set_state((legacy[0], np.asarray(legacy[1], dtype=np.uint32), *legacy[2:]))  # noqa: NPY002
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if sampler is not None and "sampler" in state:
        sampler.rng.bit_generator.state = state["sampler"]
        sampler._block = np.asarray(state.get("sampler_block", []), dtype=np.int64)


def _config_json(agent: Agent) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "agent": {"type": agent.agent_type, "config": dataclasses.asdict(agent.config)},
        "policy": {
            "type": agent.policy.policy_type,
            "config": dataclasses.asdict(agent.policy.config),
        },
    }


# ---------------------------------------------------------------------- save
def save_checkpoint(
    agent: Agent,
    directory: str | os.PathLike,
    sampler: Any = None,
    extra_state: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``directory/step_<N>`` atomically, point ``directory/last`` at it, and delete
    all but the newest ``keep`` checkpoints."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{agent.step:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        tensors = {}
        for name, module in agent.modules().items():
            tensors.update(_module_tensors(name, module))
        save_file(tensors, tmp / "model.safetensors")
        opt_tensors, structure = _optimizer_files(agent.optimizers())
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(structure, indent=1))
        (tmp / "config.json").write_text(json.dumps(_config_json(agent), indent=2))
        state = {"step": agent.step, "rng": _rng_state(sampler), **(extra_state or {})}
        (tmp / "state.json").write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_text_atomic(root / LAST, final.name + "\n")
    _prune(root, keep, final.name)
    return final


def _prune(root: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[: max(0, len(done) - keep)]:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(directory: str | os.PathLike) -> Path:
    """The checkpoint named by ``directory/last`` (or ``directory`` itself if it is one)."""
    root = Path(directory)
    if (root / "model.safetensors").is_file():
        return root
    pointer = root / LAST
    if not pointer.is_file():
        raise FileNotFoundError(f"{root} holds no checkpoint: {LAST} is missing")
    return root / pointer.read_text().strip()


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


def load_checkpoint(
    agent: Agent, path: str | os.PathLike, sampler: Any = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load a checkpoint (or a run's ``last`` one) into ``agent``; returns ``state.json``.

    Errors name the mismatching modules and keys when the architecture differs."""
    path = latest_checkpoint(path)
    for name in ("model.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint: {name} is missing")
    modules = agent.modules()
    saved = _split(load_file(path / "model.safetensors"), list(modules))
    extra = sorted(set(saved) - set(modules))
    if extra:
        raise ValueError(f"{path} has modules {extra} that {type(agent).__name__} lacks")
    for name, module in modules.items():
        _load_module(module, saved[name], name, str(path))
    opt_tensors = load_file(path / "optimizer.safetensors")
    structure = json.loads((path / "optimizer.json").read_text())
    for name, optimizer in agent.optimizers().items():
        if name not in structure:
            raise ValueError(f"{path} has no state for optimizer {name!r}")
        state: dict[int, dict[str, Any]] = {}
        prefix = f"{name}.state."
        for key, value in opt_tensors.items():
            if key.startswith(prefix):
                pid, _, field = key[len(prefix) :].partition(".")
                state.setdefault(int(pid), {})[field] = value
        for pid, scalars in structure[name]["scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        groups = [
            {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
            for g in structure[name]["param_groups"]
        ]  # JSON turned tuples (Adam's betas) into lists
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    meta = json.loads((path / "state.json").read_text())
    agent.step = int(meta["step"])
    if restore_rng:
        _set_rng_state(meta["rng"], sampler)
    return meta


def load_agent(path: str | os.PathLike) -> Agent:
    """Rebuild an agent (policy included) from a checkpoint's ``config.json`` and load it."""
    path = latest_checkpoint(path)
    meta = json.loads((path / "config.json").read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
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
