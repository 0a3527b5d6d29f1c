"""Offline training: datasets, agents and evaluation around the one training loop.

``Trainer(agent, sampler, config, out).fit()`` draws batches and calls ``agent.update`` in
:class:`~embodied_rl.rl.loop.TrainingLoop`, which logs the mean metrics to CSV and TensorBoard, shows a progress bar with gradient steps/s, runs
evaluation episodes (normalized score with the dataset's reference returns, success rate)
and writes checkpoints. A non-finite loss raises :class:`NonFiniteLossError` naming the
loss and the step; no checkpoint is written after it, so the last good one stays.
:func:`train` builds the policy, agent and sampler for a dataset and runs the loop;
``train(..., resume=True)`` (``Trainer.resume()``) continues from the run's ``last``
checkpoint so that, on CPU, the result equals the uninterrupted run's bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from embodied_rl.agents.base import Agent, make_agent
from embodied_rl.agents.checkpoint import (
    LAST,
    CheckpointError,
    checkpoint_config,
    last_checkpoint_note,
    latest_checkpoint,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from embodied_rl.agents.data import AgentSampler, reward_transform
from embodied_rl.agents.dt import DecisionTransformerPolicy, DTPolicyConfig
from embodied_rl.datasets import OfflineDataset, normalized_score
from embodied_rl.datasets.samplers import HistorySampler, SamplerConfig
from embodied_rl.evaluation.rollout import held_out_seed, run_episodes
from embodied_rl.policies import MLPConfig, MLPPolicy, Policy, VLAPolicy
from embodied_rl.preference.data import PreferenceDataset, PreferenceSampler
from embodied_rl.rl.distributed import data_parallel, shard, synchronize, trained_parameters
from embodied_rl.rl.loop import Callback, LoopSettings, TrainingLoop
from embodied_rl.utils.metrics import MetricsLogger

logger = logging.getLogger(__name__)

# The policy head each algorithm trains by default: BC and TD3+BC a deterministic (MSE) head;
# IQL a Gaussian with state-independent std (the paper's and d3rlpy's); CQL and Cal-QL SAC's
# tanh-squashed Gaussian (the papers', d3rlpy's and CORL's: with unsquashed samples, CQL's
# penalty pushed down the Q of out-of-bounds actions and its policy collapsed on Hopper).
DEFAULT_HEADS = {
    "bc": "deterministic", "td3bc": "deterministic",
    "iql": "gaussian", "cql": "tanh_gaussian", "calql": "tanh_gaussian",
}  # fmt: skip


@dataclass(frozen=True)
class TrainerConfig(LoopSettings):
    """Options of the offline training loop, in gradient steps (the algorithm's options live
    in its own config; the shared ones are :class:`~embodied_rl.rl.loop.LoopSettings`')."""

    steps: int = 100_000  # gradient steps

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the global generator other code may use)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- evaluation
class _RewardFeedback(gym.Wrapper):
    """Passes each reward to ``policy.observe_reward`` (the Decision Transformer's return)."""

    def __init__(self, env: gym.Env, policy: Any) -> None:
        super().__init__(env)
        self.policy = policy

    def step(self, action):
        out = self.env.step(action)
        self.policy.observe_reward(out[1])
        return out


def env_factory(data: OfflineDataset) -> Callable[[], gym.Env]:
    """A function building the environment a dataset was collected on (its metadata): a
    toolkit task (``embodied_rl.collection``), any gymnasium id there (the locomotion
    datasets' ``Hopper-v5``), or the ``env_spec`` of a dataset written by Minari."""
    collection = data.metadata.get("embodied_rl", {}).get("collection")
    if collection and "env_id" in collection:
        env_id = collection["env_id"]
        kwargs = dict(collection.get("env_kwargs") or {})
        if collection.get("randomization") is not None:
            kwargs["randomization"] = collection["randomization"]

        def build() -> gym.Env:
            from embodied_rl.envs import list_tasks, make

            return make(env_id, **kwargs) if env_id in list_tasks() else gym.make(env_id, **kwargs)

        return build
    spec = data.metadata.get("env_spec")
    if spec:
        from gymnasium.envs.registration import EnvSpec

        try:
            parsed = EnvSpec.from_json(spec) if isinstance(spec, str) else EnvSpec(**spec)
        except Exception as error:  # gymnasium raises several types for a spec it cannot read
            raise ValueError(
                f"the dataset's env_spec cannot be read by this gymnasium ({error}); pass "
                "eval_env= or set eval_episodes=0"
            ) from error
        return lambda: gym.make(parsed)
    raise ValueError(
        "the dataset's metadata does not name its environment (embodied_rl.collection.env_id "
        "or Minari's env_spec); pass eval_env= or set eval_episodes=0"
    )


