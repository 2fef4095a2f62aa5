"""Optional dispatch to flash-linear-attention (fla) Triton kernels, with a guarded import.

Legend: B batch, T tokens, H heads, K key dim, V value dim, N householder steps per token (n_h).

fla (checked against fla-core 0.6) exposes ``chunk_delta_rule(q, k, v, beta, scale, initial_state,
output_final_state, use_qk_l2norm_in_kernel=False, ...)`` and ``chunk_gated_delta_rule(q, k, v, g, beta,
...)`` in the same [B, T, H, D] layout and with the same recurrence and scale default (K ** -0.5) as
``archlab.ops``. Neither requires L2-normalised q/k (normalising inside the kernel is an opt-in flag,
which we leave off: callers normalise themselves). ``chunk_delta_rule`` rejects float32 inputs and the
kernels are tuned for half precision, so ``impl="auto"`` only routes bf16/fp16 CUDA tensors to fla.
fla has no chunk-boundary state nonlinearity, so that option always uses the torch path.
"""

from __future__ import annotations

import functools

import torch

from ._common import check_impl


@functools.cache
def has_fla() -> bool:
    """True when fla and its Triton kernels import (needs triton; not the case on CPU-only installs)."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule  # noqa: F401
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: F401
    except Exception:
        return False
    return True


def resolve_impl(impl: str, q: torch.Tensor, state_nonlinearity: str | None) -> str:
    """Map ``impl`` to the concrete path: "naive", "chunk" or "fla".

    Raises:
        ValueError: for an unknown ``impl`` or ``impl="fla"`` with an unsupported option.
        RuntimeError: for ``impl="fla"`` when fla is not importable or the tensors are not on CUDA.
    """
    check_impl(impl)
    if impl == "auto":
        use_fla = (
            q.is_cuda
            and q.dtype in (torch.bfloat16, torch.float16)
            and state_nonlinearity is None
            and has_fla()
        )
        return "fla" if use_fla else "chunk"
    if impl == "fla":
        if state_nonlinearity is not None:
            raise ValueError("impl='fla' does not support state_nonlinearity; use impl='chunk'")
        if not (q.is_cuda and has_fla()):
            raise RuntimeError("impl='fla' needs CUDA tensors and an importable fla (with triton)")
    return impl


def fla_delta_rule(
    q_BTHK: torch.Tensor,
    k_BTHK: torch.Tensor,
    v_BTHV: torch.Tensor,
    beta_BTH: torch.Tensor,
    *,
    g_BTH: torch.Tensor | None,
    scale: float,
    initial_state_BHKV: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run fla's chunk kernel; the final state is returned in the input dtype like the torch paths."""
    dtype = q_BTHK.dtype
    h0 = None if initial_state_BHKV is None else initial_state_BHKV.float()
    common = {"scale": scale, "initial_state": h0, "output_final_state": output_final_state}
    if g_BTH is None and dtype != torch.float32:
        from fla.ops.delta_rule import chunk_delta_rule

        o, S = chunk_delta_rule(q_BTHK, k_BTHK, v_BTHV, beta_BTH.to(dtype), **common)
    else:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        g = torch.zeros_like(beta_BTH, dtype=torch.float32) if g_BTH is None else g_BTH.float()
        o, S = chunk_gated_delta_rule(q_BTHK, k_BTHK, v_BTHV, g, beta_BTH.to(dtype), **common)
    return o.to(dtype), (S.to(dtype) if output_final_state and S is not None else None)


def fla_delta_product(
    q_BTHK: torch.Tensor,
    k_BTHNK: torch.Tensor,
    v_BTHNV: torch.Tensor,
    beta_BTHN: torch.Tensor,
    *,
    g_BTH: torch.Tensor | None,
    scale: float,
    initial_state_BHKV: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta product through fla's delta-rule kernel over T * n_h virtual tokens.

    Only the last virtual token of each real token carries the query; the others get q = 0 and their
    outputs are discarded. Without a state nonlinearity the chunk size does not change the result, so
    fla's own chunking of the virtual sequence is exact.
    """
    B, T, H, N, K = k_BTHNK.shape
    q_BTHNK = torch.zeros_like(k_BTHNK)
    q_BTHNK[:, :, :, -1] = q_BTHK
    g_virtual = None
    if g_BTH is not None:
        g_virtual = torch.zeros_like(beta_BTHN)
        g_virtual[..., 0] = g_BTH
        g_virtual = g_virtual.transpose(2, 3).reshape(B, T * N, H)

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(2, 3).reshape(B, T * N, H, *x.shape[4:])

    o, S = fla_delta_rule(
        flat(q_BTHNK),
        flat(k_BTHNK),
        flat(v_BTHNV),
        flat(beta_BTHN),
        g_BTH=g_virtual,
        scale=scale,
        initial_state_BHKV=initial_state_BHKV,
        output_final_state=output_final_state,
    )
    return o.reshape(B, T, N, H, -1)[:, :, -1], S
