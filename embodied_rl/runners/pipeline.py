"""The main job end to end: demonstrations -> BC -> offline IQL -> PPO fine-tuning -> transfer
evaluation -> report.

``run_pipeline(config, out)`` (``erl pipeline`` / ``make demo``) runs the stages in order:

1. ``collect``: scripted-expert demonstrations of a tabletop task under domain randomization,
   with images, the instruction and the state (for the critics), as a Minari dataset.
2. ``bc``: behaviour cloning of a VLA policy (the tiny preset by default: conv encoder with
   FiLM, MiniLM instruction embedding, TokenLearner, causal transformer, 256-bin tokens).
3. ``iql``: offline IQL starting from the BC policy (state critics, advantage-weighted token
   cross-entropy for the actor).
4. ``ppo``: online PPO fine-tuning of the IQL policy under (stronger) randomization with a
   KL penalty to the BC policy.
5. ``transfer``: every stage's policy on the training domain, held-out physics/visual
   parameters and the PyBullet twin, with Wilson intervals and sensitivity sweeps; rollout
   GIFs of the final policy.
6. ``report``: ``report.md`` and a self-contained ``report.html``.

Every stage writes into its own directory and finishes by writing ``stage.json`` atomically;
with ``resume=True`` finished stages are skipped and the training stages continue from their
last checkpoint, so an interrupted run loses at most the work since the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embodied_rl.agents.ppo import PPOConfig
from embodied_rl.config import CONFIG_DIR, as_dict, load_config
from embodied_rl.utils.io import write_text_atomic

logger = logging.getLogger(__name__)

STAGES = ("collect", "bc", "iql", "ppo", "transfer", "report")
DEFAULT_CONFIG = CONFIG_DIR / "pipeline" / "quickstart.yaml"


# ---------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class CollectStage:
    """Demonstrations: ``episodes`` of the scripted expert (``tier``) under ``randomization``."""

    episodes: int = 300
    tier: str = "expert"
    noise: float | None = None  # expert action-noise std (None: the tier's default)
    randomization: str | None = "light"
    workers: int = 1


@dataclass(frozen=True)
class PolicyStage:
    """The VLA policy: a preset plus field overrides (see ``embodied_rl.policies.vla``)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from embodied_rl.policies.vla import vla_preset

        try:  # every key and value checked when the config loads, not at the BC stage
            vla_preset(self.preset, **self.overrides)
        except (KeyError, TypeError, ValueError) as error:
            message = error.args[0] if error.args else error
            raise ValueError(f"preset {self.preset!r}: {message}") from None


