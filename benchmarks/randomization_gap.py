"""Does domain randomization shrink the sim-to-sim gap? The same BC policy trained on
demonstrations without and with randomization, evaluated on the nominal simulator and on
held-out target domains (heavier randomization, pinned parameters outside the training
ranges, the PyBullet twin).

``--policy vla``: the pipeline's tiny VLA on images + instruction; each arm is the pipeline's
``collect -> bc -> transfer`` stages with one config change (``collect.randomization``).
``--policy mlp``: a state MLP (BC, MSE) on ``--episodes`` demonstrations; physics and sensor
randomization matter to it, visual randomization does not. Runs resume if interrupted.

    python benchmarks/randomization_gap.py --policy mlp --out benchmarks/results/randomization_gap_mlp.md
    python benchmarks/randomization_gap.py --policy vla \
        "transfer.targets=[heavy,camera_yaw_deg=10,light_intensity_scale=0.4,action_latency_steps=2,pybullet]" \
        transfer.episodes=50 transfer.video_episodes=0 --arms none default \
        --out benchmarks/results/randomization_gap_vla.md  (overrides before --arms)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arms", nargs="+", default=["none", "default"], help="randomization presets"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pipeline overrides")
    parser.add_argument("--policy", choices=["vla", "mlp"], default="vla")
    parser.add_argument("--task", default="tabletop/reach-v0", help="mlp: tabletop task id")
    parser.add_argument("--episodes", type=int, default=800, help="mlp: demonstrations per arm")
    parser.add_argument("--steps", type=int, default=3000, help="mlp: BC gradient steps")
    parser.add_argument("--eval-episodes", type=int, default=50, help="mlp: per domain")
    parser.add_argument("--work", default="outputs/bench/randomization_gap")
    parser.add_argument("--out", default="benchmarks/results/randomization_gap.md")
    args = parser.parse_args()

    from embodied_rl.runners.pipeline import Pipeline, load_pipeline_config

    started = time.perf_counter()
    if args.policy == "mlp":
        return run_mlp(args, started)
    results = {}
    for arm in args.arms:
        config = load_pipeline_config(
            overrides=[*args.overrides, f"collect.randomization={arm}", "transfer.source=none"]
        )
        run = Path(args.work) / arm
        Pipeline(config, run).run(("collect", "bc", "transfer"), resume=True)
        results[arm] = json.loads((run / "transfer" / "bc" / "transfer.json").read_text())
    minutes = (time.perf_counter() - started) / 60
    intro = (
        f"Task {config.task}; {config.collect.episodes} expert demonstrations per arm; BC of "
        f"the tiny VLA (images, instruction, ee position) for {config.bc.steps} steps; "
        f"{config.transfer.episodes} evaluation episodes per domain (95% Wilson intervals)."
    )
    write_table(args, results, minutes, intro)
    return 0


def run_mlp(args, started: float) -> int:
    import torch

    from embodied_rl.agents import TrainerConfig, train
    from embodied_rl.datasets import collect, dataset_dir, load_dataset
    from embodied_rl.evaluation.transfer import evaluate_transfer

    torch.set_num_threads(1)
    task, targets = (
        args.task,
        ["heavy", "friction_scale=0.5,object_mass_scale=2", "pybullet"],
    )
    results = {}
    for arm in args.arms:
        work = Path(args.work) / f"mlp-{task.split('/')[1]}-{arm}"
        record = work / "transfer" / "transfer.json"
        if not record.exists():
            dataset_id = f"bench/{task.split('/')[1].rsplit('-v', 1)[0]}-{arm}-v0"
            if not (dataset_dir(work / "data", dataset_id) / "data" / "metadata.json").exists():
                collect(
                    task, "expert", episodes=args.episodes, out=work / "data",
                    dataset_id=dataset_id, randomization=None if arm == "none" else arm,
                    overwrite=True, progress=True,
                )  # fmt: skip
            data = load_dataset(dataset_dir(work / "data", dataset_id), obs_keys=["state"])
            config = TrainerConfig(
                steps=args.steps, eval_every=0, eval_episodes=0, checkpoint_every=0,
                tensorboard=False, progress=True,
            )  # fmt: skip
            agent, _ = train("bc", data, work / "bc", trainer_config=config)
            evaluate_transfer(
                agent.policy.eval(), "nominal", targets, task_id=task,
                episodes=args.eval_episodes, seed=1_000_000, out=work / "transfer",
            )  # fmt: skip
        results[arm] = json.loads(record.read_text())
    minutes = (time.perf_counter() - started) / 60
    intro = (
        f"Task {task}; {args.episodes} expert demonstrations per arm (state observations); BC "
        f"of an MLP (256x256, standardised inputs, MSE) for {args.steps} steps; "
        f"{args.eval_episodes} evaluation episodes per domain (95% Wilson intervals)."
    )
    write_table(args, results, minutes, intro)
    return 0


def write_table(args, results: dict, minutes: float, intro: str) -> None:
    first = results[args.arms[0]]
    domains = [first["source"]["domain"]["name"], *(t["domain"]["name"] for t in first["targets"])]
    lines = [
        f"Command: `python {' '.join(sys.argv)}` ({minutes:.0f} min for the runs not cached)",
        "",
        intro + " The source domain is the nominal simulator; every target is held out from "
        "both arms' training data.",
        "",
        "| trained with | " + " | ".join(domains) + " | mean gap to nominal |",
        "|---|" + "---:|" * (len(domains) + 1),
    ]
    for arm, result in results.items():
        rows = [result["source"], *result["targets"]]
        cells = [f"{r['success_rate']:.0%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}]" for r in rows]
        gap = sum(r["gap"] for r in result["targets"]) / max(1, len(result["targets"]))
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {gap:+.0%} |")
    lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
