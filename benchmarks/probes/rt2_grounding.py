"""Does a saved policy of `rt2_learning.py` move towards the object its instruction names?

On the first observation of each held-out reach scene (the benchmark's evaluation seeds), the
policy acts once per object of the scene with the instruction naming that object (the scene's
own template); the action's xy direction is matched to the object it points at most closely
(largest cosine with the object's direction from the gripper). "Grounded": the action points
at the named object; chance is 1 / (number of objects) for a policy that always points at some
object. "Instruction changes the target": the share of scenes in which the objects pointed at
are not all the same. A policy that ignores the instruction points at one object whatever is
named (grounded ~ chance); the expert points at the named one every time.

    python benchmarks/probes/rt2_grounding.py rt2-tiny-s0 rt2-tiny-film-s0 \
        8px+shift+proprio+gaussian-s0 [--episodes 50]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vla_learning  # noqa: E402  (the benchmark's held-out scenes and image size)

from embodied_rl.envs import make  # noqa: E402
from embodied_rl.envs.tabletop import tasks  # noqa: E402
from embodied_rl.evaluation.transfer import wilson_interval  # noqa: E402
from embodied_rl.policies import load_policy  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="+")
parser.add_argument("--work", default="outputs/bench/rt2_learning")
parser.add_argument("--episodes", type=int, default=50)
parser.add_argument("--task", default="tabletop/reach-v0")
parser.add_argument("--randomization", default="light")
args = parser.parse_args()
torch.set_num_threads(1)


def pointed(action: np.ndarray, ee: np.ndarray, objects: np.ndarray) -> int:
    """The object whose xy direction from the gripper has the largest cosine with the action's."""
    directions = objects[:, :2] - ee[:2]
    cos = (
        directions
        @ action[:2]
        / (np.linalg.norm(directions, axis=1) * np.linalg.norm(action[:2]) + 1e-9)
    )
    return int(cos.argmax())


def probe(policy, split: str) -> tuple[int, int, int]:
    """(grounded choices, choices, scenes whose pointed object changed with the instruction)."""
    env = make(args.task, obs_mode="rgb+state", image_size=vla_learning.IMAGE_SIZE, split=split,
               randomization=args.randomization)  # fmt: skip
    grounded = total = changed = 0
    try:
        for i in range(args.episodes):
            obs, _ = env.reset(seed=vla_learning.EVAL_SEED + i)
            base = env.unwrapped
            scene, layout, spec = base.scene_state(), base.layout, base.spec_
            choices = []
            for slot in range(len(layout.colors)):
                text = tasks.task_spec(layout, "reach", slot, template_index=spec.template_index)
                policy.reset()
                action = policy.act({**obs, "instruction": text.instruction})
                choices.append(pointed(action, scene.ee_pos, scene.object_pos))
            grounded += sum(c == slot for slot, c in enumerate(choices))
            total += len(choices)
            changed += len(set(choices)) > 1
    finally:
        env.close()
    return grounded, total, changed


for run in args.runs:
    policy = load_policy(Path(args.work) / "runs" / run / "policy").eval()
    for split in ("seen", "unseen"):
        g, n, changed = probe(policy, split)
        lo, hi = wilson_interval(g, n)
        print(f"{run} {split}: grounded {g}/{n} = {g / n:.0%} [{lo:.0%}, {hi:.0%}]; the "
              f"instruction changes the target in {changed}/{args.episodes} scenes", flush=True)  # fmt: skip
