"""PPO fine-tuning of a BC-trained tiny VLA where BC is weak: the pipeline's BC policy under a
harder randomization preset, with a KL penalty to itself, for each KL weight.

Uses a saved policy (default: the BC stage of `make demo`, ``outputs/demo/bc/policy``) and
``finetune_ppo`` (value-head warm-up, sparse reward); success of the deterministic policy on
``--eval-episodes`` held-out scenes before and after, with 95% Wilson intervals, and PPO's
approximate KL, clip fraction and KL to the reference on the last rollout.

    python benchmarks/ppo_finetune_vla.py --out benchmarks/results/ppo_finetune_vla.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--policy", default="outputs/demo/bc/policy", help="a saved BC policy, checkpoint or run"
    )
    parser.add_argument("--task", default="tabletop/reach-v0")
    parser.add_argument("--randomization", default="heavy")
    parser.add_argument("--split", default="all", choices=["seen", "unseen", "all"])
    parser.add_argument("--steps", type=int, default=12_288, help="environment steps")
    parser.add_argument("--kl-coefs", type=float, nargs="+", default=[0.1, 0.02])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="PPO seeds (and evaluation scenes)"
    )
    parser.add_argument(
        "--log-std", type=float, default=None, help="the Gaussian's log-std (default: BC's)"
    )
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--work", default="outputs/bench/ppo_finetune_vla")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    from embodied_rl.agents.finetune import PPOFinetuneConfig, finetune_ppo
    from embodied_rl.agents.ppo import PPOConfig
    from embodied_rl.evaluation.transfer import wilson_interval
    from embodied_rl.utils.io import write_text_atomic

    if not Path(args.policy).is_dir():
        parser.error(f"--policy {args.policy} does not exist; run `make demo` first")
    torch.set_num_threads(1)
    started = time.perf_counter()
    n = args.eval_episodes

    def cell(rate: float) -> str:
        lo, hi = wilson_interval(round(rate * n), n)
        return f"{rate:.0%} [{lo:.0%}, {hi:.0%}]"

    rows = []
    for kl, seed in [(kl, seed) for kl in args.kl_coefs for seed in args.seeds]:
        result = finetune_ppo(
            args.policy,
            Path(args.work)
            / (
                f"kl{kl:g}" + (f"-s{seed}" if seed else "")
                + (f"-logstd{args.log_std:g}" if args.log_std is not None else "")
            ),
            PPOFinetuneConfig(
                task=args.task, env_steps=args.steps, randomization=args.randomization,
                env_kwargs={"reward_type": "sparse", "split": args.split}, n_envs=4,
                value_warmup_steps=1024,
                eval_episodes=n, seed=seed, log_std=args.log_std,
            ),
            PPOConfig(
                n_steps=128, batch_size=64, n_epochs=4, learning_rate=3e-5, kl_coef=kl, seed=seed,
            ),
        )  # fmt: skip
        last = result.last_rollout
        rows.append(
            f"| {kl:g} | {seed} | {cell(result.before['eval/success_rate'])} | "
            f"{cell(result.after['eval/success_rate'])} | {last['approx_kl']:.3f} | "
            f"{last['clip_fraction']:.2f} | {last['ref_kl']:.3f} | {result.wall_s:.0f} |"
        )
        print(rows[-1], flush=True)
    lines = [
        f"# PPO fine-tuning of the BC-trained tiny VLA under `{args.randomization}`",
        "",
        f"`python benchmarks/ppo_finetune_vla.py {' '.join(sys.argv[1:])}`",
        "",
        f"Policy `{args.policy}`, task {args.task} ({args.split} instructions), "
        f"{args.steps:,} environment steps (1,024 of "
        "them warm up the value head), 4 environments x 128 steps per rollout, 4 epochs of "
        f"batch 64, lr 3e-5, sparse reward, Gaussian log-std "
        f"{'of BC' if args.log_std is None else f'{args.log_std:g}'}; {n} held-out scenes before "
        "and after (95% Wilson "
        "intervals); one torch thread.",
        "",
        "| KL weight | seed | BC (before) | after PPO | approx KL | clip fraction | KL to BC | s |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Wall time {(time.perf_counter() - started) / 60:.0f} min.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
