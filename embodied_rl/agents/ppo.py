"""Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) for any policy with a value.

Rollouts come from gymnasium vector environments (state, image and instruction observations);
the update is the clipped surrogate with optional value clipping, an entropy bonus and
per-minibatch advantage normalisation. An optional KL penalty to a frozen reference policy (the
pretrained BC/VLA policy) shapes the reward as in RLHF, r - beta * KL(pi || pi_ref) (Ziegler et
al. 2019, arXiv:1909.08593; Ouyang et al. 2022), with a fixed or adaptive beta.

    agent = PPO(ActorCriticPolicy(ActorCriticConfig(obs_dim=11, ...)), make_vec_env("Hopper-v5"))
    agent.learn(100_000, checkpoint_dir="outputs/ppo/checkpoints", checkpoint_every=10_000)
    agent = PPO.resume("outputs/ppo/checkpoints", make_vec_env("Hopper-v5"))  # after a crash
    agent.learn(100_000)  # continues the interrupted call

Checkpoints are taken between rollouts; resuming replays the recorded environment actions
(:mod:`embodied_rl.agents.ppo_checkpoint`), so on CPU the resumed run is bit-identical.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
from torch import Tensor, nn

from embodied_rl.agents import ppo_checkpoint
from embodied_rl.agents.base import NonFiniteLossError, check_single_action
from embodied_rl.agents.checkpoint import last_checkpoint_note
from embodied_rl.agents.ppo_rollout import (
    RolloutBuffer,
    autoreset_mode,
    head_and_value,
    head_output,
    obs_to_torch,
    policy_batch,
    stack_obs,
    take,
)
from embodied_rl.policies import actor_critic  # noqa: F401  (registers "actor_critic" for load_policy)
from embodied_rl.policies.base import Policy
from embodied_rl.rl.loop import TrainingLoop
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
from embodied_rl.utils.metrics import MetricsLogger

logger = logging.getLogger(__name__)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are Stable-Baselines3's (CleanRL differs where noted)."""

    learning_rate: float = 3e-4
    n_steps: int = 2048  # steps per environment per rollout
    batch_size: int = 64  # minibatch size (CleanRL: n_steps * n_envs / 32)
    n_epochs: int = 10  # passes over each rollout
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2  # epsilon of the clipped surrogate
    clip_range_vf: float | None = None  # value clipping around the rollout's values (None: off)
    ent_coef: float = 0.0  # entropy bonus weight
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True  # per minibatch
    anneal_lr: bool = False  # linear decay to 0 over learn() (CleanRL: True)
    target_kl: float | None = None  # stop an update's epochs once approx KL(old||new) > 1.5x this
    adam_eps: float = 1e-5  # SB3 and CleanRL both use 1e-5, not Adam's 1e-8
    kl_coef: float = (
        0.0  # beta of the KL penalty to the reference policy (initial value if adaptive)
    )
    kl_target: float | None = (
        None  # per-step KL the adaptive controller steers to (None: fixed beta)
    )
    kl_horizon: int = 10_000  # steps over which the adaptive controller can move beta by ~20%
    kl_estimator: str = "k1"  # "k1": log(pi/ref) as in RLHF; "k3": non-negative, lower variance
    torch_threads: int | None = 1  # intra-op threads during learn(); None: leave torch's setting
    fast_acting: bool = True  # act with a numpy copy of small MLP actor-critics (same maths)
    seed: int = 0  # action sampling and minibatch order (seed the policy's init yourself)

    def __post_init__(self) -> None:
        positive = (
            "learning_rate",
            "n_steps",
            "batch_size",
            "n_epochs",
            "clip_range",
            "kl_horizon",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        for name in ("ent_coef", "vf_coef", "max_grad_norm", "kl_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("clip_range_vf", "target_kl", "kl_target"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value} must be > 0 or None (off)")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads={self.torch_threads} must be >= 1 or None")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; choose one of {KL_ESTIMATORS}")
        if self.kl_target is not None and self.kl_coef == 0:
            raise ValueError(
                f"kl_target={self.kl_target} needs kl_coef > 0 as the starting beta "
                "(a multiplicative controller never leaves 0); e.g. kl_coef=0.1"
            )


