"""Is `confirm=2`'s gain with the learned detector (`results/planner_long_horizon.md`: oracle
plan + expert 64% -> 86% seen) the detector's false positives filtered out, or does waiting a
step help by itself? The oracle plan with the scripted expert and the simulator's own success
test as detector, `confirm` 1, 2 and 3, on the benchmark's 50 held-out episodes per split.

    python benchmarks/probes/planner_confirm.py
"""

from embodied_rl.envs import make, make_expert
from embodied_rl.envs.tabletop.long_horizon import LongHorizonTabletop
from embodied_rl.evaluation.transfer import wilson_interval
from embodied_rl.llm.planner import DONE, run_plan

EVAL_SEED = 1_000_000  # planner_long_horizon.py's held-out episodes
for split in ("seen", "unseen"):
    env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split=split)
    expert = make_expert(env)

    def oracle(task, done, options, env=env):
        step = [*env.canonical_steps, DONE][min(len(done), 2)]
        return step if step in options else DONE

    for confirm in (1, 2, 3):
        wins = 0
        for i in range(50):
            env.reset(seed=EVAL_SEED + i)
            wins += run_plan(env, oracle, expert, confirm=confirm).success
        low, high = wilson_interval(wins, 50)
        print(f"{split}, simulator test, confirm {confirm}: {wins}/50 [{low:.0%}, {high:.0%}]",
              flush=True)  # fmt: skip
    env.close()
