"""Why IQL falls below BC on Walker2d `medium` (both libraries: 25 vs ~80 at 10k steps in
`results/locomotion_offline.md`): our IQL on that dataset with the benchmark's settings, then
with the AWR temperature near 0 (every weight ~1: IQL's actor update becomes Gaussian
log-likelihood behaviour cloning, with the same critics training beside it), then BC with
IQL's Gaussian head. If the near-zero temperature recovers BC's score, the advantage
weighting is what hurts; if not, the actor's Gaussian parameterisation is. Then, with
``--weights``, what the weighting does: one more IQL run at the benchmark's settings, its
advantages and AWR weights on 20,000 dataset transitions (the effective sample size, the
share of weight at the clip, and how the weights treat actions on the bounds).

    MINARI_DATASETS_PATH=/work/loco/root python benchmarks/probes/locomotion_iql_weights.py \
        --root /work/loco/root --seed 0
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from locomotion_offline import train_ours  # noqa: E402

from embodied_rl.datasets.locomotion import load_locomotion  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--root", required=True)
parser.add_argument("--body", default="walker2d")
parser.add_argument("--kind", default="medium")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--steps", type=int, default=10000)
parser.add_argument("--weights", action="store_true", help="only the weight analysis")
args = parser.parse_args()
settings = {"steps": args.steps, "eval_every": 2000, "eval_episodes": 10}
data = load_locomotion(args.body, args.kind, args.root)


def weight_analysis() -> None:
    from embodied_rl.agents.base import critic_obs
    from embodied_rl.agents.data import AgentSampler
    from embodied_rl.agents.losses import awr_weights
    from embodied_rl.datasets.samplers import SamplerConfig

    with tempfile.TemporaryDirectory() as out:
        agent, _ = train_ours("iql", data, args.seed, settings, Path(out))
    config = agent.config
    batch = AgentSampler(data, config=SamplerConfig(batch_size=20000, seed=1)).sample()
    obs, _ = critic_obs(batch, agent.critic_obs_key)
    with torch.no_grad():
        advantage = agent.target_critic(obs, batch["action"]).min(0).values - agent.value(obs)
    w = awr_weights(advantage, config.temperature, config.max_weight)
    ess = float(w.sum() ** 2 / (w**2).sum()) / len(w)
    on_bound = (batch["action"].abs() >= 0.999).any(-1)
    top = w >= w.quantile(0.99)
    print(f"advantage: mean {advantage.mean():.3f}, std {advantage.std():.3f}; weights: mean "
          f"{w.mean():.2f}, ESS {ess:.1%} of the batch, at the clip {(w >= config.max_weight).float().mean():.1%}, "
          f"top 1% hold {w[top].sum() / w.sum():.0%} of the weight")  # fmt: skip
    print(f"actions with a dimension on the bound: {on_bound.float().mean():.0%} of transitions, "
          f"{w[on_bound].sum() / w.sum():.0%} of the weight; mean |a| {batch['action'].abs().mean():.3f} "
          f"unweighted, {(w[:, None] * batch['action'].abs()).sum() / w.sum() / batch['action'].shape[1]:.3f} weighted")  # fmt: skip


if args.weights:
    weight_analysis()
    raise SystemExit(0)
runs = [
    ("iql, temperature 3 (benchmark)", "iql", {}, {}),
    ("iql, temperature 1e-6", "iql", {"temperature": 1e-6}, {}),
    ("bc, gaussian head", "bc", {}, {"head": "gaussian"}),
]
for name, algo, agent_overrides, policy_overrides in runs:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        _, curve = train_ours(algo, data, args.seed, settings, Path(out), agent_overrides,
                              policy_overrides)  # fmt: skip
    curve = [(step, round(score, 1)) for step, score in curve]
    print(f"{name}: {curve} ({time.perf_counter() - started:.0f} s)", flush=True)
