"""Collection: reproducible across worker counts, tiers, reference scores, interruption,
crashed workers, resume, domain parameters and the ``erl collect`` command."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from embodied_rl.cli import main
from embodied_rl.datasets import CollectionError, collect, load_dataset, normalized_score
from embodied_rl.datasets.collect_worker import record_episode

ENV = "tabletop/reach-v0"
STATE = {"horizon": 20}
IMAGES = {"obs_mode": "rgb+state", "image_size": 32, "horizon": 20}


def _hashes(path) -> list[str]:
    files = ("main_data.hdf5", "metadata.json")
    return [hashlib.sha256((path / "data" / f).read_bytes()).hexdigest() for f in files]


class ZeroPolicy:
    """Deterministic; raises KeyboardInterrupt when episode number ``interrupt_at`` starts."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.interrupt_at, self.started = interrupt_at, 0

    def reset(self) -> None:
        self.started += 1

    def act(self, obs) -> np.ndarray:
        if self.interrupt_at is not None and self.started > self.interrupt_at:
            raise KeyboardInterrupt
        return np.zeros(4, dtype=np.float32)


class FailingFactory:
    """Policy factory that fails on episodes with index >= ``at`` (raise or hard exit)."""

    def __init__(self, at: int, hard_exit: bool = False) -> None:
        self.at, self.hard_exit = at, hard_exit

    def __call__(self, env, seed: int) -> ZeroPolicy:
        index = env.unwrapped.np_random_seed  # collect(seed=0): the reset seed is the index
        if index >= self.at:
            if self.hard_exit:
                os._exit(3)  # like a worker killed by the OOM killer
            raise RuntimeError(f"boom in episode {index}")
        return ZeroPolicy()


def test_same_call_is_bit_identical_with_1_and_2_workers(tmp_path):
    paths = [
        collect(
            ENV, "mixed", episodes=4, workers=workers, out=tmp_path / str(workers),
            env_kwargs=IMAGES, reference_episodes=1, progress=False,
        ).path
        for workers in (1, 2)
    ]  # fmt: skip
    assert _hashes(paths[0]) == _hashes(paths[1])
    data = load_dataset(paths[0])
    assert [m["tier"] for m in data.episode_metadata] == ["expert", "medium", "random", "expert"]
    assert [m["seed"] for m in data.episode_metadata] == [0, 1, 2, 3]
    assert data.metadata["embodied_rl"]["image_codec"]["codec"] == "gzip"


def test_tiers_store_reference_scores(collected):
    _, result = collected
    data = load_dataset(result.path)
    meta = data.metadata
    refs = meta["embodied_rl"]["reference"]
    assert meta["ref_max_score"] == refs["max"]["mean_return"] == 1.0  # expert always succeeds
    assert meta["ref_min_score"] == refs["min"]["mean_return"] == 0.0
    assert result.normalized_score == pytest.approx(100.0)
    scores = normalized_score(data.episode_returns(), data)
    np.testing.assert_allclose(scores, 100.0)
    first = data.episode_metadata[0]
    assert {"instruction", "task", "seed", "success", "episode_return"} <= set(first)
    assert first["instruction"] and first["task"] == "reach" and first["success"] is True


def test_normalized_score_formula():
    np.testing.assert_allclose(normalized_score([2.0, 6.0, 10.0], (2.0, 10.0)), [0, 50, 100])
    meta = {"ref_min_score": -1.0, "ref_max_score": 3.0}
    assert normalized_score(0.0, meta) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="lacks ref_min_score"):
        normalized_score(1.0, {})
    with pytest.raises(ValueError, match="must exceed"):
        normalized_score(1.0, (1.0, 1.0))


def test_keyboard_interrupt_keeps_completed_episodes_and_resume_completes(tmp_path):
    kwargs = dict(
        episodes=5, out=tmp_path, dataset_id="demo/zero-v0", env_kwargs=STATE, progress=False
    )
    kwargs["reference_episodes"] = 1
    with pytest.raises(KeyboardInterrupt):
        collect(ENV, ZeroPolicy(interrupt_at=3), **kwargs)
    partial = load_dataset("demo/zero-v0", tmp_path)
    assert partial.n_episodes == 3
    assert partial.metadata["embodied_rl"]["interrupted"] is True
    assert partial.metadata["embodied_rl"]["completed_episode_indices"] == [0, 1, 2]
    with pytest.raises(FileExistsError, match="resume=True"):
        collect(ENV, ZeroPolicy(), **kwargs)
    resumed = collect(ENV, ZeroPolicy(), resume=True, **kwargs)
    assert resumed.n_episodes == 5 and not resumed.interrupted
    straight = collect(ENV, ZeroPolicy(), **{**kwargs, "out": tmp_path / "straight"})
    assert _hashes(resumed.path) == _hashes(straight.path)  # resuming changes nothing
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "demo").iterdir())


