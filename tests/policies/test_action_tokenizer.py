import math

import pytest
import torch

from embodied_rl.policies.action_tokenizer import ActionTokenizer, action_token_loss


def test_round_trip_error_is_at_most_half_a_bin():
    tok = ActionTokenizer([-1.0, 0.0, -2.0], [1.0, 0.5, 2.0], n_bins=256)
    actions = torch.rand(10_000, 3) * (tok.high - tok.low) + tok.low
    error = (tok.detokenize(tok.tokenize(actions)) - actions).abs()
    assert (error <= tok.bin_width / 2 + 1e-6).all()
    assert tok.tokenize(torch.tensor([[-5.0, 9.0, 2.0]])).tolist() == [[0, 255, 255]]  # clipped


def test_bad_bounds_are_rejected():
    with pytest.raises(ValueError, match="high > low"):
        ActionTokenizer([0.0], [0.0])
    with pytest.raises(ValueError, match="n_bins"):
        ActionTokenizer([0.0], [1.0], n_bins=1)


def test_loss_of_uniform_logits_is_log_n_bins():
    logits = torch.zeros(5, 3, 4, 256)
    tokens = torch.randint(0, 256, (5, 3, 4))
    loss, metrics = action_token_loss(logits, tokens)
    assert loss.item() == pytest.approx(math.log(256), rel=1e-6)
    mask = torch.zeros(5, 3, dtype=torch.bool)
    mask[:, -1] = True
    perfect = torch.nn.functional.one_hot(tokens, 256).float() * 50
    loss, metrics = action_token_loss(perfect, tokens, mask=mask)
    assert loss.item() < 1e-6 and metrics["token_accuracy"] == 1.0
