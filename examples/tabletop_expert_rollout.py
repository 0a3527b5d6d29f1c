"""Roll out the scripted expert on a tabletop task and save a captioned video.

python examples/tabletop_expert_rollout.py --task tabletop/place-v0 --out place.mp4
"""

import argparse

from embodied_rl.envs import make, make_expert
from embodied_rl.evaluation.rollout import run_episode
from embodied_rl.evaluation.video import caption_frame, write_video

parser = argparse.ArgumentParser()
parser.add_argument("--task", default="tabletop/place-v0")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--camera", default="front", help="front, top, side or wrist")
parser.add_argument("--out", default="rollout.mp4")
args = parser.parse_args()

env = make(args.task, camera=args.camera, render_mode="rgb_array", render_size=256, seed=args.seed)
result = run_episode(env, make_expert(env), seed=args.seed, record=True)
status = "success" if result.success else "failure"
write_video([caption_frame(f, result.instruction, status) for f in result.frames], args.out)
print(f"{result.instruction!r}: {status} in {result.length} steps -> {args.out}")
env.close()
