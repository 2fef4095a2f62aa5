"""Step-by-step reference for the (gated) delta rule: one python iteration per token.

Legend: B batch, T tokens, H heads, K key dim, V value dim.

This file is the specification the fast paths are tested against; it favours readability over
speed (O(T) python steps, each a few [B, H, K, V] elementwise ops).
"""

from __future__ import annotations

import torch

from .._common import compute_dtype, state_map


def delta_rule_naive(
    q_BTHK: torch.Tensor,
    k_BTHK: torch.Tensor,
    v_BTHV: torch.Tensor,
    beta_BTH: torch.Tensor,
    *,
    g_BTH: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state_BHKV: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    state_nonlinearity: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token delta rule, the reference semantics for ``archlab.ops.delta_rule``.

    For every token t, with the state S of shape [K, V] mapping keys to values::

        S <- exp(g_t) * S                                  (only if g is given)
        S <- S + beta_t * k_t (v_t - S^T k_t)^T
        o_t = scale * S^T q_t                              (the state after token t's update)

    With ``state_nonlinearity="gelu_rownorm"`` the state is additionally passed through
    ``gelu_rownorm`` after every ``chunk_size`` tokens and after the last token, which is exactly
    where the chunked implementation applies it.

    Args:
        q_BTHK: queries [B, T, H, K].
        k_BTHK: keys [B, T, H, K].
        v_BTHV: values [B, T, H, V].
        beta_BTH: write strengths [B, T, H].
        g_BTH: optional log decay [B, T, H] (usually <= 0).
        scale: query scale, default K ** -0.5.
        initial_state_BHKV: optional initial state [B, H, K, V].
        output_final_state: whether to return the final state.
        chunk_size: only used to place the state nonlinearity.
        state_nonlinearity: None or "gelu_rownorm".

    Returns:
        ``(o_BTHV, state_BHKV)``: outputs in the input dtype and the final state (input dtype),
        or None when ``output_final_state`` is False.
    """
    dtype = q_BTHK.dtype
    cdt = compute_dtype(dtype)
    B, T, H, K = q_BTHK.shape
    V = v_BTHV.shape[-1]
    scale = K**-0.5 if scale is None else scale
    f = state_map(state_nonlinearity)

    q_BTHK, k_BTHK, v_BTHV, beta_BTH = (x.to(cdt) for x in (q_BTHK, k_BTHK, v_BTHV, beta_BTH))
    if initial_state_BHKV is None:
        S_BHKV = q_BTHK.new_zeros(B, H, K, V)
    else:
        S_BHKV = initial_state_BHKV.to(cdt)

    outputs = []
    for t in range(T):
        if g_BTH is not None:
            S_BHKV = S_BHKV * g_BTH[:, t].to(cdt).exp()[:, :, None, None]
        k_BHK = k_BTHK[:, t]
        v_pred_BHV = torch.einsum("bhkv,bhk->bhv", S_BHKV, k_BHK)
        delta_BHV = beta_BTH[:, t, :, None] * (v_BTHV[:, t] - v_pred_BHV)
        S_BHKV = S_BHKV + k_BHK[..., :, None] * delta_BHV[..., None, :]
        outputs.append(scale * torch.einsum("bhkv,bhk->bhv", S_BHKV, q_BTHK[:, t]))
        if f is not None and ((t + 1) % chunk_size == 0 or t == T - 1):
            S_BHKV = f(S_BHKV)

    if outputs:
        o_BTHV = torch.stack(outputs, dim=1)
    else:
        o_BTHV = q_BTHK.new_zeros(B, 0, H, V)
    return o_BTHV.to(dtype), (S_BHKV.to(dtype) if output_final_state else None)
