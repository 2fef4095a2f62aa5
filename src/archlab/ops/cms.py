"""Fast-weight MLP memories with chunked, teach-signal-driven writes (Nested Learning's CMS, Titans' memory).

A *fast MLP* is ``y = W2 gelu(W1 n + b1) + b2`` whose weights are per context (batch-first: ``W1 [B, H, D]``,
``b1 [B, H]``, ``W2 [B, D, H]``, ``b2 [B, D]``). It is written by gradient steps on the inner loss
``1/2 ||y_t - stopgrad(y_t - e_t)||^2`` whose gradient with respect to ``y_t`` is the error ``e_t`` (the teach
signal delta for a CMS level: the target is ``pred - delta``, a descent direction of the outer loss, not the
seed era's ``pred + delta``). A level with period ``P`` accumulates, over each chunk of ``P`` tokens (absolute
positions ``[kP, (k+1)P)``), the **sum** of the per-token gradients taken at the chunk-start weights, and applies
``W <- W - lr * sum`` at the chunk end; tokens inside a chunk read the chunk-start weights.

Two forms, held equal by ``tests/ops/test_cms.py`` (outputs, final state, gradients, odd lengths, offsets):

- :func:`fast_mlp_reference`: token by token, exactly the definition above;
- :func:`fast_mlp_chunked`: one batched read and one batched gradient sum per chunk (matmuls over the chunk's
  tokens, no per-token loop).

Both take ``beta`` / ``precond``: the write's inner optimiser (deep momentum, rank-1 preconditioner;
:mod:`archlab.ops.inner_optim`); the defaults are the plain step above.

Gradients: writes are stop-gradient except through ``e`` (a learned self-modifier can shape the error it
writes; pass a detached ``e`` for a pure teach-signal write). The weights read at token t are
``W0 + D_t`` with ``D_t`` the accumulated writes, so ``W0`` (the meta-initialisation, expanded over the batch)
receives the outer gradient of every read: the straight-through "fast + (meta - stopgrad(meta))".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from archlab.ops.inner_optim import inner_update, inner_update_reference

__all__ = ["FastState", "blocked_matmul", "blocked_read_backward", "fast_mlp_chunked", "fast_mlp_grads", "fast_mlp_read", "fast_mlp_read_blocked", "fast_mlp_read_split",
           "fast_mlp_reference", "fast_mlp_step", "gelu_grad"]

PARAMS = ("W1", "b1", "W2", "b2")


def gelu_grad(z: torch.Tensor) -> torch.Tensor:
    """d gelu(z) / dz of the exact (erf) GELU."""
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def fast_mlp_read(n: torch.Tensor, w: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, z, h)`` of the fast MLP for inputs ``n [B, T, D]`` (z pre-activation, h = gelu(z))."""
    z = torch.baddbmm(w["b1"].unsqueeze(1), n, w["W1"].transpose(1, 2))
    h = F.gelu(z)
    y = torch.baddbmm(w["b2"].unsqueeze(1), h, w["W2"].transpose(1, 2))
    return y, z, h


