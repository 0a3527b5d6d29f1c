"""The one metrics log: long-format CSV, TensorBoard, resume without duplicate steps, W&B."""

from __future__ import annotations

import csv
import sys
import time

import pytest

from embodied_rl.utils.metrics import WANDB_PROJECT_ENV, MetricsLogger


def rows(path):
    with open(path, newline="") as f:
        return [(r["step"], r["name"], r["value"]) for r in csv.DictReader(f)]


def test_rows_tensorboard_and_a_resume_that_drops_later_steps(tmp_path, monkeypatch):
    monkeypatch.delenv(WANDB_PROJECT_ENV, raising=False)
    with MetricsLogger(tmp_path) as log:
        log.write(1, {"train/loss": 2.0, "eval/success_rate": float("nan")})
        log.write(2, {"train/loss": 1.5})
        log.write(3, {"train/loss": 1.0})  # logged after the checkpoint at step 2: redone
    assert rows(tmp_path / "metrics.csv")[0] == ("1", "train/loss", "2")
    assert ("1", "eval/success_rate", "nan") in rows(tmp_path / "metrics.csv")
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    with MetricsLogger(tmp_path, resume_step=2) as log:
        log.write(3, {"train/loss": 0.9})
    assert rows(tmp_path / "metrics.csv") == [
        ("1", "train/loss", "2"), ("1", "eval/success_rate", "nan"),
        ("2", "train/loss", "1.5"), ("3", "train/loss", "0.9"),
    ]  # fmt: skip
    with open(tmp_path / "metrics.csv", newline="") as f:
        walls = [float(r["wall_s"]) for r in csv.DictReader(f)]
    assert walls == sorted(walls)  # the clock continues from the kept rows


def test_no_directory_logs_nothing(tmp_path):
    log = MetricsLogger(None)
    log.write(1, {"a": 1.0})
    log.close()
    assert not list(tmp_path.iterdir())


def test_wandb_sink_offline(tmp_path, monkeypatch):
    """W&B in offline mode: no network, no account; the run file holds the logged metric."""
    pytest.importorskip("wandb")
    monkeypatch.setenv(WANDB_PROJECT_ENV, "embodied-rl-test")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with MetricsLogger(tmp_path, tensorboard=False, run_config={"seed": 3}) as log:
        log.write(5, {"train/wandb_probe_loss": 0.25})
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    files = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1
    deadline = time.monotonic() + 30  # W&B's service process writes the file after finish()
    while b"train/wandb_probe_loss" not in files[0].read_bytes():
        assert time.monotonic() < deadline, "the offline W&B run never recorded the metric"
        time.sleep(0.1)
    with MetricsLogger(tmp_path, tensorboard=False, resume_step=5) as log:  # same W&B run
        log.write(6, {"train/wandb_probe_loss": 0.2})
    assert (tmp_path / "wandb_run_id").read_text().strip() == run_id


def test_wandb_asked_for_but_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ImportError, match=f"pip install wandb, or unset {WANDB_PROJECT_ENV}"):
        MetricsLogger(tmp_path, wandb_project="p")
