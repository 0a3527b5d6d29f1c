"""Normalized scores of BC, IQL, CQL, Cal-QL, DT and d3rlpy's IQL on the same datasets.

Tasks: tabletop reach and push, Meta-World reach (state observations), ``medium`` and
``mixed`` tiers, 3 seeds. Every run writes one JSON under ``--work``; a rerun skips the
finished ones, so an interrupted benchmark resumes where it stopped. The table (mean +- std
normalized score, success rate) goes to ``--out``.

d3rlpy stays out of our dependencies: its IQL trains in a subprocess with its own
interpreter (``--d3rlpy-python``; see docs/agents.md for the venv), with the same network
sizes, batch size, thread count, steps and standardised observations, and exports its
policy as TorchScript, which this script evaluates on our environment like our agents.

    python benchmarks/offline_learning.py --episodes 300 --steps 5000 --steps-for cql=2000 calql=2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASKS = ("tabletop/reach-v0", "tabletop/push-v0", "metaworld/reach-v3")
ALGOS = ("bc", "iql", "cql", "calql", "dt", "d3rlpy-iql")
DT_BATCH = 64  # the Decision Transformer paper's batch (windows of K = 20 steps)

D3RLPY_SCRIPT = r"""
import json, sys
import numpy as np, torch, d3rlpy
path, out, steps, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
iql = json.loads(sys.argv[5])  # expectile, temperature, reward_bias of our IQL config
torch.set_num_threads(1)
d3rlpy.seed(seed)
d = np.load(path)
dataset = d3rlpy.dataset.MDPDataset(
    d["obs"], d["actions"], d["rewards"], d["terminals"], timeouts=d["timeouts"],
    action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
)
enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
algo = d3rlpy.algos.IQLConfig(
    batch_size=256, actor_encoder_factory=enc, critic_encoder_factory=enc,
    value_encoder_factory=enc, expectile=iql["expectile"], weight_temp=iql["temperature"],
    reward_scaler=d3rlpy.preprocessing.ConstantShiftRewardScaler(shift=iql["reward_bias"])
    if iql["reward_bias"] else None,
    observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(mean=d["mean"], std=d["std"]),
    action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(minimum=d["low"], maximum=d["high"]),
).create(device="cpu:0")
algo.build_with_dataset(dataset)
for _ in range(steps):
    algo.update(dataset.sample_transition_batch(256))
