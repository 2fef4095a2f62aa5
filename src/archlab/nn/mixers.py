"""Token mixers: the per-layer sequence-mixing slot of archlab's decoder, selected by name.

Legend: B batch, T new tokens, S tokens attended to (cache + new), H query heads, G kv heads, D head dim.
Every mixer takes ``x [B, T, hidden]`` plus keyword context and returns ``[B, T, hidden]``; recurrent
mixers registered later (delta rule, ...) use the same signature and keep their state in ``cache``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archlab.nn.rope import RotaryEmbedding, apply_rotary
from archlab.registry import Registry

MIXERS: Registry[type[nn.Module]] = Registry("mixer")


def causal_mask(
    t_new: int, t_total: int, attention_mask: torch.Tensor | None, sliding_window: int | None, device
) -> torch.Tensor | None:
    """Boolean [B|1, 1, T, S] mask (True = may attend), or None when plain causal SDPA suffices."""
    if attention_mask is None and sliding_window is None and t_new == t_total:
        return None
    q_pos = torch.arange(t_total - t_new, t_total, device=device)[:, None]
    k_pos = torch.arange(t_total, device=device)[None, :]
    allowed = k_pos <= q_pos
    if sliding_window is not None:
        allowed = allowed & (k_pos > q_pos - sliding_window)
    allowed = allowed[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, -t_total:].bool()
        # a fully masked row (a left-pad query) would give NaN; let it see itself
        allowed = allowed | (k_pos == q_pos)[None, None]
    return allowed


@MIXERS.register("attention")
class CausalSelfAttention(nn.Module):
    """Multi-head / grouped-query causal self-attention (SDPA), optional RoPE and sliding window."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        *,
        layer_idx: int = 0,
        bias: bool = True,
        dropout: float = 0.0,
        rope: bool = False,
        rope_theta: float = 10000.0,
        sliding_window: int | None = None,
        **unused: Any,
    ):
        super().__init__()
        if unused:
            raise ValueError(f"attention mixer got unknown option(s): {sorted(unused)}")
        num_kv_heads = num_kv_heads or num_heads
        if hidden_size % num_heads or num_heads % num_kv_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must divide by num_attention_heads ({num_heads}), "
                f"and that by num_key_value_heads ({num_kv_heads})"
            )
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=bias)
        self.rotary = RotaryEmbedding(self.head_dim, rope_theta) if rope else None
        self.sliding_window = sliding_window
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        *,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q_BTHD = self.q_proj(x).view(b, t, self.num_heads, self.head_dim)
        k_BTGD = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        v_BTGD = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        if self.rotary is not None:
            cos, sin = self.rotary(position_ids)
            q_BTHD, k_BTGD = apply_rotary(q_BTHD, cos, sin), apply_rotary(k_BTGD, cos, sin)
        q, k, v = (z.transpose(1, 2) for z in (q_BTHD, k_BTGD, v_BTGD))  # [B, heads, T, D]
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        mask = causal_mask(t, k.shape[2], attention_mask, self.sliding_window, x.device)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))
