"""Ours vs d3rlpy on the D4RL-style locomotion datasets: BC, TD3+BC, IQL, CQL, Cal-QL.

The datasets come from ``erl datasets locomotion`` (``--root``; built first if missing, which
trains a PPO behaviour policy per body, ~10 minutes each). Every run trains one algorithm of
one library on one dataset with one seed, for ``--steps`` gradient steps with batch 256 and
2 x 256 MLPs on both sides, evaluating every ``--eval-every`` steps on ``--eval-episodes``
episodes whose reset seeds (``held_out_seed(seed) + i``) no dataset used, and records the
D4RL normalised score (``100 * (return - random) / (expert - random)``, the references in the
dataset's metadata) as a learning curve. Each library runs with the papers' locomotion
settings, the same on both sides: IQL expectile 0.7, beta 3, rewards scaled by
``1000 / (max return - min return)`` over the dataset's episodes (IQL's appendix; computed
here and given to d3rlpy as a ``MultiplyRewardScaler``);
TD3+BC alpha 2.5, standardised states; ``calql-r0.1`` is Cal-QL with rewards (and so its
Monte-Carlo returns) scaled by 0.1, ours ``reward_scale=0.1``, d3rlpy a
``MultiplyRewardScaler``; CQL/Cal-QL weight 5, 10 sampled actions, learning
rates 1e-4 actor / 3e-4 critic, SAC's tanh-squashed Gaussian actor on both sides (ours since
2026-12-04: ``default_policy``'s ``tanh_gaussian``); IQL's actor a Gaussian with
state-independent std on both sides; BC a deterministic MSE policy, learning rate 3e-4.

d3rlpy stays out of our dependencies: it trains in a subprocess with its own interpreter
(``--d3rlpy-python``, a venv made with ``pip install torch==2.13.0 d3rlpy==2.8.1``) and exports
its policy as TorchScript at every evaluation point; this script evaluates those on the same
environment and seeds as ours. Every run writes one JSON under ``--work``, so a rerun skips
finished runs. ``--jobs`` runs that many at once (one torch thread each).

    python benchmarks/locomotion_offline.py --bodies hopper walker2d \\
        --kinds medium medium-replay --seeds 0 1 2 --steps 10000 --jobs 2 \\
        --out benchmarks/results/locomotion_offline.md
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ALGOS = ("bc", "td3bc", "iql", "cql", "calql", "calql-r0.1")
# rows that run an algorithm with its rewards scaled (Monte-Carlo returns alike, in both
# libraries): Cal-QL with rewards x 0.1, so that its critic reaches the returns' scale early
SCALED = {"calql-r0.1": ("calql", 0.1)}
LIBS = ("ours", "d3rlpy")

D3RLPY_SCRIPT = r"""
import json, sys
import numpy as np, torch, d3rlpy
path, out, algo, steps, every, seed, reward_scale = sys.argv[1:8]
steps, every, seed, reward_scale = int(steps), int(every), int(seed), float(reward_scale)
torch.set_num_threads(1)
d3rlpy.seed(seed)
d = np.load(path)
dataset = d3rlpy.dataset.MDPDataset(
    d["obs"], d["actions"], d["rewards"], d["terminals"], timeouts=d["timeouts"],
    action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
)
enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
obs_scaler = d3rlpy.preprocessing.StandardObservationScaler(mean=d["mean"], std=d["std"])
act_scaler = d3rlpy.preprocessing.MinMaxActionScaler(minimum=d["low"], maximum=d["high"])
common = dict(batch_size=256, observation_scaler=obs_scaler, action_scaler=act_scaler)
ac = dict(actor_encoder_factory=enc, critic_encoder_factory=enc)
cql = dict(
    actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4,
    alpha_learning_rate=0.0, conservative_weight=5.0, n_action_samples=10, **ac, **common,
)
if algo == "bc":
    config = d3rlpy.algos.BCConfig(learning_rate=3e-4, encoder_factory=enc, **common)
