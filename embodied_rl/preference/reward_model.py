"""Preference reward models and dataset relabelling (the first half of P-IQL).

A :class:`TransitionRewardModel` is an MLP ``r(s, a)`` (the LLM trainers' reward model is
:class:`embodied_rl.llm.reward.RewardModel`); a segment's predicted return is the sum over its
steps, fitted to preferences with the Bradley-Terry loss (Christiano et al. 2017,
arXiv:1706.03741). :func:`relabel_rewards` replaces a dataset's rewards with the model's, and
the offline agents then train on it: preference-based IQL (P-IQL, as in Hejna et al. 2023,
arXiv:2310.13639, and Kim et al. 2023's Preference Transformer baselines)::

    model, _ = fit_reward_model(prefs, RewardModelConfig())
    agents.train("iql", relabel_rewards(data, model), out)

Weights are saved as safetensors with the config as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from embodied_rl.datasets import OfflineDataset
from embodied_rl.datasets.samplers import SamplerConfig
from embodied_rl.policies.mlp import mlp
from embodied_rl.policies.normalization import ObservationNormalizer
from embodied_rl.preference.data import PreferenceDataset, PreferenceSampler
from embodied_rl.preference.losses import bradley_terry_loss
from embodied_rl.utils.io import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

REWARD_SCALINGS = ("none", "standard", "minmax")


@dataclass(frozen=True)
class RewardModelConfig:
    """An MLP reward model ``r(s, a)`` trained with the Bradley-Terry loss on segment sums."""

    obs_dim: int = 39
    action_dim: int = 4
    obs_key: str = "state"
    hidden: tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    steps: int = 1_000  # gradient steps
    batch_size: int = 32  # pairs per step (each pair: 2 x L steps through the MLP)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden={self.hidden} must list positive layer widths")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"learning_rate={self.learning_rate} must be > 0 and weight_decay={self.weight_decay} >= 0"
            )


class TransitionRewardModel(nn.Module):
    """``r(s, a)``: standardised state and action -> MLP -> scalar reward per step."""

    def __init__(self, config: RewardModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.obs_norm = ObservationNormalizer(c.obs_dim, c.obs_key)
        self.net = mlp([c.obs_dim + c.action_dim, *c.hidden, 1])

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        """``obs`` ``(..., obs_dim)`` and ``actions`` ``(..., action_dim)`` -> rewards ``(...)``."""
        x = torch.cat([self.obs_norm(obs.float()), actions.float()], dim=-1)
        return self.net(x).squeeze(-1)

    def segment_returns(self, obs: dict[str, Tensor], actions: Tensor) -> Tensor:
        """``(B,)`` predicted returns of segments ``obs[obs_key]`` ``(B, L, D)``, ``(B, L, A)``."""
        return self(obs[self.config.obs_key], actions).sum(-1)

    def save(self, directory: str | os.PathLike) -> Path:
        """``model.safetensors`` and ``config.json`` in ``directory`` (each written atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, tmp)
        config = {"type": "reward_model", "config": dataclasses.asdict(self.config)}
        write_text_atomic(directory / "config.json", json.dumps(config, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TransitionRewardModel:
        directory = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory} is not a saved reward model: {name} is missing"
                )
        values = json.loads((directory / "config.json").read_text())["config"]
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        model = cls(RewardModelConfig(**values))
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return model


def preference_loss(returns_a: Tensor, returns_b: Tensor, labels: Tensor) -> Tensor:
    """Bradley-Terry loss with soft labels: ``label * BT(a > b) + (1 - label) * BT(b > a)``."""
    a_wins = bradley_terry_loss(returns_a, returns_b, reduction="none")
    b_wins = bradley_terry_loss(returns_b, returns_a, reduction="none")
    return (labels * a_wins + (1.0 - labels) * b_wins).mean()