def fast_mlp_read_split(n: torch.Tensor, meta: dict[str, torch.Tensor],
                        delta: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fast_mlp_read` with weights ``meta [H, D] (shared) + delta [B, H, D]`` never materialised per batch.

    One matmul with the shared meta weights (its gradient is one reduction, not one per context) plus a batched
    matmul with the per-context deltas; ``delta=None`` is a context with no write yet.
    """
    z = F.linear(n, meta["W1"], meta["b1"])
    if delta is not None:
        z = torch.baddbmm(z + delta["b1"].unsqueeze(1), n, delta["W1"].transpose(1, 2))
    h = F.gelu(z)
    y = F.linear(h, meta["W2"], meta["b2"])
    if delta is not None:
        y = torch.baddbmm(y + delta["b2"].unsqueeze(1), h, delta["W2"].transpose(1, 2))
    return y, z, h


def blocked_matmul(x: torch.Tensor, weights: torch.Tensor, block: int, bias: torch.Tensor | None = None,
                   transpose: bool = True) -> torch.Tensor:
    """``x_t @ weights[k]^T + bias[k]`` (``@ weights[k]`` with ``transpose=False``) for each token t of
    block k: ``x [B, T, X]``, ``weights [K, B, ...]``, ``bias [K, B, Y]``; K blocks of ``block`` tokens cover T (the
    last may be partial). One batched matmul over the ``K * B`` blocks."""
    b, t, _ = x.shape
    blocks = weights.shape[0]
    pad = blocks * block - t
    if pad < 0 or pad >= block:
        raise ValueError(f"{blocks} blocks of {block} tokens do not cover {t} tokens")
    xb = F.pad(x, (0, 0, 0, pad)) if pad else x
    xb = xb.view(b, blocks, block, -1).transpose(0, 1).reshape(blocks * b, block, -1)
    w = weights.flatten(0, 1)
    w = w.transpose(1, 2) if transpose else w
    out = torch.bmm(xb, w) if bias is None else torch.baddbmm(bias.reshape(blocks * b, 1, -1), xb, w)
    out = out.view(blocks, b, block, -1).transpose(0, 1).reshape(b, blocks * block, -1)
    return out[:, :t] if pad else out


class _BlockedRead(torch.autograd.Function):
    """The fast MLP over a sequence whose per-context weights ``meta + D_k`` change every ``block`` tokens.

    Given the materialised weights of every block, the forward is two batched matmuls and the backward two more
    for the input plus one GEMM per meta weight over all tokens: ``D_k`` is stop-gradient, so the meta weights'
    gradient is the weights' gradient summed over blocks (the straight-through read) and a second read with the
    meta weights alone, forward and backward, is never needed.
    """

    @staticmethod
    def forward(ctx, n, W1, b1, W2, b2, weights, block):
        z = blocked_matmul(n, weights["W1"], block, bias=weights["b1"])
        y = blocked_matmul(F.gelu(z), weights["W2"], block, bias=weights["b2"])
        ctx.save_for_backward(n, z, weights["W1"], weights["W2"])
        ctx.block = block
        ctx.mark_non_differentiable(z)
        return y, z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, _gz):
        n, z, w1, w2 = ctx.saved_tensors
        with torch.autocast(gy.device.type, enabled=False):  # fp32 as the forward, whatever the caller's autocast
            grads, _, _ = blocked_read_backward(gy, n, z, w1, w2, ctx.block)
            return (*grads, None, None)


def blocked_read_backward(gy: torch.Tensor, n: torch.Tensor, z: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                          block: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """The gradients of a blocked read (:class:`_BlockedRead`) w.r.t. ``(n, W1, b1, W2, b2)`` (meta weights:
    summed over every token), and ``gz``, ``h`` for a caller that also needs them."""
    gy = gy.contiguous()
    h = F.gelu(z)
    gz = torch.ops.aten.gelu_backward(blocked_matmul(gy, w2, block, transpose=False), z)
    gn = blocked_matmul(gz, w1, block, transpose=False)
    flat_gz, flat_gy = gz.flatten(0, 1), gy.flatten(0, 1)
    grads = (gn, flat_gz.t() @ n.flatten(0, 1), flat_gz.sum(0), flat_gy.t() @ h.flatten(0, 1), flat_gy.sum(0))
    return grads, gz, h


def fast_mlp_read_blocked(n: torch.Tensor, meta: dict[str, torch.Tensor], weights: dict[str, torch.Tensor] | None,
                          block: int, with_preactivation: bool = False):
    """The output of :func:`fast_mlp_read_split` for a whole sequence whose weights change every ``block`` tokens.

    ``weights[k] [K, B, ...]`` are the per-context weights ``meta + D_k`` (materialised, no graph) that tokens
    ``[k*block, (k+1)*block)`` read (``K`` blocks cover ``n [B, T, D]``; the last may be partial); the gradient
    goes to ``n`` and to ``meta`` as if each block had read ``meta + stopgrad(D_k)``. One batched matmul over the
    ``K * B`` blocks per layer of the MLP: a sequence read in one call instead of one per block.
    ``weights=None``: every block reads the meta weights. ``with_preactivation``: return ``(y, z)``.
    """
    if weights is None:
        y, z, _ = fast_mlp_read_split(n, meta, None)
    else:
        y, z = _BlockedRead.apply(n, meta["W1"], meta["b1"], meta["W2"], meta["b2"], weights, block)
    return (y, z) if with_preactivation else y


def fast_mlp_grads(n: torch.Tensor, z: torch.Tensor, h: torch.Tensor, W2: torch.Tensor,
                   e: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sum over tokens of the per-token gradients of ``<y_t, e_t>`` (= the inner loss's) w.r.t. the weights.

    ``n, z, h`` come from the read at the same weights (``W2`` among them); ``e [B, T, D]`` is the error.
    Only ``e`` keeps its graph: the features and ``W2`` are detached (a write is a stop-gradient step).
    """
    n, z, h, W2 = n.detach(), z.detach(), h.detach(), W2.detach()
    gz = torch.ops.aten.gelu_backward(torch.bmm(e, W2), z)     # [B, T, H]; one fused kernel for e W2 * gelu'(z)
    return {"W1": torch.bmm(gz.transpose(1, 2), n), "b1": gz.sum(1),
            "W2": torch.bmm(e.transpose(1, 2), h), "b2": e.sum(1)}


def fast_mlp_step(n: torch.Tensor, z: torch.Tensor, h: torch.Tensor, W2: torch.Tensor, e: torch.Tensor,
                  scale: float, delta: dict[str, torch.Tensor] | None,
                  out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``delta + scale * fast_mlp_grads(...)`` (``delta=None``: zero) with the step fused into each GEMM.

    ``out`` (with a ``delta``, outside autograd): tensors to write the new deltas into.
    """
    n, z, h, W2 = n.detach(), z.detach(), h.detach(), W2.detach()
    gz = torch.ops.aten.gelu_backward(torch.bmm(e, W2), z)
    if out is not None:
        torch.baddbmm(delta["W1"], gz.transpose(1, 2), n, alpha=scale, out=out["W1"])
        torch.add(delta["b1"], gz.sum(1), alpha=scale, out=out["b1"])
        torch.baddbmm(delta["W2"], e.transpose(1, 2), h, alpha=scale, out=out["W2"])
        torch.add(delta["b2"], e.sum(1), alpha=scale, out=out["b2"])
        return out
    if delta is None:
        return {"W1": torch.bmm(gz.transpose(1, 2), n) * scale, "b1": gz.sum(1) * scale,
                "W2": torch.bmm(e.transpose(1, 2), h) * scale, "b2": e.sum(1) * scale}
    return {"W1": torch.baddbmm(delta["W1"], gz.transpose(1, 2), n, alpha=scale),
            "b1": torch.add(delta["b1"], gz.sum(1), alpha=scale),
            "W2": torch.baddbmm(delta["W2"], e.transpose(1, 2), h, alpha=scale),
            "b2": torch.add(delta["b2"], e.sum(1), alpha=scale)}


@dataclass
class FastState:
    """Writes so far (``delta``: weights = W0 + delta), the gradient sum of the open chunk, tokens seen."""

    delta: dict[str, torch.Tensor]
    pending: dict[str, torch.Tensor]
    position: int = 0
    n_sum: torch.Tensor | None = None  # the open chunk's input sum (the rank-1 preconditioner's direction)
    momentum: dict[str, torch.Tensor] | None = None  # the inner optimiser's (archlab.ops.inner_optim)

    @classmethod
    def zeros_like(cls, w0: dict[str, torch.Tensor], position: int = 0) -> FastState:
        z = {k: torch.zeros_like(v).detach() for k, v in w0.items()}
        return cls(dict(z), {k: v.clone() for k, v in z.items()}, position)


def _weights(w0: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: w0[k] + delta[k] for k in PARAMS}


def fast_mlp_reference(n: torch.Tensor, e: torch.Tensor, w0: dict[str, torch.Tensor], period: int, lr: float,
                       state: FastState | None = None, beta: float = 0.0,
                       precond: bool = False) -> tuple[torch.Tensor, FastState]:
    """Token-by-token definition: read with the current weights, add the token's gradient, write at chunk ends.

    ``e[:, t]`` must only depend on tokens the caller may let position ``t + 1`` see (the model passes the
    teach signal of token t, which uses the token t + 1).
    """
    state = state or FastState.zeros_like(w0)
    delta, pending, pos = dict(state.delta), dict(state.pending), state.position
    n_sum = state.n_sum if state.n_sum is not None else n.new_zeros(n.shape[0], n.shape[2])
    momentum = state.momentum
    outs = []
    for t in range(n.shape[1]):
        w = _weights(w0, delta)
        y, z, h = fast_mlp_read(n[:, t : t + 1], w)
        outs.append(y)
        g = fast_mlp_grads(n[:, t : t + 1], z, h, w["W2"], e[:, t : t + 1])
        pending = {k: pending[k] + g[k] for k in PARAMS}
        n_sum = n_sum + n[:, t].detach()
        pos += 1
        if pos % period == 0:
            step, momentum = inner_update_reference(pending, n_sum, momentum, beta, precond)
            delta = {k: delta[k] - lr * step[k] for k in PARAMS}
            pending = {k: torch.zeros_like(v) for k, v in pending.items()}
            n_sum = torch.zeros_like(n_sum)
    return torch.cat(outs, 1), FastState(delta, pending, pos, n_sum, momentum)


def chunk_bounds(position: int, length: int, period: int) -> list[tuple[int, int]]:
    """``[start, end)`` pieces of ``length`` tokens starting at absolute ``position``, cut at multiples of period."""
    out, start = [], 0
    while start < length:
        end = min(length, start + period - (position + start) % period)
        out.append((start, end))
        start = end
    return out


def fast_mlp_chunked(n: torch.Tensor, e: torch.Tensor, w0: dict[str, torch.Tensor], period: int, lr: float,
                     state: FastState | None = None, beta: float = 0.0,
                     precond: bool = False) -> tuple[torch.Tensor, FastState]:
    """Same as :func:`fast_mlp_reference`, one batched read and gradient sum per chunk."""
    state = state or FastState.zeros_like(w0)
    delta, pending, pos = dict(state.delta), dict(state.pending), state.position
    n_sum = state.n_sum if state.n_sum is not None else n.new_zeros(n.shape[0], n.shape[2])
    momentum = state.momentum
    outs = []
    for start, end in chunk_bounds(pos, n.shape[1], period):
        w = _weights(w0, delta)
        y, z, h = fast_mlp_read(n[:, start:end], w)
        outs.append(y)
        g = fast_mlp_grads(n[:, start:end], z, h, w["W2"], e[:, start:end])
        pending = {k: pending[k] + g[k] for k in PARAMS}
        n_sum = n_sum + n[:, start:end].detach().sum(1)
        pos += end - start
        if pos % period == 0:
            step, momentum = inner_update(pending, n_sum, momentum, beta, precond)
            delta = {k: delta[k] - lr * step[k] for k in PARAMS}
            pending = {k: torch.zeros_like(v) for k, v in pending.items()}
            n_sum = torch.zeros_like(n_sum)
    return torch.cat(outs, 1), FastState(delta, pending, pos, n_sum, momentum)
