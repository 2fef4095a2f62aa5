"""Chunkwise-parallel (WY / UT transform) delta rule in pure torch; see README.md for the derivation.

Legend: B batch, T tokens, H heads, K key dim, V value dim, N chunks, C query rows per chunk,
L key rows per chunk (L = C for the delta rule, L = C * n_h for the delta product), X = K + V.

Everything inside a chunk (the triangular solve that builds W and U, the intra-chunk attention and the
per-chunk transition matrices) is computed for all chunks at once with batched matmuls. The only
sequential part is the inter-chunk scan ``S <- M_n S + B_n``, one [K, K] @ [K, V] matmul per chunk.
Gradients come from autograd through this graph.
"""

from __future__ import annotations

import torch

from .._common import compute_dtype, pad_time, state_map
from .fused import ChunkDeltaRule


def _causal_mask(C: int, L: int, n_h: int, device: torch.device) -> torch.Tensor:
    """[C, L] bool mask: query row i (the last sub-step of token i) sees key rows j <= i*n_h + n_h - 1."""
    last_row_C1 = torch.arange(C, device=device)[:, None] * n_h + (n_h - 1)
    return torch.arange(L, device=device)[None, :] <= last_row_C1


class _UnitLowerSolve(torch.autograd.Function):
    """Y = (I + A)^-1 R for strictly lower A, via the explicit inverse so the backward is two GEMMs.

    Forward: one small triangular solve against the identity (C right-hand sides instead of K + V),
    then a GEMM. Backward (with Y = T^-1 R): dR = T^-T dY and dA = -tril_{-1}(dR Y^T), both GEMMs; on
    CPU this is about twice as fast as autograd through ``solve_triangular``, whose backward is another
    triangular solve. Only first derivatives are supported.
    """

    @staticmethod
    def forward(ctx, A_ZLL: torch.Tensor, R_ZLX: torch.Tensor) -> torch.Tensor:
        L = A_ZLL.shape[-1]
        eye_LL = torch.eye(L, dtype=A_ZLL.dtype, device=A_ZLL.device).expand_as(A_ZLL)
        Tinv_ZLL = torch.linalg.solve_triangular(A_ZLL, eye_LL, upper=False, unitriangular=True)
        Y_ZLX = Tinv_ZLL @ R_ZLX
        ctx.save_for_backward(Tinv_ZLL, Y_ZLX)
        return Y_ZLX

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dY_ZLX: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Tinv_ZLL, Y_ZLX = ctx.saved_tensors
        dR_ZLX = Tinv_ZLL.transpose(-1, -2) @ dY_ZLX
        dA_ZLL = -(dR_ZLX @ Y_ZLX.transpose(-1, -2)).tril_(-1)
        return dA_ZLL, dR_ZLX


