"""What the LLM trainers share: seeded batches, guarded optimiser steps, and the loop.

Each trainer supplies ``step(i) -> dict[str, float]``; :func:`run_steps` runs it in the one
training loop of every trainer (:class:`~embodied_rl.rl.loop.TrainingLoop`: progress bar,
means over ``log_every`` steps into :class:`~embodied_rl.utils.metrics.MetricsLogger`,
evaluation, non-finite-loss stops, callbacks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.rl.distributed import DataParallel, shard, synchronize, trained_parameters
from embodied_rl.rl.errors import NonFiniteLossError
from embodied_rl.rl.loop import Callback, TrainingLoop
from embodied_rl.utils.metrics import MetricsLogger


def checked_images(images: Any, n_examples: int, image_processor: Any) -> Tensor | None:
    """``images`` (one uint8 ``(H, W, 3)`` image per example) as a tensor, or None for a
    text-only trainer; errors when images and the trainer's ``image_processor`` disagree."""
    if images is None:
        if image_processor is not None:
            raise ValueError("this trainer has an image_processor: pass images=")
        return None
    if image_processor is None:
        raise ValueError("images= needs the trainer's image_processor= (a vision-language model)")
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != n_examples:
        raise ValueError(
            f"images are {images.dtype} {tuple(images.shape)}; pass one uint8 (H, W, 3) image "
            f"per example ({n_examples} examples)"
        )
    return images


def require_positive(config: object, *names: str) -> None:
    """``ValueError`` naming the first of ``names`` whose value on ``config`` is below 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{type(config).__name__}.{name}={value} must be >= 1")


def make_optimizer(
    parameters: Iterable[nn.Parameter], learning_rate: float, weight_decay: float = 0.0
) -> torch.optim.AdamW:
    """AdamW over the parameters that need gradients (torch's fused kernel where it exists)."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    try:
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)


def warmup_lambda(warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from ``1 / warmup_steps`` to 1, then constant."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def optimizer_step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float | None,
    step: int,
    name: str = "loss",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """Backward, clip, step; refuses a non-finite loss before touching the weights.

    Returns the gradient norm before clipping (0 when ``max_grad_norm`` is None)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(name, step, value)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = 0.0
    if max_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = float(nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return norm


class IndexBatches:
    """Endless seeded epochs of index batches over ``n`` examples (the last short batch of
    an epoch is dropped when ``n >= batch_size``)."""

    def __init__(
        self, n: int, batch_size: int, seed: int = 0, shard: DataParallel | None = None
    ) -> None:
        if n < 1:
            raise ValueError("the dataset is empty; give at least one example")
        self.n, self.batch_size = n, min(batch_size, n)
        self.rng = np.random.default_rng(seed)
        self._order: list[int] = []
        self.shard = shard  # data-parallel: every process draws the batch, keeps its slice

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        if len(self._order) < self.batch_size:
            self._order = self.rng.permutation(self.n).tolist()
        batch, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return batch if self.shard is None else shard(batch, self.shard)


def run_steps(
    step: Callable[[int], dict[str, float]],
    n_steps: int,
    *,
    desc: str,
    out: str | os.PathLike | None = None,
    log_every: int = 50,
    progress: bool = True,
    tensorboard: bool = True,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int = 0,
    start: int = 0,
    callbacks: Sequence[Callback] = (),
    parallel: DataParallel | None = None,
    optimizers: Sequence[torch.optim.Optimizer] = (),
    modules: Sequence[nn.Module] = (),
) -> list[dict[str, float]]:
    """Call ``step(i)`` for ``i`` in ``start + 1 .. start + n_steps`` through the one training
    loop (:class:`~embodied_rl.rl.loop.TrainingLoop`); returns the logged rows.

    Each row holds ``step`` and the means of ``train/<metric>`` over the interval, plus
    ``eval/<metric>`` when ``evaluate`` runs (every ``eval_every`` steps and at the end).

    Data-parallel (``parallel``, under torchrun): the step's batches must be this process's
    slice (``IndexBatches(..., shard=parallel)``); the gradients of ``optimizers``'
    parameters are averaged across processes and ``modules`` start from the main process's
    weights; only the main process logs and evaluates."""
    if parallel is not None:
        synchronize(trained_parameters(optimizers), modules, parallel)
    main = parallel is None or parallel.is_main
    writer = MetricsLogger(Path(out), tensorboard) if out is not None and main else None

    def evaluation() -> dict[str, float]:
        return {f"eval/{k}": v for k, v in evaluate().items()}

    loop = TrainingLoop(
        step, start + n_steps, start=start, desc=desc, log=writer, log_every=log_every,
        progress=progress, evaluate=evaluation if evaluate is not None else None,
        eval_every=eval_every, callbacks=callbacks, parallel=parallel,
    )  # fmt: skip
    try:
        return loop.run()
    finally:
        if writer is not None:
            writer.close()
