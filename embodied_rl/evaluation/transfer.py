"""Sim-to-real transfer evaluation by proxy: held-out parameters and the other physics engine.

``evaluate_transfer(policy, source, targets)`` runs a policy on a source domain and on target
domains (held-out domain parameters, a randomization preset, the PyBullet twin, or
combinations), with success rates, 95% Wilson intervals, the transfer gap and optional
per-parameter sensitivity sweeps; results go to JSON, Markdown and PNG plots.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import multiprocessing
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from embodied_rl.envs.domain import PARAMETERS
from embodied_rl.envs.randomization import PRESETS
from embodied_rl.evaluation.rollout import held_out_seed
from embodied_rl.utils.io import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

BACKENDS = ("mujoco", "pybullet")
PolicyLike = str | Callable[[Any], np.ndarray]


@dataclass(frozen=True)
class Domain:
    """Where a policy is evaluated: a task on a backend under some randomization."""

    name: str
    task_id: str
    backend: str = "mujoco"
    randomization: Any = None  # preset name, dict of ranges/overrides, or None (nominal)

    def make_env(self, **kwargs: Any):
        from embodied_rl.envs import make

        return make(self.task_id, backend=self.backend, randomization=self.randomization, **kwargs)


def parse_domain(spec: str, task_id: str) -> Domain:
    """Parse a domain string: ``+``-separated parts, each a backend (``mujoco``,
    ``pybullet``), a preset (``light``, ``default``, ``heavy``), ``nominal``, or comma-separated
    ``parameter=value`` pins, e.g. ``"pybullet+friction_scale=0.5,object_mass_scale=2"``."""
    backend, preset, pins = "mujoco", None, {}
    for part in filter(None, spec.split("+")):
        if part in BACKENDS:
            backend = part
        elif part in PRESETS:
            preset = None if part == "none" else part
        elif part == "nominal":
            continue
        elif "=" in part:
            for pin in part.split(","):
                key, _, value = pin.partition("=")
                if key not in PARAMETERS:
                    raise ValueError(
                        f"domain {spec!r}: unknown parameter {key!r}; known: {sorted(PARAMETERS)}"
                    )
                try:
                    pins[key] = (float(value), float(value))
                except ValueError:
                    raise ValueError(f"domain {spec!r}: {key}={value!r} is not a number") from None
        else:
            raise ValueError(
                f"domain {spec!r}: cannot read {part!r}; use a backend {BACKENDS}, a preset {PRESETS}, "
                "'nominal' or parameter=value"
            )
    randomization = {"preset": preset or "none", **pins} if (preset or pins) else None
    return Domain(name=spec, task_id=task_id, backend=backend, randomization=randomization)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for ``z = 1.96``)."""
    if n <= 0:
        raise ValueError(f"n={n} episodes: need at least one")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in [0, n={n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@dataclass
class DomainResult:
    domain: Domain
    episodes: int
    successes: int
    mean_return: float
    success_rate: float = 0.0
    ci_low: float = 0.0
    ci_high: float = 0.0
    gap: float = 0.0  # source success rate minus this domain's
    physics_errors: int = 0

    def __post_init__(self) -> None:
        self.success_rate = self.successes / self.episodes
        self.ci_low, self.ci_high = wilson_interval(self.successes, self.episodes)


@dataclass
class TransferReport:
    source: DomainResult
    targets: list[DomainResult]
    sweeps: dict[str, list[DomainResult]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        row = lambda r: {**asdict(r), "domain": asdict(r.domain)}  # noqa: E731
        return {
            "source": row(self.source),
            "targets": [row(r) for r in self.targets],
            "sweeps": {k: [row(r) for r in v] for k, v in self.sweeps.items()},
        }

    def markdown(self) -> str:
        lines = [
            "| domain | backend | episodes | success | 95% CI | gap to source |",
            "|---|---|---:|---:|---|---:|",
        ]
        for r in [self.source, *self.targets]:
            gap = "(source)" if r is self.source else f"{r.gap:+.0%}"
            lines.append(
                f"| {r.domain.name} | {r.domain.backend} | {r.episodes} | {r.success_rate:.0%} | "
                f"[{r.ci_low:.0%}, {r.ci_high:.0%}] | {gap} |"
            )
        for param, rows in self.sweeps.items():
            lines += [
                "",
                f"Sensitivity to `{param}` ({PARAMETERS[param].doc}):",
                "",
                "| value | success | 95% CI |",
                "|---:|---:|---|",
            ]
            for r in rows:
                value = r.domain.randomization[param][0]
                lines.append(
                    f"| {value:g} | {r.success_rate:.0%} | [{r.ci_low:.0%}, {r.ci_high:.0%}] |"
                )
        return "\n".join(lines)


# ---------------------------------------------------------------------------- episodes
def _is_policy_path(policy: PolicyLike) -> bool:
    """A string naming a directory: a saved policy, a checkpoint or a run directory."""
    return isinstance(policy, str) and Path(policy).is_dir()


def _saved_policy(path: str):
    """A saved policy, loaded once per process and version of its files (each worker loads
    its own copy)."""
    from embodied_rl.policies.base import resolve_policy_path

    directory, _ = resolve_policy_path(path)
    return _load_saved(str(directory), (directory / "model.safetensors").stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_saved(directory: str, mtime_ns: int):
    from embodied_rl.policies import load_policy

    return load_policy(directory).eval()


def build_policy(policy: PolicyLike, env, seed: int):
    """The acting policy a spec names, for ``env``: ``"expert"``, ``"expert:noise=X"``,
    ``"random"``, ``"module:factory"`` (``factory(env)``), a saved policy, checkpoint or run
    directory, or a policy object (returned as is)."""
    if _is_policy_path(policy):
        return _saved_policy(str(policy))
    if isinstance(policy, str):
        from embodied_rl.envs import make_expert

        if policy == "expert":
            return make_expert(env, seed=seed)
        if policy.startswith("expert:noise="):
            return make_expert(env, noise=float(policy.split("=", 1)[1]), seed=seed)
        if policy == "random":
            space = env.action_space
            space.seed(seed)
            return lambda obs: space.sample()
        if ":" in policy:  # "package.module:factory", factory(env) -> policy
            module, _, attr = policy.partition(":")
            return getattr(importlib.import_module(module), attr)(env)
        raise ValueError(
            f"policy={policy!r}; use 'expert', 'expert:noise=X', 'random', 'module:factory' "
            "or the directory of a saved policy, checkpoint or run"
        )
    return policy


def _run_chunk(
    policy: PolicyLike, domain: Domain, seeds: Sequence[int], env_kwargs: Mapping[str, Any]
) -> list[tuple[int, bool, float, bool]]:
    """Episodes of one domain: (seed, success, return, physics error) each."""
    env = domain.make_env(**env_kwargs)
    try:
        out = []
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            agent = build_policy(policy, env, int(seed))
            if hasattr(agent, "reset"):  # history policies (VLA) start each episode afresh
                agent.reset()
            act = agent.act if hasattr(agent, "act") else agent
            total = 0.0
            while True:
                obs, reward, terminated, truncated, info = env.step(act(obs))
                total += float(reward)
                if terminated or truncated:
                    break
            out.append(
                (int(seed), bool(info.get("success", False)), total, "physics_error" in info)
            )
        return out
    finally:
        env.close()


def _chunks(seeds: list[int], n: int) -> list[list[int]]:
    return [seeds[i : i + n] for i in range(0, len(seeds), n)]


class TransferWorkerError(RuntimeError):
    """An evaluation worker process failed; the message holds its traceback."""


def _check_picklable(policy: PolicyLike, workers: int) -> None:
    if isinstance(policy, str):
        return
    try:
        pickle.dumps(policy)
    except Exception as error:
        raise ValueError(
            f"workers={workers} needs a picklable policy (a module-level function or object, "
            f"or a string such as 'expert'); {policy!r} is not: {error}"
        ) from error


def _run_pool(
    policy: PolicyLike,
    domains: Sequence[Domain],
    jobs: list[tuple[int, list[int]]],
    env_kwargs: Mapping[str, Any],
    workers: int,
) -> Iterator[tuple[int, list[tuple[int, bool, float, bool]]]]:
    """Yield ``(domain index, episode results)`` per finished chunk. A failed chunk raises
    :class:`TransferWorkerError` with the worker's traceback at once; queued chunks are
    cancelled (not waited for) and a worker killed outright is reported, never waited on."""
    context = multiprocessing.get_context("spawn")  # MuJoCo and EGL state must not be forked
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        futures = {
            pool.submit(_run_chunk, policy, domains[i], part, env_kwargs): (i, part)
            for i, part in jobs
        }
        for future in as_completed(futures):
            i, part = futures[future]
            error = future.exception()
            if error is not None:
                raise _worker_error(domains[i], part, error) from error
            yield i, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_error(domain: Domain, seeds: list[int], error: BaseException) -> TransferWorkerError:
    where = f"domain {domain.name!r}, episode seeds {seeds[0]}..{seeds[-1]}"
    if isinstance(error, BrokenProcessPool):
        return TransferWorkerError(
            f"a worker process died abruptly while evaluating {where} (killed by a signal, out "
            "of memory, or a crash in native code); no traceback is available"
        )
    remote = getattr(error.__cause__, "tb", "") or ""  # concurrent.futures' remote traceback
    return TransferWorkerError(
        f"evaluating {where} failed in a worker: {error!r}\n{remote}".rstrip()
    )


def run_domains(
    policy: PolicyLike,
    domains: Sequence[Domain],
    episodes: int,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> list[DomainResult]:
    """Evaluate ``policy`` for ``episodes`` seeded episodes on each domain (same seeds everywhere)."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    env_kwargs = dict(env_kwargs or {})
    seeds = list(range(seed, seed + episodes))
    chunk = max(1, math.ceil(episodes / max(1, 2 * workers)))
    jobs = [(i, part) for i in range(len(domains)) for part in _chunks(seeds, chunk)]
    results: dict[int, list[tuple[int, bool, float, bool]]] = {i: [] for i in range(len(domains))}
    bar = tqdm(
        total=episodes * len(domains), desc="transfer episodes", disable=not progress, unit="ep"
    )
    try:
        if workers == 1:
            for i, part in jobs:
                results[i] += _run_chunk(policy, domains[i], part, env_kwargs)
                bar.update(len(part))
        else:
            _check_picklable(policy, workers)
            for i, part_results in _run_pool(policy, domains, jobs, env_kwargs, workers):
                results[i] += part_results
                bar.update(len(part_results))
    finally:
        bar.close()
    rows = []
    for i, domain in enumerate(domains):
        episodes_i = sorted(results[i])
        rows.append(
            DomainResult(
                domain=domain,
                episodes=len(episodes_i),
                successes=sum(s for _, s, _, _ in episodes_i),
                mean_return=float(np.mean([r for _, _, r, _ in episodes_i])),
                physics_errors=sum(e for _, _, _, e in episodes_i),
            )
        )
    return rows


def evaluate_transfer(
    policy: PolicyLike,
    source: Domain | str,
    targets: Sequence[Domain | str],
    task_id: str | None = None,
    episodes: int = 50,
    seed: int | None = None,
    workers: int = 1,
    sweeps: Mapping[str, Sequence[float]] | None = None,
    out: str | Path | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> TransferReport:
    """Evaluate ``policy`` on ``source`` and each of ``targets``; optionally sweep parameters.

    Args:
        policy: ``"expert"``, ``"expert:noise=X"``, ``"random"``, ``"module:factory"`` (called
            with the env), the directory of a saved policy, checkpoint or run (loaded in each
            worker; its observation options are the environments' defaults), or a callable
            ``obs -> action`` (picklable when ``workers > 1``).
        source, targets: :class:`Domain` objects or domain strings (see :func:`parse_domain`);
            strings need ``task_id``.
        sweeps: ``{parameter: [values]}``; each value is evaluated on the source domain with
            that parameter pinned (success vs parameter value).
        seed: reset seed of the first episode (the same seeds on every domain); None:
            :func:`~embodied_rl.evaluation.rollout.held_out_seed`, scenes no collection used.
        out: directory for ``transfer.json``, ``transfer.md`` and PNG plots.
    """
    if seed is None:
        seed = held_out_seed(0)

    def as_domain(d: Domain | str) -> Domain:
        if isinstance(d, Domain):
            return d
        if task_id is None:
            raise ValueError("domain strings need task_id=... to know which task to run")
        return parse_domain(d, task_id)

    source_d, target_ds = as_domain(source), [as_domain(t) for t in targets]
    sweep_ds: dict[str, list[Domain]] = {}
    for param, values in (sweeps or {}).items():
        if param not in PARAMETERS:
            raise ValueError(f"sweep over unknown parameter {param!r}; known: {sorted(PARAMETERS)}")
        base = dict(source_d.randomization or {"preset": "none"})
        sweep_ds[param] = [
            Domain(
                f"{param}={v:g}",
                source_d.task_id,
                source_d.backend,
                {**base, param: (float(v), float(v))},
            )
            for v in values
        ]
    flat = [source_d, *target_ds, *(d for ds in sweep_ds.values() for d in ds)]
    if _is_policy_path(policy):  # the observations the saved policy reads
        env_kwargs = {**_saved_policy(str(policy)).env_options(), **(env_kwargs or {})}
    rows = run_domains(policy, flat, episodes, seed, workers, env_kwargs, progress)
    for r in rows:
        r.gap = rows[0].success_rate - r.success_rate
    report = TransferReport(source=rows[0], targets=rows[1 : 1 + len(target_ds)])
    offset = 1 + len(target_ds)
    for param, ds in sweep_ds.items():
        report.sweeps[param] = rows[offset : offset + len(ds)]
        offset += len(ds)
    if out is not None:
        write_report(report, Path(out))
    return report


def write_transfer_videos(
    policy: PolicyLike,
    domains: Sequence[Domain | str],
    task_id: str,
    episodes: int,
    seed: int,
    out: str | Path,
    env_kwargs: Mapping[str, Any] | None = None,
    render_size: int = 128,
) -> list[Path]:
    """``out/rollouts_<domain>.gif`` for each domain: ``episodes`` captioned episodes of
    ``policy`` from reset seeds ``seed, seed + 1, ...`` (the evaluation's first scenes)."""
    from embodied_rl.evaluation.video import rollout_video

    if _is_policy_path(policy):
        env_kwargs = {**_saved_policy(str(policy)).env_options(), **(env_kwargs or {})}
    paths = []
    for domain in domains:
        d = domain if isinstance(domain, Domain) else parse_domain(domain, task_id)
        env = d.make_env(render_mode="rgb_array", render_size=render_size, **(env_kwargs or {}))
        try:
            agent = build_policy(policy, env, seed)
            name = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in d.name)
            path = Path(out) / f"rollouts_{name}.gif"
            rollout_video(env, agent, episodes, seed, path)
            paths.append(path)
        finally:
            env.close()
    return paths


def write_report(report: TransferReport, out: Path) -> None:
    """``transfer.json``, ``transfer.md``, ``transfer.png`` and ``sensitivity_<param>.png``."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "transfer.json", json.dumps(report.to_dict(), indent=2))
    write_text_atomic(out / "transfer.md", report.markdown() + "\n")
    _plot_domains(report, out / "transfer.png")
    for param, rows in report.sweeps.items():
        _plot_sweep(param, rows, out / f"sensitivity_{param}.png")


def _plot_domains(report: TransferReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [report.source, *report.targets]
    rates = np.array([r.success_rate for r in rows])
    err = np.array(
        [[r.success_rate - r.ci_low for r in rows], [r.ci_high - r.success_rate for r in rows]]
    )
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 1), 3.2))
    colors = ["#4c72b0"] + ["#dd8452"] * len(report.targets)
    ax.bar(range(len(rows)), rates, yerr=err, capsize=4, color=colors)
    ax.set_xticks(range(len(rows)), [r.domain.name for r in rows], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(f"{report.source.domain.task_id}: source (blue) vs targets")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _plot_sweep(param: str, rows: list[DomainResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [r.domain.randomization[param][0] for r in rows]
    rates = [r.success_rate for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(values, rates, marker="o")
    ax.fill_between(values, [r.ci_low for r in rows], [r.ci_high for r in rows], alpha=0.25)
    ax.axvline(
        PARAMETERS[param].nominal, color="grey", linestyle="--", linewidth=1, label="nominal"
    )
    ax.set_xlabel(f"{param} [{PARAMETERS[param].unit}]")
    ax.set_ylabel("success rate (95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