@dataclass(frozen=True)
class OfflineStage:
    """An offline training stage (BC or IQL) with the shared trainer's options."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 3e-4  # the policy's: BC's learning_rate, IQL's actor_learning_rate
    checkpoint_every: int = 250
    options: dict[str, Any] = field(default_factory=dict)  # more agent-config fields


@dataclass(frozen=True)
class FinetuneStage:
    """Where and how long the PPO stage fine-tunes (``finetune_ppo``'s
    :class:`~embodied_rl.agents.finetune.PPOFinetuneConfig`; PPO's own options are the
    pipeline's ``ppo`` section, a :class:`~embodied_rl.agents.ppo.PPOConfig`)."""

    env_steps: int = 4096
    n_envs: int = 4
    # environment steps (part of ``env_steps``) that first train only the new value head, whose
    # gradients otherwise reach the shared trunk while it is still noise
    value_warmup_steps: int = 1024
    checkpoint_every: int = 1024  # environment steps; an interrupted stage resumes from here
    randomization: str | None = "default"
    # sparse: returns <= 1. The dense reward's returns (up to ~30) gave value losses of 10-100
    # whose gradients, through the trunk the value head shares, moved the policy (approximate
    # KL 0.4-3 per rollout, success 100% -> 50%); sparse: KL 0.01-0.03, success kept
    reward_type: str = "sparse"

    def __post_init__(self) -> None:
        if not 0 <= self.value_warmup_steps < self.env_steps:
            raise ValueError(
                f"finetune.value_warmup_steps={self.value_warmup_steps} must lie in [0, "
                f"finetune.env_steps={self.env_steps}): the warm-up is part of the stage's "
                "environment steps"
            )


# PPO with a KL penalty to the BC policy: short rollouts, a small learning rate (the
# pipeline's ``seed`` and ``threads`` replace the config's own when the stage runs)
PIPELINE_PPO = PPOConfig(n_steps=256, batch_size=64, n_epochs=4, learning_rate=3e-5, kl_coef=0.1)


@dataclass(frozen=True)
class TransferStage:
    """Evaluation domains: ``source`` (the training domain), held-out ``targets`` (domain
    strings of ``embodied_rl.evaluation.transfer.parse_domain``) and parameter ``sweeps``."""

    episodes: int = 20
    source: str = "light"
    targets: tuple[str, ...] = ("heavy", "friction_scale=0.5,light_intensity_scale=0.5", "pybullet")
    sweeps: dict[str, tuple[float, ...]] = field(default_factory=dict)  # final policy only
    video_episodes: int = 3
    video_size: int = 128


@dataclass(frozen=True)
class PipelineConfig:
    """The whole job; load from YAML with ``key=value`` overrides via :func:`load_pipeline_config`."""

    # the PPO stage's own options moved from ``ppo`` (now the library's PPOConfig) to ``finetune``
    renamed_keys: ClassVar[dict[str, str]] = {
        "ppo.steps": "finetune.env_steps",
        **{f"ppo.{k}": f"finetune.{k}" for k in (
            "env_steps", "n_envs", "value_warmup_steps", "checkpoint_every", "randomization",
            "reward_type",
        )},
    }  # fmt: skip

    task: str = "tabletop/reach-v0"
    seed: int = 0
    image_size: int = 64
    threads: int = 1  # torch intra-op threads
    collect: CollectStage = CollectStage()
    policy: PolicyStage = PolicyStage()
    bc: OfflineStage = OfflineStage()
    iql: OfflineStage = OfflineStage(steps=500)
    finetune: FinetuneStage = FinetuneStage()
    ppo: PPOConfig = PIPELINE_PPO
    transfer: TransferStage = TransferStage()

    def __post_init__(self) -> None:
        if not self.task.startswith("tabletop/"):
            raise ValueError(
                f"task={self.task!r}: the pipeline runs tabletop tasks (images + text)"
            )
        for name in ("image_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        self.agent_config("bc")  # the stages' options: every key and type checked now
        self.agent_config("iql")

    def agent_config(self, stage: str, **fields: Any) -> Any:
        """The agent config of offline stage ``stage`` (``bc``: BCConfig, ``iql``: IQLConfig):
        the stage's ``learning_rate`` is the policy's (BC's ``learning_rate``, IQL's
        ``actor_learning_rate``), ``options`` set any other field; ``fields`` are the runner's."""
        from embodied_rl.agents import BCConfig, IQLConfig
        from embodied_rl.config import ConfigError, from_dict

        section: OfflineStage = getattr(self, stage)
        cls, key = (
            (BCConfig, "learning_rate") if stage == "bc" else (IQLConfig, "actor_learning_rate")
        )
        try:
            return from_dict(cls, {**section.options, key: section.learning_rate, **fields})
        except ConfigError as error:
            raise ValueError(f"{stage}.options: {error}") from None


def load_pipeline_config(
    path: str | Path | None = DEFAULT_CONFIG, overrides: Any = ()
) -> PipelineConfig:
    """A :class:`PipelineConfig` from YAML (default: the quickstart) and ``key=value`` overrides."""
    return load_config(PipelineConfig, path, overrides)


# ---------------------------------------------------------------------- the runner
class Pipeline:
    """Runs the stages of :class:`PipelineConfig` into ``out`` (see the module docstring)."""

    def __init__(self, config: PipelineConfig, out: str | Path, progress: bool = True) -> None:
        self.config, self.out, self.progress = config, Path(out), progress

    # -- bookkeeping
    def stage_dir(self, stage: str) -> Path:
        return self.out / stage

    def done(self, stage: str) -> dict[str, Any] | None:
        marker = self.stage_dir(stage) / "stage.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def _finish(self, stage: str, summary: dict[str, Any], started: float) -> dict[str, Any]:
        summary = {"stage": stage, "seconds": round(time.perf_counter() - started, 1), **summary}
        write_text_atomic(self.stage_dir(stage) / "stage.json", json.dumps(summary, indent=2))
        logger.info("stage %s finished in %.0f s", stage, summary["seconds"])
        return summary

    def run(self, stages: tuple[str, ...] = STAGES, resume: bool = False) -> dict[str, Any]:
        """Run ``stages`` (in pipeline order); returns every stage's summary."""
        import torch

        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages: {list(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        resolved = self.out / "config.json"
        if resume and resolved.exists():
            previous = json.loads(resolved.read_text())
            if previous != as_dict(self.config):
                changed = sorted(k for k in previous if previous[k] != as_dict(self.config).get(k))
                raise ValueError(
                    f"--resume: the config differs from the interrupted run's {resolved} in "
                    f"{changed}; resume with the same config or use a new --out"
                )
        elif any(self.done(s) for s in STAGES) and not resume:
            raise FileExistsError(
                f"{self.out} holds a previous run; pass resume=True (--resume) to continue it "
                "or choose another output directory"
            )
        write_text_atomic(resolved, json.dumps(as_dict(self.config), indent=2))
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        summaries: dict[str, Any] = {}
        try:
            for stage in STAGES:
                if stage not in stages:
                    continue
                previous = self.done(stage)
                if previous is not None:
                    logger.info("stage %s already finished: skipped", stage)
                    summaries[stage] = previous
                    continue
                started = time.perf_counter()
                print(f"[pipeline] {stage} ...", flush=True)
                summary = getattr(self, f"_{stage}")(resume)
                summaries[stage] = self._finish(stage, summary, started)
        finally:
            torch.set_num_threads(threads)
        return summaries

    # -- helpers
    def _dataset_id(self) -> str:
        name = self.config.task.split("/")[1].rsplit("-v", 1)[0]
        return f"pipeline/{name}-v0"

    def _env_kwargs(self) -> dict[str, Any]:
        return {"obs_mode": "rgb+state", "image_size": self.config.image_size}

    def _dataset(self):
        from embodied_rl.datasets import dataset_dir, load_dataset

        return load_dataset(dataset_dir(self.stage_dir("collect") / "data", self._dataset_id()))

    def _policy_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / "policy"

    def _trainer_config(self, stage: OfflineStage, seed: int):
        from embodied_rl.agents import TrainerConfig

        return TrainerConfig(
            steps=stage.steps, batch_size=stage.batch_size, seed=seed, eval_every=0,
            eval_episodes=0, checkpoint_every=stage.checkpoint_every,
            log_every=max(1, min(50, stage.steps // 10)), progress=self.progress,
        )  # fmt: skip

    def _train(self, algo: str, policy, agent_config, stage: OfflineStage, resume: bool):
        from embodied_rl.agents import train
        from embodied_rl.agents.checkpoint import LAST

        data = self._dataset()
        out = self.stage_dir(algo)
        resume = resume and (out / "checkpoints" / LAST).is_file()  # an interrupted stage
        agent, _ = train(
            algo, data, out, agent_config, self._trainer_config(stage, self.config.seed),
            policy=policy, eval_env=None, resume=resume,
        )  # fmt: skip
        return agent  # train() wrote out/policy, which is self._policy_dir(algo)

    # -- stages
    def _collect(self, resume: bool) -> dict[str, Any]:
        from embodied_rl.datasets import collect

        c = self.config.collect
        result = collect(
            self.config.task, c.tier, episodes=c.episodes, workers=c.workers,
            randomization=c.randomization, noise=c.noise, out=self.stage_dir("collect") / "data",
            dataset_id=self._dataset_id(), seed=self.config.seed, env_kwargs=self._env_kwargs(),
            reference_episodes=10, resume=resume, progress=self.progress,
        )  # fmt: skip
        return {
            "episodes": result.n_episodes,
            "success_rate": result.success_rate,
            "mean_return": result.mean_return,
            "path": str(result.path),
        }

    def _bc(self, resume: bool) -> dict[str, Any]:
        import torch

        from embodied_rl.agents.trainer import vla_for_dataset

        data = self._dataset()
        overrides = {
            "history": 1,  # PPO acts on single frames: keep one policy input from BC to PPO
            "value_head": True,  # unused by BC; PPO fine-tunes it
            **self.config.policy.overrides,
        }
        torch.manual_seed(self.config.seed)
        policy = vla_for_dataset(data, self.config.policy.preset, **overrides)
        stage = self.config.bc
        agent = self._train("bc", policy, self.config.agent_config("bc"), stage, resume)
        return {"steps": agent.step, "parameters": sum(p.numel() for p in policy.parameters())}

    def _iql(self, resume: bool) -> dict[str, Any]:
        from embodied_rl.policies import load_policy

        data = self._dataset()
        policy = load_policy(self._policy_dir("bc"))
        stage = self.config.iql
        config = self.config.agent_config(
            "iql", critic_obs_dim=int(data.observations["state"].shape[1])
        )
        agent = self._train("iql", policy, config, stage, resume)
        return {"steps": agent.step}

    def _ppo(self, resume: bool) -> dict[str, Any]:
        from embodied_rl.agents.finetune import PPOFinetuneConfig, finetune_ppo
        from embodied_rl.policies import load_policy

        c, f = self.config, self.config.finetune
        out = self.stage_dir("ppo")
        result = finetune_ppo(
            self._policy_dir("iql"), out,
            PPOFinetuneConfig(
                task=c.task, env_steps=f.env_steps, randomization=f.randomization,
                env_kwargs={"reward_type": f.reward_type}, n_envs=f.n_envs,
                value_warmup_steps=f.value_warmup_steps, eval_episodes=0, seed=c.seed,
                progress=self.progress, checkpoint_every=f.checkpoint_every,
            ),
            dataclasses.replace(c.ppo, seed=c.seed, torch_threads=c.threads),
            reference=self._policy_dir("bc"), resume=resume,
        )  # fmt: skip
        load_policy(out / "agent" / "policy").save(self._policy_dir("ppo"))
        return {
            "env_steps": result.env_steps,
            **{k: float(v) for k, v in result.last_rollout.items() if np.isscalar(v)},
        }

    def _transfer(self, resume: bool) -> dict[str, Any]:
        from embodied_rl.evaluation.rollout import held_out_seed
        from embodied_rl.evaluation.transfer import evaluate_transfer
        from embodied_rl.policies import load_policy

        c, t = self.config, self.config.transfer
        results = {}
        for stage in ("bc", "iql", "ppo"):
            policy_dir = self._policy_dir(stage)
            if not policy_dir.exists():
                continue
            policy = load_policy(policy_dir).eval()
            final = stage == "ppo"
            report = evaluate_transfer(
                policy, t.source, list(t.targets), task_id=c.task, episodes=t.episodes,
                seed=held_out_seed(c.seed), workers=1,
                sweeps={k: list(v) for k, v in t.sweeps.items()} if final else None,
                out=self.stage_dir("transfer") / stage, env_kwargs=self._env_kwargs(),
                progress=self.progress,
            )  # fmt: skip
            results[stage] = report.to_dict()
            if final or stage == "bc":
                self._videos(policy, stage)
        return {"policies": sorted(results)}

    def _videos(self, policy, stage: str) -> None:
        from embodied_rl.envs import make
        from embodied_rl.evaluation.video import rollout_video

        c, t = self.config, self.config.transfer
        if t.video_episodes < 1:
            return
        env = make(
            c.task, render_mode="rgb_array", render_size=t.video_size,
            randomization=c.collect.randomization, **self._env_kwargs(),
        )  # fmt: skip
        try:
            path = self.stage_dir("transfer") / f"rollouts_{stage}.gif"
            rollout_video(env, policy, t.video_episodes, 2_000_000 + c.seed, path)
        finally:
            env.close()

    def _report(self, resume: bool) -> dict[str, Any]:
        from embodied_rl.evaluation.report import write_pipeline_report

        paths = write_pipeline_report(self.out)
        return {"files": [str(p) for p in paths]}


def run_pipeline(
    config: PipelineConfig | None = None,
    out: str | Path = "outputs/pipeline",
    stages: tuple[str, ...] = STAGES,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the pipeline (the quickstart config by default); returns the stage summaries."""
    config = config if config is not None else load_pipeline_config()
    return Pipeline(config, out, progress).run(stages, resume)


def smoke_config(**changes: Any) -> PipelineConfig:
    """A seconds-long configuration of the whole pipeline (tests and trial runs)."""
    config = PipelineConfig(
        collect=CollectStage(episodes=6),
        policy=PolicyStage(overrides={"n_layers": 1, "feature_channels": 32}),
        bc=OfflineStage(steps=6, batch_size=8, checkpoint_every=3),
        iql=OfflineStage(steps=4, batch_size=8, checkpoint_every=2),
        finetune=FinetuneStage(env_steps=48, n_envs=2, value_warmup_steps=16),
        ppo=replace(PIPELINE_PPO, n_steps=16, batch_size=16, n_epochs=1),
        transfer=TransferStage(
            episodes=2, targets=("heavy", "pybullet"), sweeps={"friction_scale": (0.5, 1.0)},
            video_episodes=1, video_size=64,
        ),
    )  # fmt: skip
    return replace(config, **changes)
