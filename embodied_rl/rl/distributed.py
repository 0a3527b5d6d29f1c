"""Data-parallel training across processes and machines.

Launch any training script with ``torchrun``::

    torchrun --nproc_per_node 2 train.py            # two processes on this machine (CPU: gloo)
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 train.py

and the offline trainer (:class:`~embodied_rl.agents.trainer.Trainer`, so ``train()`` and
``erl train``) runs data-parallel: Hugging Face ``accelerate`` sets up the process group (gloo
on CPU, NCCL on GPUs, one device per process); every process draws the same global batch and
trains on its slice; the gradients of every trained parameter are averaged across processes
after each backward pass (DDP's arithmetic, one all-reduce per parameter tensor); logged
metrics are averaged; only the main process logs, evaluates and writes checkpoints and the
policy. With the same global batch the loss curve and the weights equal a single process's
up to float rounding (tested on CPU with two processes).
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import distributed as dist


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the group."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def data_parallel() -> DataParallel | None:
    """The process group a launcher (``torchrun``) asked for through
    ``WORLD_SIZE``, initialised by ``accelerate``; ``None`` in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    _destroy_group_at_exit()
    return DataParallel(state.process_index, state.num_processes)


@functools.cache
def _destroy_group_at_exit() -> None:
    """Tear the process group down before the interpreter exits, as PyTorch asks: a gloo group
    whose threads are still alive at exit can abort the process ("terminate called without an
    active exception", SIGABRT) after training has finished."""

    def destroy() -> None:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    atexit.register(destroy)


def trained_parameters(optimizers: Iterable[torch.optim.Optimizer]) -> list[torch.Tensor]:
    """Every parameter the optimisers update, once each (modules and free tensors alike,
    e.g. CQL's temperature)."""
    seen: dict[int, torch.Tensor] = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                seen.setdefault(id(p), p)
    return list(seen.values())


def synchronize(
    parameters: list[torch.Tensor], modules: Iterable[torch.nn.Module], parallel: DataParallel
) -> None:
    """Start every process from the main one's weights, then average each parameter's
    gradient across processes after every backward pass."""
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
        for p in parameters:
            dist.broadcast(p.data, src=0)

    def average(p: torch.Tensor) -> None:
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(parallel.world_size)

    for p in parameters:
        if not getattr(p, "_erl_grad_sync", False):  # a second fit() must not average twice
            p.register_post_accumulate_grad_hook(average)
            p._erl_grad_sync = True


def shard(batch: Any, parallel: DataParallel) -> Any:
    """This process's slice of a global batch (tensors, arrays and lists along their first
    axis, dicts recursively); the batch size must divide by the number of processes."""
    if isinstance(batch, Mapping):
        return {k: shard(v, parallel) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor | np.ndarray | list | tuple):
        n = len(batch)
        if n % parallel.world_size:
            raise ValueError(
                f"a batch of {n} does not split over {parallel.world_size} processes; choose "
                "a batch size that divides by the number of processes"
            )
        size = n // parallel.world_size
        return batch[parallel.rank * size : (parallel.rank + 1) * size]
    return batch


def average_metrics(metrics: Mapping[str, float], parallel: DataParallel) -> dict[str, float]:
    """The mean of each metric over the processes (every process logs the same names)."""
    names = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return dict(zip(names, (values / parallel.world_size).tolist(), strict=True))


def any_process(flag: bool, parallel: DataParallel) -> bool:
    """True on every process when it is true on one (an early stop decided by the main one)."""
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
