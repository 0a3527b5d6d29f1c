"""Train Stable-Baselines3 PPO on a tabletop task from state observations (SB3 interop).

SB3 accepts only numpy observations, so the instruction is encoded as word ids
(``instruction_mode="tokens"``). Needs the dev extra (stable-baselines3).

    python examples/sb3_ppo_tabletop.py --steps 20000
"""

import argparse

from stable_baselines3 import PPO

from embodied_rl.envs import make
from embodied_rl.evaluation.rollout import run_episodes

parser = argparse.ArgumentParser()
parser.add_argument("--task", default="tabletop/reach-v0")
parser.add_argument("--steps", type=int, default=20_000)
args = parser.parse_args()

env = make(args.task, instruction_mode="tokens", reward_type="dense", seed=0)
model = PPO("MultiInputPolicy", env, seed=0, device="cpu", verbose=1)
model.learn(total_timesteps=args.steps, progress_bar=False)
results = run_episodes(env, lambda obs: model.predict(obs, deterministic=True)[0], 20, seed=1000)
print(f"success over 20 episodes: {sum(r.success for r in results) / 20:.0%}")
