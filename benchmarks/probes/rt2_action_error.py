"""Greedy action MSE of the saved RT-2 policy of `rt2_learning.py` on 200 training transitions
and 200 held-out expert transitions (the memorisation diagnosis in `results/rt2_learning.md`).

    python benchmarks/probes/rt2_action_error.py [RUN]  # RUN: rt2-tiny-s0 (default), rt2-tiny-noshift-s0
"""

import sys

import numpy as np
import torch

from embodied_rl.datasets import dataset_dir, load_dataset
from embodied_rl.policies import load_policy

torch.set_num_threads(1)

root = "outputs/bench/rt2_learning/data"
train = load_dataset(dataset_dir(root, "vla-learning/reach-expert500-v0"))
held = load_dataset(dataset_dir(root, "vla-learning/reach-held-out50-v0"))
run = sys.argv[1] if len(sys.argv) > 1 else "rt2-tiny-s0"
p = load_policy(f"outputs/bench/rt2_learning/runs/{run}/policy")
p.eval()


def mse(data, n=200):
    rng = np.random.default_rng(0)
    rows = rng.choice(data.n_transitions, n, replace=False)
    err = []
    for t in rows:
        o = int(data.obs_index[t])
        obs = {
            "image": data.observations["image"][o],
            "instruction": str(data.observations["instruction"][o]),
        }
        p.reset()
        err.append(np.square(p.act(obs) - data.actions[t]).mean())
    return float(np.mean(err))


print(run, "train", mse(train), "held-out", mse(held))
