"""Does the saved RT-2 policy of `rt2_learning.py` read its images, and how far does it
generalise? The teacher-forced cross-entropy of the action tokens on 512 held-out expert
transitions with their own images, against the same transitions with the images permuted
among them (each action paired with another scene's image), and on 512 of its training
transitions. Equal held-out losses mean the actions are predicted from the instruction and the
marginal action distribution alone; a training loss far below the held-out one is
memorisation. Quoted in `results/rt2_learning.md`.

    python benchmarks/probes/rt2_image_use.py [RUN ...]  # default rt2-tiny-s0
    python benchmarks/probes/rt2_image_use.py --work outputs/bench/rt2_learning_2k rt2-tiny-s0
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from embodied_rl.datasets import dataset_dir, load_dataset
from embodied_rl.policies import load_policy

parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="*", default=["rt2-tiny-s0"])
parser.add_argument("--work", default="outputs/bench/rt2_learning")
args = parser.parse_args()
torch.set_num_threads(1)
data_root = Path(args.work) / "data"
(train_path,) = (data_root / "vla-learning").glob("reach-expert*")  # the run's demonstrations
train = load_dataset(train_path)
held = load_dataset(dataset_dir(data_root, "vla-learning/reach-held-out50-v0"))


def transitions(data, seed: int):
    """512 transitions of ``data``: images, instructions, actions, permuted images."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(data.n_transitions, 512, replace=False)
    obs_rows = data.obs_index[rows]
    images = torch.as_tensor(data.observations["image"][obs_rows])
    instructions = [str(i) for i in data.observations["instruction"][obs_rows]]
    actions = torch.as_tensor(data.actions[rows], dtype=torch.float32)
    return images, instructions, actions, images[torch.as_tensor(rng.permutation(len(rows)))]


@torch.no_grad()
def token_ce(policy, images, instructions, actions) -> float:
    """Mean cross-entropy per action token over the transitions (batches of 64)."""
    total = 0.0
    for s in range(0, len(actions), 64):
        batch = {"image": images[s : s + 64], "instruction": instructions[s : s + 64],
                 "action": actions[s : s + 64]}  # fmt: skip
        total += -policy.log_prob(batch, actions[s : s + 64]).sum().item()
    return total / actions.numel()


held_images, held_text, held_actions, held_permuted = transitions(held, 0)
train_images, train_text, train_actions, _ = transitions(train, 1)
for run in args.runs:
    policy = load_policy(Path(args.work) / "runs" / run / "policy").eval()
    own = token_ce(policy, held_images, held_text, held_actions)
    shuffled = token_ce(policy, held_permuted, held_text, held_actions)
    seen = token_ce(policy, train_images, train_text, train_actions)
    print(f"{run}: held-out action-token cross-entropy {own:.3f} nats with the scenes' own "
          f"images, {shuffled:.3f} with permuted images; {seen:.3f} on training transitions "
          f"({train_path.name})")  # fmt: skip
