"""IQL's published settings against each other on our sparse-reward mixed datasets.

IQL has two published settings: the MuJoCo locomotion one (expectile 0.7, temperature 3,
rewards as they are) and the AntMaze one for sparse goal-reaching (expectile 0.9,
temperature 10, reward - 1). ``offline_learning.py`` uses the AntMaze one on sparse data;
this script trains IQL with each (plus locomotion with the reward - 1 shift) on the same
cached datasets, seeds and budget, and writes one table, so the choice is measured rather
than assumed.

    python benchmarks/iql_settings.py --data metaworld/reach-v3:mixed:200 \
        tabletop/reach-v0:mixed:1000 --seeds 3 --steps 5000 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from offline_learning import dataset_for, objects_tag, run_ours  # noqa: E402

SETTINGS = {
    "antmaze": {"expectile": 0.9, "temperature": 10.0, "reward_bias": -1.0},
    "locomotion": {"expectile": 0.7, "temperature": 3.0, "reward_bias": 0.0},
    "locomotion-r-1": {"expectile": 0.7, "temperature": 3.0, "reward_bias": -1.0},
}


def parse_data(item: str) -> tuple[str, str, int, int]:
    """``TASK:TIER:EPISODES[:N_OBJECTS]`` -> its parts (0 objects: the task's default)."""
    parts = item.split(":")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts[2:]):
        raise argparse.ArgumentTypeError(f"{item!r}: expected TASK:TIER:EPISODES[:N_OBJECTS]")
    return parts[0], parts[1], int(parts[2]), int(parts[3]) if len(parts) == 4 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=parse_data, required=True)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--work", default="outputs/bench/ol", help="offline_learning.py's cache")
    parser.add_argument("--out", default="benchmarks/results/iql_settings.md")
    args = parser.parse_args()

    import torch

    from embodied_rl.agents.iql import IQLConfig
    from embodied_rl.utils.io import write_text_atomic

    torch.set_num_threads(1)
    work, started = Path(args.work), time.perf_counter()
    rows = []
    for task, tier, episodes, n_objects in args.data:
        data = dataset_for(task, tier, episodes, work, n_objects)
        for name in args.settings:
            successes = []
            for seed in range(args.seeds):
                objects = objects_tag(n_objects)
                tag = f"{task.replace('/', '_')}{objects}-{tier}-iql_{name}-{args.precision}-{seed}"
                record = work / "settings" / f"{tag}.json"
                if record.exists():
                    result = json.loads(record.read_text())
                else:
                    config = IQLConfig(precision=args.precision, **SETTINGS[name])
                    result = run_ours(
                        "iql", data, args.steps, seed, args.eval_episodes,
                        work / "settings" / tag, config=config,
                    )  # fmt: skip
                    record.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomic(record, json.dumps(result))
                successes.append(result["eval/success_rate"])
                print(f"{tag}: success {successes[-1]:.0%}", flush=True)
            label = f"{task}{f' ({n_objects} object)' if n_objects else ''}"
            rows.append((label, tier, name, successes))
    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"IQL, {args.steps} gradient steps, batch 256, {args.precision} updates, "
        f"{args.seeds} seeds, {args.eval_episodes} evaluation episodes per seed, one thread; "
        f"datasets from `{args.work}` (offline_learning.py's). Settings: "
        + "; ".join(
            f"{n}: expectile {s['expectile']}, temperature {s['temperature']}, "
            f"reward_bias {s['reward_bias']}"
            for n, s in SETTINGS.items()
            if n in args.settings
        )
        + f". This invocation ran for {(time.perf_counter() - started) / 60:.0f} min.",
        "",
        "| data | tier | settings | success (mean +- sd) | per seed |",
        "|---|---|---|---:|---|",
        *[
            f"| {label} | {tier} | {name} | {np.mean(s):.0%} +- {np.std(s):.0%} "
            f"| {' / '.join(f'{x:.0%}' for x in s)} |"
            for label, tier, name, s in rows
        ],
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
