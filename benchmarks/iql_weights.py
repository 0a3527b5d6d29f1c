"""Where IQL's advantage weights go on a ``mixed`` dataset, and the filtered-BC headroom.

A ``mixed`` dataset cycles scripted-expert, noisy-expert (``medium``) and uniform-random
episodes. IQL can only beat BC there if its advantage-weighted regression puts more weight on
the better actions than their share of the data. This script trains IQL, then reports per tier
the mean value, advantage and AWR weight of the dataset's transitions and the share of the
total weight each tier receives; next to it, BC and "filtered BC" (BC on the successful
episodes only: the headroom a perfect filter would give).

    python benchmarks/iql_weights.py --steps 20000 --out benchmarks/results/iql_weights.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TIERS = ("expert", "medium", "random")  # the mixed tier's episode cycle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="tabletop/reach-v0")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval-episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--settings", nargs="+", default=["3,0.7,-1", "10,0.9,-1"],
        metavar="TEMP,EXPECTILE,BIAS", help="IQL settings to compare",
    )  # fmt: skip
    parser.add_argument("--work", default="outputs/bench/iql_weights")
    parser.add_argument("--out", default="benchmarks/results/iql_weights.md")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from offline_learning import dataset_for

    from embodied_rl.agents import TrainerConfig, train
    from embodied_rl.agents.iql import IQLConfig
    from embodied_rl.agents.losses import awr_weights
    from embodied_rl.datasets.offline import OfflineDataset

    torch.set_num_threads(1)
    work = Path(args.work)
    data = dataset_for(args.task, "mixed", args.episodes, work)
    tier = data.episode_index % len(TIERS)  # per transition
    trainer = TrainerConfig(
        steps=args.steps, batch_size=256, seed=args.seed, eval_every=0,
        eval_episodes=args.eval_episodes, checkpoint_every=0, progress=False,
        tensorboard=False, log_every=max(1, args.steps // 4),
    )  # fmt: skip
    started = time.perf_counter()
    rows, success = [], {}

    _, result = train("bc", data, work / "bc", trainer_config=trainer)
    success["BC (all episodes)"] = result["eval/success_rate"]
    kept = [e for e, ret in zip(data.episodes(), data.episode_returns(), strict=True) if ret > 0]
    filtered = OfflineDataset.from_episodes(
        kept, data.observation_space, data.action_space, metadata=data.metadata
    )
    _, result = train("bc", filtered, work / "filtered_bc", trainer_config=trainer)
    success[f"filtered BC ({len(kept)} successful episodes)"] = result["eval/success_rate"]

    states = torch.as_tensor(data.observations["state"][data.obs_index])
    actions = torch.as_tensor(data.actions)
    for setting in args.settings:
        temp, expectile, bias = (float(x) for x in setting.split(","))
        config = IQLConfig(temperature=temp, expectile=expectile, reward_bias=bias)
        name = f"IQL beta {temp:g}, expectile {expectile:g}, reward bias {bias:g}"
        agent, result = train("iql", data, work / f"iql_{setting}", config, trainer)
        success[name] = result["eval/success_rate"]
        with torch.no_grad():
            v = agent.value(states)
            adv = agent.target_critic(states, actions).min(0).values - v
            w = awr_weights(adv, temp, config.max_weight)
        for t, tier_name in enumerate(TIERS):
            m = torch.as_tensor(tier == t)
            rows.append(
                f"| {name} | {tier_name} | {m.float().mean():.0%} | {v[m].mean():.1f} | "
                f"{adv[m].mean():.2f} +- {adv[m].std():.2f} | {w[m].mean():.1f} | "
                f"{w[m].sum() / w.sum():.0%} |"
            )

    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"{args.task}, mixed tier, {args.episodes} episodes ({data.n_transitions} transitions), "
        f"{args.steps} gradient steps of batch 256, seed {args.seed}, {args.eval_episodes} "
        f"evaluation episodes; {(time.perf_counter() - started) / 60:.0f} min.",
        "",
        "| policy | success |",
        "|---|---:|",
        *[f"| {k} | {v:.0%} |" for k, v in success.items()],
        "",
        "Per tier of the dataset, after IQL's training (V, advantage Q - V and AWR weight of "
        "the dataset's own transitions; weight share: the tier's part of the total weight):",
        "",
        "| IQL | tier | share of transitions | mean V | advantage | mean weight | weight share |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
