"""Offline RL agents: BC, TD3+BC, IQL, CQL (and CQL-Lagrange), Cal-QL, the Decision Transformer
and CPL.

Each algorithm is a frozen config dataclass with the paper's defaults, pure loss functions
(:mod:`embodied_rl.agents.losses`) and ``update(batch) -> dict[str, float]``; the one
training loop is :mod:`embodied_rl.agents.trainer`, checkpoints are
:mod:`embodied_rl.agents.checkpoint`. ``make_agent("iql", policy)`` builds one by name.
Offline-to-online: :func:`finetune_online` continues IQL, CQL and Cal-QL in their environment
(:mod:`embodied_rl.agents.online`), :func:`finetune_ppo` fine-tunes a pretrained policy with PPO
and a KL penalty to itself (:mod:`embodied_rl.agents.finetune`).
"""

from embodied_rl.agents.base import (
    Agent,
    NonFiniteLossError,
    agent_class,
    list_agents,
    make_agent,
    register_agent,
)
from embodied_rl.agents.bc import BCAgent, BCConfig
from embodied_rl.agents.calql import CalQLAgent, CalQLConfig
from embodied_rl.agents.checkpoint import load_agent, load_checkpoint, save_checkpoint
from embodied_rl.agents.cpl import CPLConfig, CPLLearner
from embodied_rl.agents.cql import CQLAgent, CQLConfig
from embodied_rl.agents.dt import DecisionTransformerPolicy, DTAgent, DTConfig, DTPolicyConfig
from embodied_rl.agents.finetune import PPOFinetuneConfig, PPOFinetuneResult, finetune_ppo
from embodied_rl.agents.iql import IQLAgent, IQLConfig
from embodied_rl.agents.online import OnlineConfig, OnlineResult, finetune_online
from embodied_rl.agents.replay import ReplayBuffer
from embodied_rl.agents.td3bc import TD3BCAgent, TD3BCConfig
from embodied_rl.agents.trainer import (
    Trainer,
    TrainerConfig,
    default_policy,
    env_factory,
    evaluate,
    make_sampler,
    train,
)

__all__ = [
    "Agent",
    "BCAgent",
    "BCConfig",
    "CPLConfig",
    "CPLLearner",
    "CQLAgent",
    "CQLConfig",
    "CalQLAgent",
    "CalQLConfig",
    "DTAgent",
    "DTConfig",
    "DTPolicyConfig",
    "DecisionTransformerPolicy",
    "IQLAgent",
    "IQLConfig",
    "NonFiniteLossError",
    "OnlineConfig",
    "OnlineResult",
    "PPOFinetuneConfig",
    "PPOFinetuneResult",
    "ReplayBuffer",
    "TD3BCAgent",
    "TD3BCConfig",
    "Trainer",
    "TrainerConfig",
    "agent_class",
    "default_policy",
    "env_factory",
    "evaluate",
    "finetune_online",
    "finetune_ppo",
    "list_agents",
    "load_agent",
    "load_checkpoint",
    "make_agent",
    "make_sampler",
    "register_agent",
    "save_checkpoint",
    "train",
]
