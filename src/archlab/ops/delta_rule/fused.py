"""Chunked (gated) delta rule as one autograd.Function with a hand-written backward (n_h = 1, linear state).

Legend: Z = N*B*H chunk rows (chunk index outermost, so one chunk of every sequence is one contiguous slab), C tokens per chunk, K key dim, V value dim,
X = K + V, BH = B*H sequences, N chunks per sequence, s a block of chunk rows.

Same algorithm as ``chunk.py`` (WY / UT form, explicit inverse, per-chunk transition matrices, README.md).
Autograd through that graph spends about as much time on elementwise passes over [Z, C, C] tensors
(decay masks, their gradients, cat/split copies, the per-chunk unbind/stack of the scan) as on the GEMMs.
Here the decay is applied in place, the backward reads the saved decayed matrices to get the decay
gradient as ``rowsum(dA * A) - colsum(dA * A)`` (d exp(G_i - G_j) / dG = +-exp(...)), the two scans write
into preallocated buffers, the backward goes through the written values V' = U - W S (README.md), and the
per-chunk work runs over blocks of chunks small enough to stay in cache between one op and the next (faster
than one pass over all chunks). ``chunk.py`` stays the general form (delta product, state maps).
"""

from __future__ import annotations

import torch

_BLOCK_BYTES = 1 << 20  # one [chunks, C, K + V] tensor of a block (32 chunks at C = 64, K = V = 64)


