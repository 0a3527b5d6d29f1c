"""PPO fine-tuning of a BC-pretrained MLP (KL penalty to the BC policy) vs PPO from scratch.

Collects expert episodes of tabletop reach (one object), trains BC (MLP, MSE head) on them,
then for each seed runs ``finetune_ppo`` twice with identical PPO settings under a
domain-randomization preset: from the BC policy (KL reference = the BC policy) and from
fresh weights of the same architecture (``from_scratch=True``). Reports the deterministic
policy's success rate and return before and after (mean +- std over seeds).

    python benchmarks/ppo_finetune.py --seeds 3 --ppo-steps 20000
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARMS = (("BC + PPO, KL to BC", False), ("PPO from scratch", True))


def _stat(values: list[float], pct: bool = False, digits: int = 2) -> str:
    scale = 100.0 if pct else 1.0
    mean, std = scale * float(np.mean(values)), scale * float(np.std(values))
    return f"{mean:.0f}% ± {std:.0f}" if pct else f"{mean:.{digits}f} ± {std:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="tabletop/reach-v0")
    parser.add_argument("--n-objects", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=60, help="expert episodes for BC")
    parser.add_argument("--bc-steps", type=int, default=2000)
    parser.add_argument("--ppo-steps", type=int, default=20_000, help="environment steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--kl-coef", type=float, default=0.1)
    parser.add_argument(
        "--value-warmup",
        type=int,
        default=0,
        help="fine-tuning: env steps training the value head only",
    )
    parser.add_argument("--reward-type", default="sparse", choices=["sparse", "dense"])
    parser.add_argument("--randomization", default="light")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/ppo_finetune.md")
    args = parser.parse_args()

    import torch

    from embodied_rl.agents import TrainerConfig, default_policy, train
    from embodied_rl.agents.finetune import PPOFinetuneConfig, finetune_ppo
    from embodied_rl.agents.ppo import PPOConfig
    from embodied_rl.agents.trainer import seed_everything
    from embodied_rl.datasets import collect, load_dataset

    torch.set_num_threads(1)
    start = time.perf_counter()
    env_kwargs = {"n_objects": args.n_objects, "reward_type": args.reward_type}
    results: dict[str, list] = {name: [] for name, _ in ARMS}
    bc_scores = []
    with tempfile.TemporaryDirectory() as tmp:
        data_result = collect(
            args.task, "expert", episodes=args.episodes, out=tmp, dataset_id="bench/bc-v0",
            env_kwargs={"n_objects": args.n_objects}, reference_episodes=1, progress=False,
        )  # fmt: skip
        data = load_dataset(data_result.path, obs_keys=["state"])
        for seed in range(args.seeds):
            config = TrainerConfig(
                steps=args.bc_steps, batch_size=128, seed=seed, eval_episodes=0,
                checkpoint_every=0, progress=False, tensorboard=False, log_every=500,
            )  # fmt: skip
            seed_everything(seed)  # the BC policy's initial weights
            policy = default_policy("bc", data, hidden=(128, 128))
            agent, _ = train(
                "bc", data, Path(tmp) / f"bc{seed}", trainer_config=config, policy=policy
            )
            agent.policy.save(Path(tmp) / f"bc{seed}" / "policy")
            for name, scratch in ARMS:
                result = finetune_ppo(
                    Path(tmp) / f"bc{seed}" / "policy",
                    Path(tmp) / f"ppo{seed}{scratch}",
                    PPOFinetuneConfig(
                        task=args.task, env_steps=args.ppo_steps,
                        randomization=args.randomization, env_kwargs=env_kwargs,
                        n_envs=args.n_envs, eval_episodes=args.eval_episodes, seed=seed,
                        value_warmup_steps=args.value_warmup,
                    ),
                    PPOConfig(n_steps=256, batch_size=64, n_epochs=5, kl_coef=args.kl_coef, seed=seed),
                    from_scratch=scratch,
                )  # fmt: skip
                results[name].append(result)
                if not scratch:
                    bc_scores.append(result.before["eval/success_rate"])
                print(
                    f"seed {seed} {name}: success {result.before['eval/success_rate']:.0%} -> "
                    f"{result.after['eval/success_rate']:.0%}, {result.wall_s:.0f} s",
                    flush=True,
                )
    minutes = (time.perf_counter() - start) / 60
    warmup = (
        f", after {args.value_warmup} steps training only the new value head (part of the budget)"
        if args.value_warmup
        else ""
    )
    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Task {args.task} with {args.n_objects} object(s), {args.reward_type} reward, "
        f"randomization preset `{args.randomization}`; BC (MLP 2 x 128, MSE head) on "
        f"{args.episodes} expert episodes for {args.bc_steps} steps; then PPO for "
        f"{args.ppo_steps} environment steps ({args.n_envs} envs, n_steps 256, batch 64, "
        f"5 epochs, lr 3e-4), seeds 0-{args.seeds - 1}; deterministic evaluation on "
        f"{args.eval_episodes} episodes under the same preset. Fine-tuning: the BC policy "
        f"(its mean, a Gaussian with log-std -0.5, a new value head) with a fixed KL penalty "
        f"beta = {args.kl_coef} to itself{warmup}; from scratch: the same architecture and "
        "observation statistics, fresh weights, no KL.",
        "",
        "| start | success before | success after | return before | return after | KL to BC "
        "(last rollout) | steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        lines.append(
            f"| {name} | {_stat([r.before['eval/success_rate'] for r in runs], True)} | "
            f"{_stat([r.after['eval/success_rate'] for r in runs], True)} | "
            f"{_stat([r.before['eval/mean_return'] for r in runs])} | "
            f"{_stat([r.after['eval/mean_return'] for r in runs])} | "
            f"{_stat([r.last_rollout['ref_kl'] for r in runs], digits=3)} | "
            f"{np.mean([r.last_rollout['steps_per_s'] for r in runs]):.0f} |"
        )
    lines += [
        "",
        f"Total {minutes:.1f} min on {platform.node()} (2 shared CPU cores, 1 torch thread).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
