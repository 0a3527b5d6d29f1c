"""The one training loop every offline agent shares.

``Trainer(agent, sampler, config, out).fit()`` draws batches, calls ``agent.update``, logs
the mean metrics to CSV and TensorBoard, shows a progress bar with gradient steps/s, runs
evaluation episodes (normalized score with the dataset's reference returns, success rate)
and writes checkpoints. A non-finite loss raises :class:`NonFiniteLossError` naming the
loss and the step; no checkpoint is written after it, so the last good one stays.
:func:`train` builds the policy, agent and sampler for a dataset and runs the loop.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from embodied_rl.agents.base import Agent, NonFiniteLossError, make_agent
from embodied_rl.agents.checkpoint import save_checkpoint
from embodied_rl.agents.data import AgentSampler
from embodied_rl.agents.dt import DecisionTransformerPolicy, DTPolicyConfig
from embodied_rl.datasets import OfflineDataset, normalized_score
from embodied_rl.datasets.samplers import HistorySampler, SamplerConfig
from embodied_rl.evaluation.rollout import run_episodes
from embodied_rl.policies import MLPConfig, MLPPolicy, Policy, VLAPolicy

logger = logging.getLogger(__name__)

# The policy head each algorithm trains by default (BC: MSE; the critics' agents: Gaussian).
DEFAULT_HEADS = {"bc": "deterministic", "iql": "gaussian", "cql": "gaussian", "calql": "gaussian"}


@dataclass(frozen=True)
class TrainerConfig:
    """Options of the shared loop (the algorithm's options live in its own config)."""

    steps: int = 100_000  # gradient steps
    batch_size: int = 256
    seed: int = 0  # seeds python, numpy, torch and the sampler
    log_every: int = 1_000  # steps between metric rows (means over the interval)
    eval_every: int = 10_000  # steps between evaluations; 0: only after the last step
    eval_episodes: int = 10  # 0: no evaluation
    checkpoint_every: int = 10_000  # steps between checkpoints; 0: only after the last step
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    progress: bool = True  # tqdm bar with steps/s
    tensorboard: bool = True  # also write TensorBoard events (CSV is always written)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("eval_every", "eval_episodes", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the global generator other code may use)
    torch.manual_seed(seed)


class MetricsWriter:
    """Rows ``step, name, value`` to ``metrics.csv`` and, if available, TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool = True) -> None:
        out.mkdir(parents=True, exist_ok=True)
        new = not (out / "metrics.csv").exists()
        self._file = open(out / "metrics.csv", "a", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value", "wall_s"])
        self._start = time.perf_counter()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed; metrics go to metrics.csv only")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        wall = time.perf_counter() - self._start
        for name, value in metrics.items():
            self._csv.writerow([step, name, f"{value:.6g}", f"{wall:.2f}"])
            if self._tb is not None:
                self._tb.add_scalar(name, value, step)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


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
    """A function building the environment a dataset was collected on (its metadata)."""
    collection = data.metadata.get("embodied_rl", {}).get("collection")
    if not collection or "env_id" not in collection:
        raise ValueError(
            "the dataset's metadata does not name its environment (embodied_rl.collection."
            "env_id); pass eval_env= or set eval_episodes=0"
        )

    def build() -> gym.Env:
        from embodied_rl.envs import make

        kwargs = dict(collection.get("env_kwargs") or {})
        if collection.get("randomization") is not None:
            kwargs["randomization"] = collection["randomization"]
        return make(collection["env_id"], **kwargs)

    return build


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


def _reference(data: OfflineDataset) -> Any:
    meta = data.metadata
    return data if "ref_min_score" in meta and "ref_max_score" in meta else None


# ---------------------------------------------------------------------- the loop
class Trainer:
    """Runs ``agent.update`` for ``config.steps`` steps with logging, evaluation and checkpoints."""

    def __init__(
        self,
        agent: Agent,
        sampler: Any,
        config: TrainerConfig,
        out: str | os.PathLike,
        eval_env: Callable[[], gym.Env] | None = None,
        reference: Any = None,
    ) -> None:
        self.agent, self.sampler, self.config = agent, sampler, config
        self.out = Path(out)
        self.eval_env, self.reference = eval_env, reference
        self.history: list[dict[str, float]] = []  # evaluation results with "step"

    def _evaluate(self) -> dict[str, float]:
        if self.eval_env is None or self.config.eval_episodes == 0:
            return {}
        env = self.eval_env()
        try:
            seed = 10_000 + self.config.seed * 1_000
            result = evaluate(
                self.agent.policy, env, self.config.eval_episodes, seed, self.reference
            )
        finally:
            env.close()
        self.history.append({"step": self.agent.step, **result})
        return result

    def _checkpoint(self) -> Path:
        return save_checkpoint(
            self.agent,
            self.out / "checkpoints",
            self.sampler,
            {"evaluations": self.history},
            self.config.keep_checkpoints,
        )

    def fit(self) -> dict[str, float]:
        """Train; returns the last evaluation (empty without an evaluation environment)."""
        c, agent = self.config, self.agent
        writer = MetricsWriter(self.out, c.tensorboard)
        sums: dict[str, float] = defaultdict(float)
        count, last_eval = 0, {}
        bar = tqdm(total=c.steps, desc=agent.agent_type, unit="step", disable=not c.progress)
        agent.train_mode(True)
        try:
            for _ in range(c.steps):
                try:
                    metrics = agent.update(self.sampler.sample())
                except NonFiniteLossError as error:
                    last = self.out / "checkpoints" / "last"
                    kept = last.read_text().strip() if last.exists() else "none written yet"
                    raise NonFiniteLossError(error.loss, error.step, error.value) from (
                        RuntimeError(f"last good checkpoint: {kept}")
                    )
                for key, value in metrics.items():
                    sums[key] += value
                count += 1
                bar.update(1)
                step = agent.step
                if step % c.log_every == 0 or step == c.steps:
                    means = {f"train/{k}": v / count for k, v in sums.items()}
                    writer.write(step, means)
                    bar.set_postfix({k[6:]: f"{v:.3g}" for k, v in list(means.items())[:3]})
                    sums.clear()
                    count = 0
                if (c.eval_every and step % c.eval_every == 0) or step == c.steps:
                    last_eval = self._evaluate()
                    if last_eval:
                        writer.write(step, last_eval)
                        logger.info("step %d: %s", step, last_eval)
                if (c.checkpoint_every and step % c.checkpoint_every == 0) or step == c.steps:
                    self._checkpoint()
        finally:
            bar.close()
            writer.close()
        return last_eval


# ---------------------------------------------------------------------- building blocks
def default_policy(algo: str, data: OfflineDataset, obs_key: str = "state", **overrides: Any):
    """A policy sized for ``data``: the MLP policy (the DT's own transformer for ``dt``)."""
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


def make_sampler(agent: Agent, data: OfflineDataset, batch_size: int = 256, seed: int = 0):
    """The batches ``agent`` trains on: transitions (+ what its options ask for), frame
    histories for the VLA policy, trajectory windows for the Decision Transformer."""
    policy = agent.policy
    if agent.uses_history:
        keys = (policy.config.obs_key,)
        config = SamplerConfig(batch_size=batch_size, seed=seed, obs_keys=keys)
        return HistorySampler(data, history=policy.config.context, config=config)
    if isinstance(policy, VLAPolicy):
        keys, history = None, policy.config.history
    else:
        keys = tuple({policy.config.obs_key, getattr(agent.config, "critic_obs_key", "state")})
        keys, history = tuple(k for k in keys if k in data.observations), None
    config = SamplerConfig(batch_size=batch_size, seed=seed, obs_keys=keys)
    gamma = getattr(agent.config, "discount", 0.99)
    return AgentSampler(data, gamma, config, history=history, **agent.sampler_options)


def train(
    algo: str,
    data: OfflineDataset,
    out: str | os.PathLike,
    agent_config: Any = None,
    trainer_config: TrainerConfig | None = None,
    policy: Policy | None = None,
    eval_env: Callable[[], gym.Env] | None = None,
) -> tuple[Agent, dict[str, float]]:
    """Build policy, agent and sampler for ``data`` and run the loop; returns the agent and
    its last evaluation."""
    config = trainer_config or TrainerConfig()
    seed_everything(config.seed)
    policy = policy if policy is not None else default_policy(algo, data)
    agent = make_agent(algo, policy, agent_config)
    agent.fit_observation_normalizers(data.observations)
    sampler = make_sampler(agent, data, config.batch_size, config.seed)
    if eval_env is None and config.eval_episodes:
        eval_env = env_factory(data)
    trainer = Trainer(agent, sampler, config, out, eval_env, _reference(data))
    result = trainer.fit()
    if result and not math.isfinite(result.get("eval/mean_return", 0.0)):
        logger.warning("evaluation returned a non-finite mean return: %s", result)
    return agent, result