def _blocks(Z: int, C: int, X: int, itemsize: int) -> list[slice]:
    rows = max(1, _BLOCK_BYTES // (C * X * itemsize))
    return [slice(i, min(i + rows, Z)) for i in range(0, Z, rows)]


def _scan(M_NBKK: torch.Tensor, B_NBKV: torch.Tensor, S_BKV: torch.Tensor, out_NBKV: torch.Tensor,
          reverse: bool) -> torch.Tensor:
    """Forward: out[n] = S before chunk n, S <- M_n S + B_n; returns the last S.

    Reverse (the adjoint, B = dL/d(before)): out[n] = dL/d(state after chunk n), starting from S_BKV at the
    end, H <- M_n^T H + B_n going down; returns dL/d(initial state). Every step writes a contiguous slab.
    """
    M, B, out = M_NBKK.unbind(0), B_NBKV.unbind(0), out_NBKV.unbind(0)  # views made once, not per step
    N = len(M)
    if not reverse:
        out[0].copy_(S_BKV)
        for n in range(N - 1):
            torch.baddbmm(B[n], M[n], out[n], out=out[n + 1])
        return torch.baddbmm(B[N - 1], M[N - 1], out[N - 1])
    out[N - 1].copy_(S_BKV)
    for n in range(N - 1, 0, -1):
        torch.baddbmm(B[n], M[n].transpose(1, 2), out[n], out=out[n - 1])
    return torch.baddbmm(B[0], M[0].transpose(1, 2), out[0])


def _intra_forward(q, k, v, beta, g, scale: float, KWB: torch.Tensor) -> tuple:
    """Per-chunk part of the forward for one block; writes [K_out^T W | K_out^T U] into KWB.

    q has ``m * C`` rows per chunk: m query heads reading one state (row ``r`` is token ``r % C``).
    """
    Z, C, K = k.shape
    V, m = v.shape[-1], q.shape[1] // C
    kT = k.transpose(1, 2)
    # R = [diag(beta exp(G)) K | diag(beta) V], written in place rather than concatenated
    R = k.new_empty(Z, C, K + V)
    torch.mul(v, beta[..., None], out=R[..., K:])
    P = torch.baddbmm(k.new_empty(Z, m * C, C), q, kT, beta=0.0, alpha=scale)  # the query scale for free
    P_g = P.view(Z, m, C, C)
    if g is None:
        kb = torch.mul(k, beta[..., None], out=R[..., :K])
        A = torch.bmm(kb, kT)
        P_g.tril_()  # A needs no mask: the unit-lower solve reads only its strict lower triangle
        D = eG = e_out = None
        q_eff, k_out, decay = q * scale, k, 1.0
    else:
        kb = k * beta[..., None]
        A = torch.bmm(kb, kT)
        G = g.cumsum(-1)
        # exp(G_i - G_j) <= 1 on and below the diagonal (g <= 0); above it tril_ overwrites whatever
        # exp gave (possibly inf) with exact zeros
        D = (G[:, :, None] - G[:, None, :]).exp_().tril_()
        A.mul_(D)
        P_g.mul_(D[:, None])
        eG = G.exp()
        e_out = (G[:, -1:] - G).exp()
        torch.mul(kb, eG[..., None], out=R[..., :K])
        q_eff = (q.view(Z, m, C, K) * (scale * eG)[:, None, :, None]).view(Z, m * C, K)
        k_out = k * e_out[..., None]
        decay = eG[:, -1, None]
    eye = torch.eye(C, dtype=k.dtype, device=k.device).expand(Z, C, C)
    Tinv = torch.linalg.solve_triangular(A, eye, upper=False, unitriangular=True)
    WU = torch.bmm(Tinv, R)
    PWU = torch.bmm(P, WU)
    q_eff.sub_(PWU[..., :K])  # q_eff = diag(scale exp(G)) Q - P W
    torch.bmm(k_out.transpose(1, 2), WU, out=KWB)
    M = KWB[..., :K].neg_()
    M.diagonal(dim1=-2, dim2=-1).add_(decay)  # M = decay I - K_out^T W
    return PWU[..., K:], (kb, A, P, D, eG, e_out, Tinv, WU, q_eff)


def _intra_backward(q, k, v, beta, saved, scale: float, dO, S, H, out) -> tuple:
    """Per-chunk part of the backward for one block, from dO, the chunk-start states S and H = dL/d(state after).

    Everything goes through the values the chunk actually writes, V' = U - W S: the gradients of the forward's
    [P W | P U] and [K_out^T W | K_out^T U] products collapse to dP = dO V'^T, dU = P^T dO + K_out H,
    dW = -dU S^T and dK_out = V' H^T, all [C, 64]-sized GEMMs, and the transition gradient H S^T is never formed.
    Writes dq, dk, dv into the block's rows of ``out``; returns (dbeta, dg).
    """
    kb, A, P, D, eG, e_out, Tinv, WU, q_eff = saved
    Z, C, K = k.shape
    m = q.shape[1] // C
    W, U = WU[..., :K], WU[..., K:]
    k_out = k if e_out is None else k * e_out[..., None]
    v_new = torch.baddbmm(U, W, S, alpha=-1.0)
    dq_in = torch.bmm(dO, S.transpose(1, 2))  # q_eff = q_in - P W meets dO through S
    dP = torch.bmm(dO, v_new.transpose(1, 2))
    dU = torch.bmm(k_out, H).baddbmm_(P.transpose(1, 2), dO)
    dk_out = torch.bmm(v_new, H.transpose(1, 2))
    dR_u = torch.bmm(Tinv.transpose(1, 2), dU)  # WU = T^-1 R, and dR_w = -dR_u S^T
    dR_w_neg = torch.bmm(dR_u, S.transpose(1, 2))
    dA = torch.bmm(dR_u, v_new.transpose(1, 2)).neg_().tril_(-1)
    torch.mul(dR_u, beta[..., None], out=out[2])
    dbeta = (dR_u * v).sum(-1)
    dg = None
    if D is None:
        dP.view(Z, m, C, C).tril_()
        dkb = dR_w_neg.baddbmm_(dA, k, beta=-1.0)
        dk = dk_out
        dq, dq_beta = dq_in, scale
    else:
        E = dA * A
        E += (dP * P).view(Z, m, C, C).sum(1)  # P is zero above the diagonal, so dP needs no mask here
        dG = E.sum(-1) - E.sum(-2)
        dA.mul_(D)
        dP.view(Z, m, C, C).mul_(D[:, None])
        dkb = dR_w_neg.mul_(-eG[..., None])
        dG += (dkb * kb).sum(-1)  # R_w = kb * exp(G)
        dkb.baddbmm_(dA, k)
        dq = (dq_in.view(Z, m, C, K) * (scale * eG)[:, None, :, None]).view(Z, m * C, K)
        dq_beta = 1.0
        dG += (dq * q).sum(-1).view(Z, m, C).sum(1)  # q_in = scale * q * exp(G)
        dk = dk_out.mul_(e_out[..., None])
        t = (dk * k).sum(-1)  # K_out = k * exp(G_last - G)
        ddecay = (H * S).sum((-2, -1))  # M = decay I - K_out^T W, dM = H S^T
        dG -= t
        dG[:, -1] += t.sum(-1) + ddecay * eG[:, -1]
        dg = dG.flip(-1).cumsum(-1).flip(-1)  # G = cumsum(g)
    dk.baddbmm_(dA.transpose(1, 2), kb).baddbmm_(dP.transpose(1, 2), q, alpha=scale)
    torch.baddbmm(dq, dP, k, beta=dq_beta, alpha=scale, out=out[0])
    torch.addcmul(dk, dkb, beta[..., None], out=out[1])
    dbeta += (dkb * k).sum(-1)
    return dbeta, dg


class ChunkDeltaRule(torch.autograd.Function):
    """(o [Z, m*C, V], final state [BH, K, V]) from chunk rows q [Z, m*C, K], k [Z, C, K], v [Z, C, V], beta, g [Z, C].

    m query heads per state (grouped queries): the key side (solve, transitions, scan) runs once per state.
    """

    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, scale: float, BH: int):  # noqa: PLR0913 (autograd signature)
        Z, C, K = k.shape
        V, N = v.shape[-1], Z // BH
        blocks = _blocks(Z, C, K + V, k.element_size())
        KWB = k.new_empty(Z, K, K + V)
        intra = [
            _intra_forward(q[s], k[s], v[s], beta[s], None if g is None else g[s], scale, KWB[s]) for s in blocks
        ]
        S0 = k.new_zeros(BH, K, V) if h0 is None else h0
        starts = k.new_empty(Z, K, V)
        S_last = _scan(KWB.view(N, BH, K, K + V)[..., :K], KWB.view(N, BH, K, K + V)[..., K:], S0,
                       starts.view(N, BH, K, V), reverse=False)
        o = k.new_empty(Z, q.shape[1], V)
        for s, (o_intra, saved) in zip(blocks, intra, strict=True):
            torch.baddbmm(o_intra, saved[-1], starts[s], out=o[s])
        ctx.save_for_backward(q, k, v, beta, KWB, starts, *(t for _, saved in intra for t in saved if t is not None))
        ctx.scale, ctx.BH, ctx.has_h0, ctx.gated, ctx.blocks = scale, BH, h0 is not None, g is not None, blocks
        ctx.set_materialize_grads(False)
        return o, S_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dO, dS_last):
        # a backward called inside autocast would run these matmuls in half precision against fp32 buffers
        with torch.autocast((dO if dO is not None else dS_last).device.type, enabled=False):
            return ChunkDeltaRule._backward(ctx, dO, dS_last)

    @staticmethod
    def _backward(ctx, dO, dS_last):
        q, k, v, beta, KWB, starts, *flat = ctx.saved_tensors
        Z, C, K = k.shape
        V, BH, scale, blocks = v.shape[-1], ctx.BH, ctx.scale, ctx.blocks
        N = Z // BH
        per_block = 9 if ctx.gated else 6
        saved = [flat[i * per_block : (i + 1) * per_block] for i in range(len(blocks))]
        if not ctx.gated:  # put back the Nones of D, eG, e_out
            saved = [(kb, A, P, None, None, None, Tinv, WU, q_eff) for kb, A, P, Tinv, WU, q_eff in saved]
        if dO is None:
            dO = v.new_zeros(Z, q.shape[1], V)
        # o = o_intra + q_eff S_n: chunk n's outputs reach its start state through q_eff^T dO
        Q = v.new_empty(Z, K, V)
        for s, sv in zip(blocks, saved, strict=True):
            torch.bmm(sv[-1].transpose(1, 2), dO[s], out=Q[s])
        # S_{n+1} = M_n S_n + B_n, backwards; H_after = gradient w.r.t. the state after each chunk
        H_last = v.new_zeros(BH, K, V) if dS_last is None else dS_last.contiguous()
        H_after = v.new_empty(Z, K, V)
        M_NBKK = KWB.view(N, BH, K, K + V)[..., :K]
        dh0 = _scan(M_NBKK, Q.view(N, BH, K, V), H_last, H_after.view(N, BH, K, V), reverse=True)
        grads, dq, dk, dv = [], torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for s, sv in zip(blocks, saved, strict=True):
            out = (dq[s], dk[s], dv[s])
            grads.append(_intra_backward(q[s], k[s], v[s], beta[s], sv, scale, dO[s], starts[s], H_after[s], out))
        dbeta, dg = (None if x[0] is None else torch.cat(x) for x in zip(*grads, strict=True))
        return dq, dk, dv, dbeta, dg, (dh0 if ctx.has_h0 else None), None, None
