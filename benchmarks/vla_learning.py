"""Why the tiny VLA did not learn, and what makes it learn: BC learning curves on held-out
scenes, seen and unseen instructions, for variants of the policy's inputs and head.

Every variant trains by behaviour cloning on the same expert demonstrations (collection seeds
``0 .. episodes-1``) and is evaluated every ``--eval-every`` steps on held-out scenes (reset
seeds from 1,000,000: no scene of the data), ``--eval-episodes`` episodes per split, with 95%
Wilson intervals. Also per evaluation: the action error (MSE of the deterministic action vs the
expert's) on training transitions and on held-out expert episodes (seeds from 500,000), and
the failures sorted by cause from the final scene (wrong object, near the right object but
outside the success radius, drifted away). A state MLP trained by BC on the same data is the
privileged reference. Runs cache their datasets and checkpoints under ``--work``.

    python benchmarks/vla_learning.py --out benchmarks/results/vla_learning.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

EVAL_SEED = 1_000_000  # held-out scenes for success
HELD_OUT_SEED = 500_000  # held-out expert episodes for the action error
IMAGE_SIZE = 64

# The tiny preset before this study; every variant overrides these.
BEFORE = {
    "convnet_channels": (32, 64, 64, 128), "convnet_strides": (2, 2, 2, 2),
    "feature_channels": 128, "random_shift": 0, "position_features": False, "proprio_dim": 0,
    "proprio_indices": (), "head": "tokens",
}  # fmt: skip
SLIM = {"convnet_channels": (32, 32, 64, 64), "feature_channels": 64}
PROPRIO = {"proprio_dim": 7, "proprio_indices": (0, 1, 2, 6)}  # ee position and opening
MSE = {"head": "deterministic"}
AUG = {"random_shift": 4, "position_features": True}

GAUSS = {"head": "gaussian"}
EIGHT = {"convnet_strides": (2, 2, 2, 1), **SLIM}  # 64 px -> an 8x8 map

# name -> VLA preset overrides. "pipeline" is the quickstart's
# tiny VLA before this study; "8px+shift+proprio+gaussian" is the new tiny preset; the rows
# after it add or remove one part (several of them from the first candidate, which also had
# the keypoint coordinates).
VARIANTS: dict[str, dict[str, Any]] = {
    "pipeline": {"head": "tokens"},  # images + instruction, 256-bin tokens, 4x4 map
    "8px+shift+proprio+gaussian": {**EIGHT, "random_shift": 4, **PROPRIO, **GAUSS},
    # the preset with BC's learning-rate warm-up and cosine decay (BC_OPTIONS below)
    "8px+shift+proprio+gaussian+cosine": {**EIGHT, "random_shift": 4, **PROPRIO, **GAUSS},
    # the preset reading 6 frames (RT-1's history) instead of 1
    "8px+shift+proprio+gaussian+history6": {
        **EIGHT,
        "random_shift": 4,
        **PROPRIO,
        **GAUSS,
        "history": 6,
    },  # fmt: skip
    # action chunking with ACT's temporal ensembling, on top of the preset
    "8px+shift+proprio+gaussian+chunk8": {
        **EIGHT,
        "random_shift": 4,
        **PROPRIO,
        **GAUSS,
        "action_chunk": 8,
    },  # fmt: skip
    "8px+shift+proprio+gaussian+chunk4": {
        **EIGHT,
        "random_shift": 4,
        **PROPRIO,
        **GAUSS,
        "action_chunk": 4,
    },  # fmt: skip
    "8px+shift+proprio-with-velocity+gaussian": {
        **EIGHT,
        "random_shift": 4,
        "proprio_dim": 7,
        **GAUSS,
    },  # fmt: skip
    "8px+shift+coords+proprio+gaussian": {**EIGHT, **AUG, **PROPRIO, **GAUSS},
    "8px+shift+coords+proprio": {**EIGHT, **AUG, **PROPRIO, "head": "tokens"},
    "8px+shift+coords+proprio+mse": {**EIGHT, **AUG, **PROPRIO, **MSE},
    "8px+coords+proprio+gaussian": {**EIGHT, "position_features": True, **PROPRIO, **GAUSS},
    "8px+shift+coords+gaussian": {**EIGHT, **AUG, **GAUSS},
    # earlier probes (1,500-3,000 steps) with the MSE head
    "8px+shift+coords+mse": {**EIGHT, **AUG, **MSE},
    "16px+shift+coords+mse": {"convnet_strides": (2, 2, 1, 1), **AUG, **MSE},
    "shift+coords+proprio-with-velocity+mse": {**AUG, "proprio_dim": 7, **MSE},
}

# name -> BCConfig options ("steps": the run's --steps)
BC_OPTIONS: dict[str, dict[str, Any]] = {
    "8px+shift+proprio+gaussian+cosine": {"warmup_steps": 300, "decay_steps": "steps"},
}


def bc_config(args, variant: str):
    from embodied_rl.agents import BCConfig

    options = {k: args.steps if v == "steps" else v for k, v in BC_OPTIONS.get(variant, {}).items()}
    return BCConfig(learning_rate=args.lr, labels=args.labels, **options)


# ---------------------------------------------------------------------- data
def dataset(args, name: str, episodes: int, seed: int, noise: float = 0.0):
    """Expert demonstrations (cached); ``noise`` > 0 injects Gaussian action noise while the
    clean expert action is stored as the label (DART)."""
    from embodied_rl.datasets import collect, dataset_dir, load_dataset

    root = Path(args.work) / "data"
    dataset_id = f"vla-learning/{args.task.split('/')[1].rsplit('-v', 1)[0]}-{name}-v0"
    path = dataset_dir(root, dataset_id)
    if not path.exists():
        collect(
            args.task, "expert", episodes=episodes, randomization=args.randomization,
            out=root, dataset_id=dataset_id, seed=seed, progress=not args.no_progress,
            noise=noise,
            env_kwargs={"obs_mode": "rgb+state", "image_size": IMAGE_SIZE},
        )  # fmt: skip
    return load_dataset(path)


# ---------------------------------------------------------------------- evaluation
def classify(env) -> str:
    """The cause of a failure from the final scene.

    reach: the fingertips ended nearer another object ("wrong object"), within 8 cm of the
    goal ("imprecise"), or elsewhere ("drift"). push and pick: another object was moved and
    the named one was not ("wrong object"), the named one was not touched ("untouched"); push:
    it was pushed sideways (> 6 cm), tipped or lifted off the table, or not far enough
    ("short"); pick: it was moved but not lifted ("not lifted").
    """
    from embodied_rl.envs.tabletop import tasks

    base = env.unwrapped
    scene, spec = base.scene_state(), base.spec_
    if spec.family in ("push", "pick"):
        moved = np.linalg.norm(scene.object_pos - scene.initial_object_pos, axis=1) > 0.01
        others = np.delete(moved, spec.object_slot)
        if not moved[spec.object_slot]:
            return "wrong object" if others.any() else "untouched"
        if spec.family == "pick":
            return "not lifted"
        obj = scene.object_pos[spec.object_slot]
        d = np.asarray(tasks.DIRECTIONS[spec.direction])
        shift = obj[:2] - scene.initial_object_pos[spec.object_slot, :2]
        if obj[2] >= scene.object_half_size + 0.015:
            return "tipped or lifted"
        if abs(float(shift[0] * d[1] - shift[1] * d[0])) > tasks.PUSH_MAX_LATERAL:
            return "sideways"
        return "short"
    if spec.family != "reach":
        return "failure"  # causes are classified for reach, push and pick
    d_goal = float(np.linalg.norm(scene.ee_pos - tasks.goal_position(spec, scene)))
    tops = scene.object_pos + np.array([0.0, 0.0, scene.object_half_size])
    others = [np.linalg.norm(scene.ee_pos - p) for i, p in enumerate(tops) if i != spec.object_slot]
    if others and min(others) < d_goal and min(others) < 0.06:
        return "wrong object"
    return "imprecise" if d_goal < 0.08 else "drift"


def rollouts(args, policy, split: str, randomization: Any = None, **env_kwargs) -> dict[str, Any]:
    """Success and failure causes over ``--eval-episodes`` held-out scenes of ``split``
    (under ``randomization``, default ``--randomization``; ``env_kwargs`` go to ``make``)."""
    from embodied_rl.envs import make
    from embodied_rl.evaluation.transfer import wilson_interval

    env = make(
        args.task, obs_mode="rgb+state", image_size=IMAGE_SIZE, split=split,
        randomization=randomization or args.randomization, **env_kwargs,
    )  # fmt: skip
    causes: dict[str, int] = {}
    successes = 0
    policy.eval()
    try:
        for i in range(args.eval_episodes):
            obs, _ = env.reset(seed=EVAL_SEED + i)
            policy.reset()
            while True:
                obs, _, terminated, truncated, info = env.step(policy.act(obs))
                if terminated or truncated:
                    break
            if info["success"]:
                successes += 1
            else:
                cause = classify(env)
                causes[cause] = causes.get(cause, 0) + 1
    finally:
        env.close()
    policy.train()
    n = args.eval_episodes
    return {
        "success": successes,
        "n": n,
        "interval": wilson_interval(successes, n),
        "causes": causes,
    }


@torch.no_grad()
def action_error(policy, data, n: int = 1024, seed: int = 0) -> float:
    """MSE between the policy's deterministic action and the data's, over ``n`` transitions."""
    from embodied_rl.agents.base import current_output, policy_input
    from embodied_rl.agents.data import AgentSampler
    from embodied_rl.datasets.samplers import SamplerConfig

    history = policy.config.history if hasattr(policy.config, "history") else None
    sampler = AgentSampler(data, config=SamplerConfig(batch_size=n, seed=seed), history=history)
    batch = sampler.sample()
    policy.eval()
    out = current_output(policy(policy_input(policy, batch)), policy, batch)
    policy.train()
    action = batch["action"]  # a chunked policy: its prediction for the current step
    return float((policy.head.mode(out)[:, : action.shape[1]] - action).square().mean())


# ---------------------------------------------------------------------- training
def build_policy(args, variant: str, data, seed: int):
    from embodied_rl.agents.trainer import default_policy, seed_everything
    from embodied_rl.policies.vla import VLAPolicy, vla_preset

    seed_everything(seed)
    if variant == "state-mlp":
        return default_policy("bc", data)
    space = data.action_space
    overrides = {
        **BEFORE, "image_size": IMAGE_SIZE, "history": args.history, "dropout": 0.1,
        "action_low": tuple(float(x) for x in space.low),
        "action_high": tuple(float(x) for x in space.high),
        **VARIANTS[variant],
    }  # fmt: skip
    return VLAPolicy(vla_preset("tiny", **overrides))


def run_suffix(args) -> str:
    """Runs on noise-injected data or expert labels are cached apart from the plain ones."""
    return f"-dart{args.noise:g}-{args.labels}" if args.noise or args.labels != "action" else ""


def curve(args, variant: str, seed: int, data, held_out) -> list[dict[str, Any]]:
    """Train ``variant`` to ``--steps`` in chunks of ``--eval-every``; one row per chunk."""
    from embodied_rl.agents import TrainerConfig, train

    out = Path(args.work) / "runs" / f"{variant}-s{seed}{run_suffix(args)}"
    record = out / "curve.json"
    rows = json.loads(record.read_text()) if record.exists() else []
    if args.table_only:
        return rows
    seconds = rows[-1]["train_s"] if rows else 0.0
    for steps in range(args.eval_every, args.steps + 1, args.eval_every):
        if any(r["step"] == steps for r in rows):
            continue
        started = time.perf_counter()
        agent, _ = train(
            "bc", data, out, bc_config(args, variant),
            TrainerConfig(
                steps=steps, batch_size=args.batch_size, seed=seed, eval_episodes=0,
                checkpoint_every=args.eval_every, log_every=100, progress=not args.no_progress,
                tensorboard=False,
            ),
            policy=build_policy(args, variant, data, seed), resume=steps > args.eval_every,
        )  # fmt: skip
        seconds += time.perf_counter() - started
        row = {
            "variant": variant, "seed": seed, "step": steps, "train_s": round(seconds, 1),
            "train_mse": action_error(agent.policy, data),
            "held_out_mse": action_error(agent.policy, held_out),
            **{split: rollouts(args, agent.policy, split) for split in ("seen", "unseen")},
        }  # fmt: skip
        print(json.dumps({k: row[k] for k in ("variant", "step", "train_s")}),
              {s: row[s]["success"] for s in ("seen", "unseen")}, flush=True)  # fmt: skip
        rows.append(row)
        record.write_text(json.dumps(rows, indent=1))
    return rows


# ---------------------------------------------------------------------- report
def rate(cell: dict[str, Any]) -> str:
    lo, hi = cell["interval"]
    return f"{cell['success'] / cell['n']:.0%} [{lo:.0%}, {hi:.0%}]"


def report(args, results: dict[tuple[str, int], list[dict[str, Any]]], minutes: float) -> str:
    lines = [
        f"# The tiny VLA on {args.task}: what makes it learn",
        "",
        f"`python benchmarks/vla_learning.py {' '.join(args.argv)}`".replace("  ", " "),
        "",
        f"Task {args.task}, randomization `{args.randomization}` (training and evaluation), "
        f"{args.episodes} expert demonstrations (seeds 0-{args.episodes - 1}"
        + (f", action noise {args.noise:g}, labels `{args.labels}`" if run_suffix(args) else "")
        + f"), BC with batch "
        f"{args.batch_size}, Adam {args.lr:g}, frame history {args.history}, "
        f"one torch thread. Success on {args.eval_episodes} held-out scenes per split (seeds from "
        f"{EVAL_SEED:,}), 95% Wilson intervals. Action MSE on 1,024 training transitions and on "
        f"{args.held_out} held-out expert episodes (seeds from {HELD_OUT_SEED:,}).",
        "",
        "## Learning curves",
        "",
        "| variant | seed | step | train s | seen | unseen | train MSE | held-out MSE | "
        "failures seen / unseen |",
        "|---|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for (variant, seed), rows in results.items():
        for r in rows:
            causes = " / ".join(
                ", ".join(f"{k} {v}" for k, v in sorted(r[split]["causes"].items())) or "-"
                for split in ("seen", "unseen")
            )
            lines.append(
                f"| {variant} | {seed} | {r['step']} | {r['train_s']:.0f} | {rate(r['seen'])} | "
                f"{rate(r['unseen'])} | {r['train_mse']:.4f} | {r['held_out_mse']:.4f} | "
                f"{causes} |"
            )
    lines += ["", f"Wall time of this invocation {minutes:.0f} min (finished runs are cached)."]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser, work: str, steps: int) -> None:
    """The data, training and evaluation options (shared with vla_generalisation.py)."""
    parser.add_argument("--task", default="tabletop/reach-v0")
    parser.add_argument("--randomization", default="light")
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--history", type=int, default=1)
    parser.add_argument(
        "--noise", type=float, default=0.0, help="expert action noise of the demonstrations (DART)"
    )
    parser.add_argument(
        "--labels", choices=("action", "expert"), default="action",
        help="imitate the executed actions or the expert's clean ones (BCConfig.labels)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", default=work)
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--table-only", action="store_true", help="report cached runs only")


def training_data(args):
    """The training demonstrations and the held-out expert episodes of ``args``."""
    noisy = f"-dart{round(args.noise * 100)}" if args.noise else ""
    data = dataset(args, f"expert{args.episodes}{noisy}", args.episodes, 0, args.noise)
    held_out = dataset(args, f"held-out{args.held_out}", args.held_out, HELD_OUT_SEED)
    return data, held_out


def main() -> int:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "outputs/bench/vla_learning", 6000)
    parser.add_argument(
        "--variants", nargs="+", default=[*VARIANTS, "state-mlp"], help="NAME or NAME@SEED"
    )
    parser.add_argument("--eval-every", type=int, default=1500)
    args = parser.parse_args()
    from embodied_rl.utils.io import write_text_atomic

    args.argv = sys.argv[1:]
    # NAME runs every --seeds; NAME@S runs seed S only
    runs = [
        (name, int(seed)) if seed else (name, s)
        for v in args.variants
        for name, _, seed in [v.partition("@")]
        for s in ([0] if seed else args.seeds)
    ]
    unknown = sorted({name for name, _ in runs} - {*VARIANTS, "state-mlp"})
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {[*VARIANTS, 'state-mlp']}")
    torch.set_num_threads(1)
    started = time.perf_counter()
    data, held_out = training_data(args)
    results = {(v, seed): curve(args, v, seed, data, held_out) for v, seed in runs}
    text = report(args, results, (time.perf_counter() - started) / 60)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
