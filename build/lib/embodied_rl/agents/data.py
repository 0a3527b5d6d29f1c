"""The batches agents train on: transitions (+ Monte-Carlo returns, + frame histories).

:class:`AgentSampler` is a :class:`~embodied_rl.datasets.TransitionSampler` that remembers
the indices of its last batch and adds, on request, the discounted Monte-Carlo return of
each transition (Cal-QL), the frame history ending at it (VLA policies) and the expert's
noise-free action (DART labels), all gathered at the same indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from embodied_rl.agents.losses import discounted_returns
from embodied_rl.datasets import OfflineDataset
from embodied_rl.datasets.episode import EXPERT_ACTION
from embodied_rl.datasets.samplers import HistorySampler, SamplerConfig, TransitionSampler


class _HistoryAt(HistorySampler):
    """A history sampler whose windows end at indices given by the caller."""

    indices: np.ndarray

    def _indices(self, high: int) -> np.ndarray:
        return self.indices


def scale_rewards(rewards: np.ndarray, scale: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """``scale * r + bias`` as float32 (the identity when ``scale=1, bias=0``): the reward
    transform of the agent configs (``reward_scale``, ``reward_bias``)."""
    rewards = np.asarray(rewards, dtype=np.float32)
    if scale == 1.0 and bias == 0.0:
        return rewards
    return (np.float32(scale) * rewards + np.float32(bias)).astype(np.float32)


def reward_transform(agent_config: Any) -> dict[str, float]:
    """The ``reward_scale``/``reward_bias`` of an agent config (1 and 0 where it has none)."""
    return {
        "reward_scale": float(getattr(agent_config, "reward_scale", 1.0)),
        "reward_bias": float(getattr(agent_config, "reward_bias", 0.0)),
    }


class AgentSampler(TransitionSampler):
    """Transitions; ``mc_return=True`` adds ``mc_return`` ``(B,)``; ``history=k`` adds
    ``history`` (observation windows ``(B, k, ...)``) and ``history_mask`` ``(B, k)``.
    ``reward_scale``/``reward_bias`` transform the rewards (``reward`` and ``mc_return``).
    ``labels="expert"`` adds ``label`` ``(B, A)``: the expert's noise-free action at each
    observation (``infos/expert_action``), the target of DART-style behaviour cloning.
    ``action_chunk=k > 1`` makes ``label`` ``(B, k * A)``: the targets of steps ``t .. t+k-1``
    (actions or expert labels), the episode's last one repeated past its end (ACT)."""

    def __init__(
        self,
        data: OfflineDataset | Sequence[OfflineDataset],
        gamma: float = 0.99,
        config: SamplerConfig | None = None,
        mc_return: bool = False,
        history: int | None = None,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
        labels: str = "action",
        action_chunk: int = 1,
    ) -> None:
        super().__init__(data, n_step=1, gamma=gamma, config=config)
        if action_chunk < 1:
            raise ValueError(f"action_chunk={action_chunk} must be >= 1")
        self.labels, self.action_chunk = None, action_chunk
        if labels == "expert":
            if EXPERT_ACTION not in self.data.infos:
                raise ValueError(
                    f"labels='expert' needs infos/{EXPERT_ACTION} in the dataset, which has "
                    f"infos {sorted(self.data.infos)}; collect the data with the scripted "
                    "expert (for DART with noise: erl collect ... --noise 0.2), or train on "
                    "labels='action'"
                )
            self.labels = np.asarray(self.data.infos[EXPERT_ACTION], dtype=np.float32)
        elif labels != "action":
            raise ValueError(f"labels={labels!r} must be 'action' or 'expert'")
        if self.labels is None and action_chunk > 1:
            self.labels = self.actions  # per transition, not per observation row
            self._label_rows = np.arange(self.data.n_transitions)
        else:
            self._label_rows = self.obs_row
        d = self.data
        self._episode_last = d.episode_starts[d.episode_index + 1] - 1  # per transition
        self.last_indices = np.empty(0, dtype=np.int64)
        # the agent's reward transform, applied to the reward column and the returns alike
        self.n_step_reward = scale_rewards(self.n_step_reward, reward_scale, reward_bias)
        rewards = scale_rewards(self.data.rewards, reward_scale, reward_bias)
        self.mc_return = (
            discounted_returns(rewards, self.data.episode_starts, gamma) if mc_return else None
        )
        self.history = None
        if history is not None:
            self.history = _HistoryAt(self.data, history, self.config)

    def _indices(self, high: int) -> np.ndarray:
        self.last_indices = super()._indices(high)
        return self.last_indices

    def sample(self) -> dict[str, Any]:
        batch = super().sample()
        i = self.last_indices
        if self.labels is not None:
            steps = np.minimum(
                i[:, None] + np.arange(self.action_chunk), self._episode_last[i, None]
            )
            rows = self._label_rows.take(steps)  # (B, k)
            batch["label"] = torch.from_numpy(self.labels.take(rows, axis=0).reshape(len(i), -1))
        if self.mc_return is not None:
            batch["mc_return"] = torch.from_numpy(self.mc_return.take(i))
        if self.history is not None:
            self.history.indices = i
            window = self.history.sample()
            batch["history"], batch["history_mask"] = window["obs"], window["mask"]
        return batch
