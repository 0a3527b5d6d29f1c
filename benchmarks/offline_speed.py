"""Gradient steps/s of our IQL and CQL against d3rlpy 2.8's, same data, sizes and threads.

d3rlpy stays out of our dependencies: it runs in a subprocess with its own interpreter
(``--d3rlpy-python``, e.g. a venv made with ``pip install torch==2.13.0 d3rlpy==2.8.1``),
reading the same transitions from a temporary ``.npz``. Both sides: 2 x 256 MLPs, two
critics, batch 256, ``--threads`` torch threads, ``--steps`` timed steps after a warm-up.

    python benchmarks/offline_speed.py --d3rlpy-python /tmp/d3rlpy-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D3RLPY_SCRIPT = r"""
import json, sys, time
import numpy as np, torch, d3rlpy
path, algo, steps, warmup, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
d = np.load(path)
dataset = d3rlpy.dataset.MDPDataset(
    d["obs"], d["actions"], d["rewards"], d["terminals"], timeouts=d["timeouts"],
    action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
)
enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
kw = dict(batch_size=256, actor_encoder_factory=enc, critic_encoder_factory=enc)
if algo == "iql":
    algo_ = d3rlpy.algos.IQLConfig(value_encoder_factory=enc, **kw).create(device="cpu:0")
else:
    algo_ = d3rlpy.algos.CQLConfig(**kw).create(device="cpu:0")
algo_.build_with_dataset(dataset)
buffer = dataset
def run(n):
    for _ in range(n):
        batch = buffer.sample_transition_batch(256)
        algo_.update(batch)
run(warmup)
t = time.perf_counter(); run(steps); dt = time.perf_counter() - t
print(json.dumps({"steps_per_s": steps / dt}))
"""


def ours(algo: str, data, steps: int, warmup: int) -> float:
    from embodied_rl.agents.trainer import default_policy, make_agent, make_sampler

    agent = make_agent(algo, default_policy(algo, data))
    sampler = make_sampler(agent, data, 256)
    for _ in range(warmup):
        agent.update(sampler.sample())
    start = time.perf_counter()
    for _ in range(steps):
        agent.update(sampler.sample())  # sampling included, as in d3rlpy's loop
    return steps / (time.perf_counter() - start)


def flops_per_step(algo: str, data) -> float:
    """Floating-point operations of one of our update steps, counted by PyTorch's
    ``FlopCounterMode`` (matmuls and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    from embodied_rl.agents.trainer import default_policy, make_agent, make_sampler

    agent = make_agent(algo, default_policy(algo, data))
    sampler = make_sampler(agent, data, 256)
    agent.update(sampler.sample())
    batch = sampler.sample()
    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    return float(counter.get_total_flops())


def matmul_gflops(threads: int, seconds: float = 2.0) -> float:
    """Sustained fp32 matmul rate of this CPU at the networks' shapes (batch 256 x 256 ->
    256, forward plus the two backward products), in GFLOP/s."""
    import torch

    torch.set_num_threads(threads)
    x, w, g = torch.randn(256, 256), torch.randn(256, 256), torch.randn(256, 256)
    for _ in range(50):
        x @ w
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            x @ w, g @ w.T, x.T @ g
        n += 100
    return n * 3 * 2 * 256**3 / (time.perf_counter() - start) / 1e9


def theirs(python: str, npz: Path, algo: str, steps: int, warmup: int, threads: int) -> float:
    out = subprocess.run(
        [python, "-c", D3RLPY_SCRIPT, str(npz), algo, str(steps), str(warmup), str(threads)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d3rlpy-python", default="/tmp/d3rlpy-venv/bin/python")
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps per run")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=60, help="mixed reach episodes")
    parser.add_argument("--out", default="benchmarks/results/offline_speed.md")
    args = parser.parse_args()

    import torch

    from embodied_rl.datasets import collect, load_dataset

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = collect(
            "tabletop/reach-v0", "mixed", episodes=args.episodes, out=tmp,
            dataset_id="bench/reach-mixed-v0", reference_episodes=2, progress=False,
        )  # fmt: skip
        data = load_dataset(result.path, obs_keys=["state"])
        npz = Path(tmp) / "data.npz"
        rows = data.obs_index
        np.savez(
            npz, obs=data.observations["state"][rows], actions=data.actions,
            rewards=data.rewards.astype(np.float32), terminals=data.terminations.astype(np.float32),
            timeouts=data.truncations.astype(np.float32),
        )  # fmt: skip
        table, flops = [], {}
        peak = matmul_gflops(args.threads)
        for algo in ("iql", "cql"):
            flops[algo] = flops_per_step(algo, data)
            mine = ours(algo, data, args.steps, args.warmup)
            other = theirs(args.d3rlpy_python, npz, algo, args.steps, args.warmup, args.threads)
            table.append((algo, mine, other))
            print(
                f"{algo}: ours {mine:.1f} steps/s, d3rlpy {other:.1f} steps/s, x{mine / other:.2f}"
            )
    command = "python " + " ".join(sys.argv)
    lines = [
        f"Command: `{command}`",
        "",
        f"Dataset: tabletop/reach-v0 mixed, {args.episodes} episodes, {data.n_transitions} "
        f"transitions, 90-D state. Batch 256, 2 x 256 MLPs, 2 critics, {args.threads} thread(s), "
        f"{args.steps} timed steps after {args.warmup} warm-up steps; sampling included.",
        "",
        "| algorithm | ours (steps/s) | d3rlpy 2.8.1 (steps/s) | ratio |",
        "|---|---:|---:|---:|",
        *[f"| {a.upper()} | {m:.1f} | {o:.1f} | {m / o:.2f}x |" for a, m, o in table],
        "",
        "## Compute bound",
        "",
        f"Matmul FLOPs of one of our update steps (PyTorch's `FlopCounterMode`) against this "
        f"CPU's sustained fp32 matmul rate at the networks' shapes ({peak:.0f} GFLOP/s on "
        f"{args.threads} thread(s), measured in the same run). The bound is the steps/s of an "
        "implementation that did nothing but those matmuls at that rate; d3rlpy computes the "
        "same algorithm on the same network sizes, so its step holds about the same FLOPs.",
        "",
        "| algorithm | GFLOP / step | bound (steps/s) | ours, % of bound | d3rlpy, % of bound "
        "| best possible ratio over d3rlpy |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {a.upper()} | {flops[a] / 1e9:.3f} | {peak * 1e9 / flops[a]:.0f} | "
            f"{100 * m * flops[a] / (peak * 1e9):.0f}% | {100 * o * flops[a] / (peak * 1e9):.0f}% "
            f"| {peak * 1e9 / flops[a] / o:.1f}x |"
            for a, m, o in table
        ],
        "",
        f"Machine load when written: `{_uptime()}`.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
