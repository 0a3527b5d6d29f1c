"""Data-parallel training: two processes launched by torchrun (gloo on CPU) reach the loss
curve and the weights of one process with the same global batch."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import sys

    import numpy as np
    import torch
    from gymnasium import spaces

    from embodied_rl.agents import BCConfig, TrainerConfig, default_policy, train
    from embodied_rl.agents.trainer import seed_everything
    from embodied_rl.datasets import Episode, OfflineDataset

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(21, 6)).astype(np.float32) for _ in range(5)]
    episodes = [
        Episode(
            observations={"state": s},
            actions=np.tanh(s[:-1, :2] - s[:-1, 2:4]),  # a function to learn
            rewards=np.zeros(20), terminations=np.zeros(20, bool),
            truncations=np.r_[np.zeros(19, bool), True], infos={}, metadata={},
        )
        for s in states
    ]
    data = OfflineDataset.from_episodes(
        episodes, spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (6,), np.float32)}),
        spaces.Box(-1.0, 1.0, (2,), np.float32),
    )
    seed_everything(0)
    policy = default_policy("bc", data, hidden=(32, 32))
    config = TrainerConfig(steps=8, batch_size=16, log_every=1, eval_episodes=0, checkpoint_every=4)
    train("bc", data, sys.argv[1], BCConfig(learning_rate=1e-2), config, policy)
    """
)


DPO_SCRIPT = textwrap.dedent(
    """
    import copy
    import sys

    import torch

    from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
    from embodied_rl.llm.models import build_causal_lm, freeze, tiny_gpt2_config
    from embodied_rl.llm.tasks import TaskConfig, TaskGenerator
    from embodied_rl.utils.tokenizer import train_tokenizer

    torch.set_num_threads(1)
    task = TaskGenerator(TaskConfig(), seed=0)
    tokenizer = train_tokenizer(task.corpus(200), vocab_size=300)
    policy = build_causal_lm(tiny_gpt2_config(tokenizer, 1, 32, 2, 128), seed=0)
    reference = freeze(copy.deepcopy(policy))
    config = DPOConfig(steps=6, batch_size=8, log_every=1, learning_rate=1e-3, progress=False)
    DPOTrainer(policy, tokenizer, config, reference).train(task.comparisons(64), out=sys.argv[1])
    """
)


def losses(run: Path, name: str = "train/bc_loss") -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["name"] == name]


def run_both(tmp_path: Path, script_text: str) -> tuple[Path, Path]:
    """The script in one process, then in two through torchrun; their output directories."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    script = tmp_path / "train.py"
    script.write_text(script_text)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    for argv in (
        [sys.executable, str(script), str(tmp_path / "one")],
        [torchrun, "--nproc_per_node", "2", "--master_port", "29517", str(script),
         str(tmp_path / "two")],
    ):  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "one", tmp_path / "two"


@pytest.mark.timeout(300)
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    run_both(tmp_path, SCRIPT)
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 8 and a[-1] < a[0]  # it learns
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6)
    wa = load_file(tmp_path / "one" / "policy" / "model.safetensors")
    wb = load_file(tmp_path / "two" / "policy" / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "checkpoints").iterdir()
    )  # only the main process wrote them


@pytest.mark.timeout(300)
def test_dpo_on_two_processes_matches_one(tmp_path):
    """The LLM trainers shard their index batches and average gradients the same way (DPO's
    loss is a mean over pairs, so the curves agree to float rounding)."""
    one, two = run_both(tmp_path, DPO_SCRIPT)
    a, b = losses(one, "train/loss"), losses(two, "train/loss")
    assert len(a) == len(b) == 6
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-4, atol=1e-5)