def evaluate(
    policy: Policy, env: gym.Env, n_episodes: int, seed: int, reference: Any = None
) -> dict[str, float]:
    """Mean return, success rate and (with reference returns) the D4RL normalized score."""
    policy.eval()
    if hasattr(policy, "observe_reward"):
        env = _RewardFeedback(env, policy)
    results = run_episodes(env, policy, n_episodes, seed=seed, progress=False)
    policy.train()
    returns = [r.episode_return for r in results]
    out = {
        "eval/mean_return": float(np.mean(returns)),
        "eval/success_rate": float(np.mean([r.success for r in results])),
    }
    if reference is not None:
        out["eval/normalized_score"] = float(np.mean(normalized_score(returns, reference)))
    return out


def score_reference(data: OfflineDataset) -> OfflineDataset | None:
    """``data`` when its metadata holds D4RL's reference returns (``ref_min_score``,
    ``ref_max_score``) for normalized scores, else ``None``."""
    meta = data.metadata
    return data if "ref_min_score" in meta and "ref_max_score" in meta else None


def evaluate_held_out(
    policy: Policy, env_fn: Callable[[], gym.Env], episodes: int, seed: int, reference: Any
) -> dict[str, float]:
    """:func:`evaluate` on a fresh environment over the held-out scenes of run ``seed``
    (``held_out_seed``: no collection uses them); ``{}`` for zero episodes."""
    if episodes == 0:
        return {}
    env = env_fn()
    try:
        return evaluate(policy, env, episodes, held_out_seed(seed), reference)
    finally:
        env.close()


# ---------------------------------------------------------------------- the loop
# TrainerConfig fields that may change when a run is resumed (they do not change the result).
RESUMABLE_CHANGES = (
    "steps", "eval_every", "eval_episodes", "checkpoint_every", "keep_checkpoints",
    "progress", "tensorboard", "log_every",
)  # fmt: skip


