"""Chunked parallel form of the gated EMA scan by cumulative log-decay.

Legend: B batch, T tokens, D channels, N chunks, C chunk length.

Inside a chunk, with ``A_t = a_1 + ... + a_t`` (the cumulative log decay from the chunk start)::

    h_t = exp(A_t) h_0 + sum_{s <= t} exp(A_t - A_s) v_s

The sum is a [C, C] lower-triangular matrix per channel, built from differences of cumulative log decays
(never ``exp(-A_s)`` alone, which overflows for strong decay), so every entry is in (0, 1]. Chunks are
computed in parallel from a zero state; a loop over the N chunk boundaries then carries the true state
(N small [B, D] steps) and adds ``exp(A_t) h_0`` to each chunk. Memory is O(B T C D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_ema_chunk(
    v_BTD: torch.Tensor,
    log_decay_BTD: torch.Tensor,
    *,
    initial_state_BD: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as ``gated_ema_naive``; ``chunk_size`` only affects speed and rounding."""
    dtype = v_BTD.dtype
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    B, T, D = v_BTD.shape
    C = chunk_size
    pad = (-T) % C
    # padded steps have decay exp(0) = 1 and input 0: they keep the state, so the final state is h_{T-1}
    v = F.pad(v_BTD.to(cdt), (0, 0, 0, pad))
    N = (T + pad) // C
    if N == 0:
        h = v.new_zeros(B, D) if initial_state_BD is None else initial_state_BD.to(cdt)
        return v_BTD.new_zeros(B, 0, D), (h.to(dtype) if output_final_state else None)
    v_BNCD = v.view(B, N, C, D)
    causal_CC = torch.ones(C, C, dtype=torch.bool, device=v.device).tril()
    if log_decay_BTD.ndim == 1:
        # one decay per channel: the [C, C, D] decay matrix is the same for every chunk and row. Padded steps
        # add zero input, and their decay is never applied to a real output (the final state comes from T - 1).
        A_CD = log_decay_BTD.to(cdt).expand(C, D).cumsum(0)
        diff_CCD = A_CD[:, None] - A_CD[None, :]
        L_CCD = torch.where(causal_CC[:, :, None], diff_CCD, diff_CCD.new_full((), -torch.inf)).exp()
        intra_BNCD = torch.einsum("tsd,bnsd->bntd", L_CCD, v_BNCD)
        decay_BNCD = A_CD.exp().expand(B, N, C, D)
        return _carry(intra_BNCD, decay_BNCD, initial_state_BD, T, dtype, output_final_state, last=(T - 1) % C)
    a = F.pad(log_decay_BTD.to(cdt), (0, 0, 0, pad))
    A_BNCD = a.view(B, N, C, D).cumsum(2)
    # L[t, s] = exp(A_t - A_s) for s <= t, else 0; the masked entries are set before exp (no inf * 0)
    diff_BNCCD = A_BNCD[:, :, :, None] - A_BNCD[:, :, None, :]
    L = torch.where(causal_CC[None, None, :, :, None], diff_BNCCD, diff_BNCCD.new_full((), -torch.inf)).exp()
    intra_BNCD = torch.einsum("bntsd,bnsd->bntd", L, v_BNCD)
    decay_BNCD = A_BNCD.exp()
    return _carry(intra_BNCD, decay_BNCD, initial_state_BD, T, dtype, output_final_state, last=C - 1)


def _carry(intra_BNCD, decay_BNCD, initial_state_BD, T, dtype, output_final_state, last):
    """Add each chunk's incoming state ``exp(A_t) h_0`` and carry the state over the chunk boundaries.

    ``last`` is the position in the final chunk whose state is the final state.
    """
    B, N, C, D = intra_BNCD.shape
    v = intra_BNCD
    h_BD = v.new_zeros(B, D) if initial_state_BD is None else initial_state_BD.to(v.dtype)
    outs = []
    for n in range(N):
        o_BCD = intra_BNCD[:, n] + decay_BNCD[:, n] * h_BD[:, None]
        outs.append(o_BCD)
        h_BD = o_BCD[:, -1] if n < N - 1 else o_BCD[:, last]
    o_BTD = torch.cat(outs, 1)[:, :T] if outs else v.new_zeros(B, 0, D)
    return o_BTD.to(dtype), (h_BD.to(dtype) if output_final_state else None)
