"""Why Cal-QL collapses on Walker2d `medium` (both libraries, `results/locomotion_offline.md`:
ours 18.5 at 2k steps, then ~0; the policy's actions stay small and the walker falls).
Trains our CQL or Cal-QL with the benchmark's settings (batch 256, 2 x 256 networks, the
agents' defaults) in its own loop rather than ``locomotion_offline.train_ours``, because the
training loop's callbacks do not reach the agent, and every ``--every`` steps reads the
critic on 2,000 fixed dataset transitions:

- ``V_mc``: the mean Monte-Carlo return (of the agent's rewards, after ``reward_scale``) that
  Cal-QL's lower bound uses; ``bound``: the share of (state, policy sample) pairs in which
  ``max(Q, V_mc)`` takes ``V_mc`` (no gradient reaches those Q-values: the penalty does not
  push them down);
- ``Q(a_data)``, ``Q(pi)`` (the deterministic action, the one evaluated), ``Q(0.5 pi)``,
  ``Q(rand)`` (uniform actions): where the critic puts value; ``Q(pi) - Q(a_data)`` > 0 is
  value the actor found off the data;
- ``|pi|``: the policy's mean |action| (the data's is printed first);
- the normalised score over ``--episodes`` held-out episodes.

    MINARI_DATASETS_PATH=/work/loco/root python benchmarks/probes/locomotion_calql_collapse.py \
        --root /work/loco/root --algo calql --steps 4000
"""

import argparse
import time

import torch

from embodied_rl.agents import agent_class, default_policy
from embodied_rl.agents.base import as_obs_dict, critic_obs
from embodied_rl.agents.data import AgentSampler, reward_transform
from embodied_rl.agents.trainer import (
    env_factory,
    evaluate_held_out,
    make_sampler,
    score_reference,
    seed_everything,
)
from embodied_rl.datasets.locomotion import load_locomotion
from embodied_rl.datasets.samplers import SamplerConfig

parser = argparse.ArgumentParser()
parser.add_argument("--root", required=True)
parser.add_argument("--body", default="walker2d")
parser.add_argument("--kind", default="medium")
parser.add_argument("--algo", default="calql", choices=["cql", "calql"])
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--steps", type=int, default=4000)
parser.add_argument("--every", type=int, default=500)
parser.add_argument("--episodes", type=int, default=5)
parser.add_argument(
    "--set", nargs="*", default=[], metavar="FIELD=VALUE",
    help="agent config overrides (floats or ints), e.g. bc_steps=2000 alpha=1",
)  # fmt: skip
args = parser.parse_args()
torch.set_num_threads(1)
overrides = {k: float(v) if "." in v or "e" in v else int(v) for k, v in
             (item.split("=", 1) for item in args.set)}  # fmt: skip

data = load_locomotion(args.body, args.kind, args.root)
seed_everything(args.seed)
policy = default_policy(args.algo, data, hidden=(256, 256))
agent = agent_class(args.algo)(policy, agent_class(args.algo).config_class(**overrides))
sampler = make_sampler(agent, data, 256, args.seed)
probe = AgentSampler(
    data, gamma=agent.config.discount, config=SamplerConfig(batch_size=2000, seed=1),
    mc_return=True, **reward_transform(agent.config),
).sample()  # fmt: skip
obs, _ = critic_obs(probe, agent.critic_obs_key)
head = policy.head
print(f"{args.algo} {overrides or ''} on {args.body}-{args.kind}, seed {args.seed}; data mean "
      f"|a| {probe['action'].abs().mean():.2f}, V_mc mean {probe['mc_return'].mean():.1f}")  # fmt: skip
print("step | V_mc | bound | Q(a_data) | Q(pi) | Q(0.5 pi) | Q(rand) | Q(pi)-Q(a_data) | |pi| | "
      "score")  # fmt: skip


@torch.no_grad()
def read(step: int) -> None:
    policy.eval()
    out = policy(as_obs_dict(policy, probe["obs"]))
    pi = head.mode(out)
    samples, _ = head.rsample(out, 10)  # the penalty's policy samples
    q_samples = agent.critic(obs, samples)  # (E, B, 10)
    bound = (probe["mc_return"][None, :, None] > q_samples).float().mean()

    def q(actions: torch.Tensor) -> float:
        return float(agent.critic(obs, actions.unsqueeze(1)).min(0).values.mean())

    low, high = head.low, head.high
    rand = low + (high - low) * torch.rand_like(pi)
    q_data, q_pi = q(probe["action"]), q(pi)
    policy.train()
    score = evaluate_held_out(policy, env_factory(data), args.episodes, args.seed,
                              score_reference(data))["eval/normalized_score"]  # fmt: skip
    print(f"{step} | {probe['mc_return'].mean():.1f} | {bound:.0%} | {q_data:.1f} | {q_pi:.1f} | "
          f"{q(0.5 * pi):.1f} | {q(rand):.1f} | {q_pi - q_data:+.1f} | {pi.abs().mean():.2f} | "
          f"{score:.1f}", flush=True)  # fmt: skip


started = time.perf_counter()
for step in range(1, args.steps + 1):
    agent.update(sampler.sample())
    if step % args.every == 0:
        read(step)
print(f"({time.perf_counter() - started:.0f} s)")