algo.save_policy(out)
print(json.dumps({"steps": steps}))
"""


class TorchScriptPolicy:
    """Acts with a policy d3rlpy exported (observation in, greedy action out)."""

    def __init__(self, path: Path, obs_key: str = "state") -> None:
        import torch

        self.module = torch.jit.load(str(path), map_location="cpu")
        self.obs_key = obs_key

    def reset(self) -> None:
        pass

    def eval(self) -> None:
        pass

    def train(self) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs[self.obs_key], np.float32))[None]
            return self.module(x)[0].numpy()


PRECISION_ALGOS = ("iql", "cql", "calql")  # agents with a precision setting


def objects_tag(n_objects: int) -> str:
    """The name suffix of a scene with ``n_objects`` (0: the task's default, no suffix)."""
    return f"_{n_objects}obj" if n_objects else ""


def dataset_for(task: str, tier: str, episodes: int, work: Path, n_objects: int = 0):
    from embodied_rl.datasets import collect, dataset_dir, load_dataset

    suite, name = task.split("/")
    name = name.rsplit("-v", 1)[0].replace("-", "_")
    dataset_id = f"bench/{suite}_{name}{objects_tag(n_objects)}-{tier}{episodes}-v0"
    root = work / "datasets"
    if not (dataset_dir(root, dataset_id) / "data" / "metadata.json").exists():
        collect(
            task, tier, episodes=episodes, out=root, reference_episodes=10,
            dataset_id=dataset_id, progress=True, overwrite=True,
            env_kwargs={"n_objects": n_objects} if n_objects else None,
        )  # fmt: skip
    return load_dataset(dataset_dir(root, dataset_id), obs_keys=["state"])


def sparse(data) -> bool:
    """Whether the rewards are 0/1 success flags (our tasks' default: tabletop and Meta-World
    reward 1 on success and end the episode there)."""
    return bool(np.isin(np.unique(data.rewards), (0.0, 1.0)).all())


def agent_config(algo: str, data, steps: int = 0):
    """The papers' settings for the reward type: IQL's AntMaze settings (expectile 0.9,
    temperature 10, reward - 1) and CORL's AntMaze reward scaling for CQL and Cal-QL
    (10 r - 5) on sparse goal-reaching rewards; the locomotion defaults on dense ones."""
    from embodied_rl.agents.calql import CalQLConfig
    from embodied_rl.agents.cql import CQLConfig
    from embodied_rl.agents.iql import IQLConfig

    if algo in ("iql", "d3rlpy-iql"):
        if sparse(data):
            return IQLConfig(expectile=0.9, temperature=10.0, reward_bias=-1.0)
        return IQLConfig()
    if algo == "dt":  # the paper warms the learning rate up over 10k of its 100k steps
        from embodied_rl.agents.dt import DTConfig

        return DTConfig(warmup_steps=min(10_000, steps // 10))
    if algo in ("cql", "calql"):
        config_class = CalQLConfig if algo == "calql" else CQLConfig
        return config_class(reward_scale=10.0, reward_bias=-5.0) if sparse(data) else None
    return None


def with_precision(algo: str, config, precision: str):
    """``config`` (None: the algorithm's defaults) with ``precision`` for IQL, CQL and Cal-QL."""
    if precision == "fp32" or algo not in PRECISION_ALGOS:
        return config
    from embodied_rl.agents.base import agent_class

    return dataclasses.replace(config or agent_class(algo).config_class(), precision=precision)


def run_ours(
    algo: str,
    data,
    steps: int,
    seed: int,
    eval_episodes: int,
    out: Path,
    precision: str = "fp32",
    config=None,
) -> dict:
    """Train and evaluate one run; ``config``: the agent config (default: :func:`agent_config`)."""
    from embodied_rl.agents import TrainerConfig, train
    from embodied_rl.agents.trainer import default_policy, seed_everything

    agent_cfg = config if config is not None else agent_config(algo, data, steps)
    trainer = TrainerConfig(
        steps=steps, batch_size=DT_BATCH if algo == "dt" else 256, seed=seed, eval_every=0, eval_episodes=eval_episodes,
        checkpoint_every=0, progress=False, tensorboard=False, log_every=max(1, steps // 4),
    )  # fmt: skip
    seed_everything(seed)  # the policy's initial weights depend on the seed too
    overrides = {}
    if algo == "dt":  # returns scaled to O(1), as the paper's 1000 for Gym locomotion
        overrides["return_scale"] = max(1.0, float(data.metadata.get("ref_max_score", 1.0)))
    policy = default_policy(algo, data, **overrides)
    _, result = train(
        algo, data, out, agent_config=with_precision(algo, agent_cfg, precision),
        trainer_config=trainer, policy=policy,
    )  # fmt: skip
    return result


def run_d3rlpy(python: str, data, steps: int, seed: int, eval_episodes: int, out: Path) -> dict:
    from embodied_rl.agents.trainer import env_factory, evaluate, score_reference

    iql = agent_config("d3rlpy-iql", data)
    out.mkdir(parents=True, exist_ok=True)
    npz, policy_path = out / "data.npz", out / "policy.pt"
    from embodied_rl.policies.normalization import STD_FLOOR

    space = data.action_space
    states = data.observations["state"].astype(np.float64)
    np.savez(
        npz, obs=data.observations["state"][data.obs_index], actions=data.actions,
        rewards=data.rewards.astype(np.float32), terminals=data.terminations.astype(np.float32),
        timeouts=data.truncations.astype(np.float32), low=space.low, high=space.high,
        # the statistics our normalizers use (STD_FLOOR included), given to d3rlpy's scaler
        mean=states.mean(0), std=np.maximum(states.std(0), STD_FLOOR),
    )  # fmt: skip
    settings = {k: getattr(iql, k) for k in ("expectile", "temperature", "reward_bias")}
    proc = subprocess.run(
        [python, "-c", D3RLPY_SCRIPT, str(npz), str(policy_path), str(steps), str(seed),
         json.dumps(settings)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"d3rlpy IQL failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    env = env_factory(data)()
    try:
        seed_eval = 10_000 + seed * 1_000  # the evaluation seeds of our trainer
        return evaluate(
            TorchScriptPolicy(policy_path), env, eval_episodes, seed_eval, score_reference(data)
        )
    finally:
        env.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--tiers", nargs="+", default=["mixed", "medium"])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument(
        "--episodes-for", nargs="*", default=[], metavar="TASK=N",
        help="per-task dataset size (Meta-World episodes run up to 500 steps)",
    )  # fmt: skip
    parser.add_argument(
        "--steps-for", nargs="*", default=[], metavar="ALGO=N",
        help="per-algorithm gradient steps (CQL and Cal-QL cost ~8x an IQL step)",
    )  # fmt: skip
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument(
        "--n-objects", type=int, default=0,
        help="tabletop scenes with this many objects (0: the task's default of 4)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32",
        help="precision of our IQL, CQL and Cal-QL updates (runs tagged -bf16)",
    )  # fmt: skip
    parser.add_argument("--d3rlpy-python", default="/tmp/d3rlpy-venv/bin/python")
    parser.add_argument("--work", default="outputs/bench/offline_learning")
    parser.add_argument("--out", default="benchmarks/results/offline_learning.md")
    parser.add_argument(
        "--table-only", action="store_true",
        help="write the table from the finished runs in --work; train nothing",
    )  # fmt: skip
    args = parser.parse_args()
    steps_for = {}
    for item in args.steps_for:
        algo, _, n = item.partition("=")
        if algo not in ALGOS or not n.isdigit():
            parser.error(f"--steps-for {item!r}: expected ALGO=N with ALGO in {ALGOS}")
        steps_for[algo] = int(n)
    episodes_for = {}
    for item in args.episodes_for:
        task, _, n = item.partition("=")
        if not n.isdigit():
            parser.error(f"--episodes-for {item!r}: expected TASK=N")
        episodes_for[task] = int(n)
    if "d3rlpy-iql" in args.algos and not Path(args.d3rlpy_python).exists():
        parser.error(f"--d3rlpy-python {args.d3rlpy_python} does not exist (see docs/agents.md)")

    import torch

    from embodied_rl.utils.io import write_text_atomic

    torch.set_num_threads(1)
    work = Path(args.work)
    started = time.perf_counter()
    results: dict[tuple[str, str, str], list[dict]] = {}
    for tier in args.tiers:  # tier-major: the mixed-data comparison finishes first
        for task in args.tasks:
            data = None  # collected or loaded when a run needs it
            for algo in args.algos:
                steps = steps_for.get(algo, args.steps)
                for seed in range(args.seeds):
                    bf16 = "-bf16" if args.precision == "bf16" and algo in PRECISION_ALGOS else ""
                    objects = objects_tag(args.n_objects)
                    tag = f"{task.replace('/', '_')}{objects}-{tier}-{algo}{bf16}-{seed}"
                    record = work / "runs" / f"{tag}.json"
                    if record.exists():
                        results.setdefault((task, tier, algo), []).append(
                            json.loads(record.read_text())
                        )
                        continue
                    if args.table_only:
                        continue
                    if data is None:
                        n = episodes_for.get(task, args.episodes)
                        data = dataset_for(task, tier, n, work, args.n_objects)
                    t0 = time.perf_counter()
                    run_dir = work / "runs" / tag
                    if algo == "d3rlpy-iql":
                        res = run_d3rlpy(
                            args.d3rlpy_python, data, steps, seed, args.eval_episodes, run_dir
                        )
                    else:
                        res = run_ours(
                            algo, data, steps, seed, args.eval_episodes, run_dir, args.precision
                        )
                    res = {**res, "steps": steps, "seconds": time.perf_counter() - t0}
                    record.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomic(record, json.dumps(res))
                    results.setdefault((task, tier, algo), []).append(res)
                    print(
                        f"{tag}: score {res['eval/normalized_score']:.1f}, success "
                        f"{res['eval/success_rate']:.0%} ({res['seconds']:.0f} s)",
                        flush=True,
                    )
    write_table(args, results, steps_for, episodes_for, time.perf_counter() - started)
    return 0


def write_table(args, results, steps_for, episodes_for, seconds: float) -> None:
    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"{args.episodes} episodes per dataset"
        + "".join(f" ({t}: {n})" for t, n in episodes_for.items())
        + " (reference returns from 10 random and 10 expert "
        f"episodes), batch 256 (DT {DT_BATCH}), {args.seeds} seeds, {args.eval_episodes} evaluation episodes per "
        f"seed, one thread per run. Gradient steps: {args.steps}"
        + "".join(f", {a} {n}" for a, n in steps_for.items())
        + f". This invocation ran for {seconds / 60:.0f} min (finished runs are cached).",
        "",
        f"Precision of our IQL, CQL and Cal-QL updates: {args.precision}.",
        "",
        "| task | data | agent | normalized score | success | seeds |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (task, tier, algo), runs in results.items():
        scores = [r["eval/normalized_score"] for r in runs]
        success = np.mean([r["eval/success_rate"] for r in runs])
        lines.append(
            f"| {task} | {tier} | {algo} | {np.mean(scores):.1f} +- {np.std(scores):.1f} "
            f"| {success:.0%} | {len(runs)} |"
        )
    lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
