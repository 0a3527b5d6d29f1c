"""The ``erl`` command."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import embodied_rl  # headless GL before mujoco; __version__
from embodied_rl.config import CONFIG_DIR


def _experts(args: argparse.Namespace) -> int:
    """Scripted experts on every tabletop family: a captioned video and a success table."""
    from embodied_rl.envs import list_tasks, make, make_expert
    from embodied_rl.evaluation.rollout import format_markdown, run_episodes, success_table
    from embodied_rl.evaluation.video import caption_frame, write_video
    from embodied_rl.utils.io import write_text_atomic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task_ids = args.tasks or [t for t in list_tasks("tabletop") if "multitask" not in t]
    results, frames = [], []
    start = time.perf_counter()
    for task_id in task_ids:
        env = make(
            task_id,
            seed=args.seed,
            render_mode="rgb_array",
            render_size=args.video_size,
            split=args.split,
        )
        expert = make_expert(env, noise=args.noise, seed=args.seed)
        episodes = run_episodes(env, expert, args.episodes, seed=args.seed, record=1, desc=task_id)
        env.close()
        first = episodes[0]
        status = "success" if first.success else "failure"
        frames += [caption_frame(f, first.instruction, status) for f in first.frames]
        frames += [frames[-1]] * 10  # hold the last frame a moment
        results += episodes
        rate = sum(r.success for r in episodes) / len(episodes)
        print(f"{task_id:28s} success {rate:4.0%}  e.g. {first.instruction!r}")
    rows = success_table(results)
    table = format_markdown(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "success.md", table + "\n")
    write_text_atomic(out / "success.csv", buffer.getvalue())
    write_video(frames, out / "rollouts.mp4", fps=25)
    print(f"\n{table}\n")
    print(
        f"wrote {out / 'rollouts.mp4'}, {out / 'success.md'}, {out / 'success.csv'} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _parse_sweep(text: str) -> tuple[str, list[float]]:
    name, _, values = text.partition("=")
    try:
        return name, [float(v) for v in values.split(",") if v]
    except ValueError:
        raise ValueError(f"--sweep {text!r}: expected parameter=v1,v2,... with numbers") from None


def _transfer(args: argparse.Namespace) -> int:
    from embodied_rl.evaluation.rollout import held_out_seed
    from embodied_rl.evaluation.transfer import evaluate_transfer, write_transfer_videos

    sweeps = dict(_parse_sweep(s) for s in args.sweep)
    report = evaluate_transfer(
        args.policy,
        args.source,
        args.targets,
        task_id=args.task,
        episodes=args.episodes,
        seed=held_out_seed(args.seed),
        workers=args.workers,
        sweeps=sweeps,
        out=args.out,
    )
    print(report.markdown())
    print(f"\nwrote {args.out}/transfer.json, transfer.md and plots")
    if args.videos:
        for path in write_transfer_videos(
            args.policy, [args.source, *args.targets], args.task, args.videos,
            held_out_seed(args.seed), args.out,
        ):  # fmt: skip
            print(f"wrote {path}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    import json

    from embodied_rl.datasets import collect

    env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    env_kwargs.update(obs_mode=args.obs_mode, image_size=args.image_size)
    if args.horizon is not None:
        env_kwargs["horizon"] = args.horizon
    result = collect(
        args.task,
        args.tier,
        episodes=args.episodes,
        workers=args.workers,
        randomization=args.randomization,
        noise=args.noise,
        out=args.out,
        dataset_id=args.name,
        seed=args.seed,
        env_kwargs=env_kwargs,
        reference_episodes=args.reference_episodes,
        codec=args.codec,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    score = result.normalized_score
    print(
        f"{result.dataset_id}: {result.n_episodes} episodes, success {result.success_rate:.0%}, "
        f"mean return {result.mean_return:.3f}"
        + (f", normalized score {score:.1f}" if score is not None else "")
        + f"\nwrote {result.path}"
    )
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from embodied_rl.envs import list_tasks

    for task_id in list_tasks(args.suite):
        print(task_id)
    return 0


def _agent_config_path(name: str, given: str | None) -> Path | None:
    """``--config`` if given (it must exist), else ``embodied_rl/configs/agents/<name>.yaml`` if present."""
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"--config {given} does not exist")
        return Path(given)
    default = CONFIG_DIR / "agents" / f"{name}.yaml"
    return default if default.is_file() else None


def _train_data(args: argparse.Namespace, cls: type, obs_keys: list[str] | None):
    """``erl train``'s dataset and, for agents that learn from preferences, the labelled
    pairs (a labeling session brings its own rollout dataset, so --dataset is optional)."""
    from embodied_rl.datasets import load_dataset
    from embodied_rl.preference.sources import is_session, load_preferences

    needs = getattr(cls, "needs_preferences", False)
    if args.preferences and not needs:
        raise ValueError(
            f"--preferences applies to agents that learn from them (cpl), not {args.algo!r}"
        )
    if needs and not args.preferences:
        raise ValueError(
            f"{args.algo} learns from preferences: add --preferences scripted (the scripted "
            "teacher on --dataset), a labeling session directory (erl label) or a "
            "preferences.jsonl file"
        )
    session = bool(args.preferences) and is_session(args.preferences)
    if args.dataset is None and not session:
        raise ValueError("--dataset is required (unless --preferences is a labeling session)")
    data = load_dataset(args.dataset, obs_keys=obs_keys) if args.dataset else None
    if not needs:
        return data, None
    prefs = load_preferences(args.preferences, data, seed=args.seed)
    print(f"preferences: {prefs.summary()}")
    return prefs.segments.data, prefs


def _train(args: argparse.Namespace) -> int:
    from embodied_rl.agents import TrainerConfig, agent_class, train
    from embodied_rl.agents.trainer import default_policy, seed_everything, vla_for_dataset
    from embodied_rl.config import load_config, parse_overrides

    cls = agent_class(args.algo)
    path = _agent_config_path(args.algo, args.config)
    agent_overrides = [o for o in args.overrides if not o.startswith("policy.")]
    policy_values = parse_overrides([o for o in args.overrides if o.startswith("policy.")])
    config = load_config(cls.config_class, path, agent_overrides)
    trainer = TrainerConfig(
        steps=args.steps, batch_size=args.batch_size, seed=args.seed,
        eval_every=args.eval_every, eval_episodes=args.eval_episodes,
        checkpoint_every=args.checkpoint_every, log_every=min(1000, args.steps),
    )  # fmt: skip
    policy_options = {  # YAML lists for the configs' tuples
        k: tuple(v) if isinstance(v, list) else v
        for k, v in policy_values.get("policy", {}).items()
    }
    kind, _, preset = args.policy.partition(":")
    if kind not in ("mlp", "vla") or (kind == "mlp" and preset):
        raise ValueError(f"--policy {args.policy!r}: use 'mlp', 'vla' or 'vla:PRESET'")
    data, prefs = _train_data(args, cls, obs_keys=None if kind == "vla" else ["state"])
    seed_everything(args.seed)
    if kind == "vla":
        policy = vla_for_dataset(data, preset or "tiny", **policy_options)
    else:
        policy = default_policy(args.algo, data, **policy_options)
    resume = args.resume_from or args.resume
    _, result = train(
        args.algo, data, args.out, config, trainer, policy, resume=resume, preferences=prefs
    )
    print(f"{args.algo}: {result}\nwrote {args.out}/metrics.csv and {args.out}/checkpoints")
    return 0


def _ppo(args: argparse.Namespace) -> int:
    from embodied_rl.agents.ppo import PPO, PPOConfig, default_ppo_policy
    from embodied_rl.agents.ppo_rollout import make_vec_env
    from embodied_rl.agents.trainer import seed_everything
    from embodied_rl.config import load_config

    path = _agent_config_path("ppo", args.config)
    config = load_config(PPOConfig, path, [*args.overrides, f"seed={args.seed}"])
    env_kwargs = {}
    if args.task.startswith("tabletop/"):
        env_kwargs = {"randomization": args.randomization, "adr": args.adr or None}
        env_kwargs["reward_type"] = args.reward_type
    elif args.randomization or args.adr:
        raise ValueError(f"--randomization/--adr apply to tabletop tasks, not {args.task!r}")
    envs = make_vec_env(args.task, args.n_envs, args.vectorization, **env_kwargs)
    checkpoints = Path(args.out) / "checkpoints"
    try:
        if args.resume and (checkpoints / "last").is_file():  # the checkpoint's PPO config
            agent = PPO.resume(checkpoints, envs, args.out, not args.no_progress)
        else:
            seed_everything(args.seed)  # Python, numpy and torch
            envs.action_space.seed(args.seed)
            agent = PPO(default_ppo_policy(envs, args.head), envs, config, log_dir=args.out)
        metrics = agent.learn(
            args.env_steps, not args.no_progress, checkpoints, args.checkpoint_every
        )
    finally:
        envs.close()
    agent.save(Path(args.out) / "agent")
    done = (
        f"{metrics['steps_per_s']:.0f} steps/s, mean return (last 100 episodes) "
        f"{metrics['episode_return']:.2f}"
        if metrics
        else "already complete"
    )
    print(
        f"ppo {args.task}: {agent.num_steps} steps, {done}\n"
        f"wrote {args.out}/metrics.csv, {args.out}/checkpoints and {args.out}/agent"
    )
    return 0


def _finetune_online(args: argparse.Namespace) -> int:
    from embodied_rl.agents import load_agent
    from embodied_rl.agents.online import OnlineConfig, finetune_online
    from embodied_rl.config import load_config
    from embodied_rl.datasets import load_dataset

    config = load_config(OnlineConfig, args.config, [*args.overrides, f"seed={args.seed}"])
    agent = load_agent(args.checkpoint)
    data = load_dataset(args.dataset, obs_keys=["state"])
    result = finetune_online(agent, data, config=config, out=args.out, resume=args.resume)
    score = "eval/normalized_score"
    print(
        f"online fine-tuning: normalized score {result.offline.get(score, float('nan')):.1f} -> "
        f"{result.final.get(score, float('nan')):.1f}, success "
        f"{result.offline.get('eval/success_rate', float('nan')):.0%} -> "
        f"{result.final.get('eval/success_rate', float('nan')):.0%}, regret {result.regret:.2f} "
        f"({result.env_steps} env steps)\nwrote {args.out}/metrics.csv, {args.out}/checkpoints "
        f"and {args.out}/result.json"
    )
    return 0


def _finetune_ppo(args: argparse.Namespace) -> int:
    from embodied_rl.agents.finetune import PPOFinetuneConfig, finetune_ppo
    from embodied_rl.agents.ppo import PPOConfig
    from embodied_rl.config import load_config, merge, parse_overrides, read_yaml

    values = parse_overrides([*args.overrides, f"seed={args.seed}"])
    ppo_values = values.pop("ppo", {})
    if not isinstance(ppo_values, dict):
        raise ValueError("ppo: expected PPOConfig keys, e.g. ppo.kl_coef=0.05")
    config = load_config(PPOFinetuneConfig, args.config, values)
    # finetune_ppo's defaults (KL 0.1, short rollouts), then --ppo-config, then ppo.* overrides
    base: dict = {"kl_coef": 0.1, "n_steps": 256}
    if args.ppo_config:
        base = merge(base, read_yaml(args.ppo_config))
    ppo = load_config(PPOConfig, None, merge(base, {**ppo_values, "seed": config.seed}))
    result = finetune_ppo(
        args.pretrained, args.out, config, ppo, from_scratch=args.from_scratch,
        reference=args.reference, resume=args.resume,
    )  # fmt: skip
    before = result.before.get("eval/success_rate", float("nan"))
    after = result.after.get("eval/success_rate", float("nan"))
    print(
        f"PPO fine-tuning ({'from scratch' if result.from_scratch else 'KL to the pretrained'}"
        f" policy): success {before:.0%} -> {after:.0%} in {result.env_steps} env steps "
        f"({result.wall_s / 60:.1f} min)\nwrote {args.out}/metrics.csv, {args.out}/agent and "
        f"{args.out}/result.json"
    )
    return 0


def _label(args: argparse.Namespace) -> int:
    from embodied_rl.preference.human import (
        SESSION_FILE,
        LabelingServer,
        prepare_session,
        prepare_text_session,
    )

    out = Path(args.out)
    if args.text and (out / SESSION_FILE).is_file():
        raise ValueError(f"{out} holds a labeling session already; choose another --out")
    if args.text:
        lines = Path(args.text).read_text().splitlines()
        try:
            comparisons = [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as error:
            raise ValueError(f"{args.text} is not JSON Lines: {error}") from error
        prepare_text_session(out, comparisons, title=Path(args.text).stem)
        print(f"prepared {len(comparisons)} text pairs in {out}")
    elif not (out / SESSION_FILE).is_file():
        if not args.task:
            raise ValueError(
                f"{out} holds no labeling session; pass --task (robot rollouts) or --text "
                "(text pairs) to prepare one"
            )
        noise = [float(n) for n in args.noise_levels.split(",")]
        prepare_session(args.task, out, scenes=args.scenes, pairs=args.pairs,
                        length=args.length, noise_levels=noise, seed=args.seed,
                        policies=args.policies)  # fmt: skip
        print(f"prepared {args.pairs} pairs of {args.task} in {out}")
    if args.prepare_only:
        return 0
    server = LabelingServer(out, host=args.host, port=args.port)
    print(
        f"label at {server.url} (several people may label at once; add ?labeler=NAME to name "
        f"yourself; labels go to {out}/preferences.jsonl; Ctrl-C stops)"
    )
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from embodied_rl.runners.pipeline import STAGES, load_pipeline_config, run_pipeline

    config = load_pipeline_config(args.config, args.overrides)
    stages = tuple(args.stages) if args.stages else STAGES
    start = time.perf_counter()
    run_pipeline(config, args.out, stages, resume=args.resume, progress=not args.no_progress)
    print(
        f"pipeline finished in {(time.perf_counter() - start) / 60:.1f} min\n"
        f"report: {Path(args.out) / 'report' / 'report.html'} (and report.md)"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from embodied_rl.envs import make
    from embodied_rl.evaluation.rollout import (
        format_markdown,
        held_out_seed,
        run_episodes,
        success_table,
    )
    from embodied_rl.policies import load_policy
    from embodied_rl.utils.io import write_text_atomic

    policy = load_policy(args.policy).eval()
    kwargs = policy.env_options()  # the observations the policy reads; flags override
    if args.randomization:
        kwargs["randomization"] = args.randomization
    if args.obs_mode:
        kwargs["obs_mode"] = args.obs_mode
    if args.image_size:
        kwargs["image_size"] = args.image_size
    if args.task.startswith("tabletop/"):
        kwargs["split"] = args.split
    env = make(args.task, backend=args.backend, **kwargs)
    first = held_out_seed(args.seed) if args.first_seed is None else args.first_seed
    try:
        results = run_episodes(env, policy, args.episodes, seed=first, desc=args.task)
    finally:
        env.close()
    table = format_markdown(success_table(results))
    print(f"reset seeds {first}..{first + args.episodes - 1}\n{table}")
    if args.out:
        write_text_atomic(Path(args.out), table + "\n")
        print(f"wrote {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from embodied_rl.evaluation.report import write_pipeline_report

    paths = write_pipeline_report(args.run)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from embodied_rl.runners.benchmark import load_suite, run_benchmark

    suite = load_suite(args.suite, args.overrides)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    out = Path(args.out or f"outputs/bench/{suite.name}")
    try:
        result = run_benchmark(
            suite, algos, args.seeds, out, address=args.ray, workers=args.workers,
            progress=not args.no_progress,
        )  # fmt: skip
    except RuntimeError as error:  # some runs failed; the others are saved
        print(f"erl: error: {error}", file=sys.stderr)
        return 1
    print((out / "report.md").read_text() if (out / "report.md").is_file() else "no runs")
    print(
        f"\n{len(result.executed)} runs executed, {len(result.runs) - len(result.executed)} "
        f"skipped (finished earlier), {result.wall_s / 60:.1f} min\n"
        f"wrote {out}/runs.json, report.md, curves.png and results/"
    )
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    finetune = sub.add_parser(
        "finetune", help="continue a pretrained agent online (IQL/CQL/Cal-QL, or PPO with KL)"
    )
    kinds = finetune.add_subparsers(dest="kind", required=True)
    online = kinds.add_parser(
        "online",
        help="IQL, CQL or Cal-QL from an offline checkpoint, replay buffer seeded by the dataset",
    )
    online.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="OnlineConfig overrides, e.g. env_steps=50000 mixing_ratio=0.5",
    )  # fmt: skip
    online.add_argument("--checkpoint", required=True, help="the offline run's checkpoints/ dir")
    online.add_argument("--dataset", required=True, help="dataset path or id it was trained on")
    online.add_argument("--out", default="outputs/online")
    online.add_argument("--config", default=None, help="YAML OnlineConfig")
    online.add_argument("--seed", type=int, default=0)
    online.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoints (exactly)"
    )
    online.set_defaults(func=_finetune_online)

    ppo = kinds.add_parser("ppo", help="PPO fine-tuning of a BC/VLA policy with a KL penalty to it")
    ppo.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="PPOFinetuneConfig overrides (task=..., env_steps=..., randomization=...) and "
        "PPOConfig ones under ppo. (ppo.kl_coef=0.05, ppo.learning_rate=1e-4)",
    )  # fmt: skip
    ppo.add_argument(
        "--pretrained", required=True, help="a policy.save() dir or an agent checkpoint dir"
    )
    ppo.add_argument("--out", default="outputs/finetune_ppo")
    ppo.add_argument("--config", default=None, help="YAML PPOFinetuneConfig")
    ppo.add_argument("--ppo-config", default=None, help="YAML PPOConfig overrides")
    ppo.add_argument(
        "--reference", default=None, help="KL reference other than the pretrained policy"
    )
    ppo.add_argument(
        "--from-scratch", action="store_true", help="baseline: same architecture, fresh weights"
    )
    ppo.add_argument("--seed", type=int, default=0)
    ppo.add_argument(
        "--resume", action="store_true",
        help="continue from <out>/checkpoints (exactly; checkpoint_every=N sets their spacing)",
    )  # fmt: skip
    ppo.set_defaults(func=_finetune_ppo)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmark grids (algorithm x task x seed) on Ray")
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    o2o = kinds.add_parser(
        "offline-to-online", help="offline training then online fine-tuning (IQL, CQL, Cal-QL)"
    )
    o2o.add_argument(
        "--suite", default="small", help="embodied_rl/configs/bench/<name>.yaml or a YAML path"
    )
    o2o.add_argument("--algos", default="iql,cql,calql", help="comma-separated agents")
    o2o.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per algorithm and task")
    o2o.add_argument("--ray", default=None, metavar="ADDRESS", help="Ray cluster address")
    o2o.add_argument("--out", default=None, help="output directory (default outputs/bench/<suite>)")
    o2o.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="local Ray CPUs (no --ray)"
    )
    o2o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o2o.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="suite overrides, e.g. offline_steps=2000 online.env_steps=5000",
    )  # fmt: skip
    o2o.set_defaults(func=_bench)


# literal here so that `erl --help` imports no dataset code; a test checks them against
# embodied_rl.datasets.locomotion.BODIES / KINDS
LOCOMOTION_BODIES = ("hopper", "walker2d", "halfcheetah")
LOCOMOTION_KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert", "full-replay")


def _datasets_locomotion(args: argparse.Namespace) -> int:
    import torch

    from embodied_rl.runners.locomotion import LocomotionConfig, build_locomotion

    config = LocomotionConfig(
        env_steps=args.env_steps, snapshot_every=args.snapshot_every,
        eval_episodes=args.eval_episodes, transitions=args.transitions, seed=args.seed,
    )  # fmt: skip
    torch.set_num_threads(1)  # PPO's small MLPs lose from threads (see PPO.learn)
    for body in dict.fromkeys(args.bodies):
        start = time.perf_counter()
        paths = build_locomotion(
            body, args.root, config, tuple(args.kinds), Path(args.work) / body,
            not args.no_progress,
        )  # fmt: skip
        print(f"{body}: {len(paths)} datasets in {time.perf_counter() - start:.0f} s")
        for kind, path in paths.items():
            print(f"  {kind:14s} {path}")
    return 0


def _datasets_list(args: argparse.Namespace) -> int:
    from embodied_rl.datasets import list_datasets

    found = list_datasets(args.root)
    if not found:
        print("no datasets")
        return 0
    width = max(len(d.dataset_id) for d in found)
    print(f"{'dataset':{width}s}  {'episodes':>9s}  {'steps':>10s}  {'MB':>8s}  env / problem")
    for d in found:
        numbers = [f"{d.episodes:,}" if d.episodes is not None else "-",
                   f"{d.steps:,}" if d.steps is not None else "-",
                   f"{d.megabytes:.1f}" if d.megabytes is not None else "-"]  # fmt: skip
        last = d.env_id or "-"
        if d.problem:
            last = f"PROBLEM: {d.problem}"
        print(f"{d.dataset_id:{width}s}  {numbers[0]:>9s}  {numbers[1]:>10s}  "
              f"{numbers[2]:>8s}  {last}")  # fmt: skip
    return 1 if any(d.problem for d in found) else 0


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    datasets = sub.add_parser("datasets", help="build and list datasets")
    kinds = datasets.add_subparsers(dest="dataset_family", required=True)
    listing = kinds.add_parser(
        "list", help="the Minari datasets under a root: id, episodes, steps, size, environment "
        "(exit status 1 when one has unreadable metadata)",
    )  # fmt: skip
    listing.add_argument(
        "--root", default=None, help="datasets root (default $MINARI_DATASETS_PATH)"
    )
    listing.set_defaults(func=_datasets_list)
    loco = kinds.add_parser(
        "locomotion", help="D4RL-style Hopper/Walker2d/HalfCheetah datasets, regenerated with "
        "the toolkit's PPO (cached: a dataset built with the same settings is kept)",
    )  # fmt: skip
    loco.add_argument("--bodies", nargs="+", default=list(LOCOMOTION_BODIES),
                      choices=LOCOMOTION_BODIES, help="bodies to build")  # fmt: skip
    loco.add_argument("--kinds", nargs="+", default=list(LOCOMOTION_KINDS),
                      choices=LOCOMOTION_KINDS, help="datasets per body")  # fmt: skip
    loco.add_argument("--root", default=None, help="datasets root (default $MINARI_DATASETS_PATH)")
    loco.add_argument(
        "--work", default="outputs/locomotion", help="PPO metrics and policy snapshots, per body"
    )
    loco.add_argument(
        "--env-steps", type=int, default=1_000_000, help="PPO steps of the behaviour policy"
    )
    loco.add_argument(
        "--snapshot-every", type=int, default=50_000, help="steps between evaluated snapshots"
    )
    loco.add_argument("--eval-episodes", type=int, default=10, help="episodes per snapshot")
    loco.add_argument(
        "--transitions", type=int, default=200_000, help="steps of random, medium and expert"
    )
    loco.add_argument("--seed", type=int, default=0)
    loco.add_argument("--no-progress", action="store_true", help="no progress bar")
    loco.set_defaults(func=_datasets_locomotion)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erl", description="embodied-rl command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {embodied_rl.__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the main job, as `make demo`: the quickstart pipeline in outputs/demo, "
        "continuing an interrupted run",
    )  # fmt: skip
    demo.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="pipeline overrides, as erl pipeline"
    )
    demo.add_argument("--out", default="outputs/demo", help="run directory")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(
        func=_pipeline, config=str(CONFIG_DIR / "pipeline" / "quickstart.yaml"), stages=None,
        resume=True,
    )  # fmt: skip

    experts = sub.add_parser(
        "experts", help="scripted experts on the tabletop tasks: captioned video + success table"
    )
    experts.add_argument("--out", default="outputs/experts", help="output directory")
    experts.add_argument("--tasks", nargs="*", help="task ids (default: every tabletop family)")
    experts.add_argument("--episodes", type=int, default=5, help="episodes per task")
    experts.add_argument("--seed", type=int, default=0)
    experts.add_argument("--noise", type=float, default=0.0, help="expert action noise std")
    experts.add_argument("--split", default="seen", choices=["seen", "unseen", "all"])
    experts.add_argument("--video-size", type=int, default=256, help="video frame side in pixels")
    experts.set_defaults(func=_experts)

    transfer = sub.add_parser("transfer", help="evaluate a policy on source and target domains")
    transfer.add_argument(
        "--policy",
        default="expert",
        help="'expert', 'expert:noise=X', 'random', 'module:factory', or a saved policy, "
        "checkpoint or run directory",
    )
    transfer.add_argument("--task", required=True, help="task id, e.g. tabletop/pick-v0")
    transfer.add_argument(
        "--source", default="nominal", help="source domain (default: nominal MuJoCo)"
    )
    transfer.add_argument(
        "--targets",
        nargs="+",
        required=True,
        help="target domains: pybullet, light/default/heavy, param=value pins, joined with '+'",
    )
    transfer.add_argument("--episodes", type=int, default=50)
    transfer.add_argument("--workers", type=int, default=1, help="parallel processes")
    transfer.add_argument(
        "--seed", type=int, default=0, help="evaluation run: held-out scenes 1e9 + 1000 * seed + i"
    )
    transfer.add_argument(
        "--sweep", action="append", default=[], help="parameter=v1,v2,... (repeatable)"
    )
    transfer.add_argument(
        "--videos", type=int, default=0, help="episodes per domain to record as a GIF (0: none)"
    )
    transfer.add_argument("--out", default="outputs/transfer")
    transfer.set_defaults(func=_transfer)

    collect = sub.add_parser("collect", help="collect a Minari dataset of a tier or policy")
    collect.add_argument("--task", required=True, help="task id, e.g. tabletop/pick-v0")
    collect.add_argument(
        "--tier", default="expert", choices=["expert", "medium", "random", "mixed"]
    )
    collect.add_argument("--episodes", type=int, default=100)
    collect.add_argument("--workers", type=int, default=1, help="parallel processes")
    collect.add_argument(
        "--out", default=None, help="datasets root (default $MINARI_DATASETS_PATH)"
    )
    collect.add_argument("--name", default=None, help="dataset id namespace/name-vN")
    collect.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i")
    collect.add_argument("--noise", type=float, default=None, help="override the expert noise std")
    collect.add_argument("--randomization", default=None, help="domain randomization preset")
    collect.add_argument("--obs-mode", default="state", choices=["state", "rgb", "rgb+state"])
    collect.add_argument("--image-size", type=int, default=64)
    collect.add_argument("--horizon", type=int, default=None, help="steps before truncation")
    collect.add_argument("--env-kwargs", default=None, help="JSON dict of further env options")
    collect.add_argument("--reference-episodes", type=int, default=10)
    collect.add_argument("--codec", default="gzip", choices=["gzip", "lzf", "none"])
    collect.add_argument("--resume", action="store_true", help="continue an interrupted run")
    collect.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    collect.set_defaults(func=_collect)

    train = sub.add_parser(
        "train", help="train an offline agent (bc, td3bc, iql, cql, calql, dt; cpl on preferences)"
    )
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="agent config overrides, e.g. expectile=0.8",
    )
    train.add_argument(
        "--algo", required=True,
        help="agent: bc, td3bc, iql, cql, calql, dt or cpl (an unknown name lists the registered "
        "ones)",
    )  # fmt: skip
    train.add_argument(
        "--dataset", default=None, help="dataset path or id (required unless --preferences is a "
        "labeling session, which brings its rollouts)",
    )  # fmt: skip
    train.add_argument(
        "--preferences", default=None, help="cpl: 'scripted[:pairs=N,segments=N,length=N]' "
        "(B-Pref teacher on --dataset), an erl label session directory, or a preferences.jsonl "
        "over --dataset",
    )  # fmt: skip
    train.add_argument(
        "--policy", default="mlp",
        help="'mlp' (on obs['state']) or 'vla' / 'vla:PRESET' (tiny, rt1: images, instruction, "
        "proprio); policy.KEY=VALUE overrides set its config, e.g. policy.action_chunk=4",
    )  # fmt: skip
    train.add_argument("--steps", type=int, default=10_000)
    train.add_argument("--out", default="outputs/train")
    train.add_argument(
        "--config",
        default=None,
        help="YAML config (default embodied_rl/configs/agents/<algo>.yaml)",
    )
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-every", type=int, default=0, help="0: evaluate after the last step")
    train.add_argument("--eval-episodes", type=int, default=10)
    train.add_argument("--checkpoint-every", type=int, default=5_000)
    train.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoints/last (exactly)"
    )
    train.add_argument(
        "--resume-from", default=None, metavar="CHECKPOINT",
        help="continue from this earlier checkpoint of the run (<out>/checkpoints/step_N)",
    )  # fmt: skip
    train.set_defaults(func=_train)

    ppo = sub.add_parser("ppo", help="train PPO online on a task (state observations)")
    ppo.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="PPOConfig overrides, e.g. n_steps=1024"
    )
    ppo.add_argument("--task", required=True, help="tabletop/reach-v0, Hopper-v5, ...")
    ppo.add_argument("--env-steps", type=int, default=100_000, help="environment steps")
    ppo.add_argument("--out", default="outputs/ppo")
    ppo.add_argument(
        "--config",
        default=None,
        help="YAML overrides (default embodied_rl/configs/agents/ppo.yaml)",
    )
    ppo.add_argument("--n-envs", type=int, default=1)
    ppo.add_argument("--vectorization", default="sync", choices=["sync", "async"])
    ppo.add_argument("--randomization", default=None, help="tabletop: none/light/default/heavy")
    ppo.add_argument("--adr", action="store_true", help="tabletop: grow the ranges with ADR")
    ppo.add_argument("--reward-type", default="dense", choices=["dense", "sparse"])
    ppo.add_argument("--head", default="gaussian", choices=["gaussian", "tokens"])
    ppo.add_argument("--seed", type=int, default=0)
    ppo.add_argument("--no-progress", action="store_true", help="no progress bar")
    ppo.add_argument(
        "--checkpoint-every", type=int, default=10_000, help="env steps (0: at the end only)"
    )
    ppo.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoints/last (exactly)"
    )
    ppo.set_defaults(func=_ppo)

    _add_finetune(sub)

    label = sub.add_parser("label", help="label rollout pairs in a local web page (A/B/equal/skip)")
    label.add_argument("--out", default="outputs/labels", help="session directory")
    label.add_argument("--task", default=None, help="task id to prepare a new session from")
    label.add_argument("--scenes", type=int, default=3, help="scenes (one per reset seed)")
    label.add_argument("--pairs", type=int, default=10)
    label.add_argument("--length", type=int, default=64, help="segment length in steps")
    label.add_argument("--noise-levels", default="0,0.5,1", help="expert noise levels to compare")
    label.add_argument(
        "--policies", nargs="+", default=None, metavar="POLICY",
        help="behaviours to compare instead of noise levels: saved policy, checkpoint or run "
        "directories, 'expert', 'expert:noise=X', 'random'",
    )  # fmt: skip
    label.add_argument(
        "--text", default=None, metavar="FILE",
        help="prepare a session of text pairs from a JSON Lines file of {prompt, a, b} instead",
    )  # fmt: skip
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--host", default="127.0.0.1")
    label.add_argument("--port", type=int, default=8765)
    label.add_argument("--prepare-only", action="store_true", help="write the session, no server")
    label.set_defaults(func=_label)

    pipeline = sub.add_parser(
        "pipeline",
        help="the main job: collect -> BC -> IQL -> PPO fine-tuning -> transfer -> report",
    )
    pipeline.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="config overrides, dotted for sections, e.g. bc.steps=2000 ppo.kl_coef=0.05",
    )  # fmt: skip
    pipeline.add_argument(
        "--config", default=str(CONFIG_DIR / "pipeline" / "quickstart.yaml"),
        help="YAML config (default embodied_rl/configs/pipeline/quickstart.yaml)",
    )  # fmt: skip
    pipeline.add_argument("--out", default="outputs/pipeline", help="run directory")
    pipeline.add_argument("--stages", nargs="*", help="run only these stages (in order)")
    pipeline.add_argument("--resume", action="store_true", help="continue an interrupted run")
    pipeline.add_argument("--no-progress", action="store_true", help="no progress bars")
    pipeline.set_defaults(func=_pipeline)

    evaluate = sub.add_parser("evaluate", help="success rate of a saved policy on a task")
    evaluate.add_argument(
        "--policy", required=True,
        help="a saved policy, a checkpoint, or a run directory (erl train --out)",
    )  # fmt: skip
    evaluate.add_argument("--task", required=True, help="task id, e.g. tabletop/reach-v0")
    evaluate.add_argument("--episodes", type=int, default=50)
    evaluate.add_argument(
        "--seed", type=int, default=0, help="evaluation run: held-out scenes 1e9 + 1000 * seed + i"
    )
    evaluate.add_argument(
        "--first-seed", type=int, default=None, help="reset seed of the first episode (replay "
        "chosen scenes; collections use seed + i, so small values replay training scenes)",
    )  # fmt: skip
    evaluate.add_argument(
        "--split", default="all", choices=["seen", "unseen", "all"], help="tabletop instructions"
    )
    evaluate.add_argument("--randomization", default=None, help="none/light/default/heavy")
    evaluate.add_argument("--backend", default="mujoco", choices=["mujoco", "pybullet"])
    evaluate.add_argument(
        "--obs-mode", default=None, choices=["state", "rgb", "rgb+state"],
        help="default: what the policy reads",
    )  # fmt: skip
    evaluate.add_argument("--image-size", type=int, default=None, help="default: the policy's")
    evaluate.add_argument("--out", default=None, help="write the Markdown table here")
    evaluate.set_defaults(func=_evaluate)

    report = sub.add_parser("report", help="(re)write a pipeline run's report.md and report.html")
    report.add_argument("run", help="the pipeline's run directory")
    report.set_defaults(func=_report)

    tasks = sub.add_parser("tasks", help="list task ids")
    tasks.add_argument("--suite", choices=["tabletop", "metaworld"], default=None)
    tasks.set_defaults(func=_tasks)
    _add_bench(sub)
    _add_datasets(sub)
    from embodied_rl.llm.cli import add_llm_parser  # torch and transformers load in handlers

    add_llm_parser(sub)
    _show_defaults(parser)
    return parser


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default unless it is None/False or its help already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _has_default(action) and "default" not in text and action.option_strings:
            text += f" (default: {action.default})" if text else f"default: {action.default}"
        return text


def _has_default(action: argparse.Action) -> bool:
    """A default worth showing: not None, not a flag's False, not suppressed, not required."""
    d = action.default
    return not (d is None or d is False or d == argparse.SUPPRESS or action.required)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every command's --help shows each option's default (and choices, as argparse does)."""
    parser.formatter_class = _DefaultsFormatter
    for action in parser._actions:
        if action.help is None and action.option_strings and _has_default(action):
            action.help = f"default: {action.default}"  # argparse skips options without help

        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as error:
        print(f"erl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