def default_ppo_policy(envs: VectorEnv, head: str = "gaussian") -> Policy:
    """SB3's PPO network (separate 64-64 tanh actor and critic) for ``envs``' state observation
    (a Box, or the ``state`` entry of a Dict) and Box actions."""
    space = envs.single_observation_space
    state = space["state"] if isinstance(space, spaces.Dict) and "state" in space.spaces else space
    if not isinstance(state, spaces.Box) or len(state.shape) != 1:
        raise ValueError(
            f"default_ppo_policy needs a flat Box state observation, got {space}; "
            "build a VLA or CNN policy with value_head=True for images"
        )
    actions = envs.single_action_space
    return actor_critic.ActorCriticPolicy(
        actor_critic.ActorCriticConfig(
            obs_dim=state.shape[0],
            action_low=tuple(map(float, actions.low)),
            action_high=tuple(map(float, actions.high)),
            head=head,
        )
    )


# ---------------------------------------------------------------------------- the agent
class PPO:
    """PPO on a vector env (or one env, wrapped). ``learn(total_steps)`` alternates rollouts and
    ``update()``; metrics go to ``log_dir/metrics.csv``. ``reference`` (optional) is the frozen
    policy of the KL penalty. The policy runs in eval mode (no dropout) so that rollout and
    update log-probabilities agree."""

    config_class = PPOConfig
    agent_type: ClassVar[str] = "ppo"  # in checkpoints; PPO is not in the offline registry

    def __init__(
        self,
        policy: Policy,
        envs: VectorEnv | gym.Env,
        config: PPOConfig | None = None,
        reference: Policy | None = None,
        log_dir: str | os.PathLike | None = None,
    ):
        self.config = c = config or PPOConfig()
        if not isinstance(envs, VectorEnv):
            single = envs
            envs = SyncVectorEnv([lambda: single], autoreset_mode=AutoresetMode.SAME_STEP)
        self.envs, self.mode = envs, autoreset_mode(envs)
        check_single_action(policy, "PPO")
        self.policy = policy.eval()
        self.head = policy.head
        if getattr(self.head, "kind", None) not in ("gaussian", "tokens"):
            raise ValueError(
                "PPO needs a stochastic head: build the policy with head='gaussian' or 'tokens'"
            )
        if (
            not hasattr(policy, "forward_with_value")
            and getattr(policy, "value_head", None) is None
        ):
            raise ValueError(
                f"{type(policy).__name__} has no value head; build it with value_head=True"
            )
        space = envs.single_action_space
        if not isinstance(space, spaces.Box) or space.shape != (self.head.action_dim,):
            raise ValueError(
                f"action space {space} does not fit the policy's {self.head.action_dim}-D Box actions"
            )
        self.action_low, self.action_high = space.low, space.high
        self.reference = None
        if reference is not None:
            self.reference = copy.deepcopy(reference).eval().requires_grad_(False)
        controller = AdaptiveKLController if c.kl_target is not None else FixedKLController
        args = (c.kl_coef, c.kl_target, c.kl_horizon) if c.kl_target is not None else (c.kl_coef,)
        self.kl_controller = controller(*args)
        self.params = [p for p in policy.parameters() if p.requires_grad]
        fused = all(
            p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in self.params
        )
        self.optimizer = torch.optim.Adam(
            self.params, lr=c.learning_rate, eps=c.adam_eps, fused=fused or None
        )
        self.buffer = RolloutBuffer(
            envs.single_observation_space, self.head.action_dim, c.n_steps, envs.num_envs
        )
        self.generator = torch.Generator().manual_seed(c.seed)
        self.rng = np.random.default_rng(c.seed)
        self._numpy_actor = None
        self.log = MetricsLogger(log_dir)
        self.num_steps = 0  # environment steps so far (summed over envs)
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self._obs: Any = None  # the vector env's last observation (numpy, as returned)
        self.env_actions: list[np.ndarray] = []  # per rollout, what envs.step got (for resume)
        self._call: dict[str, int] | None = None  # the learn() call in progress (for resume)

    # ------------------------------------------------------------------ rollouts
    def _reset(self) -> None:
        self._obs, _ = self.envs.reset(seed=self.config.seed)
        n = self.envs.num_envs
        self._running_return, self._running_length = np.zeros(n), np.zeros(n, dtype=np.int64)
        self._was_ended = np.zeros(n, dtype=bool)  # NEXT_STEP: the next step only resets

    def _snapshot(self) -> None:
        """Take a numpy copy of a small MLP's weights for this rollout's acting (``fast_acting``)."""
        self._numpy_actor = None
        if (
            self.config.fast_acting
            and hasattr(self.policy, "numpy_actor")
            and self.head.kind == "gaussian"
        ):
            self._numpy_actor = self.policy.numpy_actor()
            self._log_std = self.head.log_std.detach().numpy().copy()

    def _numpy_input(self, obs: Any) -> np.ndarray:
        return obs[self.policy.config.obs_key] if isinstance(obs, dict) else obs

    def _torch_batch(self, obs: Any, policy: Policy) -> dict[str, Any]:
        return policy_batch(policy, obs_to_torch(obs, self.envs.single_observation_space))

    @torch.inference_mode()
    def _act(self, obs: Any) -> tuple[np.ndarray, ...]:
        """Sampled actions, their log-probs, values and KL estimates to the reference (numpy)."""
        if self._numpy_actor is not None:
            mean, value = self._numpy_actor(self._numpy_input(obs))
            noise = self.rng.standard_normal(mean.shape, dtype=np.float32)
            action = mean + noise * np.exp(self._log_std)
            log_prob = (-0.5 * noise**2 - self._log_std - _LOG_SQRT_2PI).sum(-1)
        else:
            out, value = head_and_value(self.policy, self._torch_batch(obs, self.policy))
            action = self.head.sample(out, self.generator)
            log_prob = self.head.log_prob(out, action)
            action, log_prob, value = action.numpy(), log_prob.numpy(), value.numpy()
        kl = np.zeros_like(log_prob)
        if self.reference is not None:
            out = head_output(self.reference, self._torch_batch(obs, self.reference))
            ref_log_prob = self.reference.head.log_prob(out, torch.from_numpy(action))
            kl = kl_penalty(
                torch.from_numpy(log_prob), ref_log_prob, self.config.kl_estimator
            ).numpy()
        return action, log_prob, value, kl

    @torch.inference_mode()
    def _values(self, obs: Any) -> np.ndarray:
        if self._numpy_actor is not None:
            return self._numpy_actor(self._numpy_input(obs))[1]
        return head_and_value(self.policy, self._torch_batch(obs, self.policy))[1].numpy()

    def collect_rollout(self) -> None:
        """Fill the buffer with ``n_steps`` steps of every env, then compute advantages."""
        buf, same_step = self.buffer, self.mode == AutoresetMode.SAME_STEP
        if self._obs is None:
            self._reset()
        self._snapshot()
        sent = None  # the actions envs.step received, recorded so resume can replay them
        for t in range(buf.n_steps):
            action, log_prob, value, kl = self._act(self._obs)
            buf.store_obs(t, self._obs)  # before step(): a copy=False vector env reuses its array
            env_action = np.clip(action, self.action_low, self.action_high)
            if sent is None:
                sent = np.empty((buf.n_steps, *env_action.shape), env_action.dtype)
            sent[t] = env_action
            obs, reward, terminated, truncated, info = self.envs.step(env_action)
            buf.actions[t], buf.log_probs[t], buf.values[t], buf.kl[t] = action, log_prob, value, kl
            buf.rewards[t], buf.terminated[t], buf.truncated[t] = reward, terminated, truncated
            buf.valid[t] = ~self._was_ended
            if same_step and truncated.any():
                index = np.flatnonzero(truncated)
                finals = stack_obs(
                    [info["final_obs"][i] for i in index], self.envs.single_observation_space
                )
                buf.final_values[t, index] = self._values(finals)
            self._obs = obs
            self._track_episodes(reward, terminated | truncated)
        self.env_actions.append(sent)
        self.num_steps += buf.n_steps * buf.n_envs
        self._compute_advantages()

    def _track_episodes(self, reward: np.ndarray, ended: np.ndarray) -> None:
        live = ~self._was_ended
        self._running_return += reward * live
        self._running_length += live
        finished = ended & live
        if finished.any():
            for i in np.flatnonzero(finished):
                self.episode_returns.append(float(self._running_return[i]))
                self.episode_lengths.append(int(self._running_length[i]))
            self._running_return[finished], self._running_length[finished] = 0.0, 0
        if self.mode == AutoresetMode.NEXT_STEP:
            self._was_ended = finished

    def _compute_advantages(self) -> None:
        buf, c = self.buffer, self.config
        next_values = np.concatenate([buf.values[1:], self._values(self._obs)[None]])
        if self.mode == AutoresetMode.SAME_STEP:
            next_values = np.where(buf.truncated, buf.final_values, next_values)
        rewards = buf.rewards - self.kl_controller.coef * buf.kl
        ended = buf.terminated | buf.truncated
        advantages = gae(
            *(
                torch.from_numpy(x)
                for x in (rewards, buf.values, next_values, buf.terminated, ended)
            ),
            c.gamma,
            c.gae_lambda,
        )
        buf.advantages[:] = advantages.numpy()
        buf.returns[:] = buf.advantages + buf.values

    # ------------------------------------------------------------------ update
    def update(self) -> dict[str, float]:
        """``n_epochs`` passes of minibatch gradient steps over the buffer; returns metrics."""
        buf, c = self.buffer, self.config
        self._install_flat_grad()
        flat = buf.flat()
        index = torch.from_numpy(np.flatnonzero(buf.valid.reshape(-1)))
        stats: list[Tensor] = []
        for _ in range(c.n_epochs):
            epoch = take(flat, index[torch.randperm(len(index), generator=self.generator)])
            for start in range(0, len(index), c.batch_size):
                row = self._minibatch_step(
                    {k: v[start : start + c.batch_size] for k, v in epoch.items()}
                )
                stats.append(row)
                if c.target_kl is not None and row[3] > 1.5 * c.target_kl:
                    break
            else:
                continue
            break  # the KL early stop ends every epoch
        means = torch.stack(stats).mean(0).tolist()
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        metrics = dict(zip(names, means, strict=True))
        valid = buf.valid
        metrics["explained_variance"] = explained_variance(
            torch.from_numpy(buf.values[valid]), torch.from_numpy(buf.returns[valid])
        )
        metrics["n_minibatches"] = float(len(stats))
        return metrics

    def _install_flat_grad(self) -> None:
        """Make every ``param.grad`` a view into one flat buffer, so that zeroing and clipping the
        gradient are one tensor op each instead of a Python loop over parameters (backward adds
        into existing ``.grad`` tensors in place, so the views stay)."""
        first = self.params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in self.params):
            raise ValueError("PPO needs every trainable parameter on one device with one dtype")
        self._flat_grad = torch.zeros(
            sum(p.numel() for p in self.params), dtype=first.dtype, device=first.device
        )
        offset = 0
        for p in self.params:
            p.grad = self._flat_grad[offset : offset + p.numel()].view_as(p)
            offset += p.numel()

    def _minibatch_step(self, mb: dict[str, Any]) -> Tensor:
        c = self.config
        out, values = head_and_value(self.policy, policy_batch(self.policy, mb))
        log_probs = self.head.log_prob(out, mb["actions"])
        with torch.set_grad_enabled(c.ent_coef > 0):  # no graph for a zero-weight bonus
            entropy = self.head.entropy(out).mean()
        advantages = mb["advantages"]
        if c.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss, clip_fraction = clipped_surrogate_loss(
            log_probs, mb["log_probs"], advantages, c.clip_range
        )
        v_loss = value_loss(values, mb["returns"], mb["values"], c.clip_range_vf)
        loss = policy_loss + c.vf_coef * v_loss
        if c.ent_coef > 0:
            loss = loss - c.ent_coef * entropy
        self._flat_grad.zero_()
        loss.backward()  # accumulates in place into the views of _flat_grad
        norm = torch.linalg.vector_norm(self._flat_grad)
        if not torch.isfinite(loss.detach() + norm):  # one read per minibatch (cheap on CPU)
            parts = {"policy_loss": policy_loss, "value_loss": v_loss, "entropy": entropy}
            bad = [(k, v.item()) for k, v in parts.items() if not torch.isfinite(v)]
            name, value = (bad or [("gradient_norm", norm.item())])[0]
            raise NonFiniteLossError(name, self.num_steps, value)
        self._flat_grad.mul_((c.max_grad_norm / (norm + 1e-6)).clamp(max=1.0))  # global clip
        self.optimizer.step()
        with torch.no_grad():
            log_ratio = log_probs - mb["log_probs"]
            approx_kl = (torch.expm1(log_ratio) - log_ratio).mean()
        return torch.stack(
            [policy_loss.detach(), v_loss.detach(), entropy.detach(), approx_kl, clip_fraction]
        )

    # ------------------------------------------------------------------ the loop
    def learn(
        self,
        total_steps: int,
        progress: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 2,
    ) -> dict[str, float]:
        """Train for at least ``total_steps`` environment steps (whole rollouts); returns the
        last rollout's metrics (empty if a resumed call had nothing left to do).

        With ``checkpoint_dir``, a checkpoint is written after the rollout that crosses each
        multiple of ``checkpoint_every`` environment steps (0: only at the end) and after the
        last one. On an agent from :meth:`resume` whose checkpoint was taken inside a
        ``learn`` call, the same ``total_steps`` continues that call where it stopped.

        Runs with ``config.torch_threads`` intra-op threads (restored afterwards): PPO's tensors
        are too small for threads to pay, and on a busy 2-core CPU two threads made a small
        MLP's training 10-40x slower than one.
        """
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps} must be >= 1")
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every={checkpoint_every} must be >= 0 (0: at the end)")
        threads = torch.get_num_threads()
        if self.config.torch_threads is not None:
            torch.set_num_threads(self.config.torch_threads)
        try:
            return self._learn(
                total_steps, progress, checkpoint_dir, checkpoint_every, keep_checkpoints
            )
        except NonFiniteLossError as error:
            if checkpoint_dir is None:
                raise
            raise NonFiniteLossError(error.loss, error.step, error.value) from RuntimeError(
                last_checkpoint_note(checkpoint_dir)
            )
        finally:
            torch.set_num_threads(threads)

    def _start_call(self, total_steps: int) -> dict[str, int]:
        """The state of this learn() call: a new one, or the resumed one it continues."""
        per_rollout = self.config.n_steps * self.envs.num_envs
        call = self._call
        if call is not None and call["total_steps"] == total_steps:
            return call
        if call is not None and call["rollout"] < call["n_rollouts"]:
            raise ValueError(
                f"this agent resumes a learn(total_steps={call['total_steps']}) call stopped "
                f"after {call['rollout']} of {call['n_rollouts']} rollouts; call learn with "
                f"that total (got {total_steps}) to continue it"
            )
        n_rollouts = math.ceil(total_steps / per_rollout)
        return {"total_steps": total_steps, "n_rollouts": n_rollouts, "rollout": 0}

    def _learn(
        self, total_steps: int, progress: bool, checkpoint_dir: Any, every: int, keep: int
    ) -> dict[str, float]:
        """The rollouts of this call in the one training loop: a step is a rollout and its
        update; logs, the bar and checkpoints count environment steps."""
        c, per_rollout = self.config, self.config.n_steps * self.envs.num_envs
        self._call = call = self._start_call(total_steps)
        n_rollouts = call["n_rollouts"]
        start, start_steps, last = time.perf_counter(), self.num_steps, {}

        def rollout(i: int) -> dict[str, float]:  # i: 1-based rollout of this call
            if c.anneal_lr:
                for group in self.optimizer.param_groups:
                    group["lr"] = c.learning_rate * (1.0 - (i - 1) / n_rollouts)
            self.collect_rollout()
            metrics = self.update()
            ref_kl = float(self.buffer.kl[self.buffer.valid].mean())
            returns, lengths = self.episode_returns, self.episode_lengths
            metrics.update(
                ref_kl=ref_kl,
                kl_coef=self.kl_controller.coef,
                learning_rate=self.optimizer.param_groups[0]["lr"],
                steps_per_s=(self.num_steps - start_steps) / (time.perf_counter() - start),
                episode_return=float(np.mean(returns)) if returns else float("nan"),
                episode_length=float(np.mean(lengths)) if lengths else float("nan"),
            )
            self.kl_controller.update(ref_kl, per_rollout)
            call["rollout"] = i
            last.clear()
            last.update(metrics)
            return metrics

        loop = TrainingLoop(
            rollout, n_rollouts, start=call["rollout"], desc="ppo", log=self.log, log_every=1,
            prefix="", progress=progress,
            checkpoint=None if checkpoint_dir is None else lambda: self.checkpoint(
                checkpoint_dir, keep
            ),
            checkpoint_every=every, step_size=per_rollout,
            step_offset=self.num_steps - call["rollout"] * per_rollout,
            postfix=lambda m: {
                "ret": f"{m['episode_return']:.1f}", "fps": f"{m['steps_per_s']:.0f}"
            },
        )  # fmt: skip
        loop.run()
        self._call = None  # finished: a further learn() call starts a new one
        return dict(last)

    # ------------------------------------------------------------------ persistence
    @property
    def step(self) -> int:
        """A checkpoint's step: environment steps so far (:attr:`num_steps`)."""
        return self.num_steps

    @step.setter
    def step(self, value: int) -> None:
        self.num_steps = value

    def modules(self) -> dict[str, nn.Module]:
        """The networks a checkpoint stores: the policy, and the KL penalty's reference."""
        out: dict[str, nn.Module] = {"policy": self.policy}
        if self.reference is not None:
            out["reference"] = self.reference
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimiser a checkpoint stores."""
        return {"policy": self.optimizer}

    def save(self, directory: str | os.PathLike) -> Path:
        """The agents' checkpoint files (networks, optimizer, config, step count, KL
        coefficient; see :mod:`embodied_rl.agents.ppo_checkpoint`) and ``policy/``, the
        policy alone as every command reads it."""
        return ppo_checkpoint.save_ppo(self, directory)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, envs: VectorEnv | gym.Env, log_dir: str | None = None
    ) -> PPO:
        """Rebuild a saved agent on ``envs``: policy, reference, optimizer and KL coefficient."""
        return ppo_checkpoint.load_ppo(cls, directory, envs, log_dir)

    def checkpoint(self, directory: str | os.PathLike, keep: int = 2) -> Path:
        """Write ``directory/step_<N>`` (the checkpoint files plus the resume state)
        atomically, point ``directory/last`` at it and keep the newest ``keep``."""
        return ppo_checkpoint.save_checkpoint(self, directory, keep)

    @classmethod
    def resume(
        cls,
        directory: str | os.PathLike,
        envs: VectorEnv | gym.Env,
        log_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> PPO:
        """Rebuild the agent of the ``last`` checkpoint in ``directory`` on fresh ``envs``
        (built as in the interrupted run, never reset) so that training continues exactly;
        ``log_dir``'s ``metrics.csv`` loses the rows logged after the checkpoint."""
        return ppo_checkpoint.resume(cls, directory, envs, log_dir, progress)
