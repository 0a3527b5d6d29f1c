"""Argmax against expected-bin decoding (`RT2Config(decoding=...)`) for a saved RT-2 policy of
`rt2_learning.py`: greedy action MSE on 200 held-out expert transitions and success on the
benchmark's 50 held-out scenes per split, same weights. Quoted in `results/rt2_learning.md`.

    python benchmarks/probes/rt2_decoding.py [RUN]  # default rt2-tiny-s0
"""

import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vla_learning  # noqa: E402

from embodied_rl.datasets import dataset_dir, load_dataset  # noqa: E402
from embodied_rl.policies import RT2Policy, load_policy  # noqa: E402

torch.set_num_threads(1)
root = "outputs/bench/rt2_learning"
held = load_dataset(dataset_dir(f"{root}/data", "vla-learning/reach-held-out50-v0"))
run = sys.argv[1] if len(sys.argv) > 1 else "rt2-tiny-s0"
saved = load_policy(f"{root}/runs/{run}/policy")
args = types.SimpleNamespace(task="tabletop/reach-v0", randomization="light", eval_episodes=50)


def action_mse(policy, n: int = 200) -> float:
    rows = np.random.default_rng(0).choice(held.n_transitions, n, replace=False)
    errors = []
    for t in rows:
        o = int(held.obs_index[t])
        obs = {"image": held.observations["image"][o],
               "instruction": str(held.observations["instruction"][o])}  # fmt: skip
        policy.reset()
        errors.append(np.square(policy.act(obs) - held.actions[t]).mean())
    return float(np.mean(errors))


for decoding in ("argmax", "mean"):
    policy = RT2Policy(replace(saved.config, decoding=decoding))
    policy.load_state_dict(saved.state_dict())
    policy.eval()
    result = {split: vla_learning.rollouts(args, policy, split)["success"]
              for split in ("seen", "unseen")}  # fmt: skip
    print(
        f"{run} {decoding}: held-out action MSE {action_mse(policy):.4f}, successes of 50: "
        f"{result}",
        flush=True,
    )
