import math

import pytest
import torch

from embodied_rl.llm.best_of_n import (
    BestOfNConfig,
    best_of_n,
    best_of_n_kl,
    rejection_sampling_data,
)
from embodied_rl.llm.generation import SamplingConfig, generate
from embodied_rl.llm.tasks import words


def test_best_of_n_kl_by_hand():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError, match="n=0"):
        best_of_n_kl(0)


def _length(prompts, responses):
    return torch.tensor([float(len(words(r))) for r in responses])


def test_keeps_the_highest_scoring_sample(make_model, tokenizer, task):
    prompts = task.prompts(5)
    config = BestOfNConfig(n=6, sampling=SamplingConfig(max_new_tokens=8), batch_size=7, seed=3)
    result = best_of_n(make_model(), tokenizer, prompts, _length, config)
    assert result.scores.shape == (5, 6)
    for samples, kept, scores in zip(result.samples, result.responses, result.scores, strict=True):
        assert kept in samples
        assert float(len(words(kept))) == scores.max().item()
    assert result.best_scores.tolist() == result.scores.max(-1).values.tolist()
    assert rejection_sampling_data(result) == list(zip(prompts, result.responses, strict=True))
    again = best_of_n(make_model(), tokenizer, prompts, _length, config)
    assert again.samples == result.samples  # seeded


def test_n_of_one_is_plain_sampling(make_model, tokenizer, task):
    prompts, model = task.prompts(4), make_model()
    sampling = SamplingConfig(max_new_tokens=6)
    result = best_of_n(
        model, tokenizer, prompts, _length, BestOfNConfig(n=1, sampling=sampling, seed=2)
    )
    plain = generate(model, tokenizer, prompts, sampling, torch.Generator().manual_seed(2))
    assert result.responses == plain.responses
