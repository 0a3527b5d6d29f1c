"""What a saved locomotion policy of `locomotion_offline.py` does: its deterministic actions on
500 dataset states (mean |a| per joint, share at the bounds) against the data's, and one
episode from a fixed reset (length and return). Used to read a collapsed run in
`results/locomotion_offline.md`.

    MINARI_DATASETS_PATH=/work/loco/root python benchmarks/probes/locomotion_policy_actions.py \
        --root /work/loco/root --work /work/loco/bench-medium --body walker2d --kind medium \
        ours-calql-walker2d-medium-s0 ours-cql-walker2d-medium-s0
"""

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from embodied_rl.datasets.locomotion import BODIES, load_locomotion
from embodied_rl.datasets.offline import OBS_KEY
from embodied_rl.policies import load_policy

parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="+")
parser.add_argument("--root", required=True)
parser.add_argument("--work", required=True)
parser.add_argument("--body", default="walker2d")
parser.add_argument("--kind", default="medium")
args = parser.parse_args()
torch.set_num_threads(1)
data = load_locomotion(args.body, args.kind, args.root)
states = data.observations[OBS_KEY][data.obs_index[:500]].astype(np.float32)
print(f"data: mean |a| per joint {np.abs(data.actions).mean(0).round(2)}, "
      f"at the bounds {(np.abs(data.actions) >= 0.999).mean():.0%} of entries")  # fmt: skip
for run in args.runs:
    policy = load_policy(Path(args.work) / run / "policy").eval()
    actions = np.stack([policy.act({OBS_KEY: s}) for s in states])
    env = gym.make(BODIES[args.body])
    obs, _ = env.reset(seed=123)
    steps, ret = 0, 0.0
    while True:
        obs, reward, terminated, truncated, _ = env.step(
            policy.act({OBS_KEY: obs.astype(np.float32)})
        )
        steps, ret = steps + 1, ret + float(reward)
        if terminated or truncated:
            break
    env.close()
    print(f"{run}: mean |a| per joint {np.abs(actions).mean(0).round(2)}, at the bounds "
          f"{(np.abs(actions) >= 0.99).mean():.0%}; one episode: {steps} steps, return {ret:.1f}")  # fmt: skip
