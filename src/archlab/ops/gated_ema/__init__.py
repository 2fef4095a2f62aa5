"""Gated EMA scan (the recurrence of seed 004's IntegralLNN): ``h_t = exp(a_t) * h_{t-1} + v_t``.

Legend: B batch, T tokens, D channels.

IntegralLNN computes ``v_t = g_t * u_t`` (gate times candidate, from causal depthwise convs) and a per-channel
decay ``lambda = sigmoid(w)`` in (0, 1), i.e. ``a_t = log(lambda) = logsigmoid(w) < 0``; the op itself takes any
log decay (per token and channel), so a data-dependent decay fits the same kernel.
"""

from __future__ import annotations

import torch

from .chunk import gated_ema_chunk
from .naive import gated_ema_naive

__all__ = ["gated_ema", "gated_ema_chunk", "gated_ema_naive"]

IMPLS = ("auto", "chunk", "naive")


def gated_ema(
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Linear recurrence ``h_t = exp(log_decay_t) * h_{t-1} + v_t`` over a sequence.

    Args:
        v: inputs [B, T, D].
        log_decay: log decays [B, T, D] (<= 0 for a contraction) or [D] (one per channel, broadcast).
        initial_state: state [B, D] before the first token (zeros when None).
        output_final_state: also return the state after the last token.
        chunk_size: tokens per chunk of the chunked form (any positive int; T need not be a multiple).
        impl: "auto"/"chunk" (parallel within chunks) or "naive" (token loop, the reference).

    Returns:
        ``(h, final_state)``: h [B, T, D] in v's dtype (half precision computed in float32) and the final
        state [B, D] or None.

    Raises:
        ValueError: on a bad shape, chunk size or impl (the message names the argument).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if not isinstance(v, torch.Tensor) or v.ndim != 3:
        raise ValueError(f"v must be a 3-d tensor [B, T, D], got {getattr(v, 'shape', type(v).__name__)}")
    B, T, D = v.shape
    if tuple(log_decay.shape) != (D,) and tuple(log_decay.shape) != (B, T, D):
        raise ValueError(f"log_decay must have shape [B, T, D] = {(B, T, D)} or [D], got {tuple(log_decay.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (B, D):
        raise ValueError(f"initial_state must have shape [B, D] = {(B, D)}, got {tuple(initial_state.shape)}")
    if impl == "naive" and log_decay.ndim == 1:
        log_decay = log_decay.expand(B, T, D)
    fn = gated_ema_naive if impl == "naive" else gated_ema_chunk
    return fn(v, log_decay, initial_state_BD=initial_state, output_final_state=output_final_state,
              chunk_size=chunk_size)