def chunk_delta_core(
    q_BHNCK: torch.Tensor,
    k_BHNLK: torch.Tensor,
    v_BHNLV: torch.Tensor,
    beta_BHNL: torch.Tensor,
    g_BHNL: torch.Tensor | None,
    *,
    scale: float,
    initial_state_BHKV: torch.Tensor | None,
    n_h: int = 1,
    state_nonlinearity: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked delta rule on pre-chunked inputs, with ``n_h`` key rows per query row.

    Key row ``c * n_h + j`` of a chunk is householder step ``j`` of token ``c``; query row ``c`` reads the
    state after step ``n_h - 1`` of token ``c``. With ``n_h = 1`` this is the plain delta rule.

    Args:
        q_BHNCK: queries (unscaled), [B, H, N, C, K].
        k_BHNLK: keys, [B, H, N, L, K] with L = C * n_h.
        v_BHNLV: values, [B, H, N, L, V].
        beta_BHNL: write strengths, [B, H, N, L].
        g_BHNL: optional per-row log decay, [B, H, N, L], applied before that row's update.
        scale: query scale.
        initial_state_BHKV: optional state before the first chunk, [B, H, K, V].
        n_h: key rows per query row.
        state_nonlinearity: None or "gelu_rownorm", applied to the state after every chunk.

    Returns:
        ``(o_BHNCV, final_state_BHKV)`` in the dtype of the inputs.
    """
    B, H, N, L, K = k_BHNLK.shape
    C, V = q_BHNCK.shape[3], v_BHNLV.shape[-1]
    dev, dt = k_BHNLK.device, k_BHNLK.dtype
    f = state_map(state_nonlinearity)

    kb_BHNLK = k_BHNLK * beta_BHNL[..., None]
    vb_BHNLV = v_BHNLV * beta_BHNL[..., None]
    A_BHNLL = kb_BHNLK @ k_BHNLK.transpose(-1, -2)
    mask_CL = _causal_mask(C, L, n_h, dev)
    q_in_BHNCK = q_BHNCK * scale  # scaled on [C, K] rather than on the [C, L] scores
    qk_BHNCL = q_in_BHNCK @ k_BHNLK.transpose(-1, -2)
    if g_BHNL is None:
        # No masking of A: the unit-lower solve never reads its diagonal or upper triangle, and its
        # backward returns a strictly-lower gradient.
        P_BHNCL = qk_BHNCL.masked_fill(~mask_CL, 0.0)
        k_out_BHNLK = k_BHNLK
        w_rhs_BHNLK = kb_BHNLK
        chunk_decay_BHN = None
    else:
        # G is the inclusive in-chunk cumulative log decay; every pairwise factor exp(G_i - G_j) with
        # j <= i is <= 1 when g <= 0, and the masked (j > i) entries are set to exp(-inf) = 0 before
        # exponentiating so that they cannot overflow.
        G_BHNL = g_BHNL.cumsum(-1)
        Gq_BHNC = G_BHNL[..., n_h - 1 :: n_h]
        decay_BHNCL = (Gq_BHNC[..., :, None] - G_BHNL[..., None, :]).masked_fill(~mask_CL, float("-inf")).exp()
        if n_h == 1:
            # One [L, L] decay matrix serves both: the scores need its lower triangle with the diagonal, A
            # its strict lower triangle (the solve ignores the rest). Half the pairwise exp/mask work.
            A_BHNLL = A_BHNLL * decay_BHNCL
        else:
            strict_LL = torch.ones(L, L, dtype=torch.bool, device=dev).tril(-1)
            diff_BHNLL = G_BHNL[..., :, None] - G_BHNL[..., None, :]
            A_BHNLL = A_BHNLL * diff_BHNLL.masked_fill(~strict_LL, float("-inf")).exp()
        P_BHNCL = qk_BHNCL * decay_BHNCL
        q_in_BHNCK = q_in_BHNCK * Gq_BHNC.exp()[..., None]
        G_last_BHN1 = G_BHNL[..., -1:]
        k_out_BHNLK = k_BHNLK * (G_last_BHN1 - G_BHNL).exp()[..., None]
        w_rhs_BHNLK = kb_BHNLK * G_BHNL.exp()[..., None]
        chunk_decay_BHN = G_last_BHN1.squeeze(-1).exp()

    # UT transform: (I + A) [W | U] = [diag(beta * exp(G)) K | diag(beta) V], one solve for both.
    rhs_BHNLX = torch.cat([w_rhs_BHNLK, vb_BHNLV], dim=-1)
    WU_BHNLX = _UnitLowerSolve.apply(A_BHNLL, rhs_BHNLX)

    # Outputs: O = Q_in S_n + P (U - W S_n) = (Q_in - P W) S_n + P U.
    # split (not slicing) so the backward is one cat instead of zero-filled buffers per slice.
    PW_BHNCK, o_intra_BHNCV = torch.split(P_BHNCL @ WU_BHNLX, [K, V], dim=-1)
    q_eff_BHNCK = q_in_BHNCK - PW_BHNCK
    # Chunk transition: S_{n+1} = decay * S_n + K_out^T (U - W S_n) = M_n S_n + B_n.
    KW_BHNKK, B_BHNKV = torch.split(k_out_BHNLK.transpose(-1, -2) @ WU_BHNLX, [K, V], dim=-1)
    eye_KK = torch.eye(K, dtype=dt, device=dev)
    if chunk_decay_BHN is None:
        M_BHNKK = eye_KK - KW_BHNKK
    else:
        M_BHNKK = chunk_decay_BHN[..., None, None] * eye_KK - KW_BHNKK

    # The only sequential part: one batched [K, K] @ [K, V] per chunk. unbind (not indexing) keeps the
    # backward linear in N: indexing would allocate a full-size zero gradient per chunk.
    M_list = M_BHNKK.reshape(B * H, N, K, K).unbind(1)
    B_list = B_BHNKV.reshape(B * H, N, K, V).unbind(1)
    if initial_state_BHKV is None:
        S_ZKV = k_BHNLK.new_zeros(B * H, K, V)
    else:
        S_ZKV = initial_state_BHKV.reshape(B * H, K, V).to(dt)
    if N == 0:
        return q_BHNCK.new_zeros(B, H, 0, C, V), S_ZKV.reshape(B, H, K, V)
    starts = []
    for n in range(N):
        starts.append(S_ZKV)
        S_ZKV = torch.baddbmm(B_list[n], M_list[n], S_ZKV)
        if f is not None:
            S_ZKV = f(S_ZKV)
    start_BHNKV = torch.stack(starts, dim=1).reshape(B, H, N, K, V)

    o_BHNCV = torch.baddbmm(
        o_intra_BHNCV.reshape(-1, C, V),
        q_eff_BHNCK.reshape(-1, C, K),
        start_BHNKV.reshape(-1, K, V),
    ).reshape(B, H, N, C, V)
    return o_BHNCV, S_ZKV.reshape(B, H, K, V)


def _to_chunks(x_BTH_: torch.Tensor, chunk: int, cdt: torch.dtype) -> torch.Tensor:
    """[B, T, H, *rest] -> zero-padded [B, H, N, chunk, *rest] in the compute dtype."""
    x = pad_time(x_BTH_.to(cdt), chunk, dim=1).transpose(1, 2)
    B, H, Tp = x.shape[:3]
    return x.reshape(B, H, Tp // chunk, chunk, *x.shape[3:])


def delta_rule_chunk(
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
    """Chunkwise delta rule with the same semantics and arguments as ``delta_rule_naive``.

    The sequence is zero-padded to a multiple of ``chunk_size`` (pad rows have beta = 0, k = 0, g = 0,
    so they leave the state unchanged and their outputs are dropped).

    Returns:
        ``(o_BTHV, state_BHKV)`` in the input dtype; the state is None unless ``output_final_state``.
    """
    dtype = q_BTHK.dtype
    cdt = compute_dtype(dtype)
    B, T, H, K = q_BTHK.shape
    scale = K**-0.5 if scale is None else scale
    C = chunk_size
    if _use_fused(state_nonlinearity, T):
        return _fused(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, scale, initial_state_BHKV, output_final_state, C)
    o_BHNCV, S_BHKV = chunk_delta_core(
        _to_chunks(q_BTHK, C, cdt),
        _to_chunks(k_BTHK, C, cdt),
        _to_chunks(v_BTHV, C, cdt),
        _to_chunks(beta_BTH, C, cdt),
        None if g_BTH is None else _to_chunks(g_BTH, C, cdt),
        scale=scale,
        initial_state_BHKV=initial_state_BHKV,
        n_h=1,
        state_nonlinearity=state_nonlinearity,
    )
    V = o_BHNCV.shape[-1]
    o_BTHV = o_BHNCV.reshape(B, H, -1, V)[:, :, :T].transpose(1, 2).to(dtype)
    return o_BTHV, (S_BHKV.to(dtype) if output_final_state else None)


def _use_fused(state_nonlinearity: str | None, T: int) -> bool:
    """The hand-written Function for eager runs; torch.compile traces (and fuses) the plain autograd form,
    as Dynamo cannot trace the Function's in-place writes into strided buffers."""
    return state_nonlinearity is None and T > 0 and not torch.compiler.is_compiling()


def _rows_view(rows: torch.Tensor, B: int, H: int, C: int, m: int) -> torch.Tensor:
    """[N*B*H, m*C, *rest] (chunk-outer rows, m heads per state) -> the [B, N, C, H, m, *rest] view of it."""
    rest = rows.shape[2:]
    N = rows.shape[0] // (B * H)
    return rows.view(N, B, H, m, C, *rest).permute(1, 0, 4, 2, 3, *range(5, 5 + len(rest)))


def _scatter_rows(x: torch.Tensor, C: int, m: int = 1) -> torch.Tensor:
    """[B, T, H*m, *rest] -> zero-padded chunk rows [N*B*H, m*C, *rest], chunk index outermost, in one copy.

    Heads h*m .. h*m + m - 1 (the query heads of state h, as repeat_interleave groups them) share a row block.
    """
    B, T, Hm = x.shape[:3]
    H, rest = Hm // m, x.shape[3:]
    N, F_ = -(-T // C), T // C
    rows = x.new_empty(N * B * H, m * C, *rest)
    view = _rows_view(rows, B, H, C, m)
    if F_:
        view[:, :F_] = x[:, : F_ * C].reshape(B, F_, C, H, m, *rest)
    if F_ < N:
        view[:, F_, : T - F_ * C] = x[:, F_ * C :].reshape(B, T - F_ * C, H, m, *rest)
        view[:, F_, T - F_ * C :] = 0
    return rows


def _gather_rows(rows: torch.Tensor, B: int, T: int, H: int, C: int) -> torch.Tensor:
    """Inverse of ``_scatter_rows`` (pad rows dropped): [N*B*H, m*C, *rest] -> [B, T, H*m, *rest], one copy."""
    m, rest = rows.shape[1] // C, rows.shape[2:]
    F_ = T // C
    x = rows.new_empty(B, T, H * m, *rest)
    view = _rows_view(rows.contiguous(), B, H, C, m)
    if F_:
        x[:, : F_ * C].view(B, F_, C, H, m, *rest).copy_(view[:, :F_])
    if F_ * C < T:
        x[:, F_ * C :].view(B, T - F_ * C, H, m, *rest).copy_(view[:, F_, : T - F_ * C])
    return x


class _ToRows(torch.autograd.Function):
    """``_scatter_rows`` with ``_gather_rows`` as its backward (autograd through the slicing would zero-fill)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, C: int, m: int) -> torch.Tensor:
        ctx.shape = (x.shape[0], x.shape[1], x.shape[2] // m, C)
        return _scatter_rows(x, C, m)

    @staticmethod
    def backward(ctx, d_rows: torch.Tensor):
        return _gather_rows(d_rows, *ctx.shape), None, None


class _FromRows(torch.autograd.Function):
    """``_gather_rows`` with ``_scatter_rows`` as its backward."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, B: int, T: int, H: int, C: int) -> torch.Tensor:
        ctx.C, ctx.m = C, rows.shape[1] // C
        return _gather_rows(rows, B, T, H, C)

    @staticmethod
    def backward(ctx, dx: torch.Tensor):
        return _scatter_rows(dx, ctx.C, ctx.m), None, None, None, None


def _fused(q_BTHK, k_BTGK, v_BTGV, beta_BTG, g_BTG, scale, initial_state_BGKV, output_final_state, C):
    """The linear-state delta rule through ``ChunkDeltaRule`` (hand-written backward, fused.py).

    q may have m times the heads of k/v/beta/g/state (H = G * m): query heads h*m .. h*m + m - 1 read state h.
    """
    dtype = q_BTHK.dtype
    cdt = compute_dtype(dtype)
    B, T, H, K = q_BTHK.shape
    G, V = k_BTGK.shape[2], v_BTGV.shape[-1]

    def rows(x: torch.Tensor, m: int = 1) -> torch.Tensor:
        return _ToRows.apply(x.to(cdt), C, m)

    h0_ZKV = None if initial_state_BGKV is None else initial_state_BGKV.to(cdt).reshape(B * G, K, V)
    g_ZC = None if g_BTG is None else rows(g_BTG)
    o_ZCV, S_ZKV = ChunkDeltaRule.apply(
        rows(q_BTHK, H // G), rows(k_BTGK), rows(v_BTGV), rows(beta_BTG), g_ZC, h0_ZKV, scale, B * G
    )
    o_BTHV = _FromRows.apply(o_ZCV, B, T, G, C).to(dtype)
    return o_BTHV, (S_ZKV.reshape(B, G, K, V).to(dtype) if output_final_state else None)
