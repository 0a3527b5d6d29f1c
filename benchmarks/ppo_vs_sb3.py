"""Our PPO against Stable-Baselines3's PPO on Hopper-v5: steps/s and final return, side by side.

Both run with SB3's defaults (n_steps 2048, batch 64, 10 epochs, lr 3e-4, gamma 0.99, GAE 0.95,
clip 0.2, no value clipping, ent_coef 0, vf_coef 0.5, max_grad_norm 0.5, Adam eps 1e-5) and the
same network (separate 64-64 tanh actor and critic, orthogonal init, unsquashed Gaussian with
log-std 0, no observation normalisation), one env, one torch thread, on the CPU. Each seed runs
ours then SB3's, so both see the same machine load. Steps/s is total steps over the wall time of
``learn()`` (rollouts and updates); the final return is a 10-episode deterministic evaluation.

    python benchmarks/ppo_vs_sb3.py --steps 100000 --seeds 0 1 2 --out benchmarks/results/ppo_vs_sb3.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

from embodied_rl.agents.ppo import PPO, PPOConfig
from embodied_rl.agents.ppo_rollout import make_vec_env
from embodied_rl.policies.actor_critic import ActorCriticConfig, ActorCriticPolicy

ENV_ID = "Hopper-v5"


def evaluate(act, seed: int, episodes: int = 10) -> float:
    """Mean undiscounted return of ``act(obs) -> action`` over ``episodes`` fresh episodes."""
    env = gym.make(ENV_ID)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run_ours(steps: int, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    envs = make_vec_env(ENV_ID)
    space = envs.single_action_space
    policy = ActorCriticPolicy(
        ActorCriticConfig(
            obs_dim=envs.single_observation_space.shape[0],
            action_low=tuple(map(float, space.low)),
            action_high=tuple(map(float, space.high)),
        )
    )
    agent = PPO(policy, envs, PPOConfig(seed=seed))
    start = time.perf_counter()
    agent.learn(steps)
    rate = agent.num_steps / (time.perf_counter() - start)
    envs.close()
    return rate, evaluate(lambda obs: policy.act({"state": obs}), seed)


def run_sb3(steps: int, seed: int) -> tuple[float, float]:
    from stable_baselines3 import PPO as SB3PPO

    model = SB3PPO("MlpPolicy", ENV_ID, seed=seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    rate = model.num_timesteps / (time.perf_counter() - start)
    return rate, evaluate(lambda obs: model.predict(obs, deterministic=True)[0], seed)


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.0f} +- {spread:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="write a Markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, ours, sb3 = [], {"rate": [], "ret": []}, {"rate": [], "ret": []}
    for seed in args.seeds:
        for name, fn, acc in (("ours", run_ours, ours), ("sb3", run_sb3, sb3)):
            rate, ret = fn(args.steps, seed)
            acc["rate"].append(rate)
            acc["ret"].append(ret)
            print(f"seed {seed} {name:4s}: {rate:7.0f} steps/s, eval return {ret:7.1f}", flush=True)
        rows.append(
            f"| {seed} | {ours['rate'][-1]:.0f} | {sb3['rate'][-1]:.0f} | "
            f"{ours['rate'][-1] / sb3['rate'][-1]:.2f}x | {ours['ret'][-1]:.0f} | {sb3['ret'][-1]:.0f} |"
        )
    ratios = [a / b for a, b in zip(ours["rate"], sb3["rate"], strict=True)]
    total = (
        f"| mean +- std | {summary(ours['rate'])} | {summary(sb3['rate'])} | "
        f"{statistics.mean(ratios):.2f}x | {summary(ours['ret'])} | {summary(sb3['ret'])} |"
    )
    table = "\n".join(
        [
            "| seed | ours steps/s | SB3 steps/s | ratio | ours return | SB3 return |",
            "|---|---|---|---|---|---|",
            *rows,
            total,
        ]
    )
    print(f"\n{table}")
    if args.out:
        command = "python benchmarks/ppo_vs_sb3.py " + " ".join(
            [
                f"--steps {args.steps}",
                "--seeds " + " ".join(map(str, args.seeds)),
                f"--out {args.out}",
            ]
        )
        header = (
            f"# PPO vs Stable-Baselines3 on {ENV_ID}\n\n```\n{command}\n```\n\n"
            f"{args.steps} env steps per run, {len(args.seeds)} seeds, 1 torch thread, CPU "
            f"({platform.processor() or platform.machine()}), torch {torch.__version__}. "
            "Return: 10-episode deterministic evaluation after training.\n\n"
        )
        with open(args.out, "w") as f:
            f.write(header + table + "\n")


if __name__ == "__main__":
    main()
