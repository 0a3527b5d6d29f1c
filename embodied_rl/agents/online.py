"""Online fine-tuning of IQL, CQL and Cal-QL agents trained offline (offline-to-online RL).

``finetune_online(agent, data, env_fn, OnlineConfig(...), out)`` continues an agent (usually
``load_agent(offline_run / "checkpoints")``) in its environment: each environment step takes an
action sampled from the stochastic policy, appends the transition to a
:class:`~embodied_rl.agents.replay.ReplayBuffer` seeded with the offline dataset, then runs
``updates_per_step`` gradient steps on batches mixing offline and online data (Cal-QL's
symmetric 50/50 by default; ``mixing_ratio=None`` samples the union uniformly, as the IQL paper).
Cal-QL's Monte-Carlo lower bound is computed for every online episode when it ends. The
agents' update rules do not change between the phases, and observation statistics stay those
of the offline data (as in CORL).

Before the first online step and every ``eval_every`` environment steps the deterministic
policy is evaluated (``eval/normalized_score``, ``eval/success_rate``); every finished training
episode adds to the regret, CORL's ``mean(1 - success)`` over the online training episodes.
Metrics go to ``out/metrics.csv`` and TensorBoard with environment steps on the x-axis.

Checkpoints (:mod:`embodied_rl.agents.checkpoint`, plus the online part of the replay buffer as
``replay_<step>.safetensors`` beside them) are written at the first episode end after every
``checkpoint_every`` environment steps, where nothing of a running episode is lost; with
``resume=True`` a run continues from the newest one and reproduces the uninterrupted run
exactly (episode ``i`` resets the environment with a seed derived from ``(seed, i)``, and the
checkpoint holds every random state). Ctrl-C stops the run and keeps the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from embodied_rl.agents.base import Agent
from embodied_rl.agents.checkpoint import (
    LAST,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from embodied_rl.agents.data import reward_transform
from embodied_rl.agents.replay import ReplayBuffer
from embodied_rl.agents.trainer import (
    env_factory,
    evaluate_held_out,
    score_reference,
    seed_everything,
)
from embodied_rl.datasets import OfflineDataset, normalized_score
from embodied_rl.datasets.offline import OBS_KEY
from embodied_rl.policies import VLAPolicy
from embodied_rl.rl.loop import LoopSettings, TrainingLoop
from embodied_rl.utils.io import write_text_atomic
from embodied_rl.utils.metrics import MetricsLogger

logger = logging.getLogger(__name__)

ONLINE_AGENTS = ("iql", "cql", "calql")
# OnlineConfig fields a resumed run must share with the interrupted one
_IDENTITY = ("mixing_ratio", "updates_per_step", "batch_size", "capacity", "seed")


@dataclass(frozen=True)
class OnlineConfig(LoopSettings):
    """Options of online fine-tuning, in environment steps (the shared ones are
    :class:`~embodied_rl.rl.loop.LoopSettings`'); defaults follow Cal-QL / CORL (UTD 1,
    batch 256, 50/50)."""

    env_steps: int = 100_000  # online environment steps
    mixing_ratio: float | None = 0.5  # offline fraction of each batch; None: uniform over all
    updates_per_step: int = 1  # gradient steps per environment step (the UTD ratio)
    capacity: int | None = None  # online transitions kept (a ring); None: env_steps (all)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("env_steps", "updates_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"capacity={self.capacity} must be >= 1 or None (env_steps)")
        if self.mixing_ratio is not None and not 0.0 <= self.mixing_ratio <= 1.0:
            raise ValueError(
                f"mixing_ratio={self.mixing_ratio} must lie in [0, 1] (offline fraction of a "
                "batch; Cal-QL: 0.5) or be None (uniform over offline + online, as IQL)"
            )


@dataclass
class OnlineResult:
    """What a fine-tuning run measured (also written to ``out/result.json``)."""

    offline: dict[str, float]  # evaluation before the first online step
    final: dict[str, float]  # evaluation after the last one
    evaluations: list[dict[str, float]]  # every evaluation, with "env_step"
    episodes: list[dict[str, float]]  # training episodes: env_step, return, success, length
    regret: float  # CORL: mean over training episodes of 1 - success (nan before the first)
    env_steps: int
    gradient_steps: int
    wall_s: float = 0.0  # this call's time (a resumed run counts from the resume)
    config: dict[str, Any] = field(default_factory=dict)


def regret(episodes: list[dict[str, float]]) -> float:
    """CORL's offline-to-online regret: the mean over online training episodes of
    ``1 - success`` (``1 - normalized return / 100``, clipped to [0, 1], for environments that
    report no success); nan before the first episode ends."""
    if not episodes:
        return float("nan")
    if all("success" in e for e in episodes):
        return float(np.mean([1.0 - e["success"] for e in episodes]))
    scores = [e.get("normalized_return", float("nan")) for e in episodes]
    return float(np.mean(1.0 - np.clip(np.asarray(scores) / 100.0, 0.0, 1.0)))


def episode_seed(seed: int, index: int) -> int:
    """The reset seed of training episode ``index`` (independent of where a run resumed)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def check_online_agent(agent: Agent) -> None:
    """Raise a ``ValueError`` unless ``agent`` can be fine-tuned online here."""
    if agent.agent_type not in ONLINE_AGENTS:
        raise ValueError(
            f"online fine-tuning supports {ONLINE_AGENTS}; got agent {agent.agent_type!r} "
            "(BC has no critic to improve with; PPO fine-tuning is agents.finetune.finetune_ppo)"
        )
    if isinstance(agent.policy, VLAPolicy) or agent.uses_history:
        raise ValueError(
            f"online fine-tuning replays flat observations; {type(agent.policy).__name__} "
            "needs frame histories in the replay buffer (not implemented): use the MLP policy"
        )