elif algo == "td3bc":
    config = d3rlpy.algos.TD3PlusBCConfig(
        actor_learning_rate=3e-4, critic_learning_rate=3e-4, alpha=2.5, update_actor_interval=2,
        target_smoothing_sigma=0.2, target_smoothing_clip=0.5, **ac, **common,
    )
elif algo == "iql":
    config = d3rlpy.algos.IQLConfig(
        actor_learning_rate=3e-4, critic_learning_rate=3e-4, expectile=0.7, weight_temp=3.0,
        max_weight=100.0, value_encoder_factory=enc,
        reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(multiplier=reward_scale), **ac,
        **common,
    )
elif algo == "cql":
    config = d3rlpy.algos.CQLConfig(**cql)
elif algo == "calql":
    config = d3rlpy.algos.CalQLConfig(**cql)
elif algo == "calql-scaled":  # returns-to-go are scaled with the rewards (TorchMiniBatch)
    config = d3rlpy.algos.CalQLConfig(
        reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(multiplier=reward_scale), **cql
    )
else:
    raise SystemExit(f"unknown algo {algo}")
model = config.create(device="cpu:0")
model.build_with_dataset(dataset)
for step in range(1, steps + 1):
    model.update(dataset.sample_transition_batch(256))
    if step % every == 0 or step == steps:
        model.save_policy(f"{out}/policy_{step:09d}.pt")
print(json.dumps({"steps": steps}))
"""


def held_out_seed(seed: int) -> int:
    from embodied_rl.evaluation.rollout import held_out_seed as seed_of

    return seed_of(seed)


def normalised(returns: list[float], meta: dict) -> float:
    low, high = meta["ref_min_score"], meta["ref_max_score"]
    return float(100.0 * (np.mean(returns) - low) / (high - low))


def evaluate(act, env_id: str, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` episodes of ``act`` on held-out reset seeds."""
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=held_out_seed(seed) + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def iql_reward_scale(data) -> float:
    """IQL's locomotion reward normalisation: ``1000 / (max - min episode return)``."""
    returns = data.episode_returns()
    return 1000.0 / float(returns.max() - returns.min())


