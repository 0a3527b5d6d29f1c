"""Policies: the RT-1-style VLA, the RT-2-style VLA on a vision-language model, MLP and CNN
policies, action tokenizer and encoders.

Every policy implements ``act(obs) -> action``, ``forward(batch)``, ``log_prob``,
``entropy`` and (with ``value_head=True``) ``value``; ``policy.save(dir)`` writes
safetensors + JSON and ``load_policy(dir)`` rebuilds it.
"""

from embodied_rl.policies.action_tokenizer import ActionTokenizer, action_token_loss
from embodied_rl.policies.actor_critic import ActorCriticConfig, ActorCriticPolicy
from embodied_rl.policies.base import Policy, load_policy, make_policy, register_policy
from embodied_rl.policies.mlp import CNNConfig, CNNPolicy, MLPConfig, MLPPolicy
from embodied_rl.policies.rt2 import RT2Config, RT2Policy, rt2_state_range, rt2_tokenizer
from embodied_rl.policies.vla import VLA_PRESETS, VLAConfig, VLAPolicy, vla_preset

__all__ = [
    "VLA_PRESETS",
    "ActionTokenizer",
    "ActorCriticConfig",
    "ActorCriticPolicy",
    "CNNConfig",
    "CNNPolicy",
    "MLPConfig",
    "MLPPolicy",
    "Policy",
    "RT2Config",
    "RT2Policy",
    "VLAConfig",
    "VLAPolicy",
    "action_token_loss",
    "load_policy",
    "make_policy",
    "register_policy",
    "rt2_state_range",
    "rt2_tokenizer",
    "vla_preset",
]
