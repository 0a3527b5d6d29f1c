"""The PyBullet twin next to MuJoCo: scripted-expert success per tabletop family (issue #4 asks
for >= 90% on both backends) and env steps/s with state and 64x64 RGB observations.

    python benchmarks/expert_success_pybullet.py --episodes 100 --steps 3000 \
        --out benchmarks/results/backend_twin.md
"""

from __future__ import annotations

import argparse
import platform

# Sibling scripts (benchmarks/ is on sys.path when this file runs as a script); importing
# env_throughput first pins BLAS/OpenMP to one thread, as in its own measurements.
from env_throughput import env_steps_per_s
from expert_success import success_rows

from embodied_rl.envs import list_tasks

BACKENDS = ("mujoco", "pybullet")
MODES = {
    "state": {"obs_mode": "state"},
    "rgb 64x64": {"obs_mode": "rgb", "image_size": 64},
}


def success_table(episodes: int, split: str) -> str:
    """Expert success and episode length per family on both backends."""
    task_ids = [t for t in list_tasks("tabletop") if "multitask" not in t]
    rows = {b: success_rows(task_ids, episodes, split=split, backend=b) for b in BACKENDS}
    lines = [
        "| task | MuJoCo success | PyBullet success | mean length MuJoCo / PyBullet "
        "| steps/s incl. expert MuJoCo / PyBullet |",
        "|---|---:|---:|---:|---:|",
    ]
    for (task, mj_rate, mj_len, mj_fps), (_, pb_rate, pb_len, pb_fps) in zip(
        rows["mujoco"], rows["pybullet"], strict=True
    ):
        lines.append(
            f"| {task} | {mj_rate:.0%} | {pb_rate:.0%} | {mj_len:.1f} / {pb_len:.1f} "
            f"| {mj_fps:,.0f} / {pb_fps:,.0f} |"
        )
    return "\n".join(lines)


def throughput_table(task_id: str, steps: int, repeats: int) -> str:
    """Best-of-``repeats`` env steps/s (random actions) per observation mode and backend."""
    lines = [
        "| mode | MuJoCo steps/s | PyBullet steps/s | PyBullet / MuJoCo |",
        "|---|---:|---:|---:|",
    ]
    for label, kwargs in MODES.items():
        rate = {
            b: max(env_steps_per_s(task_id, steps, backend=b, **kwargs) for _ in range(repeats))
            for b in BACKENDS
        }
        ratio = rate["pybullet"] / rate["mujoco"]
        lines.append(f"| {label} | {rate['mujoco']:,.0f} | {rate['pybullet']:,.0f} | {ratio:.2f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--split", default="all", choices=["seen", "unseen", "all"])
    parser.add_argument("--task", default="tabletop/pick-v0", help="task of the throughput rows")
    parser.add_argument("--steps", type=int, default=3000, help="env steps per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="best of N throughput runs")
    parser.add_argument("--out", default=None, help="also write the report to this Markdown file")
    args = parser.parse_args()

    report = "\n".join(
        [
            f"## Scripted experts ({args.episodes} seeded episodes per family, split "
            f"`{args.split}`, seeds 10000+)",
            "",
            success_table(args.episodes, args.split),
            "",
            f"## Env throughput (`{args.task}`, random actions, {args.steps} steps, best of "
            f"{args.repeats}, 1 thread, {platform.processor() or platform.machine()})",
            "",
            throughput_table(args.task, args.steps, args.repeats),
        ]
    )
    print(report)
    if args.out:
        command = (
            f"python benchmarks/expert_success_pybullet.py --episodes {args.episodes} "
            f"--split {args.split} --task {args.task} --steps {args.steps} "
            f"--repeats {args.repeats} --out {args.out}"
        )
        with open(args.out, "w") as f:
            f.write(f"Command: `{command}`\n\n{report}\n")


if __name__ == "__main__":
    main()
