"""The one metrics log every trainer writes: ``metrics.csv``, TensorBoard, optionally W&B.

``metrics.csv`` has one row per metric and step (``step,name,value,wall_s``), so trainers that
log different metrics at different steps share one layout and a reader needs no schema;
TensorBoard events go to ``tensorboard/`` under the same names. Offline agents, online
fine-tuning, PPO, the preference reward model and the LLM trainers all log through
:class:`MetricsLogger`.

Weights & Biases is an optional sink: pass ``wandb_project=`` or set ``ERL_WANDB_PROJECT``
(``pip install wandb``). It runs in offline mode unless ``WANDB_MODE`` says otherwise, so
nothing needs a network; ``wandb sync <out>/wandb/offline-run-*`` uploads a run later.

A resumed run passes ``resume_step``: rows (and TensorBoard events) logged after that step
by the interrupted run are dropped, so no step appears twice, and the wall-clock column
continues where the kept rows end.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embodied_rl.utils.io import truncate_csv, write_text_atomic

logger = logging.getLogger(__name__)

WANDB_PROJECT_ENV = "ERL_WANDB_PROJECT"
CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


class MetricsLogger:
    """Rows ``step, name, value, wall_s`` to ``out/metrics.csv``, mirrored to TensorBoard
    (``out/tensorboard``) and, when enabled, Weights & Biases. ``out=None`` logs nothing."""

    def __init__(
        self,
        out: str | os.PathLike | None,
        tensorboard: bool = True,
        resume_step: int | None = None,
        wandb_project: str | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.out = Path(out) if out is not None else None
        self._file = self._csv = self._tb = self._wandb = None
        self._start = time.perf_counter()
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path, wall = self.out / CSV_NAME, 0.0
        if resume_step is not None:
            kept = truncate_csv(path, resume_step)
            wall = max((float(row.get("wall_s") or 0.0) for row in kept), default=0.0)
        new = not path.exists()
        self._file = open(path, "a", newline="")  # noqa: SIM115  (closed by close())
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value", "wall_s"])
        if tensorboard:
            self._tb = _tensorboard(self.out / TENSORBOARD_DIR, resume_step)
        project = wandb_project or os.environ.get(WANDB_PROJECT_ENV)
        if project:
            self._wandb = _wandb_run(self.out, project, run_config, resume_step is not None)
        self._start = time.perf_counter() - wall  # the clock starts once the sinks are up

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log ``metrics`` at ``step`` (non-finite values are kept: they are evidence)."""
        if self._csv is None:
            return
        wall = time.perf_counter() - self._start
        for name, value in metrics.items():
            self._csv.writerow([step, name, f"{float(value):.6g}", f"{wall:.2f}"])
        self._file.flush()
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, step)
        if self._wandb is not None:
            finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
            self._wandb.log({**finite, "step": step})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._csv = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tensorboard(directory: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard is not installed; metrics go to metrics.csv only")
        return None
    purge = None if resume_step is None else resume_step + 1
    return SummaryWriter(str(directory), purge_step=purge)


def _wandb_run(out: Path, project: str, config: Mapping[str, Any] | None, resumed: bool):
    """A W&B run logging against our ``step`` (offline unless ``WANDB_MODE`` is set); a
    resumed run continues the W&B run whose id ``out/wandb_run_id`` keeps."""
    try:
        import wandb
    except ImportError:
        raise ImportError(
            f"W&B logging was asked for (project {project!r}) but wandb is not installed: "
            f"pip install wandb, or unset {WANDB_PROJECT_ENV}"
        ) from None
    id_file = out / "wandb_run_id"
    old_id = id_file.read_text().strip() if resumed and id_file.is_file() else None
    run_id = old_id or secrets.token_hex(4)
    run = wandb.init(
        project=project, dir=str(out), id=run_id, resume="allow",
        mode=os.environ.get("WANDB_MODE", "offline"), config=dict(config or {}),
        name=out.name, reinit="create_new",
    )  # fmt: skip
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    write_text_atomic(id_file, run_id + "\n")
    return run
