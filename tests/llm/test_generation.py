import pytest
import torch

from embodied_rl.llm.generation import (
    SamplingConfig,
    generate,
    response_logprobs,
    sequence_kl,
)
from embodied_rl.llm.models import causal_lm_forward

PROMPTS = [
    "Write a positive sentence about the hotel:",
    "Write a negative sentence about the book:",
]


def test_sampling_is_seeded(make_model, tokenizer):
    model = make_model()
    config = SamplingConfig(max_new_tokens=6)
    a = generate(model, tokenizer, PROMPTS, config, torch.Generator().manual_seed(1))
    b = generate(model, tokenizer, PROMPTS, config, torch.Generator().manual_seed(1))
    assert torch.equal(a.response_ids, b.response_ids)
    assert a.responses == b.responses


def test_left_padding_does_not_change_a_greedy_response(make_model, tokenizer):
    model = make_model(seed=2)
    config = SamplingConfig(max_new_tokens=8, greedy=True)
    batch = generate(model, tokenizer, ["Hi:", PROMPTS[0]], config)  # very different lengths
    alone = generate(model, tokenizer, ["Hi:"], config)
    n = int(alone.response_mask.sum())
    assert batch.response_ids[0, :n].tolist() == alone.response_ids[0, :n].tolist()


def test_mask_stops_after_eos(make_model, tokenizer):
    model = make_model()
    eos, calls = tokenizer.eos_token_id, []

    def force_eos_third_token_of_row_0(module, inputs, output):
        calls.append(1)
        if len(calls) == 3:  # the forward whose logits choose the third response token
            output.logits[0, -1, eos] += 100.0

    model.register_forward_hook(force_eos_third_token_of_row_0)
    out = generate(model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=5, greedy=True))
    assert out.response_ids[0, 2] == eos
    assert out.response_mask[0].tolist() == [1, 1, 1, 0, 0]
    assert out.response_ids[0, 3:].tolist() == [tokenizer.pad_token_id] * 2
    assert out.finished[0] and tokenizer.eos_token not in out.responses[0]
    assert out.response_lengths[0] == 3


def test_recomputed_logprobs_match_the_sampling_distribution(make_model, tokenizer):
    model = make_model(seed=4).eval()
    out = generate(model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=6, greedy=True))
    logps, _ = response_logprobs(model, out)
    # greedy tokens are the argmax: their log-prob is the max of each step's distribution
    ids, mask = out.sequences()
    n_prompt = out.prompt_ids.shape[1]
    full = causal_lm_forward(model, ids, mask).logits[:, n_prompt - 1 : -1].log_softmax(-1)
    best = full.max(-1).values * out.response_mask
    torch.testing.assert_close(logps, best, atol=1e-5, rtol=0)
    assert torch.all(sequence_kl(model, model, out) == 0)


def test_sampling_config_validates():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
