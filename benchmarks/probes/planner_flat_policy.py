"""Why the flat policy given the whole task fails: the planner benchmark's two BC state MLPs
(`planner_long_horizon.py` saves them), trained on the same expert transitions, each acting
alone for whole held-out episodes: the flat one on `task_encoding="episode"` states (both
steps, never told which one runs), the skill one on the environment's own step-encoded states
(the environment switches the encoding when the first step's success test holds, i.e. the
oracle plan and the simulator's detector with no planner code). Steps done in order per
episode and first-step success per first-step family; quoted in
`results/planner_long_horizon.md`.

    python benchmarks/probes/planner_flat_policy.py [WORK]  # default outputs/bench/planner_long_horizon
"""

import collections
import sys

import torch

from embodied_rl.envs import make
from embodied_rl.envs.tabletop.long_horizon import LongHorizonTabletop
from embodied_rl.evaluation.rollout import run_episode
from embodied_rl.policies import load_policy

torch.set_num_threads(1)
work = sys.argv[1] if len(sys.argv) > 1 else "outputs/bench/planner_long_horizon"
for name, encoding in (("skill_policy", "step"), ("flat_policy", "episode")):
    policy = load_policy(f"{work}/{name}/policy")
    policy.eval()
    for split in ("seen", "unseen"):
        env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split=split,
                                  task_encoding=encoding)  # fmt: skip
        first = collections.defaultdict(lambda: [0, 0])
        steps = wins = 0
        for i in range(50):
            wins += run_episode(env, policy, 1_000_000 + i).success
            first[env.composition[0]][0] += env.completed >= 1
            first[env.composition[0]][1] += 1
            steps += env.completed
        print(
            f"{name} ({encoding} encoding), {split}: success {wins}/50, steps done "
            f"{steps / 50:.2f}, first steps by family "
            + ", ".join(f"{f} {a}/{b}" for f, (a, b) in sorted(first.items())),
            flush=True,
        )
