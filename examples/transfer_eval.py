"""Evaluate the scripted expert's sim-to-sim transfer: held-out parameters and presets.

python examples/transfer_eval.py --task tabletop/push-v0 --episodes 20
"""

import argparse

from embodied_rl.evaluation.transfer import evaluate_transfer

parser = argparse.ArgumentParser()
parser.add_argument("--task", default="tabletop/push-v0")
parser.add_argument("--episodes", type=int, default=20)
parser.add_argument("--out", default="outputs/transfer_example")
args = parser.parse_args()

report = evaluate_transfer(
    "expert",
    source="nominal",
    targets=["default", "heavy", "friction_scale=0.3,object_mass_scale=2"],
    task_id=args.task,
    episodes=args.episodes,
    sweeps={"action_latency_steps": [0, 1, 2, 3]},
    out=args.out,
)
print(report.markdown())
print(f"plots and JSON in {args.out}/")
