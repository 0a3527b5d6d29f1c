"""Per-step success of the expert and of the planner benchmark's learned executor (the BC state MLP
that `planner_long_horizon.py` saves), each doing the true steps of 50 held-out long-horizon
episodes per split; quoted in `results/planner_long_horizon.md`.

    python benchmarks/probes/planner_executor_steps.py  # after planner_long_horizon.py
"""

import collections

import torch

from embodied_rl.envs import make, make_expert
from embodied_rl.envs.tabletop.long_horizon import LongHorizonTabletop, skill_specs
from embodied_rl.llm.planner import PolicyExecutor, execute_skill
from embodied_rl.policies import load_policy

torch.set_num_threads(1)

policy = load_policy("outputs/bench/planner_long_horizon/skill_policy/policy")
policy.eval()
for split in ("seen", "unseen"):
    env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split=split)
    execs = {"expert": make_expert(env), "learned": PolicyExecutor(env, policy)}
    for name, ex in execs.items():
        stats = collections.defaultdict(lambda: [0, 0])
        for i in range(50):
            env.reset(seed=1_000_000 + i)
            for k, step in enumerate(env.canonical_steps):
                spec = skill_specs(env.layout)[step]
                ok, success, ended = execute_skill(env, ex, spec)
                stats[(k, spec.family)][0] += ok
                stats[(k, spec.family)][1] += 1
                if not ok or ended:
                    break
            ex.follow(None)
        print(split, name, {f"{k}:{f}": f"{a}/{b}" for (k, f), (a, b) in sorted(stats.items())})
