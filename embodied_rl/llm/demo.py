"""The synthetic-task RLHF setup every runnable piece shares: tokenizer, SFT policy and
reward model trained on :mod:`embodied_rl.llm.tasks`, cached in a directory.

``prepare_demo(out)`` trains a byte-level BPE tokenizer, a tiny GPT-2 by SFT on the mediocre
demonstrations, and a reward model (InstructGPT: initialised from the SFT model) on the
length-biased annotator's comparisons, normalised so demonstrations score mean 0 and std 1.
A second call with the same config loads the saved models instead of training again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from embodied_rl.llm.evaluation import ScoreFn
from embodied_rl.llm.models import build_causal_lm, load_causal_lm, save_causal_lm, tiny_gpt2_config
from embodied_rl.llm.reward import RewardConfig, RewardModel, RewardTrainer, reward_model_fn
from embodied_rl.llm.sft import SFTConfig, SFTTrainer
from embodied_rl.llm.tasks import (
    Comparison,
    TaskConfig,
    TaskGenerator,
    oracle_scores,
    response_words,
)
from embodied_rl.utils.io import write_text_atomic
from embodied_rl.utils.tokenizer import load_tokenizer, train_tokenizer

logger = logging.getLogger(__name__)
SPLITS = {"train": 0, "eval": 1, "rl": 2, "test": 3}  # seed offsets of the data splits


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo's data and models, and their trainers' options."""

    seed: int = 0
    task: TaskConfig = field(default_factory=TaskConfig)
    vocab_size: int = 512
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256  # the AI-feedback judge prompt is ~210 tokens
    n_demonstrations: int = 8_000
    n_comparisons: int = 6_000
    n_eval_comparisons: int = 1_000
    n_normalize: int = 1_000  # demonstrations that score mean 0, std 1 under the reward model
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=600, log_every=100))
    reward: RewardConfig = field(
        default_factory=lambda: RewardConfig(steps=800, log_every=100, eval_every=400)
    )


@dataclass
class Demo:
    """The trained pieces and their held-out numbers."""

    config: DemoConfig
    tokenizer: PreTrainedTokenizerBase
    policy: PreTrainedModel  # the SFT model (also the reference of every RL method)
    reward_model: RewardModel
    metrics: dict[str, float]

    def task(self, split: str) -> TaskGenerator:
        """The data generator of ``split`` ("train", "eval", "rl" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; choose one of {sorted(SPLITS)}")
        return TaskGenerator(self.config.task, self.config.seed * 100 + SPLITS[split])

    def eval_pairs(self) -> list[Comparison]:
        return self.task("eval").comparisons(self.config.n_eval_comparisons)

    def scorers(self) -> dict[str, ScoreFn]:
        """Oracle score, reward-model score and words per response."""
        return {
            "oracle": lambda p, r: oracle_scores(p, r, self.config.task),
            "reward": reward_model_fn(self.reward_model, self.tokenizer),
            "words": response_words,
        }


def _with_progress(config: DemoConfig, progress: bool, tensorboard: bool) -> DemoConfig:
    options = {"progress": progress, "tensorboard": tensorboard}
    return dataclasses.replace(
        config,
        sft=dataclasses.replace(config.sft, **options),
        reward=dataclasses.replace(config.reward, **options),
    )


def _fingerprint(config: DemoConfig) -> str:
    return json.dumps(asdict(_with_progress(config, False, False)), sort_keys=True)


def prepare_demo(
    out: str | os.PathLike,
    config: DemoConfig = DemoConfig(),
    progress: bool = True,
    tensorboard: bool = False,
) -> Demo:
    """Train (or load from ``out``) the demo's tokenizer, SFT policy and reward model."""
    out = Path(out)
    record = out / "demo.json"
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("config") == _fingerprint(config):
            tokenizer = load_tokenizer(out / "sft")
            policy = load_causal_lm(out / "sft")
            return Demo(
                config, tokenizer, policy, RewardModel.load(out / "reward_model"), saved["metrics"]
            )
        logger.info("%s was made with another config; training again", out)
    demo = train_demo(config, out, progress, tensorboard)
    save_causal_lm(demo.policy, out / "sft", demo.tokenizer)
    demo.reward_model.save(out / "reward_model")
    write_text_atomic(
        record, json.dumps({"config": _fingerprint(config), "metrics": demo.metrics}, indent=2)
    )
    return demo


def train_demo(
    config: DemoConfig,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    tensorboard: bool = False,
) -> Demo:
    """Train the demo's pieces from scratch (``out``: where the trainers log)."""
    run = _with_progress(config, progress, tensorboard)
    train, held_out = (
        TaskGenerator(config.task, config.seed * 100 + SPLITS[s]) for s in ("train", "eval")
    )
    tokenizer = train_tokenizer(train.corpus(2_000), vocab_size=config.vocab_size)
    model_config = tiny_gpt2_config(
        tokenizer, config.n_layer, config.n_embd, config.n_head, config.n_positions
    )
    policy = build_causal_lm(model_config, seed=config.seed)
    logs = Path(out) / "logs" if out is not None else None
    sft = SFTTrainer(policy, tokenizer, run.sft)
    rows = sft.train(
        train.demonstrations(config.n_demonstrations),
        out=logs / "sft" if logs else None,
        eval_examples=held_out.demonstrations(500),
    )
    reward_model = RewardModel.from_causal_lm(policy, seed=config.seed)
    trainer = RewardTrainer(reward_model, tokenizer, run.reward)
    eval_pairs = held_out.comparisons(config.n_eval_comparisons)
    trainer.train(
        train.comparisons(config.n_comparisons),
        out=logs / "reward_model" if logs else None,
        eval_pairs=eval_pairs,
    )
    metrics = {"sft_eval_loss": rows[-1]["eval/loss"]}
    metrics.update({f"rm_{k}": v for k, v in trainer.evaluate(eval_pairs).items()})
    metrics.update(oracle_agreement(reward_model, tokenizer, eval_pairs))
    demos = held_out.demonstrations(config.n_normalize)
    shift, scale = reward_model.normalize(tokenizer, [p for p, _ in demos], [r for _, r in demos])
    metrics.update(rm_norm_shift=shift, rm_norm_scale=scale)
    return Demo(config, tokenizer, policy, reward_model, metrics)


def oracle_agreement(
    reward_model: RewardModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Comparison]
) -> dict[str, float]:
    """How the reward model's pair order compares with the oracle's (ties left out) and the
    annotator's own ceiling: the mean probability of its more likely label."""
    prompts = [p.prompt for p in pairs]
    chosen = reward_model.score(tokenizer, prompts, [p.chosen for p in pairs]).numpy()
    rejected = reward_model.score(tokenizer, prompts, [p.rejected for p in pairs]).numpy()
    oracle = np.array([p.oracle_margin for p in pairs])
    decided = oracle != 0
    return {
        "rm_oracle_agreement": float(((chosen > rejected) == (oracle > 0))[decided].mean()),
        "annotator_oracle_agreement": float((oracle > 0)[decided].mean()),
        "annotator_ceiling": float(np.mean([max(p.p_chosen, 1 - p.p_chosen) for p in pairs])),
    }
