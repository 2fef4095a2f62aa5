"""Delta rule / gated delta rule (DeltaNet, Gated DeltaNet); math in README.md.

Legend: B batch, T tokens, H heads, K key dim, V value dim.
"""

from __future__ import annotations

import torch

from .._common import check_impl, check_options, validate_inputs
from .._kernels import fla_delta_rule, resolve_impl
from .chunk import _use_fused, chunk_delta_core, delta_rule_chunk
from .naive import delta_rule_naive

__all__ = ["delta_rule", "delta_rule_naive", "delta_rule_chunk", "chunk_delta_core"]


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    impl: str = "auto",
    state_nonlinearity: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule over a sequence, S mapping keys to values (fla's ``delta_rule`` convention).

    Per token t::

        S <- exp(g_t) * S                          (if g is given)
        S <- S + beta_t * k_t (v_t - S^T k_t)^T
        o_t = scale * S^T q_t

    Args:
        q: queries [B, T, H * m, K]. Keys/queries are used as given (L2-normalise them beforehand for the
            usual DeltaNet stability guarantee ||I - beta k k^T|| <= 1). With m > 1 (grouped queries) query
            heads h*m .. h*m + m - 1 all read state h; the same as repeat_interleave(m) of k, v, beta, g and
            the initial state, but the chunk path updates each state once.
        k: keys [B, T, H, K].
        v: values [B, T, H, V].
        beta: write strengths [B, T, H], typically in (0, 1) (or (0, 2) for negative eigenvalues).
        g: optional log decay [B, T, H] (<= 0), applied to the state before token t's update.
        scale: query scale, default K ** -0.5.
        initial_state: optional state [B, H, K, V] before the first token.
        output_final_state: return the state after the last token.
        chunk_size: tokens per chunk of the chunked form (any positive int; T need not be a multiple).
            Without ``state_nonlinearity`` it only affects speed and rounding.
        impl: "auto" (fla's Triton kernel for bf16/fp16 CUDA tensors when fla imports, else "chunk"),
            "chunk" (pure-torch chunkwise WY form), "naive" (token loop) or "fla".
        state_nonlinearity: None, or "gelu_rownorm" to map the carried state through
            ``x -> (x / 2) * GELU_tanh(2 x / ||x||_row)`` after every chunk (and after the last token).
            This makes ``chunk_size`` part of the model definition.

    Returns:
        ``(o, final_state)``: o [B, T, H, V] in the input dtype; final_state [B, H, K, V] in the input
        dtype, or None when ``output_final_state`` is False. Half-precision inputs are computed in float32.

    Raises:
        ValueError: on a bad shape (the message names the argument), option, or ``impl``.
    """
    check_impl(impl)
    check_options(chunk_size=chunk_size, scale=scale, state_nonlinearity=state_nonlinearity)
    validate_inputs(q, k, v, beta, g, initial_state, product=False)
    path = resolve_impl(impl, q, state_nonlinearity)
    kwargs = dict(g_BTH=g, initial_state_BHKV=initial_state, output_final_state=output_final_state)
    if path == "fla":
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return fla_delta_rule(q, k, v, beta, scale=scale, **kwargs)
    m = q.shape[2] // k.shape[2]
    if m > 1 and not (path == "chunk" and _use_fused(state_nonlinearity, q.shape[1])):
        return _repeated(q, k, v, beta, m, impl=path, scale=scale, chunk_size=chunk_size,
                         state_nonlinearity=state_nonlinearity, g=g, initial_state=initial_state,
                         output_final_state=output_final_state)
    fn = delta_rule_naive if path == "naive" else delta_rule_chunk
    # under autocast the op's matmuls would drop back to half precision (and CPU has no half triangular solve)
    with torch.autocast(q.device.type, enabled=False):
        return fn(
            q, k, v, beta, scale=scale, chunk_size=chunk_size, state_nonlinearity=state_nonlinearity, **kwargs
        )


def _repeated(q, k, v, beta, m: int, *, g, initial_state, output_final_state, **kwargs):
    """Grouped queries on paths without native support: every state repeated m times, the copies' final states
    are equal so the first of each group is returned."""
    k, v, beta = (x.repeat_interleave(m, dim=2) for x in (k, v, beta))
    g = None if g is None else g.repeat_interleave(m, dim=2)
    h0 = None if initial_state is None else initial_state.repeat_interleave(m, dim=1)
    o, S = delta_rule(q, k, v, beta, g=g, initial_state=h0, output_final_state=output_final_state, **kwargs)
    return o, (None if S is None else S[:, ::m])
