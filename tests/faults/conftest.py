"""Shared pieces of the fault-injection suite: a small dataset on disk, file truncation and
running ``erl`` in a subprocess (one torch thread, so its results match this process's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embodied_rl.datasets import collect

ENV = "tabletop/reach-v0"


@pytest.fixture(scope="session")
def reach_dataset(tmp_path_factory) -> Path:
    """6 expert episodes of 20 steps (state observations), collected once for the suite."""
    root = tmp_path_factory.mktemp("datasets")
    result = collect(
        ENV, "expert", episodes=6, out=root, dataset_id="faults/reach-expert-v0",
        env_kwargs={"horizon": 20}, reference_episodes=1, progress=False,
    )  # fmt: skip
    return result.path


@pytest.fixture(scope="session")
def truncate():
    """``truncate(path, fraction=0.5)`` cuts a file to a fraction of its bytes."""

    def cut(path: Path, fraction: float = 0.5) -> None:
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: int(len(data) * fraction)])

    return cut


@pytest.fixture(scope="session")
def erl(interruptible):
    """``erl(*args, cwd=...)``: start ``python -m embodied_rl.cli`` (a ``Popen`` that a test
    may interrupt with SIGINT)."""

    def start(*args: str, cwd: Path) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "embodied_rl.cli", *map(str, args)]
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            **interruptible,
        )  # fmt: skip

    return start
