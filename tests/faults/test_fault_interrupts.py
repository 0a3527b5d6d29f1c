"""Ctrl-C during ``erl collect`` keeps every completed episode and ``--resume`` completes the
same dataset; ``kill -9`` during ``erl train`` loses at most the work since the last
checkpoint, and ``--resume`` ends with the uninterrupted run's exact parameters."""

from __future__ import annotations

import hashlib
import logging
import signal
import time
from pathlib import Path

import pytest
import torch

from embodied_rl.agents import load_agent
from embodied_rl.cli import main
from embodied_rl.datasets import collect, load_dataset

ENV = "tabletop/reach-v0"
# 20-step episodes take ~7 ms each: 150 finished ~1 s after the third one, so a test process
# delayed by a loaded machine sent its SIGINT to a finished run (exit status 0); 500 leave ~3 s
EPISODES = 500
REPO = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout_s: float = 90.0, process=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended early:\n{process.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.02)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(300)
def test_ctrl_c_during_erl_collect_keeps_episodes_and_resume_completes(tmp_path, erl):
    args = [
        "collect", "--task", ENV, "--tier", "medium", "--episodes", str(EPISODES), "--horizon", "20",
        "--out", tmp_path / "run", "--name", "faults/ctrl-c-v0", "--reference-episodes", "1",
        "--no-progress",
    ]  # fmt: skip
    episodes = tmp_path / "run" / "faults" / ".ctrl-c-v0.partial" / "episodes"
    process = erl(*args, cwd=tmp_path)  # tests/datasets interrupts 2 workers (Python API)
    wait_for(lambda: len(list(episodes.glob("episode_*.hdf5"))) >= 3, process=process)
    seen = {p.name for p in episodes.glob("episode_*.hdf5")}
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "erl: interrupted" in stderr
    partial = load_dataset("faults/ctrl-c-v0", tmp_path / "run")
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
        done = tmp_path / "run" / "faults" / "ctrl-c-v0" / "data" / name
        assert sha256(done) == sha256(straight.path / "data" / name), name


@pytest.mark.timeout(300)
def test_kill_9_during_erl_train_loses_at_most_the_work_since_the_last_checkpoint(
    reach_dataset, tmp_path, erl, caplog
):
    steps, every = 400, 100
    args = [
        "train", "--algo", "bc", "--dataset", reach_dataset, "--steps", steps,
        "--checkpoint-every", every, "--batch-size", "32", "--eval-episodes", "0",
        "--out", tmp_path / "run",
    ]  # fmt: skip
    last = tmp_path / "run" / "checkpoints" / "last"
    process = erl(*args, cwd=REPO)  # as this process: the same embodied_rl/configs/agents/bc.yaml
    wait_for(
        lambda: last.is_file() and last.read_text().strip() >= "step_000000100", process=process
    )
    process.kill()  # SIGKILL: no handler runs, whatever was being written stays half-written
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
