"""Shared fixtures: the task generator, a tokenizer trained on its text and tiny GPT-2s."""

from __future__ import annotations

import pytest

from embodied_rl.llm.models import build_causal_lm, tiny_gpt2_config
from embodied_rl.llm.tasks import TaskGenerator
from embodied_rl.utils.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(TaskGenerator(seed=0).corpus(300), vocab_size=400)


@pytest.fixture(scope="session")
def model_config(tokenizer):
    return tiny_gpt2_config(tokenizer, n_layer=1, n_embd=32, n_head=2, n_positions=512)


@pytest.fixture
def make_model(model_config):
    """``make_model(seed)``: a fresh 1-layer, 32-wide GPT-2 for the test tokenizer."""
    return lambda seed=0: build_causal_lm(model_config, seed=seed)


@pytest.fixture
def task():
    return TaskGenerator(seed=1)
