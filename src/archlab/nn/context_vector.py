"""The New-LLM context-vector cell (seed 002): one vector c_t in R^{d_c} is the only memory of the past.

Per token, with e_t the token embedding (no positions) and c_0 = 0:

    h_t = FNN_L([e_t ; c_{t-1}])            L x (Linear -> ReLU -> Dropout), hidden width H
    c_t = clip_{+-clip}( LayerNorm( sigmoid(W_f h_t) * c_{t-1} + sigmoid(W_i h_t) * (W_c h_t) ) )

and the model predicts token t+1 from h_t. The recurrence is nonlinear in c, so there is no parallel
form: time is a loop. Two implementations of the same math:

- ``context_step`` / ``reference_loop``: the equations as written, one token at a time (the reference);
- ``context_loop``: the fast loop. The embedding half of the first layer, W_1e e_t + b_1, is computed for all
  tokens in one matmul before the loop (it does not depend on c) and the three context heads are one fused
  [3 d_c, H] matmul (``impl='eager'``).

Padding: where ``keep`` is False (a left-padded prompt, a padded tail) the context is carried unchanged, so a
padded row reads the same context as its unpadded twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOOP_IMPLS", "ContextVectorCell", "context_loop", "reference_loop"]

LOOP_IMPLS = ("eager",)


def _loop_body(pre: torch.Tensor, c: torch.Tensor, keep: torch.Tensor | None, w_first_c: torch.Tensor,
               weights: list[torch.Tensor], biases: list[torch.Tensor], head_w: torch.Tensor, head_b: torch.Tensor,
               ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float, clip: float, p: float,
               training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """pre [B, T, H] = W_1e e_t + b_1 for every t; c [B, d_c] -> (h [B, T, H], final c [B, d_c])."""
    d_c = c.size(-1)
    hs: list[torch.Tensor] = []
    for t in range(pre.size(1)):
        h = F.dropout(torch.relu(pre[:, t] + F.linear(c, w_first_c)), p, training)
        for i in range(len(weights)):
            h = F.dropout(torch.relu(F.linear(h, weights[i], biases[i])), p, training)
        heads = F.linear(h, head_w, head_b)
        f, i_gate, delta = heads[:, :d_c], heads[:, d_c : 2 * d_c], heads[:, 2 * d_c :]
        new = torch.sigmoid(f) * c + torch.sigmoid(i_gate) * delta
        new = F.layer_norm(new, [d_c], ln_w, ln_b, eps).clamp(-clip, clip)
        if keep is not None:
            new = torch.where(keep[:, t].unsqueeze(-1), new, c)
        c = new
        hs.append(h)
    return torch.stack(hs, 1), c


class ContextVectorCell(nn.Module):
    """FNN over [e_t; c_{t-1}], the fused gate/delta heads and the context LayerNorm (parameters only + loops).

    Parameters: ``fnn[0]`` is Linear(d_e + d_c -> H), ``fnn[1:]`` Linear(H -> H); ``context_heads`` is
    Linear(H -> 3 d_c) with rows [W_f; W_i; W_c]; ``norm`` is LayerNorm(d_c). The count equals the seed's
    separate Linear layers exactly (fusing only stacks the rows).
    """

    def __init__(self, embed_dim: int, context_dim: int, hidden_size: int, num_layers: int, dropout: float = 0.1,
                 clip: float = 10.0, eps: float = 1e-5, impl: str = "eager"):
        super().__init__()
        if impl not in LOOP_IMPLS:
            raise ValueError(f"loop_impl must be one of {LOOP_IMPLS}, got '{impl}'")
        self.embed_dim, self.context_dim, self.hidden_size = embed_dim, context_dim, hidden_size
        self.dropout, self.clip, self.eps, self.impl = dropout, clip, eps, impl
        self.fnn = nn.ModuleList(
            [nn.Linear(embed_dim + context_dim, hidden_size)]
            + [nn.Linear(hidden_size, hidden_size) for _ in range(num_layers - 1)]
        )
        self.context_heads = nn.Linear(hidden_size, 3 * context_dim)
        self.norm = nn.LayerNorm(context_dim, eps=eps)

    def forward(self, embeds: torch.Tensor, context: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """embeds [B, T, d_e], context [B, d_c] (None: zeros), keep [B, T] bool -> (h [B, T, H], c_T)."""
        return context_loop(self, embeds, context, keep)


def context_loop(cell: ContextVectorCell, embeds: torch.Tensor, context: torch.Tensor | None = None,
                 keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast loop (see the module doc): hoisted embedding projection, fused heads."""
    b = embeds.shape[0]
    first = cell.fnn[0]
    w_e, w_c = first.weight[:, : cell.embed_dim], first.weight[:, cell.embed_dim :]
    pre = F.linear(embeds, w_e, first.bias)
    if context is None:
        context = pre.new_zeros(b, cell.context_dim)
    context = context.to(pre.dtype)
    rest = list(cell.fnn)[1:]
    return _loop_body(pre, context, keep, w_c, [m.weight for m in rest], [m.bias for m in rest],
                cell.context_heads.weight, cell.context_heads.bias, cell.norm.weight, cell.norm.bias,
                float(cell.eps), float(cell.clip), float(cell.dropout), bool(cell.training))


def context_step(cell: ContextVectorCell, e_t: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token, written as the equations read: h_t = FNN([e_t; c_{t-1}]); gates; c_t = clip(LN(...))."""
    h = torch.cat([e_t, c_prev], dim=-1)
    for layer in cell.fnn:
        h = F.dropout(torch.relu(layer(h)), cell.dropout, cell.training)
    w_f, w_i, w_c = cell.context_heads.weight.chunk(3, 0)
    b_f, b_i, b_c = cell.context_heads.bias.chunk(3, 0)
    f = torch.sigmoid(F.linear(h, w_f, b_f))
    i = torch.sigmoid(F.linear(h, w_i, b_i))
    delta = F.linear(h, w_c, b_c)
    c = torch.clamp(cell.norm(f * c_prev + i * delta), -cell.clip, cell.clip)
    return h, c


def reference_loop(cell: ContextVectorCell, embeds: torch.Tensor,
                   context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``context_step`` over time (the readable reference the fast loop is tested against)."""
    c = embeds.new_zeros(embeds.shape[0], cell.context_dim) if context is None else context
    hs = []
    for t in range(embeds.shape[1]):
        h, c = context_step(cell, embeds[:, t], c)
        hs.append(h)
    return torch.stack(hs, 1), c