class Trainer:
    """Runs ``agent.update`` for ``config.steps`` steps with logging, evaluation and checkpoints.

    ``run_config`` (JSON-able, e.g. the algorithm and dataset) is stored in each checkpoint
    beside the trainer's config; :meth:`resume` refuses a checkpoint whose settings differ."""

    def __init__(
        self,
        agent: Agent,
        sampler: Any,
        config: TrainerConfig,
        out: str | os.PathLike,
        eval_env: Callable[[], gym.Env] | None = None,
        reference: Any = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.agent, self.sampler, self.config = agent, sampler, config
        self.out = Path(out)
        self.eval_env, self.reference = eval_env, reference
        self.run_config = {"trainer": asdict(config), **(run_config or {})}
        self.history: list[dict[str, float]] = []  # evaluation results with "step"
        self._sums: dict[str, float] = {}  # a resumed run's partial logging interval
        self._counts: dict[str, int] = {}
        self._resumed_at: int | None = None  # the checkpoint step resume() loaded

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    def _evaluate(self) -> dict[str, float]:
        if self.eval_env is None or self.config.eval_episodes == 0:
            return {}
        c = self.config
        result = evaluate_held_out(
            self.agent.policy, self.eval_env, c.eval_episodes, c.seed, self.reference
        )
        self.history.append({"step": self.agent.step, **result})
        return result

    def _checkpoint(self, log_state: Mapping[str, Any]) -> Path:
        state = {"evaluations": self.history, **log_state}
        return save_checkpoint(
            self.agent,
            self.checkpoints,
            self.sampler,
            state,
            self.config.keep_checkpoints,
            run_config=self.run_config,
        )

    # ------------------------------------------------------------------ resume
    def resume(self, checkpoint: str | os.PathLike | None = None) -> int:
        """Load the run's ``last`` checkpoint (or ``checkpoint``, an earlier one of the run):
        weights, optimisers, RNGs, sampler, evaluation history and partial metric sums;
        returns its step (0, with a warning, if the run wrote none). ``fit()`` then runs the
        remaining steps; metrics logged after that step are dropped."""
        if checkpoint is not None:
            path = Path(checkpoint)
            if not (path / "state.json").is_file():
                raise CheckpointError(f"{path} is not a checkpoint directory (no state.json)")
        elif not (self.checkpoints / LAST).is_file():
            logger.warning("no checkpoint in %s: the run starts from step 0", self.checkpoints)
            self._resumed_at = 0
            return 0
        else:
            path = latest_checkpoint(self.checkpoints)
        self._check_same_run(path)
        state = load_checkpoint(self.agent, path, self.sampler)
        if state["step"] > self.config.steps:
            raise CheckpointError(
                f"{path} is at step {state['step']}, beyond steps={self.config.steps}; "
                "raise steps to continue the run"
            )
        self.history = list(state.get("evaluations", []))
        self._sums = dict(state.get("log_sums", {}))
        counts = state.get("log_counts")
        if counts is None:  # checkpoints before per-metric counts: one count for all
            counts = dict.fromkeys(self._sums, int(state.get("log_count", 0)))
        self._counts = dict(counts)
        self._resumed_at = self.agent.step
        logger.info("resumed %s at step %d", self.out, self.agent.step)
        return self.agent.step

    def _check_same_run(self, path: Path) -> None:
        saved = read_json(path / "config.json")
        current = checkpoint_config(self.agent, self.run_config)
        for config in (saved, current):
            for key in RESUMABLE_CHANGES:
                config.get("run", {}).get("trainer", {}).pop(key, None)
        saved.setdefault("run", current["run"])  # checkpoints of older versions lack "run"
        for part, config in (("agent", self.agent.config), ("policy", self.agent.policy.config)):
            # fields added by a later version are absent from older checkpoints: they were
            # trained with the field's default
            fields = saved.get(part, {}).get("config")
            if isinstance(fields, dict):
                for name, default in _field_defaults(type(config)).items():
                    fields.setdefault(name, default)
        diff = _differences(
            {k: saved.get(k) for k in ("agent", "policy", "run")},
            {k: current.get(k) for k in ("agent", "policy", "run")},
        )
        if diff:
            raise CheckpointError(
                f"cannot resume from {path}: the settings differ from the checkpoint's "
                f"({'; '.join(diff)}); use the run's settings or another output directory"
            )

    # ------------------------------------------------------------------ fit
    def fit(self, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
        """Train (after :meth:`resume`, the remaining steps) through the one training loop
        (:class:`~embodied_rl.rl.loop.TrainingLoop`; ``callbacks`` hook into it, e.g.
        ``StopOnThreshold("eval/success_rate", 0.95)``); returns the last evaluation (empty
        without an evaluation environment)."""
        c, agent = self.config, self.agent
        resumed = self._resumed_at is not None
        last_eval = (
            {k: v for k, v in self.history[-1].items() if k != "step"}
            if resumed and self.history
            else {}
        )
        parallel = data_parallel()
        sample = self.sampler.sample
        if parallel is not None:  # started by torchrun: data-parallel
            synchronize(trained_parameters(agent.optimizers().values()),
                        agent.modules().values(), parallel)  # fmt: skip
            sample = lambda: shard(self.sampler.sample(), parallel)  # noqa: E731
        main = parallel is None or parallel.is_main
        writer = MetricsLogger(self.out if main else None, c.tensorboard, self._resumed_at)
        loop = TrainingLoop(
            lambda i: agent.update(sample()),
            c.steps, start=agent.step if resumed else 0, desc=agent.agent_type, log=writer,
            log_every=c.log_every, progress=c.progress, evaluate=self._evaluate,
            eval_every=c.eval_every, checkpoint=lambda: self._checkpoint(loop.state_dict()),
            checkpoint_every=c.checkpoint_every,
            checkpoint_note=lambda: last_checkpoint_note(self.checkpoints), callbacks=callbacks,
            sums=self._sums, counts=self._counts, parallel=parallel,
        )  # fmt: skip
        agent.train_mode(True)
        try:
            loop.run()
        finally:
            writer.close()
        if loop.evaluations:
            last_eval = {k: v for k, v in loop.evaluations[-1].items() if k != "step"}
        return last_eval


def _field_defaults(config_class: type) -> dict[str, Any]:
    """The JSON form of every field default of a config dataclass (factories called)."""
    defaults = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return json.loads(json.dumps(defaults, default=str))


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON trees differ, as ``"path: saved -> current"``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [
            line
            for key in sorted(set(saved) | set(current))
            for line in _differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        ]
    return [] if saved == current else [f"{prefix[:-1]}: {saved!r} -> {current!r}"]


# ---------------------------------------------------------------------- building blocks
def default_policy(algo: str, data: OfflineDataset, obs_key: str | None = None, **overrides: Any):
    """A policy sized for ``data``: the MLP policy (the DT's own transformer for ``dt``).
    ``obs_key`` defaults to ``"state"``, or to the only observation key (``"observation"``
    for a plain ``Box`` dataset such as the locomotion ones)."""
    if obs_key is None:
        keys = list(data.observations)
        obs_key = "state" if "state" in keys or len(keys) != 1 else keys[0]
    if obs_key not in data.observations:
        raise ValueError(
            f"obs_key={obs_key!r} is not an observation of the dataset ({sorted(data.observations)})"
        )
    obs_dim = int(np.prod(data.observations[obs_key].shape[1:]))
    space = data.action_space
    bounds = {
        "action_low": tuple(float(x) for x in space.low),
        "action_high": tuple(float(x) for x in space.high),
    }
    if algo == "dt":
        target = float(data.metadata.get("ref_max_score", data.episode_returns().max()))
        config = DTPolicyConfig(obs_dim=obs_dim, obs_key=obs_key, target_return=target, **bounds)
        return DecisionTransformerPolicy(replace(config, **overrides))
    head = DEFAULT_HEADS.get(algo, "gaussian")
    config = MLPConfig(obs_dim=obs_dim, obs_key=obs_key, head=head, **bounds)
    return MLPPolicy(replace(config, **overrides))


def vla_for_dataset(data: OfflineDataset, preset: str = "tiny", **overrides: Any) -> VLAPolicy:
    """A VLA policy for ``data``'s images and actions: ``vla_preset(preset)`` with the image
    size and action bounds of the data, then ``overrides``."""
    from embodied_rl.policies.vla import vla_preset

    if "image" not in data.observations or "instruction" not in data.observations:
        raise ValueError(
            f"the VLA policy reads images and instructions; the dataset has observations "
            f"{sorted(data.observations)} (collect with --obs-mode rgb+state)"
        )
    space = data.action_space
    settings = {
        "image_size": int(data.observations["image"].shape[1]),
        "action_low": tuple(float(x) for x in space.low),
        "action_high": tuple(float(x) for x in space.high),
        **overrides,
    }
    if "proprio" not in data.observations:
        settings.setdefault("proprio_dim", 0)
    return VLAPolicy(vla_preset(preset, **settings))


def make_sampler(
    agent: Agent,
    data: OfflineDataset,
    batch_size: int = 256,
    seed: int = 0,
    preferences: PreferenceDataset | None = None,
):
    """The batches ``agent`` trains on: transitions (+ what its options ask for), frame
    histories for the VLA policy, trajectory windows for the Decision Transformer, labelled
    segment pairs of ``preferences`` for CPL."""
    policy = agent.policy
    if getattr(agent, "needs_preferences", False):
        if preferences is None:
            raise ValueError(
                f"{agent.agent_type} learns from preferences: pass preferences= (a "
                "PreferenceDataset, e.g. load_preferences('scripted', data)) or, on the command "
                "line, --preferences scripted|SESSION_DIR|FILE.jsonl"
            )
        read = getattr(policy, "input_keys", None) or (policy.config.obs_key,)
        keys = None if isinstance(policy, VLAPolicy) else tuple(sorted(read))
        return PreferenceSampler(preferences, SamplerConfig(batch_size, seed=seed, obs_keys=keys))
    if agent.uses_history:
        keys = (policy.config.obs_key,)
        config = SamplerConfig(batch_size=batch_size, seed=seed, obs_keys=keys)
        return HistorySampler(data, history=policy.config.context, config=config)
    if isinstance(policy, VLAPolicy):
        keys, history = None, policy.config.history
    else:
        read = getattr(policy, "input_keys", None) or (policy.config.obs_key,)  # CNN: image
        keys = tuple({*read, agent.critic_obs_key})
        keys, history = tuple(k for k in sorted(keys) if k in data.observations), None
    config = SamplerConfig(batch_size=batch_size, seed=seed, obs_keys=keys)
    gamma = getattr(agent.config, "discount", 0.99)
    options = {**agent.sampler_options, **reward_transform(agent.config)}
    return AgentSampler(data, gamma, config, history=history, **options)


def train(
    algo: str,
    data: OfflineDataset,
    out: str | os.PathLike,
    agent_config: Any = None,
    trainer_config: TrainerConfig | None = None,
    policy: Policy | None = None,
    eval_env: Callable[[], gym.Env] | None = None,
    resume: bool | str | os.PathLike = False,
    preferences: PreferenceDataset | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[Agent, dict[str, float]]:
    """Build policy, agent and sampler for ``data`` and run the loop; returns the agent and
    its last evaluation. ``resume``: continue from ``out/checkpoints/last`` (same settings;
    ``steps`` may grow), giving on CPU exactly the parameters of an uninterrupted run; a path
    continues from that earlier checkpoint of the run instead (one ``last`` names is corrupt,
    say). The
    trained policy is also written to ``out/policy`` (``config.json`` + safetensors), the
    artifact that ``load_policy``, ``erl evaluate`` and ``finetune_ppo`` read. ``preferences``:
    the labelled segment pairs an agent that learns from preferences (``"cpl"``) trains on.
    ``callbacks``: hooks into the training loop (:class:`~embodied_rl.rl.loop.Callback`).

    The default policy is built after seeding with ``trainer_config.seed``; a ``policy``
    passed in was initialised before this call, so seed first for reproducible initial
    weights: ``seed_everything(seed); policy = default_policy(algo, data, ...)``."""
    config = trainer_config or TrainerConfig()
    seed_everything(config.seed)
    policy = policy if policy is not None else default_policy(algo, data)
    agent = make_agent(algo, policy, agent_config)
    agent.fit_observation_normalizers(data.observations)
    sampler = make_sampler(agent, data, config.batch_size, config.seed, preferences)
    if eval_env is None and config.eval_episodes:
        eval_env = env_factory(data)
    run = {"algo": algo, "dataset": data.metadata.get("dataset_id")}
    trainer = Trainer(agent, sampler, config, out, eval_env, score_reference(data), run)
    if resume:
        trainer.resume(None if resume is True else resume)
    result = trainer.fit(callbacks)
    parallel = data_parallel()
    if parallel is None or parallel.is_main:
        agent.policy.save(Path(out) / "policy")
    if result and not math.isfinite(result.get("eval/mean_return", 0.0)):
        logger.warning("evaluation returned a non-finite mean return: %s", result)
    return agent, result