def train_ours(
    algo: str, data, seed: int, args: dict, out: Path, agent_overrides: dict | None = None,
    policy_overrides: dict | None = None,
):  # fmt: skip
    """Our ``algo`` on ``data`` at the benchmark's settings (``agent_overrides`` and
    ``policy_overrides`` on top, for probes); returns the agent and its evaluation curve."""
    import csv

    import torch

    from embodied_rl.agents import TrainerConfig, agent_class, default_policy, train
    from embodied_rl.agents.trainer import seed_everything

    torch.set_num_threads(1)
    algo, scale = SCALED.get(algo, (algo, iql_reward_scale(data) if algo == "iql" else None))
    overrides = {} if scale is None else {"reward_scale": scale}
    agent_config = agent_class(algo).config_class(**{**overrides, **(agent_overrides or {})})
    config = TrainerConfig(
        steps=args["steps"], batch_size=256, seed=seed, eval_every=args["eval_every"],
        eval_episodes=args["eval_episodes"], checkpoint_every=0, keep_checkpoints=1,
        log_every=args["eval_every"], progress=False, tensorboard=False,
    )  # fmt: skip
    seed_everything(seed)
    policy = default_policy(algo, data, hidden=(256, 256), **(policy_overrides or {}))
    agent, _ = train(algo, data, out, agent_config, config, policy)
    curve = []
    with open(out / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["name"] == "eval/normalized_score":
                curve.append([int(row["step"]), float(row["value"])])
    return agent, curve


def run_ours(algo: str, body: str, kind: str, seed: int, args: dict, out: Path) -> dict:
    from embodied_rl.datasets.locomotion import load_locomotion

    data = load_locomotion(body, kind, args["root"])
    start = time.perf_counter()
    _, curve = train_ours(algo, data, seed, args, out)
    return {"curve": curve, "wall_s": time.perf_counter() - start}


def run_d3rlpy(algo: str, body: str, kind: str, seed: int, args: dict, out: Path) -> dict:
    import torch

    from embodied_rl.datasets.locomotion import BODIES, load_locomotion
    from embodied_rl.datasets.offline import OBS_KEY
    from embodied_rl.policies.normalization import STD_FLOOR

    torch.set_num_threads(1)
    data = load_locomotion(body, kind, args["root"])
    if algo in SCALED:  # the d3rlpy script's name for a Cal-QL with scaled rewards
        scale = SCALED[algo][1]
        algo = "calql-scaled"
    else:
        scale = iql_reward_scale(data)  # read by IQL only
    states = data.observations[OBS_KEY].astype(np.float64)
    npz = out / "data.npz"
    np.savez(
        npz, obs=data.observations[OBS_KEY][data.obs_index].astype(np.float32),
        actions=data.actions, rewards=data.rewards.astype(np.float32),
        terminals=data.terminations.astype(np.float32),
        timeouts=data.truncations.astype(np.float32), low=data.action_space.low,
        high=data.action_space.high,
        # the statistics our normalizers use (STD_FLOOR included), given to d3rlpy's scaler
        mean=states.mean(0), std=np.maximum(states.std(0), STD_FLOOR),
    )  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        [args["d3rlpy_python"], "-c", D3RLPY_SCRIPT, str(npz), str(out), algo, str(args["steps"]),
         str(args["eval_every"]), str(seed), str(scale)],
        capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"d3rlpy {algo} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - start
    curve = []
    for path in sorted(out.glob("policy_*.pt")):
        policy = torch.jit.load(str(path))

        def act(o, policy=policy):
            with torch.no_grad():
                return policy(torch.as_tensor(o, dtype=torch.float32)[None])[0].numpy()

        returns = evaluate(act, BODIES[body], args["eval_episodes"], seed)
        curve.append([int(path.stem.split("_")[1]), normalised(returns, data.metadata)])
    npz.unlink()
    return {"curve": curve, "wall_s": wall}


def run_one(lib: str, algo: str, body: str, kind: str, seed: int, args: dict) -> dict:
    run_id = f"{lib}-{algo}-{body}-{kind}-s{seed}"
    out = Path(args["work"]) / run_id
    shutil.rmtree(out, ignore_errors=True)  # an interrupted attempt's files start over
    out.mkdir(parents=True)
    fn = run_ours if lib == "ours" else run_d3rlpy
    result = fn(algo, body, kind, seed, args, out)
    record = {"run_id": run_id, "lib": lib, "algo": algo, "body": body, "kind": kind,
              "seed": seed, **result}  # fmt: skip
    (Path(args["work"]) / f"{run_id}.json").write_text(json.dumps(record))
    return record


def interval(values: list[float]) -> str:
    """Mean and a 95% t-interval half-width over seeds."""
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "-"
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(values), 2.0)
    half = t * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return f"{np.mean(values):.1f} +- {half:.1f}"


