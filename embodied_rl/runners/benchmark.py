"""The offline-to-online benchmark runner: algorithm x task x seed grids on Ray.

A *suite* (YAML in ``embodied_rl/configs/bench/``, fields of :class:`Suite` and :class:`BenchTask`) names
tasks and the datasets to collect for them, the offline and online budgets and per-agent
overrides. :func:`run_benchmark` collects the datasets (once, in the driver), then runs every
``(algo, task, seed)`` as one Ray task (``num_cpus=1``, one torch thread): offline training
(:func:`~embodied_rl.agents.train`), then online fine-tuning from the offline checkpoint
(:func:`~embodied_rl.agents.online.finetune_online`). The driver writes one JSON per finished
run atomically (``results/<run_id>.json``); a second call with the same output directory skips
those, and a run interrupted midway continues from its own checkpoints. At the end it writes
``runs.json`` (every run), ``report.md`` (a CORL-style table: normalized score offline ->
online and regret, mean +- std over seeds) and ``curves.png`` (learning curves).

Ray runs locally (``ray.init(num_cpus=workers)``) or on a cluster (``address``); datasets go
to the workers through Ray's object store. On a cluster, run artifacts (checkpoints, metrics)
stay on the node that ran them; the result JSONs are written by the driver.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embodied_rl.config import CONFIG_DIR, load_yaml, merge, parse_overrides
from embodied_rl.utils.io import write_text_atomic

logger = logging.getLogger(__name__)

SUITE_DIR = CONFIG_DIR / "bench"
RESULTS = "results"  # one JSON per finished run
SUMMARY_FIELDS = ("offline_score", "online_score", "offline_success", "online_success", "regret")


# ---------------------------------------------------------------------- suites
@dataclass(frozen=True)
class BenchTask:
    """One task of a suite and the offline dataset collected for it."""

    name: str  # short name used in run ids and tables, e.g. "reach"
    env_id: str  # e.g. "tabletop/reach-v0"
    tier: str = "mixed"  # dataset quality tier (expert, medium, random, mixed)
    episodes: int = 60  # dataset episodes
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)  # e.g. n_objects, reward_type
    reference_episodes: int = 10  # random/expert episodes for the normalized score
    seed: int = 0  # dataset collection seed (the same data for every run)
    # a dataset id used instead of collecting one (tier, episodes, env_kwargs and
    # reference_episodes then do not apply), looked up under $MINARI_DATASETS_PATH;
    # locomotion/<body>/<kind>-v0 is built there (`erl datasets locomotion`) when missing
    dataset: str = ""

    def __post_init__(self) -> None:
        from embodied_rl.datasets.minari_format import parse_dataset_id
        from embodied_rl.datasets.tiers import check_tier

        if self.dataset:
            parse_dataset_id(self.dataset)
        check_tier(self.tier)
        if not self.name or "/" in self.name or "-" in self.name:
            raise ValueError(f"task name={self.name!r} must be non-empty without '/' or '-'")
        if self.episodes < 1 or self.reference_episodes < 1:
            raise ValueError(
                f"task {self.name!r}: episodes={self.episodes} and reference_episodes="
                f"{self.reference_episodes} must be >= 1 (the score needs reference returns)"
            )


@dataclass(frozen=True)
class Suite:
    """An offline-to-online benchmark: tasks, budgets and agent overrides."""

    name: str
    tasks: tuple[BenchTask, ...]
    description: str = ""
    offline_steps: int = 10_000  # gradient steps of the offline phase
    batch_size: int = 256  # offline batch size (the online one is in ``online``)
    hidden: tuple[int, ...] = (256, 256)  # MLP policy widths (critics: the agent's ``hidden``)
    online: Mapping[str, Any] = field(default_factory=dict)  # OnlineConfig overrides
    agents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-agent config

    def __post_init__(self) -> None:
        from embodied_rl.agents.online import ONLINE_AGENTS

        if not self.tasks:
            raise ValueError(f"suite {self.name!r} lists no tasks")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name!r} has duplicate task names {names}")
        if self.offline_steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"offline_steps={self.offline_steps} and batch_size={self.batch_size} must be >= 1"
            )
        unknown = sorted(set(self.agents) - set(ONLINE_AGENTS))
        if unknown:
            raise ValueError(f"suite agents {unknown} unknown; choose from {ONLINE_AGENTS}")
        for key in ("seed", "progress", "tensorboard"):
            if key in self.online:
                raise ValueError(f"online.{key} is set per run by the runner; remove it")
        self.online_config(0)  # names unknown or invalid online fields now
        for algo in self.agents:
            self.agent_config(algo)

    def online_config(self, seed: int) -> Any:
        from embodied_rl.agents.base import config_from_dict
        from embodied_rl.agents.online import OnlineConfig

        values = {**self.online, "seed": seed, "progress": False, "tensorboard": False}
        return config_from_dict(OnlineConfig, values, f"suite {self.name!r}: online")

    def agent_config(self, algo: str) -> Any:
        from embodied_rl.agents import agent_class
        from embodied_rl.agents.base import config_from_dict

        cls = agent_class(algo)
        overrides = dict(self.agents.get(algo, {}))
        return config_from_dict(cls.config_class, overrides, f"suite {self.name!r}: agents.{algo}")

    def task(self, name: str) -> BenchTask:
        return next(t for t in self.tasks if t.name == name)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def suite_from_dict(values: Mapping[str, Any], source: str = "suite") -> Suite:
    """A :class:`Suite` from YAML/JSON values; unknown keys are errors naming the valid ones."""
    from embodied_rl.agents.base import config_from_dict

    values = dict(values)
    raw_tasks = values.pop("tasks", None)
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise ValueError(f"{source}: 'tasks' must be a non-empty list of task mappings")
    tasks = tuple(
        config_from_dict(BenchTask, dict(t), f"{source}: tasks[{i}]")
        for i, t in enumerate(raw_tasks)
    )
    return config_from_dict(Suite, {**values, "tasks": tasks}, source)


def load_suite(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Suite:
    """A suite by name (``embodied_rl/configs/bench/<name>.yaml``) or from a YAML path, with
    ``key=value`` overrides (dotted for sections: ``online.env_steps=5000``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"suite {str(name_or_path)!r} not found ({path}); known: {known}")
    values = load_yaml(path.read_text()) or {}
    values.setdefault("name", path.stem)
    if overrides:
        values = merge(values, parse_overrides(overrides))
        return suite_from_dict(values, f"{path} with {' '.join(overrides)}")
    return suite_from_dict(values, str(path))


