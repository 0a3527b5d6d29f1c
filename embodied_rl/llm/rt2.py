"""The RT-2-style policy trained by the LLM trainers.

- Behaviour cloning is supervised fine-tuning: examples from
  :func:`embodied_rl.policies.rt2.rt2_sft_examples` for :class:`~embodied_rl.llm.sft.SFTTrainer`.
- Preferences: per-step action pairs are plain :class:`~embodied_rl.llm.pairs.TextPair` with an
  image; labelled pairs of trajectory segments (the B-Pref scripted teacher's, AI feedback's
  or the labeling page's) become :class:`~embodied_rl.llm.pairs.SegmentPair` for
  :class:`~embodied_rl.llm.dpo.DPOTrainer` (:func:`rt2_segment_pairs`).
- PPO with the environment's reward in place of a reward model, with the per-token KL to the
  SFT policy: :class:`RT2PPOTrainer`, the PPO-RLHF trainer whose rollouts are environment
  steps (one response = one action's tokens, sampled among the action ids only).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from embodied_rl.llm.generation import Generation, response_logprobs
from embodied_rl.llm.models import eval_mode
from embodied_rl.llm.pairs import SegmentPair
from embodied_rl.llm.ppo_rlhf import (
    PPORLHFConfig,
    PPORLHFTrainer,
    Rollout,
    kl_shaped_rewards,
    masked_whiten,
    response_advantages,
)
from embodied_rl.llm.reward import RewardModel
from embodied_rl.llm.training import run_steps
from embodied_rl.policies.rt2 import RT2Policy
from embodied_rl.preference.data import PreferenceDataset
from embodied_rl.rl.ppo import explained_variance, gae


def rt2_segment_pairs(
    policy: RT2Policy, preferences: PreferenceDataset
) -> tuple[list[SegmentPair], np.ndarray]:
    """Every decided pair of ``preferences`` (equal and skipped ones are left out) as a
    segment pair, the preferred segment first, and the images its steps point into (the
    segments' images, ``(2 P L, H, W, 3)``). The segments' dataset needs ``image`` and text
    ``instruction`` observations (and the state the policy reads, ``config.state_key``)."""
    segments = preferences.segments
    key = policy.config.state_key
    for needed in ("image", "instruction") + ((key,) if key else ()):
        if needed not in segments.data.observations:
            raise ValueError(
                f"the RT-2 policy reads {needed!r}; the segments' dataset has observations "
                f"{sorted(segments.data.observations)}"
            )
    decided = preferences.labels != 0.5
    decided &= ~np.isnan(preferences.labels)
    first, second = preferences.first[decided], preferences.second[decided]
    prefer_first = preferences.labels[decided] == 1.0
    winners = np.where(prefer_first, first, second)
    losers = np.where(prefer_first, second, first)
    images = segments.observations("image")  # (S, L, H, W, 3)
    instructions = segments.observations("instruction")  # (S, L)
    actions = segments.actions()  # (S, L, A)
    length = segments.length
    states = segments.observations(key) if key else None  # (S, L, state_dim)

    def prompt(segment: int, t: int) -> str | list[int]:
        if key:  # the state's tokens are ids, not text
            return policy.prompt_ids(str(instructions[segment, t]), states[segment, t])
        return policy.prompt(str(instructions[segment, t]))

    def steps(segment: int) -> list[tuple[str | list[int], list[int], int]]:
        return [
            (prompt(segment, t), policy.action_tokens(actions[segment, t]), segment * length + t)
            for t in range(length)
        ]

    pairs = [SegmentPair(steps(w), steps(lo)) for w, lo in zip(winners, losers, strict=True)]
    return pairs, images.reshape(-1, *images.shape[2:])


# ---------------------------------------------------------------------- PPO on the environment
@dataclass(frozen=True)
class RT2PPOConfig:
    """PPO on an RT-2-style policy with the environment's reward.

    ``ppo`` holds the PPO-RLHF options, read per environment step: ``batch_size`` is the
    environment steps per rollout, ``iterations`` the rollouts, and the clipped surrogate,
    value loss, per-token KL penalty (``kl_coef``/``kl_target``), within-response GAE and
    advantage whitening are PPO-RLHF's. ``discount`` and ``gae_lambda`` act across
    environment steps."""

    ppo: PPORLHFConfig = field(
        default_factory=lambda: PPORLHFConfig(
            iterations=100, batch_size=128, minibatch_size=32, learning_rate=1e-4, kl_coef=0.05
        )
    )
    discount: float = 0.99  # across environment steps
    gae_lambda: float = 0.95  # across environment steps

    def __post_init__(self) -> None:
        if not 0.0 <= self.discount <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(
                f"discount={self.discount} and gae_lambda={self.gae_lambda} must lie in [0, 1]"
            )


def _image_and_instruction(obs: Any) -> tuple[np.ndarray, str]:
    if (
        not isinstance(obs, dict)
        or "image" not in obs
        or not isinstance(obs.get("instruction"), str)
    ):
        keys = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
        raise ValueError(
            f"the RT-2 policy reads obs['image'] and a text obs['instruction']; the environment "
            f"gives {keys} (make it with policy.env_options())"
        )
    return np.asarray(obs["image"]), obs["instruction"]


class RT2PPOTrainer(PPORLHFTrainer):
    """PPO-RLHF on an :class:`~embodied_rl.policies.rt2.RT2Policy` with the environment's reward
    in place of a reward model (RT-2's RL counterpart of SFT-as-BC), against a frozen
    reference (a copy of the starting policy, e.g. the SFT one, when None).

    A rollout runs ``config.ppo.batch_size`` steps of ``env`` (one environment, continued
    across rollouts; episodes cut by the rollout's end are bootstrapped). Each step is one
    PPO-RLHF response: the prompt is the image and the instruction, the response the
    action's ``action_dim`` tokens sampled among the action ids only (the log-probabilities,
    ratios and KL are of that constrained distribution). The response's score is the
    environment-level lambda-return ``G_t = r_t + discount * ((1 - lambda) V(s_{t+1}) +
    lambda G_{t+1})`` with ``V(s)`` the value model before the first action token; the KL
    penalty and the advantages inside a response are PPO-RLHF's own. The value model
    defaults to a fresh head on a copy of the policy's vision-language backbone."""

    def __init__(
        self,
        policy: RT2Policy,
        env: Any,
        config: RT2PPOConfig = RT2PPOConfig(),
        reference: torch.nn.Module | None = None,
        value_model: RewardModel | None = None,
    ) -> None:
        super().__init__(
            policy.model, policy.tokenizer, _no_reward_model, config.ppo, reference, value_model
        )
        self.rt2, self.env, self.rt2_config = policy, env, config
        first = policy.first_action_id
        self.allowed_ids = (first, first + policy.config.n_bins)
        self._obs: Any = None
        self._episode = {"return": 0.0, "length": 0}
        self._finished: list[dict[str, float]] = []
        self._resets = 0

    # ------------------------------------------------------------------ environment
    def _current_obs(self) -> Any:
        if self._obs is None:
            seed = self.config.seed if self._resets == 0 else None  # then the env's own stream
            self._obs, _ = self.env.reset(seed=seed)
            self._resets += 1
        return self._obs

    def _generation(
        self, images: list[np.ndarray], instructions: list[str], bins: Tensor,
        states: list | None = None,
    ):  # fmt: skip
        p = self.rt2
        prompt_ids, prompt_mask = p.prompt_inputs(instructions, states=states)
        response_ids = bins + p.first_action_id  # (N, A)
        return Generation(
            prompt_ids, prompt_mask, response_ids, torch.ones_like(response_ids),
            list(instructions), [" ".join(map(str, b)) for b in bins.tolist()],
            torch.ones(len(instructions), dtype=torch.bool),
            {"pixel_values": p.pixel_values(torch.as_tensor(np.stack(images)))}, self.allowed_ids,
        )  # fmt: skip

    def _prompt_values(
        self, images: list[np.ndarray], instructions: list[str], states: list | None = None
    ) -> Tensor:
        """``(K,)`` V(s) of observations: the value model at the prompt's last token."""
        p = self.rt2
        ids, mask = p.prompt_inputs(instructions, states=states)
        pixels = p.pixel_values(torch.as_tensor(np.stack(images)))
        return self.model.value_model.token_values(ids, mask, pixel_values=pixels)[:, -1]

    @torch.no_grad()
    def rollout(self, prompts: list[str] | None = None) -> Rollout:
        """Run ``batch_size`` environment steps with actions sampled from the policy and
        compute the PPO-RLHF rollout (``prompts`` is not used: the environment gives them)."""
        if prompts is not None:
            raise ValueError("RT2PPOTrainer's prompts come from the environment; pass none")
        c, p = self.config, self.rt2
        images, instructions, bins, rewards, terminated, ended = [], [], [], [], [], []
        states: list | None = [] if p.config.state_key else None
        bootstrap: dict[int, Any] = {}  # step -> the observation after it
        with eval_mode(self.model):
            for t in range(c.batch_size):
                obs = self._current_obs()
                image, instruction = _image_and_instruction(obs)
                state = p.states_of(obs)
                b = p.generate_bins(
                    torch.as_tensor(image)[None], [instruction], False, self.generator,
                    states=None if state is None else np.asarray(state)[None],
                )  # fmt: skip
                if states is not None:
                    states.append(np.asarray(state))
                action = p.tokenizer_actions.detokenize(b)[0].numpy().astype(np.float32)
                obs, reward, term, trunc, info = self.env.step(action)
                images.append(image)
                instructions.append(instruction)
                bins.append(b[0])
                rewards.append(float(reward))
                self._episode["return"] += float(reward)
                self._episode["length"] += 1
                done = bool(term or trunc)
                terminated.append(bool(term))
                ended.append(done or t == c.batch_size - 1)
                if done:
                    self._finished.append(
                        {**self._episode, "success": float(info.get("success", math.nan))}
                    )
                    self._episode = {"return": 0.0, "length": 0}
                if ended[-1] and not term:
                    _image_and_instruction(obs)  # checked here, read below
                    bootstrap[t] = obs
                self._obs = None if done else obs
        generation = self._generation(images, instructions, torch.stack(bins), states)
        n = c.batch_size
        logps, values, ref_logps = [], [], []
        with eval_mode(self.model, self.reference):
            for start in range(0, n, c.minibatch_size):
                g = generation.select(torch.arange(start, min(start + c.minibatch_size, n)))
                lp, v, _ = self.model.logprobs_and_values(g)
                logps.append(lp)
                values.append(v)
                ref_logps.append(response_logprobs(self.reference, g)[0])
            logps, values, ref_logps = (torch.cat(x) for x in (logps, values, ref_logps))
            state_values = values[:, 0]  # V(s_t): before the first action token
            next_values = torch.zeros(n)
            next_values[:-1] = state_values[1:]  # where the episode goes on
            if bootstrap:
                after = [bootstrap[t] for t in sorted(bootstrap)]
                boot = self._prompt_values(
                    [np.asarray(o["image"]) for o in after], [o["instruction"] for o in after],
                    None if states is None else [np.asarray(p.states_of(o)) for o in after],
                )  # fmt: skip
                steps = sorted(bootstrap)
                next_values[steps] = boot.float()
        env_advantages = gae(
            torch.tensor(rewards)[:, None], state_values[:, None], next_values[:, None],
            torch.tensor(terminated)[:, None], torch.tensor(ended)[:, None],
            self.rt2_config.discount, self.rt2_config.gae_lambda,
        )[:, 0]  # fmt: skip
        scores = (env_advantages + state_values).float()  # the lambda-returns G_t
        if c.score_clip is not None:
            scores = scores.clamp(-c.score_clip, c.score_clip)
        mask = generation.response_mask.float()
        token_rewards, kl = kl_shaped_rewards(
            scores, logps, ref_logps, mask, self.kl_controller.coef, c.kl_estimator
        )
        advantages, returns = response_advantages(token_rewards, values, mask, c.gamma,
                                                  c.gae_lambda)  # fmt: skip
        if c.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        self._env_rewards = torch.tensor(rewards)
        return Rollout(generation, logps, values, advantages, returns, scores, kl)

    # ------------------------------------------------------------------ training
    def step(self, prompts: list[str] | None = None) -> dict[str, float]:
        """One rollout of environment steps and its PPO update; returns the metrics
        (``episode_return``, ``success`` and ``episode_length`` are means over the episodes
        that ended in this rollout, NaN when none did)."""
        start = time.perf_counter()
        rollout = self.rollout(prompts)
        metrics = self.update(rollout)
        episodes, self._finished = self._finished, []
        kl_per_step = rollout.kl.sum(-1)
        m = rollout.generation.response_mask.bool()

        def mean_of(key: str) -> float:
            return float(np.mean([e[key] for e in episodes])) if episodes else math.nan

        metrics.update(
            env_reward=self._env_rewards.mean().item(),
            episodes=float(len(episodes)),
            episode_return=mean_of("return"),
            episode_length=mean_of("length"),
            success=mean_of("success"),
            score=rollout.scores.mean().item(),
            kl=kl_per_step.mean().item(),
            kl_coef=self.kl_controller.coef,
            explained_variance=explained_variance(rollout.values[m], rollout.returns[m]),
            seconds=time.perf_counter() - start,
        )
        self.kl_controller.update(metrics["kl"], len(kl_per_step))
        self.iteration += 1
        return metrics

    def train(
        self, prompts: list[str] | None = None, out: str | os.PathLike | None = None
    ) -> list[dict[str, float]]:
        """``config.ppo.iterations`` rollouts and updates; metrics go to ``out``'s log."""
        c = self.config
        return run_steps(
            lambda i: self.step(prompts), c.iterations, desc="rt2-ppo", out=out,
            log_every=c.log_every, progress=c.progress, tensorboard=c.tensorboard,
            start=self.iteration,
        )  # fmt: skip

    def save(self, path: str | os.PathLike) -> Path:
        """The policy as the one policy artifact (:meth:`RT2Policy.save`, loadable by every
        command), the value model in ``value_model/`` and the trainer state."""
        path = self.rt2.save(path)
        self.model.value_model.save(path / "value_model")
        state = {"iteration": self.iteration, "kl_coef": self.kl_controller.coef,
                 "config": asdict(self.rt2_config)}  # fmt: skip
        tmp = path / "ppo_state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path / "ppo_state.json")
        return path


def _no_reward_model(prompts: list[str], responses: list[str]) -> Tensor:
    raise RuntimeError("RT2PPOTrainer scores responses with the environment's reward")
