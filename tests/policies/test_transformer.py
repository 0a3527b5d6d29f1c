"""The VLA's transformer: equal to torch's pre-norm encoder where both apply; RT-1's wide heads."""

from __future__ import annotations

import torch
from torch import nn

from embodied_rl.policies.transformer import Transformer


def test_matches_torch_encoder_weights_and_outputs_when_heads_split_the_width():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        64, 4, 128, 0.0, activation="gelu", batch_first=True, norm_first=True
    )
    reference = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(64), enable_nested_tensor=False)
    ours = Transformer(64, n_layers=2, n_heads=4, head_dim=16, ffn_dim=128, dropout=0.0)
    assert sorted(reference.state_dict()) == sorted(ours.state_dict())  # old checkpoints load
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(3, 10, 64)
    allowed = (torch.rand(3, 10, 10) > 0.3) | torch.eye(10, dtype=torch.bool)
    additive = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
    expected = reference.eval()(x, mask=additive.repeat_interleave(4, dim=0))
    torch.testing.assert_close(ours.eval()(x, allowed), expected)


def test_rt1_decoder_has_wide_heads_and_about_19m_parameters():
    """8 layers, 8 heads of key size 128 over 512-wide tokens (RT-1's reference config)."""
    decoder = Transformer(512, n_layers=8, n_heads=8, head_dim=128, ffn_dim=512, dropout=0.1)
    attention = decoder.layers[0].self_attn
    assert attention.in_proj_weight.shape == (3 * 8 * 128, 512)
    assert attention.out_proj.weight.shape == (512, 8 * 128)
    n = sum(p.numel() for p in decoder.parameters())
    per_layer = (3 * 1024 * 512 + 3 * 1024) + (1024 * 512 + 512) + 2 * (512 * 512) + 512 + 512
    assert n == 8 * (per_layer + 4 * 512) + 2 * 512
    assert 19e6 < n < 22e6  # RT-1's single-Dense feed-forward gives 18.9M; two layers 21.0M


def test_masked_keys_do_not_reach_the_output():
    torch.manual_seed(0)
    model = Transformer(32, n_layers=1, n_heads=2, head_dim=24, ffn_dim=64, dropout=0.0).eval()
    x = torch.randn(1, 4, 32)
    allowed = torch.tril(torch.ones(4, 4, dtype=torch.bool))[None]  # causal
    changed = x.clone()
    changed[0, 3] += 5.0  # the last token may not influence earlier ones
    torch.testing.assert_close(model(x, allowed)[:, :3], model(changed, allowed)[:, :3])