def test_crashing_worker_surfaces_traceback_and_keeps_episodes(tmp_path):
    with pytest.raises(CollectionError) as error:
        collect(
            ENV, FailingFactory(at=3), episodes=6, workers=2, out=tmp_path,
            dataset_id="demo/crash-v0", env_kwargs=STATE, reference_episodes=0, progress=False,
        )  # fmt: skip
    message = str(error.value)
    assert re.search(r"RuntimeError: boom in episode [34]", message)  # whichever came first
    assert "Traceback" in message and 'test_collect.py", line' in message
    assert "3 completed episodes were saved" in message
    data = load_dataset("demo/crash-v0", tmp_path)
    assert [m["seed"] for m in data.episode_metadata] == [0, 1, 2]


def test_killed_worker_does_not_hang(tmp_path):
    with pytest.raises(CollectionError, match="died abruptly"):
        collect(
            ENV, FailingFactory(at=2, hard_exit=True), episodes=5, workers=2, out=tmp_path,
            dataset_id="demo/killed-v0", env_kwargs=STATE, reference_episodes=0, progress=False,
        )  # fmt: skip
    data = load_dataset("demo/killed-v0", tmp_path)
    assert 1 <= data.n_episodes <= 2 and data.metadata["embodied_rl"]["interrupted"]


class _FakeDomain(gym.Wrapper):
    """Stands in for the domain-randomization wrapper: reports parameters at reset."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info["domain"] = {"friction_scale": 1.25, "light_intensity": 0.5}
        return obs, info


def test_domain_parameters_are_stored_per_episode():
    from embodied_rl.envs import make

    env = _FakeDomain(make(ENV, horizon=5))
    episode = record_episode(env, lambda task: (ZeroPolicy(), "custom", None), seed=4)
    env.close()
    assert episode.metadata["domain"] == {"friction_scale": 1.25, "light_intensity": 0.5}
    assert episode.metadata["seed"] == 4 and len(episode) == 5
    assert len(episode.observations["instruction"]) == 6


def test_existing_dataset_is_not_overwritten(collected):
    root, result = collected
    with pytest.raises(FileExistsError, match="overwrite=True"):
        collect(ENV, "expert", episodes=1, out=root, dataset_id=result.dataset_id, progress=False)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="policy_or_expert=.great."):
        collect(ENV, "great")
    with pytest.raises(ValueError, match="workers=0"):
        collect(ENV, "expert", workers=0)


def test_erl_collect_command(tmp_path, capsys):
    code = main(
        ["collect", "--task", ENV, "--tier", "random", "--episodes", "2", "--out", str(tmp_path),
         "--name", "cli/reach-random-v0", "--horizon", "10", "--reference-episodes", "1",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "cli/reach-random-v0" in out and "2 episodes" in out
    meta = json.loads((tmp_path / "cli/reach-random-v0/data/metadata.json").read_text())
    assert meta["embodied_rl"]["collection"]["tier"] == "random"
    assert meta["total_steps"] == 20


CTRL_C_SCRIPT = """
import sys
from embodied_rl.datasets import collect

if __name__ == "__main__":
    collect("tabletop/reach-v0", "medium", episodes=400, workers=2, out=sys.argv[1],
            dataset_id="demo/ctrl-c-v0", env_kwargs={"horizon": 20}, reference_episodes=0,
            progress=False)
"""


def test_ctrl_c_with_workers_saves_a_valid_dataset(tmp_path, interruptible, interrupt_midway):
    script = tmp_path / "run.py"
    script.write_text(CTRL_C_SCRIPT)
    for attempt in range(3):  # a fresh run when the test was too slow to stop the last one
        out = tmp_path / f"run{attempt}"
        episodes_dir = out / "demo" / ".ctrl-c-v0.partial" / "episodes"
        command = [sys.executable, str(script), str(out)]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, **interruptible)
        count = lambda d=episodes_dir: len(list(d.glob("episode_*.hdf5")))  # noqa: E731
        if interrupt_midway(process, count, 4, 400):
            break
        process.communicate(timeout=60)
    else:
        pytest.fail("the collection finished three times before the test could interrupt it")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and b"KeyboardInterrupt" in stderr
    data = load_dataset("demo/ctrl-c-v0", out)
    assert 4 <= data.n_episodes < 400 and data.metadata["embodied_rl"]["interrupted"]
    assert [m["seed"] for m in data.episode_metadata] == sorted(
        m["seed"] for m in data.episode_metadata
    )
