"""Scripted-expert success rates: 100 seeded episodes per tabletop family (issue #3 asks for
>= 95% each) and Meta-World's scripted policies on every v3 task.

    python benchmarks/expert_success.py --episodes 100 --metaworld-episodes 10 \
        --out benchmarks/results/expert_success.md
"""

from __future__ import annotations

import argparse
import time
import warnings

import embodied_rl  # noqa: F401  (headless GL before mujoco)
from embodied_rl.envs import list_tasks, make, make_expert
from embodied_rl.evaluation.rollout import run_episodes


def success_rows(
    task_ids: list[str], episodes: int, **kwargs
) -> list[tuple[str, float, float, float]]:
    rows = []
    for task_id in task_ids:
        env = make(task_id, **kwargs)
        start = time.perf_counter()
        results = run_episodes(env, make_expert(env), episodes, seed=10_000, desc=task_id)
        elapsed = time.perf_counter() - start
        env.close()
        rate = sum(r.success for r in results) / len(results)
        mean_len = sum(r.length for r in results) / len(results)
        rows.append((task_id, rate, mean_len, sum(r.length for r in results) / elapsed))
        print(f"{task_id:40s} {rate:6.1%}  mean length {mean_len:6.1f}", flush=True)
    return rows


def table(rows, episodes: int) -> str:
    lines = [
        f"| task | success ({episodes} episodes) | mean length | steps/s incl. expert |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {t} | {r:.0%} | {n:.1f} | {s:,.0f} |" for t, r, n, s in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--metaworld-episodes", type=int, default=10, help="0 skips Meta-World")
    parser.add_argument("--split", default="all", choices=["seen", "unseen", "all"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="metaworld")

    tabletop = [t for t in list_tasks("tabletop") if "multitask" not in t]
    text = [
        "## Tabletop suite (MuJoCo)",
        "",
        table(success_rows(tabletop, args.episodes, split=args.split), args.episodes),
    ]
    if args.metaworld_episodes:
        rows = success_rows(list_tasks("metaworld"), args.metaworld_episodes)
        mean = sum(r for _, r, _, _ in rows) / len(rows)
        text += [
            "",
            "## Meta-World v3 scripted policies",
            "",
            f"Mean success over 50 tasks: {mean:.1%}",
            "",
        ]
        text.append(table(rows, args.metaworld_episodes))
    report = "\n".join(text)
    if args.out:
        command = (
            f"python benchmarks/expert_success.py --episodes {args.episodes} "
            f"--metaworld-episodes {args.metaworld_episodes} --split {args.split} --out {args.out}"
        )
        with open(args.out, "w") as f:
            f.write(f"Command: `{command}`\n\n{report}\n")


if __name__ == "__main__":
    main()
