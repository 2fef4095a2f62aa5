"""Chunkwise delta product: the delta-rule WY form over T * n_h virtual tokens.

Legend: B batch, T tokens, H heads, N householder steps per token (n_h), K key dim, V value dim,
M chunks, C real tokens per chunk, L = C * n_h virtual rows per chunk.

Virtual token ``t * n_h + j`` is householder step j of real token t. The per-token decay g_t is put on
virtual step 0 (decay 0 on the others), and only the last virtual token of each real token is read
out. Rather than materialising zero queries for the other virtual tokens, ``chunk_delta_core`` takes
one query row per real token and a causal mask that lets query c see key rows ``<= c * n_h + n_h - 1``;
that is the same computation as zero queries with discarded outputs, without the wasted rows.
"""

from __future__ import annotations

import torch

from .._common import compute_dtype, pad_time
from ..delta_rule.chunk import chunk_delta_core


def delta_product_chunk(
    q_BTHK: torch.Tensor,
    k_BTHNK: torch.Tensor,
    v_BTHNV: torch.Tensor,
    beta_BTHN: torch.Tensor,
    *,
    g_BTH: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state_BHKV: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
    state_nonlinearity: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked delta product with the same semantics and arguments as ``delta_product_naive``.

    ``chunk_size`` counts real tokens, so one chunk holds ``chunk_size * n_h`` virtual rows. Padding
    tokens (beta = 0, k = 0, g = 0) leave the state unchanged and their outputs are dropped.

    Returns:
        ``(o_BTHV, state_BHKV)`` in the input dtype; the state is None unless ``output_final_state``.
    """
    dtype = q_BTHK.dtype
    cdt = compute_dtype(dtype)
    B, T, H, N, K = k_BTHNK.shape
    V = v_BTHNV.shape[-1]
    C = chunk_size
    scale = K**-0.5 if scale is None else scale

    def rows(x_BTHN_: torch.Tensor) -> torch.Tensor:
        # [B, T, H, n_h, *rest] -> [B, H, chunks, C * n_h, *rest], virtual-token order (t, j).
        x = pad_time(x_BTHN_.to(cdt), C, dim=1).transpose(1, 2)
        return x.reshape(B, H, x.shape[2] // C, C * N, *x.shape[4:])

    q_BHMCK = pad_time(q_BTHK.to(cdt), C, dim=1).transpose(1, 2).reshape(B, H, -1, C, K)
    g_BHML = None
    if g_BTH is not None:
        g_BTHN = torch.nn.functional.pad(g_BTH.to(cdt)[..., None], (0, N - 1))
        g_BHML = rows(g_BTHN)
    o_BHMCV, S_BHKV = chunk_delta_core(
        q_BHMCK,
        rows(k_BTHNK),
        rows(v_BTHNV),
        rows(beta_BTHN),
        g_BHML,
        scale=scale,
        initial_state_BHKV=initial_state_BHKV,
        n_h=N,
        state_nonlinearity=state_nonlinearity,
    )
    o_BTHV = o_BHMCV.reshape(B, H, -1, V)[:, :, :T].transpose(1, 2).to(dtype)
    return o_BTHV, (S_BHKV.to(dtype) if output_final_state else None)
