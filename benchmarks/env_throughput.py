"""Tabletop env throughput: state and rgb modes next to raw ``mujoco.mj_step`` on the same model.

Issue #3 target: >= 1,000 env steps/s with 64x64 RGB observations on one CPU core.

    python benchmarks/env_throughput.py --steps 5000 --out benchmarks/results/env_throughput.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import embodied_rl  # noqa: E402,F401  (chooses the headless GL backend before mujoco loads)

# isort: split
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from embodied_rl.envs import make  # noqa: E402


def env_steps_per_s(task_id: str, n_steps: int, **kwargs) -> float:
    env = make(task_id, seed=0, **kwargs)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(n_steps, *env.action_space.shape))
    actions = actions.astype(np.float32)
    env.reset()
    env.step(actions[0])  # the passive env checker inspects the first step only
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return n_steps / elapsed


def raw_physics_steps_per_s(task_id: str, n_steps: int) -> float:
    """mj_step alone, n_substeps per control step, no Python env logic."""
    env = make(task_id, seed=0)
    env.reset()
    base = env.unwrapped
    model, data, substeps = base.model, base.data, base.config.n_substeps
    start = time.perf_counter()
    for _ in range(n_steps):
        mujoco.mj_step(model, data, nstep=substeps)
    elapsed = time.perf_counter() - start
    env.close()
    return n_steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="tabletop/pick-v0")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per row")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args()

    best = lambda f: max(f() for _ in range(args.repeats))  # noqa: E731
    raw = best(lambda: raw_physics_steps_per_s(args.task, args.steps))
    rows = [("raw mujoco.mj_step (10 substeps)", raw)]
    for label, kwargs in (
        ("env, state", {"obs_mode": "state"}),
        ("env, state, tokens instruction", {"obs_mode": "state", "instruction_mode": "tokens"}),
        ("env, rgb 64x64", {"obs_mode": "rgb", "image_size": 64}),
        ("env, rgb+state 64x64", {"obs_mode": "rgb+state", "image_size": 64}),
        ("env, rgb 128x128", {"obs_mode": "rgb", "image_size": 128}),
        (
            "env, rgb 64x64, high render quality",
            {"obs_mode": "rgb", "image_size": 64, "render_quality": "high"},
        ),
    ):
        n = args.steps if "high" not in label else max(200, args.steps // 25)
        rows.append((label, best(lambda kw=kwargs, n=n: env_steps_per_s(args.task, n, **kw))))

    lines = [
        f"Task `{args.task}`, {args.steps} steps per row, best of {args.repeats}, 1 thread, "
        f"{platform.processor() or platform.machine()}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}",
        "",
        "| mode | steps/s | ratio to raw physics |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {rate:,.0f} | {rate / raw:.2f} |" for label, rate in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(
                f"Command: `python benchmarks/env_throughput.py --steps {args.steps} --out {args.out}`\n\n"
            )
            f.write(text + "\n")


if __name__ == "__main__":
    main()
