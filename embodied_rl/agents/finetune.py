"""PPO fine-tuning of a pretrained (BC, IQL, ...) policy with a KL penalty to itself.

``finetune_ppo(pretrained, out, PPOFinetuneConfig(...), PPOConfig(...))`` turns a saved policy
(the MLP policy or the VLA, e.g. ``vla_preset("tiny")`` on images and instructions) into PPO's
actor-critic, keeps a frozen copy as the reference of RLHF's KL-regularised objective
``r - beta * KL(pi || pi_ref)`` (fixed or adaptive beta: :mod:`embodied_rl.agents.ppo`) and
trains it online in the policy's task under a domain-randomization preset. With
``from_scratch=True`` the same architecture starts from fresh weights and trains without a
reference: the baseline of ``benchmarks/ppo_finetune.py``.

What changes in the policy: a value head is added if it has none (``value_head=True``, fresh
weights on the shared trunk); a deterministic head (BC's MSE head) becomes the Gaussian head of
the same mean (its output layer is the same) with a new state-independent log-std. Everything
else, observation statistics included, is the pretrained policy's. The VLA acts with one frame
of context, as PPO trains it (``docs/ppo.md``), in training and in evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodied_rl.agents.checkpoint import LAST
from embodied_rl.agents.ppo import PPO, PPOConfig
from embodied_rl.agents.ppo_rollout import make_vec_env
from embodied_rl.agents.trainer import evaluate
from embodied_rl.evaluation.rollout import held_out_seed
from embodied_rl.policies import ActorCriticPolicy, Policy, load_policy
from embodied_rl.policies.base import check_state_match, policy_class
from embodied_rl.utils.io import write_text_atomic

logger = logging.getLogger(__name__)

WARMUP_FILE = "warmup.json"  # environment steps the value warm-up took (resume reads it)

# keys PPO's version of a policy may add to the pretrained weights
_NEW_KEYS = ("value_head.weight", "value_head.bias", "head.log_std")


@dataclass(frozen=True)
class PPOFinetuneConfig:
    """Where and how long to fine-tune (PPO's own options are a :class:`PPOConfig`)."""

    task: str = "tabletop/reach-v0"  # environment id the policy acts in
    env_steps: int = 50_000  # environment steps (whole rollouts)
    randomization: Any = "light"  # tabletop domain-randomization preset, dict or None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)  # e.g. n_objects, reward_type
    n_envs: int = 4
    vectorization: str = "sync"  # "sync" | "async"
    init_log_std: float = -0.5  # log-std of the Gaussian a deterministic head becomes
    # log-std the Gaussian head starts PPO with; None keeps BC's learned one. Precise tasks
    # want less exploration noise than BC's fit left (benchmarks/results/ppo_finetune_vla_pick.md)
    log_std: float | None = None
    # environment steps (part of env_steps) that first train only the new value head, the
    # rest frozen: a fresh critic's noisy advantages otherwise push the pretrained policy around
    value_warmup_steps: int = 0
    eval_episodes: int = 20  # deterministic episodes before and after training; 0: none
    seed: int = 0  # fresh weights (value head, from-scratch policy) and evaluation seeds
    progress: bool = False
    # a resumable checkpoint (out/checkpoints) after the rollout crossing each multiple of
    # this many environment steps; 0: only at the end
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        for name in ("env_steps", "n_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.eval_episodes < 0 or self.checkpoint_every < 0:
            raise ValueError(
                f"eval_episodes={self.eval_episodes} and checkpoint_every="
                f"{self.checkpoint_every} must be >= 0"
            )
        if not 0 <= self.value_warmup_steps < self.env_steps:
            raise ValueError(
                f"value_warmup_steps={self.value_warmup_steps} must lie in [0, env_steps="
                f"{self.env_steps}): the warm-up is part of the environment-step budget"
            )
        if "obs_mode" in self.env_kwargs:
            raise ValueError(
                "env_kwargs must not set obs_mode: it follows the policy (state for the MLP, "
                "rgb with text instructions for the VLA)"
            )


@dataclass
class PPOFinetuneResult:
    """Scores of the deterministic policy before and after training (``eval/success_rate``,
    ``eval/mean_return``) and PPO's metrics of the last rollout."""

    before: dict[str, float]
    after: dict[str, float]
    last_rollout: dict[str, float]
    env_steps: int
    wall_s: float
    from_scratch: bool
    out: str


# ---------------------------------------------------------------------- the policy
def _with_log_std(policy: Policy, config: PPOFinetuneConfig) -> Policy:
    """``policy`` with its Gaussian head's log-std set to ``config.log_std`` (if given)."""
    if config.log_std is not None and getattr(policy.head, "kind", None) == "gaussian":
        with torch.no_grad():
            policy.head.log_std.fill_(config.log_std)
    return policy


def actor_critic(
    pretrained: Policy, reinitialize: bool = False, init_log_std: float = -0.5, seed: int = 0
) -> Policy:
    """PPO's version of ``pretrained``: same architecture and weights, a value head, a
    stochastic head. ``reinitialize=True``: fresh weights but the same observation statistics
    (the from-scratch baseline reads inputs scaled the same way)."""
    if isinstance(pretrained, ActorCriticPolicy):
        raise ValueError("an ActorCriticPolicy is already PPO's network; pass it to PPO directly")
    config = pretrained.config
    # PPO's Gaussian: a deterministic head's mean, or a squashed Gaussian's squashed mean
    # (SAC's deterministic action: the first half of its projection), with log-std init_log_std
    head = "gaussian" if config.head in ("deterministic", "tanh_gaussian") else config.head
    torch.manual_seed(seed)
    policy = policy_class(pretrained.policy_type)(
        dataclasses.replace(config, head=head, value_head=True)
    )
    if head == "gaussian" and config.head != "gaussian":
        with torch.no_grad():
            policy.head.log_std.fill_(init_log_std)
    source = pretrained.trainable_state_dict()
    if config.head == "tanh_gaussian":
        n = pretrained.head.action_dim
        source = {
            k: v[:n] if k in ("head.proj.weight", "head.proj.bias") else v
            for k, v in source.items()
        }
    if reinitialize:
        source = {k: v for k, v in source.items() if _is_statistic(k)}
    _load_into(policy, source, allow_missing=not reinitialize)
    return policy


def _is_statistic(key: str) -> bool:
    """Observation-normalizer buffers (``obs_norm.mean``, the VLA's ``proprio_norm.std``, ...)."""
    return f".{key}".rsplit(".", 2)[-2] in ("obs_norm", "proprio_norm")


def _load_into(policy: Policy, tensors: dict[str, torch.Tensor], allow_missing: bool) -> None:
    expected = policy.trainable_state_dict()
    if allow_missing:  # everything but the value head and a new log-std must be there
        check_state_match(
            {k: v for k, v in expected.items() if k not in _NEW_KEYS or k in tensors},
            tensors,
            "the pretrained policy",
        )
    policy.load_state_dict(tensors, strict=False)


class OneFrameActor:
    """Acts with one frame of context (the VLA as PPO trains it); others act unchanged."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.one_frame = policy.policy_type == "vla"

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.one_frame:
            self.policy.reset()
        return self.policy.act(obs)

    # evaluate() switches modes on the object it is given
    def eval(self) -> OneFrameActor:
        self.policy.eval()
        return self

    def train(self) -> OneFrameActor:
        self.policy.eval()  # PPO keeps its policy in eval mode (no dropout)
        return self


def _env_kwargs(policy: Policy, config: PPOFinetuneConfig) -> dict[str, Any]:
    kwargs = {**config.env_kwargs, **policy.env_options()}  # what the policy reads wins
    if config.randomization is not None:
        kwargs["randomization"] = config.randomization
    return kwargs


def _evaluate(policy: Policy, config: PPOFinetuneConfig) -> dict[str, float]:
    if config.eval_episodes == 0:
        return {}
    from embodied_rl.envs import make

    env = make(config.task, **_env_kwargs(policy, config))
    try:
        seed = held_out_seed(config.seed)  # scenes no collection used
        return evaluate(OneFrameActor(policy), env, config.eval_episodes, seed)
    finally:
        env.close()


def _warm_up_value(policy: Policy, envs: Any, ppo: PPOConfig, steps: int, log_dir: Path) -> int:
    """PPO rollouts that train only ``value_head`` (everything else frozen, no KL term);
    returns the environment steps taken."""
    frozen = [
        p for name, p in policy.named_parameters()
        if p.requires_grad and not name.startswith("value_head.")
    ]  # fmt: skip
    for p in frozen:
        p.requires_grad_(False)
    warm = PPO(policy, envs, dataclasses.replace(ppo, kl_coef=0.0, kl_target=None), log_dir=log_dir)
    try:
        warm.learn(steps)
    finally:
        warm.log.close()
        for p in frozen:
            p.requires_grad_(True)
    return warm.num_steps


# ---------------------------------------------------------------------- the entry point
def finetune_ppo(
    pretrained: str | os.PathLike | Policy,
    out: str | os.PathLike,
    config: PPOFinetuneConfig | None = None,
    ppo: PPOConfig | None = None,
    from_scratch: bool = False,
    reference: str | os.PathLike | Policy | None = None,
    resume: bool = False,
) -> PPOFinetuneResult:
    """Fine-tune a pretrained policy with PPO and a KL penalty to itself; returns its scores
    before and after.

    Args:
        pretrained: a ``policy.save()`` directory, an agent checkpoint directory (BC, IQL, ...)
            or a :class:`Policy` (MLP or VLA).
        out: writes ``metrics.csv`` (one row per rollout), ``agent/`` (``PPO.load`` reads it;
            its ``model.safetensors`` holds the frozen pretrained policy as ``reference.*``,
            ``agent/policy/`` is the trained policy alone) and ``result.json``.
        config: task, randomization preset, length, evaluation; see :class:`PPOFinetuneConfig`.
        ppo: PPO's hyperparameters; default ``PPOConfig(kl_coef=0.1, n_steps=256,
            seed=config.seed)``. ``kl_coef`` (and ``kl_target`` for an adaptive beta) weight
            the penalty; with ``kl_coef=0`` the KL is measured but not penalised.
        from_scratch: the baseline: the same architecture with fresh weights, no reference.
        reference: the KL reference when it is not the pretrained policy itself (e.g. the BC
            policy while an IQL policy is fine-tuned); same forms as ``pretrained``.
        resume: continue an interrupted call from ``out/checkpoints`` (same arguments): on
            CPU the final weights equal an uninterrupted run's. Without it, a directory that
            already holds checkpoints is refused.
    """
    config = config or PPOFinetuneConfig()
    ppo = ppo or PPOConfig(kl_coef=0.1, n_steps=256, seed=config.seed)
    source = pretrained if isinstance(pretrained, Policy) else load_policy(pretrained)
    policy = _with_log_std(
        actor_critic(source, from_scratch, config.init_log_std, config.seed), config
    )
    if from_scratch:
        reference = None
    else:  # the same noise as the policy: the KL term then anchors the mean action
        anchor = source if reference is None else reference
        anchor = anchor if isinstance(anchor, Policy) else load_policy(anchor)
        reference = _with_log_std(
            actor_critic(anchor, False, config.init_log_std, config.seed), config
        )
    out = Path(out)
    checkpoints = out / "checkpoints"
    resuming = resume and (checkpoints / LAST).is_file()
    if not resume and (checkpoints / LAST).is_file():
        raise FileExistsError(
            f"{out} already holds a PPO fine-tuning run; pass resume=True (erl finetune ppo "
            "--resume) to continue it, or choose another output directory"
        )
    start = time.perf_counter()
    before = _evaluate(policy, config)
    envs = make_vec_env(
        config.task, config.n_envs, config.vectorization, **_env_kwargs(policy, config)
    )
    try:
        if resuming:  # the warm-up, if any, finished before the first checkpoint
            agent = PPO.resume(checkpoints, envs, out, config.progress)
            warmup = int(json.loads((out / WARMUP_FILE).read_text())["env_steps"])
        else:
            warmup = 0
            if config.value_warmup_steps and not from_scratch:
                shutil.rmtree(out / "warmup", ignore_errors=True)  # an interrupted warm-up
                warmup = _warm_up_value(
                    policy, envs, ppo, config.value_warmup_steps, out / "warmup"
                )
            write_text_atomic(out / WARMUP_FILE, json.dumps({"env_steps": warmup}))
            agent = PPO(policy, envs, ppo, reference=reference, log_dir=out)
        try:
            metrics = agent.learn(
                max(1, config.env_steps - warmup), config.progress, checkpoints,
                config.checkpoint_every,
            )  # fmt: skip
            agent.save(out / "agent")
        finally:
            agent.log.close()
    finally:
        envs.close()
    policy = agent.policy
    result = PPOFinetuneResult(
        before=before,
        after=_evaluate(policy, config),
        last_rollout=metrics,
        env_steps=warmup + agent.num_steps,
        wall_s=time.perf_counter() - start,
        from_scratch=from_scratch,
        out=str(out),
    )
    write_text_atomic(out / "result.json", json.dumps(dataclasses.asdict(result), indent=1))
    return result
