"""The one training loop: a step function per algorithm; the loop does everything around it.

``TrainingLoop(step, total_steps, ...).run()`` calls ``step()`` until ``total_steps`` (each
call returns the step's metrics as floats) and owns what every trainer needs around the
update: the progress bar, per-metric means over each logging interval into the one metrics
log (:class:`~embodied_rl.utils.metrics.MetricsLogger`), evaluation and checkpoints at their
cadence and at the end, a stop on a non-finite loss that names the last checkpoint, resume
(the start step and the partial means of the interrupted interval), and callbacks in the
style of Stable-Baselines3's (``on_start``, ``on_step`` returning ``False`` to stop early,
``on_log``, ``on_evaluation``, ``on_end``).

The offline agents (:class:`~embodied_rl.agents.trainer.Trainer`), the preference reward
model and every LLM trainer run through it. Their step functions stay in their own modules:
an agent's ``update(batch)``, an LLM trainer's optimiser step.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from embodied_rl.rl.distributed import DataParallel, any_process, average_metrics
from embodied_rl.rl.errors import NonFiniteLossError
from embodied_rl.utils.metrics import MetricsLogger

logger = logging.getLogger(__name__)

StepFn = Callable[[int], Mapping[str, float]]  # step(i) -> metrics of gradient step i (1-based)


@dataclass(frozen=True)
class LoopSettings:
    """What every training run sets around its steps (in the run's own unit: gradient steps
    for the offline trainer, environment steps online); the trainers' configs extend it."""

    batch_size: int = 256
    seed: int = 0  # seeds python, numpy, torch and the batches
    log_every: int = 1_000  # steps between metric rows (means over the interval)
    eval_every: int = 10_000  # steps between evaluations; 0: only at the end
    eval_episodes: int = 10  # 0: no evaluation
    checkpoint_every: int = 10_000  # steps between checkpoints; 0: only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    progress: bool = True  # tqdm bar
    tensorboard: bool = True  # also write TensorBoard events (CSV is always written)

    def __post_init__(self) -> None:
        for name in ("batch_size", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("eval_every", "eval_episodes", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")


class Callback:
    """Hooks into :class:`TrainingLoop` (subclass and override what you need)."""

    def on_start(self, loop: TrainingLoop) -> None:
        """Before the first step of this call (after a resume, the first remaining one)."""

    def on_step(self, loop: TrainingLoop, step: int, metrics: Mapping[str, float]) -> bool | None:
        """After every step; return ``False`` to stop training after it."""

    def on_log(self, loop: TrainingLoop, step: int, row: Mapping[str, float]) -> None:
        """After each logged row of interval means."""

    def on_evaluation(
        self, loop: TrainingLoop, step: int, result: Mapping[str, float]
    ) -> bool | None:
        """After each evaluation; return ``False`` to stop training."""

    def on_end(self, loop: TrainingLoop) -> None:
        """After the last step (also when a callback stopped early)."""


class StopOnThreshold(Callback):
    """Early stop once an evaluation metric reaches ``threshold`` (SB3's
    ``StopTrainingOnRewardThreshold``), e.g. ``StopOnThreshold("eval/success_rate", 0.95)``."""

    def __init__(self, metric: str, threshold: float, higher_is_better: bool = True) -> None:
        self.metric, self.threshold, self.higher = metric, threshold, higher_is_better

    def on_evaluation(self, loop: TrainingLoop, step: int, result: Mapping[str, float]) -> bool:
        value = result.get(self.metric)
        if value is None:
            return True
        done = value >= self.threshold if self.higher else value <= self.threshold
        if done:
            logger.info("step %d: %s=%.4g reached %.4g; stopping", step, self.metric, value,
                        self.threshold)  # fmt: skip
        return not done


def _due(units: int, size: int, every: int, last: bool) -> bool:
    """The last step, or a step whose ``size`` units crossed a multiple of ``every``."""
    return last or bool(every and units // every > (units - size) // every)


class TrainingLoop:
    """Runs ``step(i)`` for ``i`` in ``start + 1 .. total_steps`` with logging, evaluation,
    checkpoints, non-finite-loss stops and callbacks.

    Args:
        step: the algorithm's update; ``step(i)`` returns its metrics (floats).
        total_steps: the step count to reach (a resumed run passes the same total).
        start: steps already done (a resumed run's checkpoint step).
        log: the metrics log (``None``: no files, metrics still returned).
        log_every: write per-metric means every this many steps (and at the end); each mean
            is over the steps that reported that metric.
        prefix: prepended to the step's metric names (``"train/"``).
        evaluate: returns evaluation metrics (already named, e.g. ``eval/success_rate``),
            run every ``eval_every`` steps and after the last; ``{}`` means none.
        checkpoint: writes a checkpoint (it may read :meth:`state_dict`), every
            ``checkpoint_every`` steps and after the last; returns the directory written.
        checkpoint_note: text naming the last good checkpoint, for a non-finite-loss error.
        sums, counts: the partial interval of a resumed run (from :meth:`state_dict`).
        parallel: data-parallel training (:mod:`embodied_rl.rl.distributed`): metrics are
            averaged over the processes, and only the main one logs, evaluates, writes
            checkpoints and shows the bar; an early stop on one stops all.
        step_size, step_offset: the units a step advances (PPO: the environment steps of a
            rollout) and those done before this loop; logged steps, the bar and the three
            cadences (a step is due when its units cross a multiple) count in these units.
        postfix: the bar's postfix from a step's metrics (default: the first logged means).
    """

    def __init__(
        self,
        step: StepFn,
        total_steps: int,
        *,
        start: int = 0,
        desc: str = "train",
        log: MetricsLogger | None = None,
        log_every: int = 100,
        prefix: str = "train/",
        progress: bool = True,
        evaluate: Callable[[], Mapping[str, float]] | None = None,
        eval_every: int = 0,
        checkpoint: Callable[[], Any] | None = None,
        checkpoint_every: int = 0,
        checkpoint_note: Callable[[], str] | None = None,
        callbacks: Sequence[Callback] = (),
        sums: Mapping[str, float] | None = None,
        counts: Mapping[str, int] | None = None,
        parallel: DataParallel | None = None,
        step_size: int = 1,
        step_offset: int = 0,
        postfix: Callable[[Mapping[str, float]], Mapping[str, str]] | None = None,
    ) -> None:
        if total_steps < start:
            raise ValueError(f"total_steps={total_steps} is below the start step {start}")
        if log_every < 1:
            raise ValueError(f"log_every={log_every} must be >= 1")
        if parallel is not None and not parallel.is_main:
            log, progress, evaluate, checkpoint = None, False, None, None
        self.parallel = parallel
        self.step_size, self.step_offset, self.postfix = step_size, step_offset, postfix
        self.step_fn, self.total_steps, self.start = step, total_steps, start
        self.desc, self.log, self.log_every, self.prefix = desc, log, log_every, prefix
        self.progress = progress
        self.evaluate_fn, self.eval_every = evaluate, eval_every
        self.checkpoint_fn, self.checkpoint_every = checkpoint, checkpoint_every
        self.checkpoint_note = checkpoint_note
        self.callbacks = list(callbacks)
        self.sums: dict[str, float] = defaultdict(float, sums or {})
        self.counts: dict[str, int] = defaultdict(int, counts or {})
        self.rows: list[dict[str, float]] = []  # every logged row, with "step"
        self.evaluations: list[dict[str, float]] = []  # every evaluation, with "step"
        self.step = start
        self.stopped_early = False

    def state_dict(self) -> dict[str, Any]:
        """The partial logging interval, for a checkpoint (``sums=``, ``counts=`` restore it)."""
        return {"log_sums": dict(self.sums), "log_counts": dict(self.counts)}

    def run(self) -> list[dict[str, float]]:
        """Train to ``total_steps`` (or an early stop); returns the logged rows."""
        bar = tqdm(
            total=self.total_steps * self.step_size, initial=self.start * self.step_size,
            desc=self.desc, unit="step", disable=not self.progress,
        )  # fmt: skip
        for callback in self.callbacks:
            callback.on_start(self)
        try:
            while self.step < self.total_steps and not self.stopped_early:
                self._one_step(bar)
        finally:
            bar.close()
            for callback in self.callbacks:
                callback.on_end(self)
        return self.rows

    def _one_step(self, bar: tqdm) -> None:
        i = self.step + 1
        try:
            metrics = dict(self.step_fn(i))
        except NonFiniteLossError as error:  # raised before the update: name the way back
            raise NonFiniteLossError(error.loss, error.step, error.value) from self._note()
        self.step = i
        if self.parallel is not None:
            metrics = average_metrics(metrics, self.parallel)
        self._check_finite(i, metrics)
        for key, value in metrics.items():
            self.sums[key] += value
            self.counts[key] += 1
        bar.update(self.step_size)
        if self.postfix is not None:
            bar.set_postfix(self.postfix(metrics))
        keep_going = [c.on_step(self, i, metrics) for c in self.callbacks]
        self.stopped_early = any(k is False for k in keep_going)
        last = i == self.total_steps or self.stopped_early
        size = self.step_size
        at = self.step_offset + i * size  # the step logged, in units
        if _due(at, size, self.log_every, last) and self.sums:
            row = {f"{self.prefix}{k}": v / self.counts[k] for k, v in self.sums.items()}
            self.sums.clear()
            self.counts.clear()
            self._write(at, row)
            if self.postfix is None:
                shown = list(row.items())[:3]
                bar.set_postfix({k.rsplit("/", 1)[-1]: f"{v:.3g}" for k, v in shown})
            self.rows.append({"step": float(at), **row})
            for callback in self.callbacks:
                callback.on_log(self, at, row)
        if self.evaluate_fn is not None and _due(at, size, self.eval_every, last):
            result = dict(self.evaluate_fn())
            if result:
                self._write(at, result)
                self.evaluations.append({"step": float(at), **result})
                if self.rows and self.rows[-1]["step"] == at:
                    self.rows[-1].update(result)
                else:
                    self.rows.append({"step": float(at), **result})
                logger.info("step %d: %s", at, result)
                answers = [c.on_evaluation(self, at, result) for c in self.callbacks]
                self.stopped_early = self.stopped_early or any(a is False for a in answers)
        if self.checkpoint_fn is not None and _due(at, size, self.checkpoint_every, last):
            self.checkpoint_fn()
        if self.parallel is not None:  # a stop decided by the main process's evaluation
            self.stopped_early = any_process(self.stopped_early, self.parallel)

    def _write(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.log is not None:
            self.log.write(step, metrics)

    def _check_finite(self, step: int, metrics: Mapping[str, float]) -> None:
        """A step that reports a non-finite loss stops the run, naming the last checkpoint
        (agents raise before their optimiser step; this catches every other trainer)."""
        for name, value in metrics.items():
            if "loss" in name and not math.isfinite(value):
                raise NonFiniteLossError(name, step, value) from self._note()

    def _note(self) -> RuntimeError | None:
        """The last good checkpoint, as the cause of a non-finite-loss error."""
        return RuntimeError(self.checkpoint_note()) if self.checkpoint_note else None