def _as_dict(obs: Any) -> dict[str, Any]:
    return obs if isinstance(obs, dict) else {OBS_KEY: obs}


# ---------------------------------------------------------------------- the loop
class _OnlineRun:
    """One call of :func:`finetune_online`: buffer, environments, counters and checkpoints."""

    def __init__(
        self,
        agent: Agent,
        data: OfflineDataset,
        env_fn: Callable[[], gym.Env],
        config: OnlineConfig,
        out: Path,
    ) -> None:
        check_online_agent(agent)
        self.agent, self.data, self.env_fn, self.config, self.out = agent, data, env_fn, config, out
        c = config
        keys = {agent.policy.config.obs_key, agent.critic_obs_key}
        self.buffer = ReplayBuffer(
            data,
            sorted(keys),
            c.capacity or c.env_steps,
            gamma=agent.config.discount,
            batch_size=c.batch_size,
            mixing_ratio=c.mixing_ratio,
            mc_return=bool(agent.sampler_options.get("mc_return")),
            seed=c.seed,
            **reward_transform(agent.config),
        )
        self.reference = score_reference(data)
        self.env_steps = 0
        self.n_episodes_started = 0
        self.evaluations: list[dict[str, float]] = []
        self.episodes: list[dict[str, float]] = []
        self._checkpoint_due = False

    # ------------------------------------------------------------------ state
    def _state(self, finished: bool) -> dict[str, Any]:
        return {
            "online": {
                "env_steps": self.env_steps,
                "n_episodes_started": self.n_episodes_started,
                "config": dataclasses.asdict(self.config),
                "evaluations": self.evaluations,
                "episodes": self.episodes,
                "replay_rng": self.buffer.rng.bit_generator.state,
                "finished": finished,
            }
        }

    def checkpoint(self, finished: bool = False) -> Path:
        """Replay file first, then the agent's checkpoint (whose ``last`` pointer makes both
        current), then drop replay files whose checkpoint was pruned."""
        root = self.out / "checkpoints"
        if finished:
            self.buffer.end_episode()  # the run ends: its last episode is truncated here
        self.buffer.save(root / f"replay_{self.agent.step:09d}.safetensors")
        path = save_checkpoint(
            self.agent, root, None, self._state(finished), self.config.keep_checkpoints
        )
        kept = {p.name.removeprefix("step_") for p in root.glob("step_*") if p.is_dir()}
        for replay in root.glob("replay_*.safetensors"):
            if replay.stem.removeprefix("replay_") not in kept:
                replay.unlink(missing_ok=True)
        return path

    def restore(self) -> bool:
        """Load the newest checkpoint of ``out`` (False if there is none)."""
        root = self.out / "checkpoints"
        if not (root / LAST).is_file():
            return False
        path = latest_checkpoint(root)
        meta = json.loads((path / "state.json").read_text())
        if "online" not in meta:
            raise ValueError(f"{path} is not an online fine-tuning checkpoint (an offline run?)")
        state = meta["online"]
        saved = {k: state["config"].get(k) for k in _IDENTITY}
        ours = {k: getattr(self.config, k) for k in _IDENTITY}
        if saved != ours:
            diff = sorted(k for k in _IDENTITY if saved[k] != ours[k])
            raise ValueError(
                f"cannot resume {self.out}: {diff} differ from the interrupted run "
                f"({ {k: saved[k] for k in diff} } there, { {k: ours[k] for k in diff} } now)"
            )
        load_checkpoint(self.agent, path)
        self.buffer.load(root / f"replay_{path.name.removeprefix('step_')}.safetensors")
        self.buffer.rng.bit_generator.state = state["replay_rng"]
        self.env_steps = int(state["env_steps"])
        self.n_episodes_started = int(state["n_episodes_started"])
        self.evaluations, self.episodes = state["evaluations"], state["episodes"]
        logger.info("resumed %s at environment step %d (%s)", self.out, self.env_steps, path)
        return True

    # ------------------------------------------------------------------ pieces
    def evaluate(self) -> dict[str, float]:
        c = self.config
        if c.eval_episodes == 0:
            return {}
        result = evaluate_held_out(  # the offline trainer's evaluation, on the same scenes
            self.agent.policy, self.env_fn, c.eval_episodes, c.seed, self.reference
        )
        self.evaluations.append({"env_step": self.env_steps, **result})
        return result

    def _reset(self, env: gym.Env) -> Any:
        seed = episode_seed(self.config.seed, self.n_episodes_started)
        self.n_episodes_started += 1
        self.agent.policy.reset()
        return env.reset(seed=seed)[0]

    def _record_episode(self, ret: float, length: int, info: dict[str, Any]) -> dict[str, float]:
        episode = {"env_step": self.env_steps, "return": ret, "length": float(length)}
        if "success" in info or "is_success" in info:
            episode["success"] = float(bool(info.get("success", info.get("is_success"))))
        if self.reference is not None:
            episode["normalized_return"] = float(normalized_score(ret, self.reference))
        self.episodes.append(episode)
        metrics = {f"online/episode_{k}": v for k, v in episode.items() if k != "env_step"}
        return {**metrics, "online/regret": regret(self.episodes)}

    def _due(self, every: int) -> bool:
        return bool(every) and self.env_steps % every == 0

    # ------------------------------------------------------------------ run
    def run(self, resume: bool) -> OnlineResult:
        c, agent = self.config, self.agent
        start = time.perf_counter()
        resumed = resume and self.restore()
        if not resumed:
            if (self.out / "checkpoints" / LAST).exists():
                raise FileExistsError(
                    f"{self.out} already holds an online run; pass resume=True (--resume) to "
                    "continue it, or choose another output directory"
                )
            seed_everything(c.seed)
        agent.fit_observation_normalizers(self.data.observations)  # unfitted ones only
        writer = MetricsLogger(self.out, c.tensorboard, self.env_steps if resumed else None)
        if not resumed:
            writer.write(0, self.evaluate())  # the offline policy's score
        env = self.env_fn()
        try:
            if self.env_steps < c.env_steps:
                self._loop(env, writer)
                last_eval = self.evaluations[-1]["env_step"] if self.evaluations else -1
                if last_eval != self.env_steps:
                    writer.write(self.env_steps, self.evaluate())
                self.checkpoint(finished=True)
        except KeyboardInterrupt:
            last = self.out / "checkpoints" / LAST
            kept = last.read_text().strip() if last.exists() else "none written yet"
            logger.warning(
                "interrupted at environment step %d; last checkpoint: %s (resume=True continues "
                "from it)",
                self.env_steps,
                kept,
            )
            raise
        finally:
            writer.close()
            env.close()
        result = self.result(time.perf_counter() - start)
        write_text_atomic(self.out / "result.json", json.dumps(dataclasses.asdict(result)))
        return result

    def _loop(self, env: gym.Env, writer: MetricsLogger) -> None:
        """Environment steps in the one training loop: a step acts once, stores the
        transition and runs ``updates_per_step`` updates; the loop logs their means every
        ``log_every`` environment steps and evaluates every ``eval_every``. A checkpoint is due
        every ``checkpoint_every`` steps and written at the next episode end (resume restarts
        an episode)."""
        c, agent, buffer = self.config, self.agent, self.buffer
        low, high = env.action_space.low, env.action_space.high
        agent.train_mode(True)
        # the next episode starts at the next step, after the step's checkpoint: a resumed run
        # starts it the same way
        episode: dict[str, Any] = {"obs": None, "return": 0.0, "length": 0}
        clock = {"start": time.perf_counter(), "steps": 0}  # of the logging window

        def env_step(i: int) -> dict[str, float]:
            if episode["obs"] is None:
                episode.update({"obs": self._reset(env), "return": 0.0, "length": 0})
            obs = episode["obs"]
            action = np.clip(agent.policy.act(_as_dict(obs), deterministic=False), low, high)
            next_obs, reward, terminated, truncated, info = env.step(action)
            buffer.add(obs, action, float(reward), next_obs, bool(terminated), bool(truncated))
            episode["return"] += float(reward)
            episode["length"] += 1
            sums: dict[str, float] = defaultdict(float)
            for _ in range(c.updates_per_step):
                for key, value in agent.update(buffer.sample()).items():
                    sums[key] += value
            self.env_steps += 1
            metrics = {f"train/{k}": v / c.updates_per_step for k, v in sums.items()}
            clock["steps"] += 1
            if self._due(c.log_every) or self.env_steps == c.env_steps:  # the loop logs now
                now = time.perf_counter()
                metrics["online/steps_per_s"] = clock["steps"] / max(now - clock["start"], 1e-9)
                clock.update(start=now, steps=0)
            self._checkpoint_due |= self._due(c.checkpoint_every)
            episode["ended"] = terminated or truncated
            if episode["ended"]:
                record = self._record_episode(episode["return"], episode["length"], info)
                writer.write(self.env_steps, record)
                episode["obs"] = None
            else:
                episode["obs"] = next_obs
            return metrics

        def checkpoint_at_episode_end() -> None:  # after the step's log and evaluation
            if episode["ended"] and self._checkpoint_due and self.env_steps < c.env_steps:
                self.checkpoint()
                self._checkpoint_due = False

        def score(metrics: Mapping[str, float]) -> dict[str, str]:
            last = self.evaluations[-1] if self.evaluations else {}
            return {"score": f"{last.get('eval/normalized_score', float('nan')):.1f}"}

        TrainingLoop(
            env_step, c.env_steps, start=self.env_steps, desc=f"{agent.agent_type} online",
            log=writer, log_every=c.log_every, prefix="", progress=c.progress,
            evaluate=self.evaluate, eval_every=c.eval_every,
            checkpoint=checkpoint_at_episode_end, checkpoint_every=1, postfix=score,
        ).run()  # fmt: skip

    def result(self, wall_s: float) -> OnlineResult:
        offline = next((e for e in self.evaluations if e["env_step"] == 0), {})
        strip = lambda e: {k: v for k, v in e.items() if k != "env_step"}  # noqa: E731
        return OnlineResult(
            offline=strip(offline),
            final=strip(self.evaluations[-1]) if self.evaluations else {},
            evaluations=self.evaluations,
            episodes=self.episodes,
            regret=regret(self.episodes),
            env_steps=self.env_steps,
            gradient_steps=self.agent.step,
            wall_s=wall_s,
            config=dataclasses.asdict(self.config),
        )


def finetune_online(
    agent: Agent,
    data: OfflineDataset,
    env_fn: Callable[[], gym.Env] | None = None,
    config: OnlineConfig | None = None,
    out: str | os.PathLike = "outputs/online",
    resume: bool = False,
) -> OnlineResult:
    """Fine-tune an offline-trained IQL, CQL or Cal-QL ``agent`` online.

    Args:
        agent: the agent to continue, e.g. ``load_agent("outputs/iql/checkpoints")``; its
            weights, optimiser state and observation statistics carry over.
        data: the offline dataset it was trained on (seeds the replay buffer; its metadata
            gives the environment and the reference returns of the normalized score).
        env_fn: builds the environment (default: the dataset's, via ``env_factory(data)``);
            called once for training and once per evaluation.
        out: run directory: ``metrics.csv``, ``tensorboard/``, ``checkpoints/``, ``result.json``.
        resume: continue from the newest checkpoint in ``out`` (a fresh start if there is none).
    """
    config = config or OnlineConfig()
    env_fn = env_fn or env_factory(data)
    return _OnlineRun(agent, data, env_fn, config, Path(out)).run(resume)
