"""Causal dilated sparse attention (seed 004's "O(n log n)" latent attention), by gathering keys.

Legend: B batch, T positions (patches), H heads, K head dim, O offsets.

Query i attends to the keys at i - o for o in ``offsets`` = {0, 1, 2, 4, 8, ...} (those >= 0): at most
2 + ceil(log2 T) keys per query. The keys and values are gathered into [B, T, O, H, K] (memory O(T log T K)),
never a dense [T, T] score matrix. Longer distances are reached by composing hops over layers (distance 3 is
2 + 1). ``dilated_attention_dense`` is the reference: the same pattern as a boolean mask over a full matrix.
"""

from __future__ import annotations

import torch

__all__ = ["dilated_offsets", "dilated_attention", "dilated_attention_dense", "dilated_attention_step"]


def dilated_offsets(length: int, max_offset: int | None = None) -> list[int]:
    """[0, 1, 2, 4, 8, ...] below ``length`` (and up to ``max_offset`` when given)."""
    offsets, o = [0, 1], 2
    limit = length - 1 if max_offset is None else min(length - 1, max_offset)
    while o <= limit:
        offsets.append(o)
        o *= 2
    return [x for x in offsets if x <= max(limit, 0)]


def dilated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, offsets: list[int] | None = None,
                      scale: float | None = None) -> torch.Tensor:
    """Softmax attention of each query over the keys at its dilated offsets.

    Args:
        q, k, v: [B, T, H, K] (RoPE, if any, already applied to q and k).
        offsets: non-negative key offsets, 0 included (default ``dilated_offsets(T)``).
        scale: score scale, default K ** -0.5.

    Returns:
        [B, T, H, K] in q's dtype.
    """
    B, T, H, K = q.shape
    offsets = dilated_offsets(T) if offsets is None else offsets
    if not offsets or 0 not in offsets or min(offsets) < 0:
        raise ValueError(f"offsets must be non-negative and include 0, got {offsets}")
    scale = K**-0.5 if scale is None else scale
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    off_O = torch.tensor(offsets, device=q.device)
    idx_TO = torch.arange(T, device=q.device)[:, None] - off_O[None, :]
    valid_TO = idx_TO >= 0
    idx_TO = idx_TO.clamp(min=0)
    k_BTOHK = k[:, idx_TO]  # gather: [B, T, O, H, K]
    v_BTOHK = v[:, idx_TO]
    scores_BTHO = torch.einsum("bthk,btohk->btho", q.to(cdt), k_BTOHK.to(cdt)) * scale
    scores_BTHO = scores_BTHO.masked_fill(~valid_TO[None, :, None, :], -torch.inf)
    p_BTHO = scores_BTHO.softmax(-1)  # offset 0 is always valid: no all-masked rows
    return torch.einsum("btho,btohk->bthk", p_BTHO, v_BTOHK.to(cdt)).to(q.dtype)


def dilated_attention_step(q_BHK: torch.Tensor, keys_BPHK: torch.Tensor, values_BPHK: torch.Tensor,
                           pos_B: torch.Tensor, *, offsets: list[int], scale: float | None = None) -> torch.Tensor:
    """Decoding: one query per row at position ``pos_B`` over cached keys/values [B, P, H, K] (P > max pos).

    Row b attends to the keys at ``pos_B[b] - o`` for o in ``offsets`` (those >= 0), as ``dilated_attention``
    does for query ``pos_B[b]``. Returns [B, H, K] in q's dtype.
    """
    B, H, K = q_BHK.shape
    scale = K**-0.5 if scale is None else scale
    cdt = torch.float64 if q_BHK.dtype == torch.float64 else torch.float32
    idx_BO = pos_B[:, None] - torch.tensor(offsets, device=q_BHK.device)[None, :]
    valid_BO = idx_BO >= 0
    rows_B1 = torch.arange(B, device=q_BHK.device)[:, None]
    k_BOHK = keys_BPHK[rows_B1, idx_BO.clamp(min=0)]
    v_BOHK = values_BPHK[rows_B1, idx_BO.clamp(min=0)]
    scores_BHO = torch.einsum("bhk,bohk->bho", q_BHK.to(cdt), k_BOHK.to(cdt)) * scale
    p_BHO = scores_BHO.masked_fill(~valid_BO[:, None, :], -torch.inf).softmax(-1)
    return torch.einsum("bho,bohk->bhk", p_BHO, v_BOHK.to(cdt)).to(q_BHK.dtype)


def dilated_attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, offsets: list[int] | None = None,
                            scale: float | None = None) -> torch.Tensor:
    """Reference: full [T, T] scores masked to the dilated pattern (O(T^2); tests only)."""
    B, T, H, K = q.shape
    offsets = dilated_offsets(T) if offsets is None else offsets
    scale = K**-0.5 if scale is None else scale
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    i = torch.arange(T, device=q.device)
    dist_TT = i[:, None] - i[None, :]
    allowed_TT = torch.zeros(T, T, dtype=torch.bool, device=q.device)
    for o in offsets:
        allowed_TT |= dist_TT == o
    scores = torch.einsum("bihk,bjhk->bhij", q.to(cdt), k.to(cdt)) * scale
    scores = scores.masked_fill(~allowed_TT, -torch.inf)
    return torch.einsum("bhij,bjhk->bihk", scores.softmax(-1), v.to(cdt)).to(q.dtype)
