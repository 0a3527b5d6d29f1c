"""``collect``: roll out a tier (or any policy) in parallel and write a Minari dataset.

Workers are processes started with ``spawn`` (MuJoCo/EGL state must not be forked);
episode ``i`` resets with ``seed + i`` and is written in index order, so the same call
gives a bit-identical dataset for any number of workers. Each finished episode is saved
at once to a hidden partial directory; on Ctrl-C or a crashed worker every completed
episode is assembled into a valid dataset (marked ``interrupted``) and the partial
directory stays, so ``resume=True`` continues where the run stopped.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from embodied_rl.datasets.collect_worker import (
    REFERENCE_SEED_OFFSET,
    EpisodeRunner,
    EpisodeSummary,
    RunnerSpec,
    init_worker,
    make_env,
    run_in_worker,
)
from embodied_rl.datasets.minari_format import (
    DatasetWriter,
    ImageCodec,
    dataset_dir,
    default_root,
)
from embodied_rl.datasets.tiers import MEDIUM_NOISE, TIERS, check_tier, normalized_score
from embodied_rl.utils.io import write_text_atomic

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


class CollectionError(RuntimeError):
    """A worker failed; the completed episodes were saved (the message says where)."""


@dataclass(frozen=True)
class CollectConfig:
    """What to collect; every field but ``workers`` and ``progress`` fixes the result."""

    env_id: str
    tier: str | None = "expert"  # a tier of TIERS, or None with a custom policy
    episodes: int = 100
    seed: int = 0  # episode i resets with seed + i
    noise: float | None = None  # expert (or custom policy) action-noise std; None: the tier's
    randomization: Any = None  # passed to make() when not None (preset name or dict)
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)  # obs_mode, image_size, ...
    reference_episodes: int = 10  # random and expert episodes for the reference returns
    codec: str = "gzip"  # image compression: "gzip" | "lzf" | "none"
    workers: int = 1  # processes; 1 runs in this process
    progress: bool = True

    def __post_init__(self) -> None:
        if self.tier is not None:
            check_tier(self.tier)
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes} must be >= 1")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers} must be >= 1")
        if self.reference_episodes < 0:
            raise ValueError(f"reference_episodes={self.reference_episodes} must be >= 0")
        if self.noise is not None and self.noise < 0:
            raise ValueError(f"noise={self.noise} must be >= 0")
        ImageCodec(self.codec)

    def identity(self) -> dict[str, Any]:
        """The fields that define the data (a resumed run must match them)."""
        out = asdict(self)
        for key in ("workers", "progress", "episodes"):
            out.pop(key)
        out["env_kwargs"] = dict(self.env_kwargs)
        return json.loads(json.dumps(out, default=str))


@dataclass
class CollectResult:
    """Where the dataset went and how the episodes did."""

    path: Path
    dataset_id: str
    n_episodes: int
    success_rate: float
    mean_return: float
    ref_min_score: float | None
    ref_max_score: float | None
    interrupted: bool

    @property
    def normalized_score(self) -> float | None:
        refs = (self.ref_min_score, self.ref_max_score)
        if None in refs or not refs[1] > refs[0]:  # no references, or expert <= random
            return None
        return float(normalized_score(self.mean_return, refs))


def default_dataset_id(env_id: str, tier: str | None) -> str:
    """``tabletop/pick-v0`` + ``expert`` -> ``tabletop/pick-expert-v0``."""
    suite, _, task = env_id.rpartition("/")
    name = task.rsplit("-v", 1)[0]
    return f"{suite or 'embodied_rl'}/{name}-{tier or 'custom'}-v0"


def collect(
    env_id: str,
    policy_or_expert: str | Any = "expert",
    *,
    episodes: int = 100,
    workers: int = 1,
    randomization: Any = None,
    noise: float | None = None,
    out: str | os.PathLike | None = None,
    dataset_id: str | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    reference_episodes: int = 10,
    codec: str = "gzip",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> CollectResult:
    """Collect ``episodes`` episodes of a tier or policy on ``env_id`` into a Minari dataset.

    Args:
        policy_or_expert: a tier (``"expert"``, ``"medium"``, ``"random"``, ``"mixed"``), an
            object with ``act(obs)``, or a factory ``f(env, seed) -> policy``. With
            ``workers > 1`` a policy or factory must be picklable (module-level).
        out: root directory of datasets (default ``$MINARI_DATASETS_PATH``).
        dataset_id: ``namespace/name-vN``; default e.g. ``tabletop/pick-expert-v0``.
        resume: continue an interrupted collection of the same configuration.
        overwrite: replace an existing complete dataset of the same id.
    """
    tier = policy_or_expert if isinstance(policy_or_expert, str) else None
    if tier is not None and tier not in TIERS:
        raise ValueError(f"policy_or_expert={tier!r}; choose a tier of {TIERS} or pass a policy")
    config = CollectConfig(
        env_id=env_id, tier=tier, episodes=episodes, seed=seed, noise=noise,
        randomization=randomization, env_kwargs=dict(env_kwargs or {}),
        reference_episodes=reference_episodes, codec=codec, workers=workers, progress=progress,
    )  # fmt: skip
    dataset_id = dataset_id or default_dataset_id(env_id, tier)
    policy = None if tier is not None else policy_or_expert
    return _Collection(config, policy, out, dataset_id).run(resume=resume, overwrite=overwrite)


class _Collection:
    """One run of :func:`collect`: partial directory, workers, finalization."""

    def __init__(self, config: CollectConfig, policy: Any, out: Any, dataset_id: str) -> None:
        self.config, self.dataset_id = config, dataset_id
        self.root = Path(out) if out is not None else default_root()
        self.target = dataset_dir(self.root, dataset_id)
        self.partial = self.target.parent / f".{self.target.name}{PARTIAL_SUFFIX}"
        self.spec = RunnerSpec(
            env_id=config.env_id, env_kwargs=dict(config.env_kwargs),
            randomization=config.randomization, seed=config.seed, tier=config.tier,
            noise=config.noise, policy=policy, episodes_dir=self.partial / "episodes",
            codec=ImageCodec(config.codec),
        )  # fmt: skip
        self.summaries: dict[tuple[str, int], EpisodeSummary] = {}
        self.n_done = self.n_success = 0
        self.identity = {**config.identity(), "policy": _policy_name(policy)}

    # ------------------------------------------------------------------ setup
    def _prepare(self, resume: bool, overwrite: bool) -> None:
        identity = self.identity
        if self.partial.exists():
            if not resume:
                raise FileExistsError(
                    f"an earlier collection of {self.dataset_id!r} stopped early; its episodes "
                    f"are in {self.partial}. Pass resume=True (erl collect --resume) to continue "
                    "it, or delete that directory to start over"
                )
            saved = json.loads((self.partial / "collect.json").read_text())
            diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
            if diff:
                raise ValueError(
                    f"cannot resume {self.dataset_id!r}: {diff} differ from the interrupted run "
                    f"({ {k: saved.get(k) for k in diff} }); use the same settings"
                )
        elif self.target.exists() and not overwrite:
            raise FileExistsError(
                f"dataset {self.dataset_id!r} already exists at {self.target}; pass "
                "overwrite=True (--overwrite) or choose another dataset id"
            )
        env = make_env(self.spec)  # fails here, with a clear message, on a bad env config
        self.spaces = (env.observation_space, env.action_space, _spec_json(env))
        env.close()
        self.spec.episodes_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.partial / "collect.json", json.dumps(identity, indent=1))

    def _pending(self) -> list[tuple[str, int]]:
        done = {_file_index(p) for p in self.spec.episodes_dir.glob("episode_*.hdf5")}
        tasks = [("data", i) for i in range(self.config.episodes) if i not in done]
        if not (self.partial / "reference.json").exists():
            n = self.config.reference_episodes
            refs = [
                (role, j) for role in ("reference-random", "reference-expert") for j in range(n)
            ]
            tasks = refs + tasks  # references first: a short interrupted run still has them
        return tasks

    # ------------------------------------------------------------------ run
    def run(self, resume: bool, overwrite: bool) -> CollectResult:
        self._prepare(resume, overwrite)
        tasks = self._pending()
        n_data = sum(role == "data" for role, _ in tasks)
        bar = tqdm(total=n_data, unit="ep", desc=self.dataset_id, disable=not self.config.progress)
        failure: BaseException | None = None
        try:
            if self.config.workers == 1:
                self._run_here(tasks, bar)
            else:
                self._run_pool(tasks, bar)
        except (KeyboardInterrupt, Exception) as error:
            failure = error
        finally:
            bar.close()
        self._save_references()
        complete = failure is None
        result = self._finalize(interrupted=not complete)
        if complete:
            shutil.rmtree(self.partial, ignore_errors=True)
            return result
        where = (
            f"{result.n_episodes} completed episodes were saved to {result.path}"
            if result.n_episodes
            else "no episode completed"
        )
        if isinstance(failure, KeyboardInterrupt):
            logger.warning("collection interrupted: %s; resume with resume=True", where)
            raise failure
        if isinstance(failure, CollectionError):
            raise CollectionError(
                f"{failure}\n{where}; resume with resume=True"
            ) from failure.__cause__
        raise CollectionError(f"collection failed: {failure!r}; {where}") from failure

    def _record(self, summary: EpisodeSummary, bar: tqdm) -> None:
        self.summaries[(summary.role, summary.index)] = summary
        if summary.role == "data":
            self.n_done += 1
            self.n_success += summary.success
            bar.update(1)
            bar.set_postfix(success=f"{self.n_success / self.n_done:.0%}")

    def _run_here(self, tasks: Iterable[tuple[str, int]], bar: tqdm) -> None:
        runner = EpisodeRunner(self.spec)
        try:
            for role, index in tasks:
                self._record(runner.run(role, index), bar)
        finally:
            runner.close()

    def _run_pool(self, tasks: list[tuple[str, int]], bar: tqdm) -> None:
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            self.config.workers, mp_context=context, initializer=init_worker, initargs=(self.spec,)
        )
        futures: dict[Future, tuple[str, int]] = {}
        try:
            for role, index in tasks:
                futures[executor.submit(run_in_worker, role, index)] = (role, index)
            for future in as_completed(futures):
                if future.exception() is not None:
                    raise _worker_error(futures[future], future.exception())
                self._record(future.result(), bar)
        finally:  # let running episodes finish (they are saved), drop the queued ones
            executor.shutdown(wait=True, cancel_futures=True)
            for future, (role, index) in futures.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    self.summaries.setdefault((role, index), future.result())

    # ------------------------------------------------------------------ finish
    def _save_references(self) -> None:
        path = self.partial / "reference.json"
        n = self.config.reference_episodes
        if path.exists() or n == 0:
            return
        refs = {}
        for role, key in (("reference-random", "min"), ("reference-expert", "max")):
            runs = [self.summaries.get((role, j)) for j in range(n)]
            if None in runs:
                return  # incomplete: computed again on resume
            returns = [s.episode_return for s in runs]
            refs[key] = {
                "mean_return": float(np.mean(returns)),
                "std_return": float(np.std(returns)),
                "success_rate": float(np.mean([s.success for s in runs])),
                "episodes": n,
                "policy": "uniform random actions" if key == "min" else "scripted expert, noise 0",
            }
        refs["seeds"] = f"seed + {REFERENCE_SEED_OFFSET} + j for j < {n}"
        write_text_atomic(path, json.dumps(refs, indent=1))

    def _finalize(self, interrupted: bool) -> CollectResult:
        files = [
            path
            for path in sorted(self.spec.episodes_dir.glob("episode_*.hdf5"))
            if _file_index(path) < self.config.episodes  # a resume may ask for fewer
        ]
        ref_path = self.partial / "reference.json"
        refs = json.loads(ref_path.read_text()) if ref_path.exists() else None
        if not files:
            return CollectResult(self.target, self.dataset_id, 0, 0.0, 0.0, None, None, True)
        obs_space, act_space, env_spec = self.spaces
        returns, successes, indices = [], [], []
        with DatasetWriter(
            self.root, self.dataset_id, obs_space, act_space, codec=self.spec.codec, overwrite=True
        ) as writer:
            for path in files:
                with h5py.File(path, "r") as f:
                    group = f["episode"]
                    returns.append(float(group.attrs["episode_return"]))
                    successes.append(bool(group.attrs["success"]))
                    indices.append(int(group.attrs["episode_index"]))
                    writer.add_group(group)
            metadata = self._metadata(refs, returns, successes, indices, interrupted)
            path = writer.finish(metadata, env_spec=env_spec)
        return CollectResult(
            path, self.dataset_id, len(files), float(np.mean(successes)), float(np.mean(returns)),
            metadata.get("ref_min_score"), metadata.get("ref_max_score"), interrupted,
        )  # fmt: skip

    def _metadata(self, refs, returns, successes, indices, interrupted) -> dict[str, Any]:
        config = self.config
        ours: dict[str, Any] = {
            "collection": {
                **self.identity,
                "episodes_requested": config.episodes,
                "medium_noise": MEDIUM_NOISE if config.tier in ("medium", "mixed") else None,
            },
            "interrupted": interrupted,
            "summary": {
                "success_rate": float(np.mean(successes)),
                "mean_return": float(np.mean(returns)),
            },
        }
        if interrupted:
            ours["completed_episode_indices"] = indices
        meta: dict[str, Any] = {
            "algorithm_name": f"embodied_rl.collect:{config.tier or 'custom'}",
            "author": ["embodied_rl"],
            "description": f"{config.tier or 'custom policy'} episodes of {config.env_id}",
            "embodied_rl": ours,
        }
        if refs is not None:
            meta["ref_min_score"] = refs["min"]["mean_return"]
            meta["ref_max_score"] = refs["max"]["mean_return"]
            ours["reference"] = refs
            pair = (meta["ref_min_score"], meta["ref_max_score"])
            if pair[1] > pair[0]:
                score = normalized_score(np.mean(returns), pair)
                ours["summary"]["normalized_score"] = float(score)
        return meta


def _file_index(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _spec_json(env) -> str | None:
    try:
        return env.spec.to_json() if env.spec is not None else None
    except (TypeError, ValueError) as error:
        logger.debug("env_spec not stored: %s", error)
        return None


def _policy_name(policy: Any) -> str:
    """``"scripted"`` for tiers, else the module path of the policy's class or factory."""
    if policy is None:
        return "scripted"
    kind = policy if hasattr(policy, "__qualname__") else type(policy)  # function or class
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', repr(kind))}"


def _worker_error(task: tuple[str, int], error: BaseException) -> CollectionError:
    role, index = task
    if isinstance(error, BrokenProcessPool):
        message = (
            f"a worker process died abruptly while running {role} episode {index} (killed by a "
            "signal, out of memory, or a crash in native code); no traceback is available"
        )
    else:
        remote = getattr(error.__cause__, "tb", "") or ""
        message = f"{role} episode {index} failed in a worker: {error!r}\n{remote}".rstrip()
    wrapped = CollectionError(message)
    wrapped.__cause__ = error
    return wrapped
