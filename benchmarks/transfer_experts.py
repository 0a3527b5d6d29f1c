"""Scripted experts across domains: nominal MuJoCo vs randomization presets, action latency and
the PyBullet twin, per tabletop family; plus two sensitivity sweeps on the push task.

    python benchmarks/transfer_experts.py --episodes 50 --workers 2 --out benchmarks/results/transfer_experts.md
"""

from __future__ import annotations

import argparse
import time

import embodied_rl  # noqa: F401  (headless GL before mujoco)
from embodied_rl.envs import list_tasks
from embodied_rl.envs.registration import BACKENDS
from embodied_rl.evaluation.transfer import evaluate_transfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    targets = ["light", "default", "heavy", "action_latency_steps=3"]
    if "pybullet" in BACKENDS:
        targets += ["pybullet", "pybullet+default"]
    header = "| task | nominal | " + " | ".join(targets) + " |"
    lines = [header, "|---|" + "---:|" * (len(targets) + 1)]
    start = time.perf_counter()
    for task_id in [t for t in list_tasks("tabletop") if "multitask" not in t]:
        report = evaluate_transfer(
            "expert",
            "nominal",
            targets,
            task_id=task_id,
            episodes=args.episodes,
            workers=args.workers,
        )
        cells = [
            f"{r.success_rate:.0%} [{r.ci_low:.0%}, {r.ci_high:.0%}]"
            for r in [report.source, *report.targets]
        ]
        lines.append(f"| {task_id} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    sweep = evaluate_transfer(
        "expert",
        "nominal",
        [],
        task_id="tabletop/push-v0",
        episodes=args.episodes,
        workers=args.workers,
        sweeps={
            "friction_scale": [0.2, 0.5, 1.0, 2.0, 4.0],
            "action_latency_steps": [0, 1, 2, 3, 4],
        },
        out="outputs/transfer_experts_push",
    )
    text = "\n".join(
        [
            f"Expert success with 95% Wilson intervals, {args.episodes} episodes per cell "
            f"(same seeds in every domain), {time.perf_counter() - start:.0f} s.",
            "",
            *lines,
            "",
            "Sensitivity of the push expert (plots in outputs/transfer_experts_push/):",
            "",
            sweep.markdown(),
        ]
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            command = f"python benchmarks/transfer_experts.py --episodes {args.episodes} --workers {args.workers} --out {args.out}"
            f.write(f"Command: `{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
