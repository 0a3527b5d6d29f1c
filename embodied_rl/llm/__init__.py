"""LLM trainers on transformers causal LMs: SFT, reward model, PPO-RLHF, DPO (IPO, hinge),
best-of-N and rejection sampling, RLAIF and constitutional critique-and-revise, with a
synthetic offline task whose true preference is a program (see docs/llm.md).

The preference losses and the AI-feedback labeler come from :mod:`embodied_rl.preference`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {  # name -> the submodule defining it, imported on first use (keeps `erl` fast)
    "BestOfN": "best_of_n",
    "BestOfNConfig": "best_of_n",
    "ConstitutionalConfig": "constitutional",
    "DPOConfig": "dpo",
    "DPOTrainer": "dpo",
    "Demo": "demo",
    "DemoConfig": "demo",
    "Generation": "generation",
    "LMJudge": "judge",
    "OrdinalBins": "sft",
    "PPORLHFConfig": "ppo_rlhf",
    "PPORLHFTrainer": "ppo_rlhf",
    "PolicyWithValue": "ppo_rlhf",
    "Principle": "constitutional",
    "RLAIFConfig": "rlaif",
    "RT2PPOConfig": "rt2",
    "RT2PPOTrainer": "rt2",
    "RewardConfig": "reward",
    "RewardModel": "reward",
    "RewardTrainer": "reward",
    "SayCanPlanner": "planner",
    "SFTConfig": "sft",
    "SFTTrainer": "sft",
    "SamplingConfig": "generation",
    "TaskConfig": "tasks",
    "TaskGenerator": "tasks",
    "TextPair": "pairs",
    "ai_feedback_labeler": "rlaif",
    "best_of_n": "best_of_n",
    "best_of_n_kl": "best_of_n",
    "build_causal_lm": "models",
    "critique_and_revise": "constitutional",
    "evaluate_policy": "evaluation",
    "generate": "generation",
    "load_causal_lm": "models",
    "load_tokenizer": "tokenizer",
    "oracle_score": "tasks",
    "oracle_scores": "tasks",
    "planner_sft_examples": "planner",
    "prepare_demo": "demo",
    "revision_sft_data": "constitutional",
    "reward_model_fn": "reward",
    "rlaif": "rlaif",
    "rt2_segment_pairs": "rt2",
    "save_causal_lm": "models",
    "tiny_gpt2_config": "models",
    "train_tokenizer": "tokenizer",
}
__all__ = [
    "BestOfN",
    "BestOfNConfig",
    "ConstitutionalConfig",
    "DPOConfig",
    "DPOTrainer",
    "Demo",
    "DemoConfig",
    "Generation",
    "LMJudge",
    "OrdinalBins",
    "PPORLHFConfig",
    "PPORLHFTrainer",
    "PolicyWithValue",
    "Principle",
    "RLAIFConfig",
    "RT2PPOConfig",
    "RT2PPOTrainer",
    "RewardConfig",
    "RewardModel",
    "RewardTrainer",
    "SayCanPlanner",
    "SFTConfig",
    "SFTTrainer",
    "SamplingConfig",
    "TaskConfig",
    "TaskGenerator",
    "TextPair",
    "ai_feedback_labeler",
    "best_of_n",
    "best_of_n_kl",
    "build_causal_lm",
    "critique_and_revise",
    "evaluate_policy",
    "generate",
    "load_causal_lm",
    "load_tokenizer",
    "oracle_score",
    "oracle_scores",
    "planner_sft_examples",
    "prepare_demo",
    "reward_model_fn",
    "revision_sft_data",
    "rlaif",
    "rt2_segment_pairs",
    "save_causal_lm",
    "tiny_gpt2_config",
    "train_tokenizer",
]


def __getattr__(name: str):
    """Import the submodule defining ``name`` on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from embodied_rl.llm.best_of_n import BestOfN, BestOfNConfig, best_of_n, best_of_n_kl
    from embodied_rl.llm.constitutional import (
        ConstitutionalConfig,
        Principle,
        critique_and_revise,
        revision_sft_data,
    )
    from embodied_rl.llm.demo import Demo, DemoConfig, prepare_demo
    from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
    from embodied_rl.llm.evaluation import evaluate_policy
    from embodied_rl.llm.generation import Generation, SamplingConfig, generate
    from embodied_rl.llm.judge import LMJudge
    from embodied_rl.llm.models import (
        build_causal_lm,
        load_causal_lm,
        save_causal_lm,
        tiny_gpt2_config,
    )
    from embodied_rl.llm.pairs import TextPair
    from embodied_rl.llm.planner import SayCanPlanner, planner_sft_examples
    from embodied_rl.llm.ppo_rlhf import PolicyWithValue, PPORLHFConfig, PPORLHFTrainer
    from embodied_rl.llm.reward import RewardConfig, RewardModel, RewardTrainer, reward_model_fn
    from embodied_rl.llm.rlaif import RLAIFConfig, ai_feedback_labeler, rlaif
    from embodied_rl.llm.rt2 import RT2PPOConfig, RT2PPOTrainer, rt2_segment_pairs
    from embodied_rl.llm.sft import OrdinalBins, SFTConfig, SFTTrainer
    from embodied_rl.llm.tasks import TaskConfig, TaskGenerator, oracle_score, oracle_scores
    from embodied_rl.utils.tokenizer import load_tokenizer, train_tokenizer