def fit_reward_model(
    prefs: PreferenceDataset,
    config: RewardModelConfig | None = None,
    model: TransitionRewardModel | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    log_every: int = 100,
) -> tuple[TransitionRewardModel, dict[str, float]]:
    """Train a reward model on the labelled pairs in the one training loop; returns it and
    its final metrics (``loss`` and ``accuracy``: mean over the last 10% of steps). With
    ``out``, the loss and accuracy go to ``out/metrics.csv`` and TensorBoard."""
    from embodied_rl.rl.errors import NonFiniteLossError
    from embodied_rl.rl.loop import TrainingLoop
    from embodied_rl.utils.metrics import MetricsLogger

    config = config or _config_for(prefs)
    torch.manual_seed(config.seed)
    model = model if model is not None else TransitionRewardModel(config)
    data = prefs.segments.data
    if not model.obs_norm.is_fitted:
        model.obs_norm.fit(data.observations[config.obs_key][data.obs_index])
    sampler = PreferenceSampler(
        prefs, SamplerConfig(config.batch_size, config.seed, obs_keys=(config.obs_key,))
    )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    tail = max(1, config.steps // 10)
    losses, accuracies = [], []

    def step(i: int) -> dict[str, float]:
        batch = sampler.sample()
        returns_a = model.segment_returns(batch["obs_a"], batch["action_a"])
        returns_b = model.segment_returns(batch["obs_b"], batch["action_b"])
        loss = preference_loss(returns_a, returns_b, batch["label"])
        if not torch.isfinite(loss):  # before the optimiser step: the weights stay good
            raise NonFiniteLossError("reward_model_loss", i, loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        strict = batch["label"] != 0.5
        correct = ((returns_a > returns_b) == (batch["label"] == 1.0))[strict]
        accuracy = correct.float().mean().item() if strict.any() else float("nan")
        if i > config.steps - tail:
            losses.append(loss.item())
            accuracies.append(accuracy)
        return {"reward_model_loss": loss.item(), "accuracy": accuracy}

    model.train()
    log = MetricsLogger(out) if out is not None else None
    try:
        TrainingLoop(
            step, config.steps, desc="reward model", log=log, log_every=log_every,
            progress=progress,
        ).run()  # fmt: skip
    finally:
        if log is not None:
            log.close()
    model.eval()
    metrics = {"loss": float(np.mean(losses)), "accuracy": float(np.nanmean(accuracies))}
    logger.info("reward model after %d steps: %s", config.steps, metrics)
    return model, metrics


def _config_for(prefs: PreferenceDataset) -> RewardModelConfig:
    data = prefs.segments.data
    state = data.observations.get("state")
    if state is None:
        raise ValueError("the dataset has no 'state' observation; pass a RewardModelConfig")
    return RewardModelConfig(obs_dim=int(state.shape[-1]), action_dim=int(data.actions.shape[-1]))


@torch.no_grad()
def predict_rewards(
    model: TransitionRewardModel, data: OfflineDataset, batch_size: int = 8_192
) -> np.ndarray:
    """``(N,)`` the model's reward of every transition of ``data``."""
    obs = data.observations[model.config.obs_key][data.obs_index]
    out = []
    model.eval()
    for i in range(0, data.n_transitions, batch_size):
        o = torch.from_numpy(np.asarray(obs[i : i + batch_size]))
        a = torch.from_numpy(np.asarray(data.actions[i : i + batch_size]))
        out.append(model(o, a).numpy())
    return np.concatenate(out).astype(np.float64)


def relabel_rewards(
    data: OfflineDataset, model: TransitionRewardModel, scaling: str = "minmax"
) -> OfflineDataset:
    """A copy of ``data`` whose rewards are the model's (the arrays are shared otherwise).

    ``scaling``: ``"minmax"`` maps the predicted rewards to [0, 1] (IQL's temperature and
    value scale then match a sparse-reward task), ``"standard"`` to zero mean and unit std,
    ``"none"`` keeps them raw. The dataset's metadata records ``reward_model_scaling``.
    """
    if scaling not in REWARD_SCALINGS:
        raise ValueError(f"scaling={scaling!r}; choose one of {REWARD_SCALINGS}")
    rewards = predict_rewards(model, data)
    if scaling == "minmax":
        span = rewards.max() - rewards.min()
        rewards = (rewards - rewards.min()) / (span if span > 0 else 1.0)
    elif scaling == "standard":
        rewards = (rewards - rewards.mean()) / max(float(rewards.std()), 1e-8)
    metadata = {**data.metadata, "reward_model_scaling": scaling}
    return dataclasses.replace(data, rewards=rewards, metadata=metadata)