def write_table(records: list[dict], args: argparse.Namespace, wall_s: float) -> str:
    rows = [
        "| dataset | algorithm | ours | d3rlpy 2.8.1 | ours, last 3 evals | d3rlpy, last 3 evals "
        "| seeds | ours s/run | d3rlpy s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for body in args.bodies:
        for kind in args.kinds:
            for algo in args.algos:
                final, smooth, walls, seeds = [], [], [], []
                for lib in LIBS:
                    done = [r for r in records if (r["lib"], r["algo"], r["body"], r["kind"]) ==
                            (lib, algo, body, kind) and r["curve"]]  # fmt: skip
                    final.append(interval([r["curve"][-1][1] for r in done]))
                    # the last three evaluation points of each seed, averaged: less of the
                    # 10-episode evaluation noise than the final point alone
                    smooth.append(
                        interval([np.mean([v for _, v in r["curve"][-3:]]) for r in done])
                    )
                    walls.append(f"{np.mean([r['wall_s'] for r in done]):.0f}" if done else "-")
                    seeds.append(str(len(done)))
                rows.append(f"| {body}-{kind} | {algo} | {final[0]} | {final[1]} | {smooth[0]} | "
                            f"{smooth[1]} | {'/'.join(seeds)} | {walls[0]} | {walls[1]} |")  # fmt: skip
    curves = ["", "Learning curves (mean normalised score over seeds at each evaluation step):", ""]
    for body in args.bodies:
        for kind in args.kinds:
            for algo in args.algos:
                for lib in LIBS:
                    done = [r["curve"] for r in records if (r["lib"], r["algo"], r["body"],
                            r["kind"]) == (lib, algo, body, kind) and r["curve"]]  # fmt: skip
                    if not done:
                        continue
                    steps = [s for s, _ in done[0]]
                    means = [
                        np.mean([c[i][1] for c in done if len(c) > i]) for i in range(len(steps))
                    ]
                    points = ", ".join(
                        f"{s // 1000}k: {m:.1f}" for s, m in zip(steps, means, strict=True)
                    )
                    curves.append(f"- {body}-{kind} {algo} {lib}: {points}")
    return "\n".join(rows + curves) + f"\n\nWall time of this invocation: {wall_s / 60:.1f} min\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", nargs="+", default=["hopper", "walker2d"])
    parser.add_argument("--kinds", nargs="+", default=["medium", "medium-replay"])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--root", default="outputs/datasets", help="locomotion datasets root")
    parser.add_argument("--work", default="outputs/bench/locomotion_offline")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--d3rlpy-python", default="/tmp/d3rlpy-venv/bin/python")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    parser.add_argument(
        "--table-only", action="store_true", help="write the table of the finished runs only"
    )
    args = parser.parse_args()
    if "d3rlpy" in args.libs and not Path(args.d3rlpy_python).exists():
        parser.error(f"--d3rlpy-python {args.d3rlpy_python} does not exist")
    from embodied_rl.datasets import dataset_dir
    from embodied_rl.datasets.locomotion import locomotion_id
    from embodied_rl.runners.locomotion import build_locomotion

    for body in (
        [] if args.table_only else args.bodies
    ):  # datasets already there are used as they are
        missing = [
            k for k in args.kinds
            if not (dataset_dir(args.root, locomotion_id(body, k)) / "data").is_dir()
        ]  # fmt: skip
        if missing:
            build_locomotion(body, args.root, kinds=tuple(missing), progress=False)
    shared = {k: getattr(args, k) for k in
              ("root", "work", "steps", "eval_every", "eval_episodes", "d3rlpy_python")}  # fmt: skip
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    grid = [(lib, algo, body, kind, seed) for body in args.bodies for kind in args.kinds
            for seed in args.seeds for algo in args.algos for lib in args.libs]  # fmt: skip
    records, todo = [], []
    for spec in grid:
        done = work / ("{}-{}-{}-{}-s{}".format(*spec) + ".json")
        if done.is_file():
            records.append(json.loads(done.read_text()))
        else:
            todo.append(spec)
    print(f"{len(records)} runs done, {len(todo)} to run", flush=True)
    if args.table_only:
        todo = []
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_one, *spec, shared): spec for spec in todo}
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as error:  # one failed run does not stop the grid
                print(f"FAILED {futures[future]}: {error}", flush=True)
                continue
            records.append(record)
            print(f"{record['run_id']}: {record['curve'][-1][1]:.1f} "
                  f"({record['wall_s']:.0f} s)", flush=True)  # fmt: skip
    table = write_table(records, args, time.perf_counter() - start)
    print(table)
    if args.out:
        command = "python " + " ".join(sys.argv)
        Path(args.out).write_text(
            f"# Offline RL on the locomotion datasets: ours vs d3rlpy\n\n```\n{command}\n```\n\n"
            + table
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
