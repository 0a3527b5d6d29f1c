"""The README's command-line walk-through, run as written with small sizes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from embodied_rl.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {  # option or key -> the value the test uses
    "--episodes": "3", "--steps": "4", "--batch-size": "4", "--videos": "1",
    "env_steps": "64",
}  # fmt: skip
OPTIONS = {  # small enough for a test: short episodes, small images, one evaluation episode
    "collect": ["--horizon", "10", "--image-size", "32", "--no-progress"],
    "train": ["--eval-episodes", "0"],
    "evaluate": ["--episodes", "1"],
    "transfer": ["--episodes", "1"],
    "finetune": [],
}
OVERRIDES = {  # KEY=VALUE arguments, after the command's own
    "train": ["policy.n_layers=1"],
    "finetune": ["n_envs=1", "eval_episodes=1", "ppo.n_steps=32", "ppo.batch_size=16"],
}


def walkthrough() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"## The command line.*?```bash\n(.*?)```", text, re.S)
    assert block, "README lost its command-line walk-through"
    return [
        shlex.split(line)[1:] for line in block.group(1).splitlines() if line.startswith("erl ")
    ]


def shrink(args: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg in SMALL:
            out += [arg, SMALL[arg]]
            i += 2
            continue
        key = arg.split("=", 1)[0]
        out.append(f"{key}={SMALL[key]}" if "=" in arg and key in SMALL else arg)
        i += 1
    return [out[0], *OPTIONS[args[0]], *out[1:], *OVERRIDES.get(args[0], [])]


def test_readme_walkthrough_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = walkthrough()
    assert [c[0] for c in commands] == ["collect", "train", "evaluate", "transfer", "finetune"]
    for command in commands:
        assert main(shrink(command)) == 0, command
    assert (tmp_path / "outputs" / "bc" / "policy" / "model.safetensors").is_file()
    assert list((tmp_path / "outputs" / "transfer").glob("rollouts_*.gif"))
    assert (tmp_path / "outputs" / "ppo" / "result.json").is_file()
