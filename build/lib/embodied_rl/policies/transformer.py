"""A pre-norm transformer whose attention heads may be wider than ``width / n_heads``.

RT-1's decoder attends with 8 heads of key size 128 over 512-wide tokens (its reference
configuration: ``layer_size=128, num_heads=8, token_embedding_size=512``), so the attention's
inner width (1,024) is twice the token width; ``torch.nn.TransformerEncoderLayer`` ties the key
size to ``width / n_heads``. Parameter names follow ``nn.TransformerEncoder``'s
(``layers.i.self_attn.in_proj_weight``, ``linear1``, ``norm1``, ..., ``norm``), so weights saved
from one load into the other when ``head_dim == width / n_heads``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Self-attention with ``n_heads`` heads of size ``head_dim`` over ``width``-wide tokens."""

    def __init__(self, width: int, n_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        inner = n_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner))
        self.out_proj = nn.Linear(inner, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, allowed: Tensor, dropout: float = 0.0) -> Tensor:
        """``x`` ``(B, L, width)``, ``allowed`` bool ``(B, L, L)`` (True: may attend)."""
        b, length, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3 * inner)
        qkv = qkv.view(b, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, L, head_dim) each
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed[:, None], dropout_p=dropout if self.training else 0.0
        )  # (B, heads, L, head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, -1))  # (B, L, width)


class TransformerBlock(nn.Module):
    """``x + attn(norm1(x))``, then ``x + ffn(norm2(x))`` with GELU, dropout after each."""

    def __init__(self, width: int, n_heads: int, head_dim: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(width, n_heads, head_dim)
        self.linear1, self.linear2 = nn.Linear(width, ffn_dim), nn.Linear(ffn_dim, width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.dropout = dropout

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        p = self.dropout if self.training else 0.0
        x = x + F.dropout(self.self_attn(self.norm1(x), allowed, p), p, self.training)
        hidden = F.dropout(F.gelu(self.linear1(self.norm2(x))), p, self.training)
        return x + F.dropout(self.linear2(hidden), p, self.training)  # (B, L, width)


class Transformer(nn.Module):
    """``n_layers`` blocks and a final layer norm."""

    def __init__(
        self, width: int, n_layers: int, n_heads: int, head_dim: int, ffn_dim: int, dropout: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(width, n_heads, head_dim, ffn_dim, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, allowed)
        return self.norm(x)