# ---------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid."""

    algo: str
    task: str
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.task}-{self.algo}-s{self.seed}"


def grid(suite: Suite, algos: Sequence[str], seeds: int) -> list[RunSpec]:
    """Every ``(algo, task, seed)`` of the benchmark, task-major."""
    from embodied_rl.agents.online import ONLINE_AGENTS

    bad = [a for a in algos if a not in ONLINE_AGENTS]
    if bad or not algos:
        raise ValueError(f"algos={list(algos)}: choose one or more of {ONLINE_AGENTS}")
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be >= 1")
    return [RunSpec(a, t.name, s) for t in suite.tasks for a in algos for s in range(seeds)]


def result_path(out: Path, spec: RunSpec) -> Path:
    return out / RESULTS / f"{spec.run_id}.json"


def pending(specs: Sequence[RunSpec], out: Path) -> list[RunSpec]:
    """The runs without a result file (finished runs are skipped)."""
    return [s for s in specs if not result_path(out, s).is_file()]


def dataset_id(suite: Suite, task: BenchTask) -> str:
    return f"bench_{suite.name}/{task.name}-{task.tier}-v0"


def prepare_dataset(suite: Suite, task: BenchTask, root: Path) -> Path:
    """Collect the task's dataset under ``root`` unless it is already there (an interrupted
    collection resumes); a task naming a ``dataset`` uses that one (built if it is a missing
    locomotion dataset)."""
    from embodied_rl.datasets import collect, dataset_dir

    if task.dataset:
        return _named_dataset(task.dataset)
    ident = dataset_id(suite, task)
    target = dataset_dir(root, ident)
    if (target / "data" / "metadata.json").is_file():
        return target
    partial = target.parent / f".{target.name}.partial"
    result = collect(
        task.env_id, task.tier, episodes=task.episodes, out=root, dataset_id=ident,
        seed=task.seed, env_kwargs=dict(task.env_kwargs),
        reference_episodes=task.reference_episodes, resume=partial.exists(), progress=False,
    )  # fmt: skip
    return result.path


def _named_dataset(ident: str) -> Path:
    from embodied_rl.datasets import dataset_dir
    from embodied_rl.datasets.minari_format import parse_dataset_id

    path = dataset_dir(None, ident)
    if (path / "data" / "metadata.json").is_file():
        return path
    namespace, kind, _ = parse_dataset_id(ident)
    if namespace is None or not namespace.startswith("locomotion/"):
        raise FileNotFoundError(f"dataset {ident!r} is not at {path}")
    from embodied_rl.runners.locomotion import build_locomotion

    body = namespace.split("/", 1)[1]
    return build_locomotion(body, None, kinds=(kind,), progress=False)[kind]


