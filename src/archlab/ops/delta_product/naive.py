"""Step-by-step reference for the (gated) delta product: n_h householder steps per token.

Legend: B batch, T tokens, H heads, N householder steps per token (n_h), K key dim, V value dim.
"""

from __future__ import annotations

import torch

from .._common import compute_dtype, state_map


def delta_product_naive(
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
    """Token-by-token delta product, the reference semantics for ``archlab.ops.delta_product``.

    For every token t::

        S <- exp(g_t) * S                                   (once, only if g is given)
        for j in 0 .. n_h - 1:
            S <- S + beta_tj * k_tj (v_tj - S^T k_tj)^T     (generalised householder step)
        o_t = scale * S^T q_t

    With ``state_nonlinearity="gelu_rownorm"`` the state is passed through ``gelu_rownorm`` after every
    ``chunk_size`` real tokens and after the last token (the chunk boundaries of the chunked form).

    Args:
        q_BTHK: queries [B, T, H, K].
        k_BTHNK: keys [B, T, H, n_h, K].
        v_BTHNV: values [B, T, H, n_h, V].
        beta_BTHN: step strengths [B, T, H, n_h], in (0, 2) allows negative eigenvalues.
        g_BTH: optional log decay [B, T, H].
        scale: query scale, default K ** -0.5.
        initial_state_BHKV: optional initial state [B, H, K, V].
        output_final_state: whether to return the final state.
        chunk_size: real tokens per chunk; only used to place the state nonlinearity.
        state_nonlinearity: None or "gelu_rownorm".

    Returns:
        ``(o_BTHV, state_BHKV)`` in the input dtype; the state is None unless ``output_final_state``.
    """
    dtype = q_BTHK.dtype
    cdt = compute_dtype(dtype)
    B, T, H, N, K = k_BTHNK.shape
    V = v_BTHNV.shape[-1]
    scale = K**-0.5 if scale is None else scale
    f = state_map(state_nonlinearity)

    q_BTHK, k_BTHNK, v_BTHNV, beta_BTHN = (x.to(cdt) for x in (q_BTHK, k_BTHNK, v_BTHNV, beta_BTHN))
    if initial_state_BHKV is None:
        S_BHKV = q_BTHK.new_zeros(B, H, K, V)
    else:
        S_BHKV = initial_state_BHKV.to(cdt)

    outputs = []
    for t in range(T):
        if g_BTH is not None:
            S_BHKV = S_BHKV * g_BTH[:, t].to(cdt).exp()[:, :, None, None]
        for j in range(N):
            k_BHK = k_BTHNK[:, t, :, j]
            v_pred_BHV = torch.einsum("bhkv,bhk->bhv", S_BHKV, k_BHK)
            delta_BHV = beta_BTHN[:, t, :, j, None] * (v_BTHNV[:, t, :, j] - v_pred_BHV)
            S_BHKV = S_BHKV + k_BHK[..., :, None] * delta_BHV[..., None, :]
        outputs.append(scale * torch.einsum("bhkv,bhk->bhv", S_BHKV, q_BTHK[:, t]))
        if f is not None and ((t + 1) % chunk_size == 0 or t == T - 1):
            S_BHKV = f(S_BHKV)

    if outputs:
        o_BTHV = torch.stack(outputs, dim=1)
    else:
        o_BTHV = q_BTHK.new_zeros(B, 0, H, V)
    return o_BTHV.to(dtype), (S_BHKV.to(dtype) if output_final_state else None)
