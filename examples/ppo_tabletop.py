"""Train PPO on a tabletop task under domain randomization, then fine-tune it with a KL penalty.

Stage 1 trains from scratch (dense reward, SB3's network and hyperparameters, n_envs copies in a
gymnasium vector env); stage 2 continues from that policy with a KL penalty to the stage-1
policy as the frozen reference (RLHF's objective r - beta * KL(pi || pi_ref), adaptive beta),
on the heavier randomization preset. Both report the success rate of the deterministic policy.

    python examples/ppo_tabletop.py --task tabletop/reach-v0 --steps 50000
"""

import argparse
import copy

import torch

from embodied_rl.agents.ppo import PPO, PPOConfig, default_ppo_policy
from embodied_rl.agents.ppo_rollout import make_vec_env
from embodied_rl.envs import make
from embodied_rl.evaluation.rollout import run_episodes

parser = argparse.ArgumentParser()
parser.add_argument("--task", default="tabletop/reach-v0")
parser.add_argument("--steps", type=int, default=50_000, help="steps of each stage")
parser.add_argument("--n-envs", type=int, default=4)
parser.add_argument("--out", default="outputs/ppo_tabletop")
args = parser.parse_args()


def success_rate(policy, randomization: str) -> float:
    env = make(args.task, reward_type="dense", randomization=randomization, seed=123)
    results = run_episodes(env, lambda obs: policy.act(obs), 20, seed=1000)
    env.close()
    return sum(r.success for r in results) / len(results)


torch.manual_seed(0)
envs = make_vec_env(args.task, args.n_envs, randomization="light", reward_type="dense")
policy = default_ppo_policy(envs)
config = PPOConfig(n_steps=512, ent_coef=0.001)
agent = PPO(policy, envs, config, log_dir=f"{args.out}/scratch")
agent.learn(args.steps, progress=True)
agent.save(f"{args.out}/scratch/agent")
print(f"from scratch, light randomization: success {success_rate(policy, 'light'):.0%}")

heavy = make_vec_env(args.task, args.n_envs, randomization="heavy", reward_type="dense")
reference = copy.deepcopy(policy)
finetune = PPOConfig(n_steps=512, ent_coef=0.001, kl_coef=0.05, kl_target=0.02)
tuned = PPO(policy, heavy, finetune, reference=reference, log_dir=f"{args.out}/finetune")
metrics = tuned.learn(args.steps, progress=True)
tuned.save(f"{args.out}/finetune/agent")
print(
    f"fine-tuned on heavy randomization (KL to the scratch policy {metrics['ref_kl']:.3f}, "
    f"beta {metrics['kl_coef']:.3f}): success {success_rate(policy, 'heavy'):.0%}"
)
