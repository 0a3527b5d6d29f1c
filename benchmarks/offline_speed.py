"""Gradient steps/s of our IQL, CQL and TD3+BC against d3rlpy 2.8's, same data, sizes, threads.

d3rlpy stays out of our dependencies: it runs in a subprocess with its own interpreter
(``--d3rlpy-python``, e.g. a venv made with ``pip install torch==2.13.0 d3rlpy==2.8.1``),
reading the same transitions from a temporary ``.npz``. Both sides: 2 x 256 MLPs, two
critics, batch 256, ``--threads`` torch threads, ``--steps`` timed steps after a warm-up.
Ours runs twice: in fp32 (as d3rlpy) and with ``precision="bf16"`` (bf16 autocast of the
hidden layers' matmuls; fp32 weights, outputs and losses), which d3rlpy does not offer.

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
elif algo == "td3bc":
    algo_ = d3rlpy.algos.TD3PlusBCConfig(**kw).create(device="cpu:0")
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
from torch.utils.flop_counter import FlopCounterMode
batch = buffer.sample_transition_batch(256)
with FlopCounterMode(display=False) as counter:
    algo_.update(batch)
print(json.dumps({"steps_per_s": steps / dt, "flops": counter.get_total_flops()}))
"""


def ours(algo: str, data, steps: int, warmup: int, precision: str = "fp32") -> float:
    from embodied_rl.agents.base import agent_class
    from embodied_rl.agents.trainer import default_policy, make_agent, make_sampler

    config = agent_class(algo).config_class(precision=precision)
    agent = make_agent(algo, default_policy(algo, data), config)
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


def matmul_gflops(threads: int, seconds: float = 2.0, dtype: str = "float32") -> float:
    """Sustained matmul rate of this CPU at the networks' shapes (batch 256 x 256 -> 256,
    forward plus the two backward products) in ``dtype``, in GFLOP/s."""
    import torch

    torch.set_num_threads(threads)
    kind = getattr(torch, dtype)
    x, w, g = (torch.randn(256, 256, dtype=kind) for _ in range(3))
    for _ in range(50):
        x @ w
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            x @ w, g @ w.T, x.T @ g
        n += 100
    return n * 3 * 2 * 256**3 / (time.perf_counter() - start) / 1e9


def theirs(
    python: str, npz: Path, algo: str, steps: int, warmup: int, threads: int
) -> tuple[float, float]:
    """d3rlpy's gradient steps/s and the FLOPs of one of its update steps."""
    out = subprocess.run(
        [python, "-c", D3RLPY_SCRIPT, str(npz), algo, str(steps), str(warmup), str(threads)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["steps_per_s"]), float(result["flops"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d3rlpy-python", default="/tmp/d3rlpy-venv/bin/python")
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps per run")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=60, help="mixed reach episodes")
    parser.add_argument("--algos", default="iql,cql", help="comma-separated: iql, cql, td3bc")
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
        table, flops, their_flops = [], {}, {}
        peak, peak16 = matmul_gflops(args.threads), matmul_gflops(args.threads, dtype="bfloat16")
        for algo in args.algos.split(","):
            flops[algo] = flops_per_step(algo, data)
            mine = ours(algo, data, args.steps, args.warmup)
            mine16 = ours(algo, data, args.steps, args.warmup, precision="bf16")
            other, their_flops[algo] = theirs(
                args.d3rlpy_python, npz, algo, args.steps, args.warmup, args.threads
            )
            table.append((algo, mine, mine16, other))
            print(
                f"{algo}: ours fp32 {mine:.1f} / bf16 {mine16:.1f} steps/s, d3rlpy {other:.1f} "
                f"steps/s, x{mine / other:.2f} / x{mine16 / other:.2f}"
            )
    command = "python " + " ".join(sys.argv)
    lines = [
        f"Command: `{command}`",
        "",
        f"Dataset: tabletop/reach-v0 mixed, {args.episodes} episodes, {data.n_transitions} "
        f"transitions, {data.observations['state'].shape[1]}-D state. Batch 256, 2 x 256 MLPs, 2 critics, {args.threads} thread(s), "
        f"{args.steps} timed steps after {args.warmup} warm-up steps; sampling included.",
        "",
        "| algorithm | ours fp32 (steps/s) | ours bf16 (steps/s) | d3rlpy 2.8.1 fp32 (steps/s) "
        "| ratio fp32 | ratio bf16 |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {a.upper()} | {m:.1f} | {m16:.1f} | {o:.1f} | {m / o:.2f}x | {m16 / o:.2f}x |"
            for a, m, m16, o in table
        ],
        "",
        "## Compute bound",
        "",
        f"Matmul FLOPs of one of our update steps (PyTorch's `FlopCounterMode`) against this "
        f"CPU's sustained matmul rate at the networks' shapes ({peak:.0f} GFLOP/s fp32, "
        f"{peak16:.0f} GFLOP/s bf16, on {args.threads} thread(s), measured in the same run). "
        "The bound is the steps/s of an implementation that did nothing but those matmuls at "
        "that rate; the best possible ratio over d3rlpy is that bound divided by d3rlpy's "
        "steps/s. d3rlpy's GFLOP per step are counted the same way in its process.",
        "",
        "| algorithm | GFLOP / step | d3rlpy GFLOP / step | fp32 bound (steps/s) | ours fp32, % of bound "
        "| d3rlpy, % of fp32 bound | best fp32 ratio over d3rlpy | bf16 bound (steps/s) "
        "| ours bf16, % of bound | best bf16 ratio over d3rlpy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {a.upper()} | {flops[a] / 1e9:.3f} | {their_flops[a] / 1e9:.3f} | {peak * 1e9 / flops[a]:.0f} | "
            f"{100 * m * flops[a] / (peak * 1e9):.0f}% "
            f"| {100 * o * their_flops[a] / (peak * 1e9):.0f}% "
            f"| {peak * 1e9 / flops[a] / o:.1f}x | {peak16 * 1e9 / flops[a]:.0f} | "
            f"{100 * m16 * flops[a] / (peak16 * 1e9):.0f}% | {peak16 * 1e9 / flops[a] / o:.1f}x |"
            for a, m, m16, o in table
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
