"""Ctrl-C during ``erl collect`` keeps every completed episode and ``--resume`` completes the
same dataset; ``kill -9`` during ``erl train`` loses at most the work since the last
checkpoint, and ``--resume`` ends with the uninterrupted run's exact parameters."""

from __future__ import annotations

import hashlib
import logging
import shutil
import signal
from pathlib import Path

import pytest
import torch

from embodied_rl.agents import load_agent
from embodied_rl.cli import main
from embodied_rl.datasets import collect, load_dataset

ENV = "tabletop/reach-v0"
EPISODES = 300  # 20-step episodes of ~7 ms: the run's collection lasts ~2 s
REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(300)
def test_ctrl_c_during_erl_collect_keeps_episodes_and_resume_completes(
    tmp_path, erl, interrupt_midway
):
    for attempt in range(3):  # a fresh run when the test was too slow to stop the last one
        out = tmp_path / f"run{attempt}"
        args = [
            "collect", "--task", ENV, "--tier", "medium", "--episodes", str(EPISODES),
            "--horizon", "20", "--out", out, "--name", "faults/ctrl-c-v0",
            "--reference-episodes", "1", "--no-progress",
        ]  # fmt: skip
        episodes = out / "faults" / ".ctrl-c-v0.partial" / "episodes"
        process = erl(*args, cwd=tmp_path)  # tests/datasets interrupts 2 workers (Python API)
        count = lambda d=episodes: len(list(d.glob("episode_*.hdf5")))  # noqa: E731
        if interrupt_midway(process, count, 3, EPISODES):
            break
        process.communicate(timeout=120)
    else:
        pytest.fail("the collection finished three times before the test could interrupt it")
    _, stderr = process.communicate(timeout=120)
    seen = {p.name for p in episodes.glob("episode_*.hdf5")}  # every episode it completed
    assert process.returncode == 130 and "erl: interrupted" in stderr, stderr
    partial = load_dataset("faults/ctrl-c-v0", out)
    indices = partial.metadata["embodied_rl"]["completed_episode_indices"]
    assert {f"episode_{i:07d}.hdf5" for i in indices} >= seen  # nothing completed is lost
    assert len(indices) < EPISODES and partial.metadata["embodied_rl"]["interrupted"]

    assert main([*map(str, args), "--resume"]) == 0  # in this process, to save a startup
    kwargs = {"obs_mode": "state", "image_size": 64, "horizon": 20}  # what erl collect passes
    straight = collect(
        ENV, "medium", episodes=EPISODES, out=tmp_path / "straight", dataset_id="faults/ctrl-c-v0",
        env_kwargs=kwargs, reference_episodes=1, progress=False,
    )  # fmt: skip
    for name in ("main_data.hdf5", "metadata.json"):
        done = out / "faults" / "ctrl-c-v0" / "data" / name
        assert sha256(done) == sha256(straight.path / "data" / name), name


@pytest.mark.timeout(300)
def test_kill_9_during_erl_train_loses_at_most_the_work_since_the_last_checkpoint(
    reach_dataset, tmp_path, erl, caplog, interrupt_midway
):
    steps, every = 400, 100
    last = tmp_path / "run" / "checkpoints" / "last"

    def checkpointed() -> int:
        return int(last.read_text().strip().split("_")[1]) if last.is_file() else 0

    for _ in range(3):  # a fresh run when the test was too slow to stop the last one
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        args = [
            "train", "--algo", "bc", "--dataset", reach_dataset, "--steps", steps,
            "--checkpoint-every", every, "--batch-size", "32", "--eval-episodes", "0",
            "--out", tmp_path / "run",
        ]  # fmt: skip
        process = erl(*args, cwd=REPO)  # as this process: the same configs/agents/bc.yaml
        # SIGKILL: no handler runs, whatever was being written stays half-written
        if interrupt_midway(process, checkpointed, every, steps, sig=signal.SIGKILL):
            break
        process.communicate(timeout=120)
    else:
        pytest.fail("training finished three times before the test could kill it")
    process.wait(timeout=30)
    killed_at = int(last.read_text().strip().split("_")[1])
    assert every <= killed_at < steps and killed_at % every == 0
    assert load_agent(tmp_path / "run" / "checkpoints").step == killed_at  # complete, loadable

    with caplog.at_level(logging.INFO, logger="embodied_rl.agents.trainer"):
        assert main([*map(str, args), "--resume"]) == 0  # here: one torch thread, as there
    assert f"resumed {tmp_path / 'run'} at step {killed_at}" in caplog.text  # none redone

    straight_args = [a if a != tmp_path / "run" else tmp_path / "straight" for a in args]
    assert main(list(map(str, straight_args))) == 0  # uninterrupted, in this process
    straight = load_agent(tmp_path / "straight" / "checkpoints")
    final = load_agent(tmp_path / "run" / "checkpoints")
    assert final.step == steps
    for a, b in zip(
        final.policy.state_dict().values(), straight.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
