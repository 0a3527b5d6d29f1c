"""Normalized scores of BC, IQL, CQL, Cal-QL and DT (3 seeds) on medium and mixed datasets.

Tasks: tabletop reach and push, Meta-World reach (state observations). Writes a Markdown
table of mean +- std normalized score and success rate to ``--out``. Not yet included:
d3rlpy's IQL on the same data (the subprocess recipe of ``offline_speed.py`` would serve).

    python benchmarks/offline_learning.py --episodes 60 --steps 3000 --eval-episodes 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

TASKS = ("tabletop/reach-v0", "tabletop/push-v0", "metaworld/reach-v3")
ALGOS = ("bc", "iql", "cql", "calql", "dt")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--tiers", nargs="+", default=["medium", "mixed"])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/offline_learning.md")
    args = parser.parse_args()

    import torch

    from embodied_rl.agents import TrainerConfig, train
    from embodied_rl.datasets import collect, load_dataset

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            for tier in args.tiers:
                name = task.split("/")[1].rsplit("-v", 1)[0]
                result = collect(
                    task, tier, episodes=args.episodes, out=tmp, reference_episodes=5,
                    dataset_id=f"bench/{name}-{tier}-v0", progress=False,
                )  # fmt: skip
                data = load_dataset(result.path, obs_keys=["state"])
                for algo in args.algos:
                    scores, success = [], []
                    for seed in range(args.seeds):
                        config = TrainerConfig(
                            steps=args.steps, batch_size=args.batch_size, seed=seed,
                            eval_every=0, eval_episodes=args.eval_episodes,
                            checkpoint_every=0, progress=False, tensorboard=False,
                            log_every=max(1, args.steps // 4),
                        )  # fmt: skip
                        out = Path(tmp) / "runs" / f"{name}-{tier}-{algo}-{seed}"
                        _, res = train(algo, data, out, trainer_config=config)
                        scores.append(res["eval/normalized_score"])
                        success.append(res["eval/success_rate"])
                    row = (task, tier, algo, np.mean(scores), np.std(scores), np.mean(success))
                    rows.append(row)
                    print("{} {} {}: {:.1f} +- {:.1f}, success {:.0%}".format(*row), flush=True)
    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"{args.episodes} episodes per dataset, {args.steps} gradient steps, batch "
        f"{args.batch_size}, {args.seeds} seeds, {args.eval_episodes} evaluation episodes.",
        "",
        "| task | data | agent | normalized score | success |",
        "|---|---|---|---:|---:|",
        *[f"| {t} | {d} | {a} | {m:.1f} +- {s:.1f} | {r:.0%} |" for t, d, a, m, s, r in rows],
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
