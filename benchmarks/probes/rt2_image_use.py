"""Does the saved RT-2 policy of `rt2_learning.py` read its images? The teacher-forced
cross-entropy of the action tokens on 512 held-out expert transitions with their own images
against the same transitions with the images permuted among them (each action paired with
another scene's image). Equal losses mean the actions are predicted from the instruction
and the marginal action distribution alone; quoted in `results/rt2_learning.md`.

    python benchmarks/probes/rt2_image_use.py [RUN ...]  # default rt2-tiny-s0
"""

import sys

import numpy as np
import torch

from embodied_rl.datasets import dataset_dir, load_dataset
from embodied_rl.policies import load_policy

torch.set_num_threads(1)
held = load_dataset(
    dataset_dir("outputs/bench/rt2_learning/data", "vla-learning/reach-held-out50-v0")
)
rng = np.random.default_rng(0)
rows = rng.choice(held.n_transitions, 512, replace=False)
obs_rows = held.obs_index[rows]
images = torch.as_tensor(held.observations["image"][obs_rows])
instructions = [str(i) for i in held.observations["instruction"][obs_rows]]
actions = torch.as_tensor(held.actions[rows], dtype=torch.float32)
permuted = images[torch.as_tensor(rng.permutation(len(rows)))]


@torch.no_grad()
def token_ce(policy, pixels) -> float:
    """Mean cross-entropy per action token over the transitions (batches of 64)."""
    total = 0.0
    for s in range(0, len(rows), 64):
        batch = {"image": pixels[s : s + 64], "instruction": instructions[s : s + 64],
                 "action": actions[s : s + 64]}  # fmt: skip
        total += -policy.log_prob(batch, actions[s : s + 64]).sum().item()
    return total / (len(rows) * actions.shape[1])


for run in sys.argv[1:] or ["rt2-tiny-s0"]:
    policy = load_policy(f"outputs/bench/rt2_learning/runs/{run}/policy").eval()
    print(f"{run}: held-out action-token cross-entropy {token_ce(policy, images):.3f} nats with "
          f"the scenes' own images, {token_ce(policy, permuted):.3f} with permuted images")  # fmt: skip
