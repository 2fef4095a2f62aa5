"""Step-by-step reference of the gated EMA scan ``h_t = exp(a_t) * h_{t-1} + v_t`` (one python step per token).

Legend: B batch, T tokens, D channels. This file is the specification the chunked form is tested against.
"""

from __future__ import annotations

import torch


def gated_ema_naive(
    v_BTD: torch.Tensor,
    log_decay_BTD: torch.Tensor,
    *,
    initial_state_BD: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token loop: ``h_t = exp(a_t) * h_{t-1} + v_t``, outputs ``h_t`` (the state after token t).

    ``chunk_size`` is accepted for a common signature and ignored.
    """
    dtype = v_BTD.dtype
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    B, T, D = v_BTD.shape
    h_BD = v_BTD.new_zeros(B, D, dtype=cdt) if initial_state_BD is None else initial_state_BD.to(cdt)
    outs = []
    for t in range(T):
        h_BD = log_decay_BTD[:, t].to(cdt).exp() * h_BD + v_BTD[:, t].to(cdt)
        outs.append(h_BD)
    o_BTD = torch.stack(outs, 1) if outs else v_BTD.new_zeros(B, 0, D, dtype=cdt)
    return o_BTD.to(dtype), (h_BD.to(dtype) if output_final_state else None)
