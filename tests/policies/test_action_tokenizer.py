import math

import pytest
import torch

from embodied_rl.policies.action_tokenizer import (
    ActionTokenizer,
    action_token_loss,
    gaussian_bin_targets,
)


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


def test_hl_gauss_targets_are_the_gaussian_mass_per_bin():
    targets = gaussian_bin_targets(torch.tensor([0, 5, 9]), n_bins=10, sigma=1.0)
    assert targets.shape == (3, 10)
    torch.testing.assert_close(targets.sum(-1), torch.ones(3))
    # bin 5 is interior: symmetric around it, the mass of N(5.5, 1) in [5, 6) / (its mass in [0, 10))
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    inside = phi(4.5) - phi(-5.5)
    assert targets[1, 5].item() == pytest.approx((phi(0.5) - phi(-0.5)) / inside, abs=1e-6)
    assert targets[1, 4].item() == pytest.approx(targets[1, 6].item(), abs=1e-6)
    assert targets[1].argmax() == 5 and targets[1, 3] < targets[1, 4]
    # at the edge the mass beyond the range is renormalised onto the bins, not lost
    assert targets[0, 0] > targets[1, 5] and targets[2].argmax() == 9
    sharp = gaussian_bin_targets(torch.tensor([3]), 10, 1e-3)
    torch.testing.assert_close(sharp[0], torch.nn.functional.one_hot(torch.tensor(3), 10).float())
    with pytest.raises(ValueError, match="sigma"):
        gaussian_bin_targets(torch.tensor([3]), 10, 0.0)
    with pytest.raises(ValueError, match="integers in \\[0, 10\\)"):
        gaussian_bin_targets(torch.tensor([10]), 10, 1.0)
