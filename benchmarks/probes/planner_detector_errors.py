"""Where the planner benchmark's learned success detector goes wrong, per execution rather
than per step: the detector of `planner_long_horizon.py` (same data, seeds and training) on
every execution of `detector_examples` in 50 held-out episodes per split, for several
thresholds: *early* (it fires before the skill's own success test first holds; `run_plan`
then moves on too soon), *missed* (the test holds but the detector does not fire within the
10 steps after; `run_plan` then runs the skill to its horizon and counts it failed), *on time*
(the rest of the executions that succeed); also at 0.5 with `confirm` k: the detector must
fire on k consecutive steps (`run_plan(..., confirm=k)`). Quoted in
`results/planner_long_horizon.md`.

    python benchmarks/probes/planner_detector_errors.py
"""

import itertools

import numpy as np
import torch

from embodied_rl.envs import make, make_expert
from embodied_rl.envs.tabletop.long_horizon import LongHorizonTabletop
from embodied_rl.llm.affordance import AffordanceConfig, detector_examples, train_affordance

torch.set_num_threads(1)
torch.manual_seed(0)
train_env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split="seen")
model = train_affordance(
    detector_examples(train_env, make_expert(train_env), range(300)), AffordanceConfig()
)
for split in ("seen", "unseen"):
    env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split=split)
    ex = detector_examples(env, make_expert(env), range(1_000_000, 1_000_050))
    probs = model.probabilities(ex.scene, ex.skill)
    keys = list(zip(ex.seed, ex.stage, map(bytes, ex.skill.astype(np.uint8)), strict=True))
    runs = [list(g) for _, g in itertools.groupby(range(len(keys)), key=lambda i: keys[i])]
    succeeded = [r for r in runs if ex.success[r].any()]
    print(f"{split}: {len(runs)} executions, {len(succeeded)} reach their success test")
    for threshold, k in ((0.2, 1), (0.3, 1), (0.5, 1), (0.7, 1), (0.5, 2), (0.5, 3)):
        early = missed = on_time = 0
        for r in runs:
            above = (probs[r] >= threshold).astype(int)
            streak = np.convolve(above, np.ones(k, int))[: len(above)]  # positives in a k-window
            fires = np.flatnonzero(streak == k)
            truth = np.flatnonzero(ex.success[r])
            if len(fires) and (not len(truth) or fires[0] < truth[0]):
                early += 1
            elif len(truth) and not len(fires):
                missed += 1
            elif len(truth):
                on_time += 1
        print(
            f"  threshold {threshold}, confirm {k}: early {early}/{len(runs)}, missed "
            f"{missed}/{len(succeeded)}, on time {on_time}/{len(succeeded)}",
            flush=True,
        )