def _offline_done(run_dir: Path, steps: int) -> bool:
    last = run_dir / "offline" / "checkpoints" / "last"
    return last.is_file() and last.read_text().strip() == f"step_{steps:09d}"


def _last_step(metrics_csv: Path) -> int:
    """The step of the last row of a ``step,name,value,wall_s`` metrics file (0: none yet)."""
    try:
        with open(metrics_csv, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return int(lines[-1].split(",", 1)[0])
    except (OSError, ValueError, IndexError):  # missing, empty, or a header only
        return 0


def _obs_keys(task: BenchTask) -> list[str] | None:
    """The state of the collected (Dict) datasets; a named dataset's observations as they are
    (the locomotion ones are a plain Box)."""
    return None if task.dataset else ["state"]


def run_progress(run_dir: str | os.PathLike, suite: Suite) -> float:
    """How much of one run is done, in [0, 1], from the steps its metrics files reached: the
    offline gradient steps are the first half, the online environment steps the second."""
    run_dir = Path(run_dir)
    offline = 1.0 if _offline_done(run_dir, suite.offline_steps) else (
        _last_step(run_dir / "offline" / "metrics.csv") / suite.offline_steps
    )  # fmt: skip
    online = _last_step(run_dir / "online" / "metrics.csv") / suite.online_config(0).env_steps
    return 0.5 * min(offline, 1.0) + 0.5 * min(online, 1.0)


def execute_run(spec: RunSpec, suite: Suite, data: Any, run_dir: str | os.PathLike) -> dict:
    """Offline training then online fine-tuning of one run; returns its result record.

    A run directory holding a finished offline phase skips it; an online phase with
    checkpoints resumes from them."""
    import shutil

    import torch

    from embodied_rl.agents import TrainerConfig, default_policy, load_agent, train
    from embodied_rl.agents.online import finetune_online
    from embodied_rl.agents.trainer import env_factory, seed_everything

    torch.set_num_threads(1)
    run_dir = Path(run_dir)
    start = time.perf_counter()
    if not _offline_done(run_dir, suite.offline_steps):
        shutil.rmtree(run_dir, ignore_errors=True)  # a partial offline phase starts over
        steps = suite.offline_steps
        config = TrainerConfig(
            steps=steps, batch_size=suite.batch_size, seed=spec.seed, eval_episodes=0,
            checkpoint_every=0, keep_checkpoints=1, log_every=max(1, steps // 10),
            progress=False, tensorboard=False,
        )  # fmt: skip
        seed_everything(spec.seed)  # the policy's initial weights too (train() seeds later)
        policy = default_policy(spec.algo, data, hidden=tuple(suite.hidden))
        train(spec.algo, data, run_dir / "offline", suite.agent_config(spec.algo), config, policy)
    offline_s = time.perf_counter() - start
    agent = load_agent(run_dir / "offline" / "checkpoints")
    online = finetune_online(
        agent, data, env_factory(data), suite.online_config(spec.seed), run_dir / "online",
        resume=True,
    )  # fmt: skip
    return run_record(spec, suite, online, offline_s, time.perf_counter() - start)


def run_record(spec: RunSpec, suite: Suite, online: Any, offline_s: float, wall_s: float) -> dict:
    """The JSON record of a finished run (scores are normalized, 0 random .. 100 expert)."""
    curve = [
        [e["env_step"], e.get("eval/normalized_score"), e.get("eval/success_rate")]
        for e in online.evaluations
    ]
    return {
        "run_id": spec.run_id,
        "suite": suite.name,
        "algo": spec.algo,
        "task": spec.task,
        "env_id": suite.task(spec.task).env_id,
        "seed": spec.seed,
        "offline_score": online.offline.get("eval/normalized_score"),
        "online_score": online.final.get("eval/normalized_score"),
        "offline_success": online.offline.get("eval/success_rate"),
        "online_success": online.final.get("eval/success_rate"),
        "regret": online.regret,
        "online_episodes": len(online.episodes),
        "env_steps": online.env_steps,
        "gradient_steps": online.gradient_steps,
        "curve": curve,  # [env_step, normalized score, success rate]
        "wall_s": wall_s,
        "offline_wall_s": offline_s,
        "host": socket.gethostname(),
    }


# ---------------------------------------------------------------------- the driver
@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` produced."""

    runs: list[dict[str, Any]]  # every finished run of the grid
    executed: list[str]  # run ids executed by this call (the others were skipped)
    failed: dict[str, str]  # run id -> error
    wall_s: float
    out: Path


def _ray_init(address: str | None, workers: int) -> bool:
    """Start (or join) Ray unless it is running; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return True


def _check_suite_file(out: Path, suite: Suite) -> None:
    """Record the suite in ``out``; refuse to mix results of a changed suite definition."""
    path = out / "suite.json"
    ours = suite.to_json()
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = sorted(
            k
            for k in saved.keys() | ours.keys()
            if k != "description" and saved.get(k) != ours.get(k)
        )
        if diff:
            raise ValueError(
                f"{out} holds results of a different suite definition ({diff} differ); "
                "use another --out or restore the suite file"
            )
    write_text_atomic(path, json.dumps(ours, indent=1))


def run_benchmark(
    suite: Suite,
    algos: Sequence[str],
    seeds: int = 3,
    out: str | os.PathLike = "outputs/bench",
    address: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> BenchmarkResult:
    """Run every ``(algo, task, seed)`` not finished yet in ``out`` on Ray, then write
    ``runs.json``, ``report.md`` and ``curves.png``. Failed runs are reported at the end (the
    others still finish); calling again retries them."""
    import ray
    from tqdm.auto import tqdm

    from embodied_rl.datasets import load_dataset

    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    out = Path(out)
    start = time.perf_counter()
    specs = grid(suite, algos, seeds)
    _check_suite_file(out, suite)
    todo = pending(specs, out)
    executed, failed = [], {}
    if todo:
        paths = {t.name: prepare_dataset(suite, t, out / "datasets") for t in suite.tasks}
        started = _ray_init(address, workers)
        remote = ray.remote(num_cpus=1)(execute_run)
        try:
            refs = {
                name: ray.put(load_dataset(path, obs_keys=_obs_keys(suite.task(name))))
                for name, path in paths.items()
                if any(s.task == name for s in todo)
            }
            tasks = {
                remote.remote(s, suite, refs[s.task], str(out / "runs" / s.run_id)): s for s in todo
            }
            bar = tqdm(
                total=len(tasks), unit="run", desc=suite.name, disable=not progress,
                bar_format="{l_bar}{bar}| {n:.2f}/{total} runs [{elapsed}<{remaining}]",
            )  # fmt: skip
            finished = 0
            try:
                while tasks:
                    done, _ = ray.wait(list(tasks), num_returns=1, timeout=2.0)
                    if not done:  # progress inside the running runs, from their metrics files
                        if progress:
                            bar.n = finished + sum(
                                run_progress(out / "runs" / s.run_id, suite) for s in tasks.values()
                            )
                            bar.refresh()
                        continue
                    spec = tasks.pop(done[0])
                    try:
                        record = ray.get(done[0])
                    except Exception as error:  # a run's exception arrives as RayTaskError
                        failed[spec.run_id] = f"{type(error).__name__}: {error}"
                        logger.error("run %s failed: %s", spec.run_id, error)
                    else:
                        write_text_atomic(result_path(out, spec), json.dumps(record, indent=1))
                        executed.append(spec.run_id)
                    finished += 1
                    bar.n = finished
                    bar.refresh()
            except KeyboardInterrupt:
                for ref in tasks:
                    ray.cancel(ref, force=True)
                logger.warning(
                    "interrupted: %d runs finished and saved in %s; the same command resumes",
                    len(specs) - len(pending(specs, out)),
                    out / RESULTS,
                )
                raise
            finally:
                bar.close()
        finally:
            if started:
                ray.shutdown()
    runs = [
        json.loads(result_path(out, s).read_text()) for s in specs if s not in pending(specs, out)
    ]
    result = BenchmarkResult(runs, executed, failed, time.perf_counter() - start, out)
    write_outputs(suite, result, algos, seeds)
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(specs)} runs failed ({sorted(failed)}); the others are in "
            f"{out / RESULTS}. First error: {next(iter(failed.values()))}"
        )
    return result


# ---------------------------------------------------------------------- reporting
def _mean_std(values: list[float | None]) -> tuple[float, float]:
    clean = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if clean.size == 0:
        return float("nan"), float("nan")
    return float(clean.mean()), float(clean.std())


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per ``(task, algo)``: mean and std over seeds of the offline and online normalized
    scores, success rates and regret, and the number of seeds."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["task"], run["algo"])].append(run)
    table = {}
    for key, members in groups.items():
        row = {"seeds": len(members)}
        for name in SUMMARY_FIELDS:
            row[name] = _mean_std([m.get(name) for m in members])
        table[key] = row
    return table


def _cell(stats: tuple[float, float], digits: int = 1) -> str:
    mean, std = stats
    return "n/a" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_tables(runs: Sequence[Mapping[str, Any]], algos: Sequence[str]) -> str:
    """CORL-style tables: normalized score offline -> online, then regret; an average row."""
    table = summarize(runs)
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    header = "| task | " + " | ".join(algos) + " |\n|---|" + "---|" * len(algos)
    score_rows, regret_rows = [], []
    for task in tasks:
        cells = [table.get((task, a)) for a in algos]
        score_rows.append(
            f"| {task} | "
            + " | ".join(
                "n/a" if c is None else f"{_cell(c['offline_score'])} → {_cell(c['online_score'])}"
                for c in cells
            )
            + " |"
        )
        regret_rows.append(
            f"| {task} | "
            + " | ".join("n/a" if c is None else _cell(c["regret"], 2) for c in cells)
            + " |"
        )
    averages = []
    for algo in algos:
        rows = [table[(t, algo)] for t in tasks if (t, algo) in table]
        off = np.nanmean([r["offline_score"][0] for r in rows]) if rows else np.nan
        on = np.nanmean([r["online_score"][0] for r in rows]) if rows else np.nan
        reg = np.nanmean([r["regret"][0] for r in rows]) if rows else np.nan
        averages.append((off, on, reg))
    score_rows.append(
        "| **average** | " + " | ".join(f"{o:.1f} → {n:.1f}" for o, n, _ in averages) + " |"
    )
    regret_rows.append("| **average** | " + " | ".join(f"{r:.2f}" for *_, r in averages) + " |")
    return "\n".join(
        [
            "Normalized score (D4RL's formula against the dataset's reference returns: 0 = "
            "random, 100 = the scripted or behaviour expert), offline → after online "
            "fine-tuning, mean ± std over seeds:",
            "",
            header,
            *score_rows,
            "",
            "Regret (CORL: mean over the online training episodes of 1 - success, or of "
            "1 - normalized return / 100 where the environment reports no success; lower is "
            "better), mean ± std over seeds:",
            "",
            header,
            *regret_rows,
        ]
    )


def plot_curves(runs: Sequence[Mapping[str, Any]], algos: Sequence[str], path: Path) -> Path:
    """Normalized score against online environment steps, one panel per task, mean ± std
    over seeds per algorithm (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in runs))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for algo in algos:
            curves = [r["curve"] for r in runs if r["task"] == task and r["algo"] == algo]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            steps = np.asarray([p[0] for p in curves[0][:n]])
            scores = np.asarray([[np.nan if p[1] is None else p[1] for p in c[:n]] for c in curves])
            mean, std = np.nanmean(scores, 0), np.nanstd(scores, 0)
            ax.plot(steps, mean, marker="o", ms=3, label=f"{algo} ({len(curves)} seeds)")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("online environment steps")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(suite: Suite, result: BenchmarkResult, algos: Sequence[str], seeds: int) -> None:
    """``runs.json``, ``report.md`` and ``curves.png`` of the finished runs."""
    out, runs = result.out, result.runs
    meta = {
        "suite": suite.to_json(),
        "algos": list(algos),
        "seeds": seeds,
        "wall_s": result.wall_s,
        "executed": result.executed,
        "failed": result.failed,
        "runs": runs,
    }
    write_text_atomic(out / "runs.json", json.dumps(meta, indent=1))
    if not runs:
        return
    plot_curves(runs, algos, out / "curves.png")
    run_minutes = sum(r["wall_s"] for r in runs) / 60
    lines = [
        f"# Offline-to-online benchmark: suite `{suite.name}`",
        "",
        suite.description.strip(),
        "",
        f"{len(runs)} runs ({', '.join(algos)} x {len(suite.tasks)} tasks x {seeds} seeds); "
        f"this call took {result.wall_s / 60:.1f} min, the runs {run_minutes:.1f} min of worker "
        f"time in all.",
        "",
        markdown_tables(runs, algos),
        "",
        "![learning curves](curves.png)",
        "",
    ]
    write_text_atomic(out / "report.md", "\n".join(lines))
