"""Delta product / gated delta product (DeltaProduct, Siems et al. 2025); math in README.md.

Legend: B batch, T tokens, H heads, N householder steps per token (n_h), K key dim, V value dim.
"""

from __future__ import annotations

import torch

from .._common import check_impl, check_options, validate_inputs
from .._kernels import fla_delta_product, resolve_impl
from .chunk import delta_product_chunk
from .naive import delta_product_naive

__all__ = ["delta_product", "delta_product_naive", "delta_product_chunk"]


def delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
    impl: str = "auto",
    state_nonlinearity: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta product: n_h delta-rule (generalised householder) steps per token, then one readout.

    Per token t::

        S <- exp(g_t) * S                                   (once, if g is given)
        for j in 0 .. n_h - 1:
            S <- S + beta_tj * k_tj (v_tj - S^T k_tj)^T
        o_t = scale * S^T q_t

    The state transition of token t is ``exp(g_t) * prod_j (I - beta_tj k_tj k_tj^T)``; with unit-norm
    keys and beta in (0, 2) each factor has eigenvalues in (-1, 1], which is what gives DeltaProduct its
    state-tracking power. n_h = 1 is exactly ``delta_rule``.

    Args:
        q: queries [B, T, H, K].
        k: keys [B, T, H, n_h, K].
        v: values [B, T, H, n_h, V].
        beta: step strengths [B, T, H, n_h].
        g: optional log decay [B, T, H], applied once per token before its steps.
        scale: query scale, default K ** -0.5.
        initial_state: optional state [B, H, K, V].
        output_final_state: return the state after the last token.
        chunk_size: real tokens per chunk (a chunk holds chunk_size * n_h virtual rows).
        impl: "auto", "chunk", "naive" or "fla" (fla's delta-rule kernel over the virtual tokens; "auto"
            picks it for bf16/fp16 CUDA tensors when fla imports).
        state_nonlinearity: None or "gelu_rownorm" (applied to the carried state after every chunk and
            after the last token; makes ``chunk_size`` part of the model).

    Returns:
        ``(o, final_state)``: o [B, T, H, V] and final_state [B, H, K, V] (or None) in the input dtype.

    Raises:
        ValueError: on a bad shape (the message names the argument), option, or ``impl``.
    """
    check_impl(impl)
    check_options(chunk_size=chunk_size, scale=scale, state_nonlinearity=state_nonlinearity)
    validate_inputs(q, k, v, beta, g, initial_state, product=True)
    path = resolve_impl(impl, q, state_nonlinearity)
    kwargs = dict(g_BTH=g, initial_state_BHKV=initial_state, output_final_state=output_final_state)
    if path == "fla":
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return fla_delta_product(q, k, v, beta, scale=scale, **kwargs)
    fn = delta_product_naive if path == "naive" else delta_product_chunk
    # under autocast the op's matmuls would drop back to half precision (and CPU has no half triangular solve)
    with torch.autocast(q.device.type, enabled=False):
        return fn(
            q, k, v, beta, scale=scale, chunk_size=chunk_size, state_nonlinearity=state_nonlinearity, **kwargs
        )
