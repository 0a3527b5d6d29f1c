"""PPO-RLHF: PPO on a causal LM against a reward with a per-token KL penalty to a frozen
reference (Ziegler et al. 2019, arXiv:1909.08593; Stiennon et al. 2020; InstructGPT, Ouyang
et al. 2022, arXiv:2203.02155, eq. 2 with the PPO-ptx term).

One iteration: sample a response per prompt; score ``prompt + response`` with the reward
function (a :class:`~embodied_rl.llm.reward.RewardModel` or any callable); build per-token
rewards ``r_t = -beta * KL_t`` plus the score on the last response token; estimate
advantages with GAE over the response tokens from a separate value model (initialised from
the reward model as in InstructGPT, or from the policy's transformer); then ``ppo_epochs`` passes of the clipped surrogate and (clipped) value loss over
minibatches, optionally plus ``ptx_coef`` times the language-model loss on demonstration
data. ``beta`` is fixed or steered to a target KL (the shared KL controllers). GAE, the
clipped surrogate, the value loss and the KL estimators are the functions of
:mod:`embodied_rl.rl.ppo`, shared with the robot PPO.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from embodied_rl.llm.generation import (
    Generation,
    SamplingConfig,
    generate,
    response_logits,
    response_logprobs,
)
from embodied_rl.llm.models import (
    atomic_dir,
    disable_dropout,
    eval_mode,
    freeze,
    last_token_index,
    load_causal_lm,
)
from embodied_rl.llm.reward import RewardFn, RewardModel
from embodied_rl.llm.sft import collate, lm_loss, tokenize_examples
from embodied_rl.llm.training import (
    IndexBatches,
    make_optimizer,
    optimizer_step,
    require_positive,
    run_steps,
)
from embodied_rl.rl.ppo import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    clipped_surrogate_loss,
    explained_variance,
    gae,
    kl_penalty,
    value_loss,
)


@dataclass(frozen=True)
class PPORLHFConfig:
    """PPO-RLHF options; defaults follow TRL's PPO where the papers leave them open."""

    iterations: int = 200  # rollouts
    batch_size: int = 64  # prompts (responses) per rollout
    minibatch_size: int = 16
    ppo_epochs: int = 4  # InstructGPT: 4
    learning_rate: float = 3e-5  # policy and value model; InstructGPT: ~1e-5
    max_grad_norm: float | None = 1.0
    clip_range: float = 0.2  # epsilon of the clipped surrogate
    clip_range_value: float | None = 0.2  # None: plain squared error
    vf_coef: float = 0.1
    gamma: float = 1.0  # no discount inside a response
    gae_lambda: float = 0.95
    kl_coef: float = 0.1  # beta of r_t = -beta KL_t (+ score at the end); 0 turns it off
    kl_target: float | None = None  # set: adaptive beta steering KL per response to this
    kl_horizon: int = 10_000  # responses over which the adaptive beta moves (Ziegler et al.)
    kl_estimator: str = "k1"  # "k1": log pi - log pi_ref (RLHF's); "k3": never negative
    whiten_advantages: bool = True  # per rollout, over response tokens
    score_clip: float | None = None  # clip scores to [-c, c]
    missing_eos_penalty: float | None = None  # subtracted from scores of responses cut short
    ptx_coef: float = 0.0  # gamma of InstructGPT's PPO-ptx (needs ptx_examples)
    ptx_batch_size: int = 16
    max_length: int = 128  # for the ptx examples
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    log_every: int = 1  # iterations per logged row
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        require_positive(
            self, "iterations", "batch_size", "minibatch_size", "ppo_epochs", "log_every"
        )
        if self.minibatch_size > self.batch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} exceeds batch_size={self.batch_size}; "
                "lower minibatch_size or raise batch_size"
            )
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef={self.kl_coef} must be >= 0")
        if self.kl_target is not None and (self.kl_target <= 0 or self.kl_coef == 0):
            raise ValueError(
                f"kl_target={self.kl_target} needs kl_target > 0 and a starting kl_coef > 0 "
                f"(got {self.kl_coef})"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; choose one of {KL_ESTIMATORS}")
        if self.sampling.temperature != 1.0 or self.sampling.top_k or self.sampling.top_p < 1.0:
            raise ValueError(
                "PPO-RLHF samples from the policy itself: sampling must keep temperature=1.0, "
                f"top_k=0 and top_p=1.0 (got {self.sampling})"
            )
        if self.ptx_coef < 0:
            raise ValueError(f"ptx_coef={self.ptx_coef} must be >= 0")


# ---------------------------------------------------------------------- per-token maths
def kl_shaped_rewards(
    scores: Tensor,  # (B,) reward of each whole response
    logprobs: Tensor,  # (B, R) log pi of the response tokens
    ref_logprobs: Tensor,  # (B, R) log pi_ref of the same tokens
    mask: Tensor,  # (B, R) 1 on response tokens
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[Tensor, Tensor]:
    """Per-token rewards ``r_t = -beta * KL_t`` with the score added on the last response
    token (Ziegler et al. 2019, eq. 2; InstructGPT eq. 2); returns ``(rewards, KL_t)``, both
    ``(B, R)`` and 0 past each response."""
    kl = kl_penalty(logprobs, ref_logprobs, estimator) * mask
    rewards = -kl_coef * kl
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last_token_index(mask)] += scores
    return rewards, kl


def response_advantages(
    rewards: Tensor,  # (B, R)
    values: Tensor,  # (B, R) V before each response token
    mask: Tensor,  # (B, R)
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """GAE over the response tokens (the episode ends after the last one): ``(advantages,
    returns)`` ``(B, R)``, 0 past each response."""
    last = last_token_index(mask)  # (B,)
    positions = torch.arange(mask.shape[1], device=mask.device)
    ends = positions[None, :] == last[:, None]  # (B, R)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    advantages = gae(
        rewards.T, values.T, next_values.T, ends.T, ends.T, gamma, gae_lambda
    ).T  # gae works on (T, N)
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def masked_whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``x`` standardised over the masked entries (0 elsewhere)."""
    m = mask.bool()
    mean, std = x[m].mean(), x[m].std() if m.sum() > 1 else torch.tensor(1.0)
    return ((x - mean) / (std + eps)) * mask


# ---------------------------------------------------------------------- models
class PolicyWithValue(nn.Module):
    """A causal LM and a separate value model (a :class:`RewardModel`'s architecture read at
    every token; InstructGPT initialises it from the reward model)."""

    def __init__(self, policy: PreTrainedModel, value_model: RewardModel) -> None:
        super().__init__()
        self.policy, self.value_model = policy, value_model

    def logprobs_and_values(self, generation: Generation) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, R)`` response log-probs, values before each response token, and entropies."""
        logps, out = response_logprobs(self.policy, generation)
        n_prompt = generation.prompt_ids.shape[1]
        ids, mask = generation.sequences()
        values = self.value_model.token_values(ids, mask, **generation.model_inputs)
        values = values[:, n_prompt - 1 : -1]  # (B, R)
        logits = response_logits(out.logits, generation)[0].float()  # (B, R, V)
        entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)  # (B, R)
        return logps, values, entropy

    def save(
        self,
        path: str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase | None = None,
        extra_json: dict[str, dict] | None = None,
    ) -> Path:
        """Policy (``save_pretrained``, safetensors) with the tokenizer, the value model in
        ``value_model/`` and ``extra_json`` files (name -> content), in one atomic write."""
        with atomic_dir(path) as tmp:
            for name, content in (extra_json or {}).items():
                (tmp / name).write_text(json.dumps(content, indent=2))
            self.policy.save_pretrained(str(tmp), safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
            self.value_model.save(tmp / "value_model")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PolicyWithValue:
        """A policy and value model written by :meth:`save`."""
        path = Path(path)
        if not (path / "value_model").is_dir():
            raise FileNotFoundError(
                f"{path} has no value_model/; was it saved by PolicyWithValue.save?"
            )
        return cls(load_causal_lm(path), RewardModel.load(path / "value_model"))


@dataclass
class Rollout:
    """One batch of sampled responses and everything the PPO epochs need."""

    generation: Generation
    logprobs: Tensor  # (B, R) under the rollout policy
    values: Tensor  # (B, R)
    advantages: Tensor  # (B, R)
    returns: Tensor  # (B, R)
    scores: Tensor  # (B,) reward function output (after clipping and EOS penalty)
    kl: Tensor  # (B, R) per-token KL estimate

    def select(self, index: Tensor) -> Rollout:
        take = [x[index] for x in (self.logprobs, self.values, self.advantages, self.returns)]
        return Rollout(self.generation.select(index), *take, self.scores[index], self.kl[index])


# ---------------------------------------------------------------------- the trainer
class PPORLHFTrainer:
    """Optimises a policy against ``reward_fn`` with PPO and a KL penalty to ``reference``
    (a frozen copy of the initial policy when None). ``value_model`` (trained here; it must
    share the policy's tokenizer) defaults to a fresh head on a copy of the policy's
    transformer; pass a copy of the reward model to start as InstructGPT does."""

    def __init__(
        self,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        config: PPORLHFConfig = PPORLHFConfig(),
        reference: PreTrainedModel | None = None,
        value_model: RewardModel | None = None,
        ptx_examples: Sequence[tuple[str, str]] | None = None,
        metrics_fn: Callable[[list[str], list[str]], dict[str, float]] | None = None,
    ) -> None:
        if config.ptx_coef > 0 and not ptx_examples:
            raise ValueError(f"ptx_coef={config.ptx_coef} needs ptx_examples (demonstrations)")
        self.tokenizer, self.reward_fn, self.config = tokenizer, reward_fn, config
        if value_model is None:
            value_model = RewardModel.from_causal_lm(policy, seed=config.seed)
        self.model = PolicyWithValue(disable_dropout(policy), disable_dropout(value_model))
        # a given reference is only read (no_grad, eval mode), never modified
        self.reference = reference if reference is not None else freeze(copy.deepcopy(policy))
        self.metrics_fn = metrics_fn
        self.optimizer = make_optimizer(self.model.parameters(), config.learning_rate)
        self.kl_controller = (
            AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
            if config.kl_target is not None
            else FixedKLController(config.kl_coef)
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.ptx = (
            tokenize_examples(tokenizer, ptx_examples, config.max_length) if ptx_examples else None
        )
        self.ptx_order = (
            IndexBatches(len(self.ptx), config.ptx_batch_size, config.seed) if self.ptx else None
        )
        self.iteration = 0
        self.updates = 0

    @property
    def policy(self) -> PreTrainedModel:
        return self.model.policy

    @torch.no_grad()
    def rollout(self, prompts: list[str]) -> Rollout:
        """Sample, score and compute advantages for one batch of prompts."""
        c = self.config
        generation = generate(self.policy, self.tokenizer, prompts, c.sampling, self.generator)
        scores = self.reward_fn(prompts, generation.responses).float()
        if c.score_clip is not None:
            scores = scores.clamp(-c.score_clip, c.score_clip)
        if c.missing_eos_penalty is not None:
            scores = scores - c.missing_eos_penalty * (~generation.finished).float()
        with eval_mode(self.model, self.reference):
            logps, values, _ = self.model.logprobs_and_values(generation)
            ref_logps, _ = response_logprobs(self.reference, generation)
        mask = generation.response_mask.float()
        rewards, kl = kl_shaped_rewards(
            scores, logps, ref_logps, mask, self.kl_controller.coef, c.kl_estimator
        )
        values = values * mask
        advantages, returns = response_advantages(rewards, values, mask, c.gamma, c.gae_lambda)
        if c.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return Rollout(generation, logps, values, advantages, returns, scores, kl)

    def _minibatch_loss(self, batch: Rollout) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        logps, values, entropy = self.model.logprobs_and_values(batch.generation)
        m = batch.generation.response_mask.bool()
        pg_loss, clip_fraction = clipped_surrogate_loss(
            logps[m], batch.logprobs[m], batch.advantages[m], c.clip_range
        )
        vf_loss = value_loss(values[m], batch.returns[m], batch.values[m], c.clip_range_value)
        loss = pg_loss + c.vf_coef * vf_loss
        metrics = {
            "policy_loss": pg_loss.item(),
            "value_loss": vf_loss.item(),
            "clip_fraction": clip_fraction.item(),
            "approx_kl_old": (batch.logprobs[m] - logps[m]).mean().item(),
            "entropy": entropy[m].mean().item(),
        }
        if self.ptx is not None and c.ptx_coef > 0:
            rows = [self.ptx[j] for j in next(self.ptx_order)]
            ptx_loss = lm_loss(self.policy, collate(rows, self.tokenizer.pad_token_id))
            loss = loss + c.ptx_coef * ptx_loss
            metrics["ptx_loss"] = ptx_loss.item()
        return loss, metrics

    def update(self, rollout: Rollout) -> dict[str, float]:
        """``ppo_epochs`` passes of minibatch updates; returns the mean metrics."""
        c = self.config
        n = len(rollout.scores)
        sums: dict[str, float] = {}
        count = 0
        self.model.train()
        for _ in range(c.ppo_epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n - c.minibatch_size + 1, c.minibatch_size):
                loss, metrics = self._minibatch_loss(
                    rollout.select(order[start : start + c.minibatch_size])
                )
                self.updates += 1
                metrics["grad_norm"] = optimizer_step(
                    loss, self.optimizer, c.max_grad_norm, self.updates, "ppo"
                )
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        return {k: v / count for k, v in sums.items()}

    def step(self, prompts: list[str]) -> dict[str, float]:
        """One rollout and its PPO update; returns the iteration's metrics."""
        start = time.perf_counter()
        rollout = self.rollout(prompts)
        metrics = self.update(rollout)
        mask = rollout.generation.response_mask
        m = mask.bool()
        kl_per_response = rollout.kl.sum(-1)
        metrics.update(
            score=rollout.scores.mean().item(),
            kl=kl_per_response.mean().item(),
            kl_coef=self.kl_controller.coef,
            reward=(rollout.scores - self.kl_controller.coef * kl_per_response).mean().item(),
            response_tokens=mask.sum(-1).float().mean().item(),
            eos_rate=rollout.generation.finished.float().mean().item(),
            explained_variance=explained_variance(rollout.values[m], rollout.returns[m]),
            seconds=time.perf_counter() - start,
        )
        if self.metrics_fn is not None:
            metrics.update(
                self.metrics_fn(rollout.generation.prompts, rollout.generation.responses)
            )
        self.kl_controller.update(metrics["kl"], len(prompts))
        self.iteration += 1
        return metrics

    def train(
        self, prompts: Sequence[str], out: str | os.PathLike | None = None
    ) -> list[dict[str, float]]:
        """Run ``config.iterations`` iterations on prompts drawn (seeded) from ``prompts``."""
        c = self.config
        order = IndexBatches(len(prompts), c.batch_size, c.seed + self.iteration)
        rows = run_steps(
            lambda i: self.step([prompts[j] for j in next(order)]),
            c.iterations, desc="ppo-rlhf", out=out, log_every=c.log_every, progress=c.progress,
            tensorboard=c.tensorboard, start=self.iteration,
        )  # fmt: skip
        return rows

    def save(self, path: str | os.PathLike) -> Path:
        """Policy, value head, tokenizer and trainer state (``ppo_state.json``)."""
        state = {
            "iteration": self.iteration,
            "kl_coef": self.kl_controller.coef,
            "config": asdict(self.config),
        }
        return self.model.save(path, self.tokenizer, {"ppo_state.json": state})
