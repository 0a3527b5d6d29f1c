"""LLM trainers on transformers causal LMs: SFT, reward model, PPO-RLHF, DPO (IPO, hinge),
best-of-N and rejection sampling, RLAIF and constitutional critique-and-revise, with a
synthetic offline task whose true preference is a program (see docs/llm.md).

The preference losses and the AI-feedback labeler come from :mod:`embodied_rl.preference`.
"""

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
from embodied_rl.llm.models import build_causal_lm, load_causal_lm, save_causal_lm, tiny_gpt2_config
from embodied_rl.llm.pairs import TextPair
from embodied_rl.llm.ppo_rlhf import PolicyWithValue, PPORLHFConfig, PPORLHFTrainer
from embodied_rl.llm.reward import RewardConfig, RewardModel, RewardTrainer, reward_model_fn
from embodied_rl.llm.rlaif import RLAIFConfig, ai_feedback_labeler, rlaif
from embodied_rl.llm.sft import SFTConfig, SFTTrainer
from embodied_rl.llm.tasks import TaskConfig, TaskGenerator, oracle_score, oracle_scores
from embodied_rl.llm.tokenizer import load_tokenizer, train_tokenizer

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
    "PPORLHFConfig",
    "PPORLHFTrainer",
    "PolicyWithValue",
    "Principle",
    "RLAIFConfig",
    "RewardConfig",
    "RewardModel",
    "RewardTrainer",
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
    "prepare_demo",
    "reward_model_fn",
    "revision_sft_data",
    "rlaif",
    "save_causal_lm",
    "tiny_gpt2_config",
    "train_tokenizer",
]
