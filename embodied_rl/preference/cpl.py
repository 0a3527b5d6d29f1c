"""Contrastive Preference Learning: policies trained directly from segment preferences.

CPL (Hejna et al. 2023, arXiv:2310.13639) scores a segment by ``alpha * sum_t log pi(a_t|s_t)``
and fits those scores to the preferences with :func:`~embodied_rl.preference.losses.cpl_loss`:
no reward model, no RL. :class:`CPLLearner` runs optional behaviour-cloning pre-training steps
on the segments' actions first, and can add a BC regulariser to the CPL loss.

The learner has the agent interface of :mod:`embodied_rl.agents` (``update(batch) ->
dict[str, float]``, ``modules()``, ``optimizers()``, ``agent_type``, ``config``), so the shared
training loop and checkpoints run it with a :class:`~embodied_rl.preference.data.PreferenceSampler`.
The agents package registers it as ``"cpl"`` (``embodied_rl.agents.cpl``), so::

    agent, scores = train("cpl", data, out, preferences=prefs)  # or: erl train --algo cpl

(``embodied_rl.preference`` does not import the agents package; the agents import it.)
Works with the MLP policy (state) and the VLA policy (images + instruction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.policies import Policy, VLAPolicy
from embodied_rl.policies.normalization import fit_observation_normalizers
from embodied_rl.preference.losses import cpl_loss


@dataclass(frozen=True)
class CPLConfig:
    """CPL (Hejna et al. 2023, arXiv:2310.13639); defaults are the paper's Meta-World values
    (alpha 0.1, lambda 0.5, Adam 1e-4)."""

    alpha: float = 0.1  # temperature: segment score = alpha * sum_t log pi(a_t|s_t)
    conservative_lambda: float = 0.5  # bias on the dispreferred segment's score, in (0, 1]
    learning_rate: float = 1e-4  # Adam learning rate
    weight_decay: float = 0.0
    bc_steps: int = 0  # behaviour-cloning pre-training steps on the segments before CPL
    bc_weight: float = 0.0  # weight of the BC regulariser (mean -log pi over both segments)
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"alpha={self.alpha} must be > 0 (the paper uses 0.1)")
        if not 0.0 < self.conservative_lambda <= 1.0:
            raise ValueError(
                f"conservative_lambda={self.conservative_lambda} must lie in (0, 1] (paper: 0.5)"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")
        for name in ("weight_decay", "bc_steps", "bc_weight", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")


def _vla_log_probs(policy: VLAPolicy, obs: dict[str, Any], actions: Tensor) -> Tensor:
    """Per-step log-probs of a segment under the VLA policy.

    The segment ``(B, L)`` is cut into chunks of ``history`` frames (the last one padded and
    masked); each frame attends to the earlier frames of its chunk, as while acting."""
    images = obs["image"]  # (B, L, H, W, 3) uint8
    b, length = images.shape[:2]
    h = policy.config.history
    n_chunks = -(-length // h)
    pad = n_chunks * h - length
    index = torch.arange(length + pad, device=images.device).clamp(max=length - 1)
    chunks = images[:, index].reshape(b * n_chunks, h, *images.shape[2:])  # (B*C, h, H, W, 3)
    mask = (torch.arange(n_chunks * h, device=images.device) < length).reshape(n_chunks, h)
    instructions = [row[0] for row in obs["instruction"] for _ in range(n_chunks)]
    batch = {
        "images": chunks,
        "instructions": instructions,
        "frame_mask": mask.repeat(b, 1),  # (B*C, h)
    }
    if "proprio" in obs:
        proprio = obs["proprio"]  # (B, L, P)
        batch["proprio"] = proprio[:, index].reshape(b * n_chunks, h, -1)  # (B*C, h, P)
    out = policy(batch)  # (B*C, h, A, bins) or (B*C, h, A)
    chunk_actions = actions[:, index].reshape(b * n_chunks, h, -1)  # (B*C, h, A)
    logp = policy.head.log_prob(out, chunk_actions)  # (B*C, h)
    return logp.reshape(b, n_chunks * h)[:, :length]  # (B, L)


def segment_log_probs(policy: Policy, obs: dict[str, Any], actions: Tensor) -> Tensor:
    """``(B, L)`` log pi(a_t | s_t) of every step of a batch of segments.

    ``obs``: ``{key: (B, L, ...)}`` as :class:`PreferenceSampler` returns it; ``actions``
    ``(B, L, A)``. Flat policies (MLP, CNN) score every step independently."""
    if getattr(policy.head, "kind", None) == "deterministic":
        raise ValueError(
            "CPL needs log pi(a|s); this policy has a deterministic head: build it with "
            "head='gaussian' or head='tokens'"
        )
    if isinstance(policy, VLAPolicy):
        return _vla_log_probs(policy, obs, actions)
    b, length = actions.shape[:2]
    flat = {k: v.flatten(0, 1) for k, v in obs.items() if isinstance(v, Tensor)}
    return policy.log_prob(flat, actions.flatten(0, 1)).view(b, length)  # (B, L)


class CPLLearner:
    """CPL with optional BC pre-training and regulariser; one gradient step per ``update``."""

    agent_type: ClassVar[str] = "cpl"
    config_class: ClassVar[type] = CPLConfig
    uses_history: ClassVar[bool] = False
    sampler_options: ClassVar[dict[str, Any]] = {}
    trains_action_chunks: ClassVar[bool] = False
    needs_preferences: ClassVar[bool] = True  # batches of labelled segment pairs

    def __init__(self, policy: Policy, config: CPLConfig | None = None) -> None:
        config = config if config is not None else CPLConfig()
        if not isinstance(config, CPLConfig):
            raise TypeError(f"CPLLearner needs a CPLConfig; got {type(config).__name__}")
        if getattr(policy.head, "kind", None) == "deterministic":
            raise ValueError(
                "CPL needs a stochastic policy: build it with head='gaussian' or head='tokens'"
            )
        if int(getattr(policy.config, "action_chunk", 1)) > 1:
            raise ValueError(
                "CPL scores one action per step, but the policy predicts chunks of "
                f"action_chunk={policy.config.action_chunk}; build it with action_chunk=1"
            )
        self.policy, self.config = policy, config
        self.step = 0
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def train_mode(self, training: bool = True) -> None:
        self.policy.train(training)

    def fit_observation_normalizers(self, observations: dict[str, np.ndarray]) -> int:
        """Fit the policy's observation statistics on the data, unless already fitted (a
        BC-pretrained policy keeps its own); returns how many normalizers were fitted."""
        return fit_observation_normalizers([self.policy], observations)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self.policy.act(obs)

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """``cpl_loss``, ``bc_loss`` (mean -log pi over both segments) and ``loss``, the
        objective of this step: ``bc_loss`` during pre-training, then ``cpl_loss + bc_weight *
        bc_loss``. All three are reported every step, so their logged means stay comparable."""
        c = self.config
        logp_a = segment_log_probs(self.policy, batch["obs_a"], batch["action_a"])  # (B, L)
        logp_b = segment_log_probs(self.policy, batch["obs_b"], batch["action_b"])  # (B, L)
        bc = -torch.cat([logp_a, logp_b]).mean()
        cpl = cpl_loss(logp_a, logp_b, batch["label"], c.alpha, c.conservative_lambda)
        objective = bc if self.step < c.bc_steps else cpl + c.bc_weight * bc
        return {"loss": objective, "cpl_loss": cpl, "bc_loss": bc}

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One gradient step on ``loss``; returns the three losses as floats."""
        losses = self.losses(batch)
        if not torch.isfinite(losses["loss"]):
            values = {k: v.item() for k, v in losses.items()}
            raise FloatingPointError(
                f"CPL loss is not finite at step {self.step}: {values}; lower learning_rate or alpha"
            )
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {k: v.item() for k, v in losses.items()}

    @torch.no_grad()
    def evaluate(self, batch: dict[str, Any]) -> dict[str, float]:
        """CPL loss and preference accuracy on a batch, without a gradient step."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            c = self.config
            logp_a = segment_log_probs(self.policy, batch["obs_a"], batch["action_a"])
            logp_b = segment_log_probs(self.policy, batch["obs_b"], batch["action_b"])
            labels = batch["label"]
            loss = cpl_loss(logp_a, logp_b, labels, c.alpha, c.conservative_lambda)
            strict = labels != 0.5
            a_higher = logp_a.sum(-1) > logp_b.sum(-1)
            correct = (a_higher == (labels == 1.0))[strict]
            accuracy = correct.float().mean().item() if strict.any() else float("nan")
        finally:
            self.policy.train(was_training)
        return {"cpl_loss": loss.item(), "accuracy": accuracy}
