"""The New-LLM context-vector cell (seed 002): one vector c_t in R^{d_c} is the only memory of the past.

Per token, with e_t the token embedding (no positions) and c_0 = 0:

    h_t = FNN_L([e_t ; c_{t-1}])            L x (Linear -> ReLU -> Dropout), hidden width H
    c_t = clip_{+-clip}( LayerNorm( sigmoid(W_f h_t) * c_{t-1} + sigmoid(W_i h_t) * (W_c h_t) ) )

and the model predicts token t+1 from h_t. The recurrence is nonlinear in c, so there is no parallel
form: time is a loop. Two implementations of the same math:

- ``context_step`` / ``reference_loop``: the equations as written, one token at a time (the reference);
- ``context_loop``: the fast loop. The embedding half of the first layer, W_1e e_t + b_1, is computed for all
  tokens in one matmul before the loop (it does not depend on c) and the three context heads are one fused
  [3 d_c, H] matmul. ``impl='eager'`` leaves the backward to autograd; ``impl='fused'`` (the default) is one
  ``autograd.Function`` whose backward is hand-written BPTT: the time loop runs only what is sequential (the
  gradient into c_{t-1} and through the FNN), and every weight gradient is one [T*B]-row matmul after the
  loop, instead of T small matmuls and T accumulations per weight under autograd.

Padding: where ``keep`` is False (a left-padded prompt, a padded tail) the context is carried unchanged, so a
padded row reads the same context as its unpadded twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOOP_IMPLS", "ContextVectorCell", "context_loop", "reference_loop"]

LOOP_IMPLS = ("fused", "eager")


def _loop_body(pre: torch.Tensor, c: torch.Tensor, keep: torch.Tensor | None, w_first_c: torch.Tensor,
               weights: list[torch.Tensor], biases: list[torch.Tensor], head_w: torch.Tensor, head_b: torch.Tensor,
               ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float, clip: float, p: float,
               training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """pre [B, T, H] = W_1e e_t + b_1 for every t; c [B, d_c] -> (h [B, T, H], final c [B, d_c])."""
    d_c = c.size(-1)
    hs: list[torch.Tensor] = []
    for t in range(pre.size(1)):
        h = F.dropout(torch.relu(pre[:, t] + F.linear(c, w_first_c)), p, training)
        for i in range(len(weights)):
            h = F.dropout(torch.relu(F.linear(h, weights[i], biases[i])), p, training)
        heads = F.linear(h, head_w, head_b)
        f, i_gate, delta = heads[:, :d_c], heads[:, d_c : 2 * d_c], heads[:, 2 * d_c :]
        new = torch.sigmoid(f) * c + torch.sigmoid(i_gate) * delta
        new = F.layer_norm(new, [d_c], ln_w, ln_b, eps).clamp(-clip, clip)
        if keep is not None:
            new = torch.where(keep[:, t].unsqueeze(-1), new, c)
        c = new
        hs.append(h)
    return torch.stack(hs, 1), c


class ContextVectorCell(nn.Module):
    """FNN over [e_t; c_{t-1}], the fused gate/delta heads and the context LayerNorm (parameters only + loops).

    Parameters: ``fnn[0]`` is Linear(d_e + d_c -> H), ``fnn[1:]`` Linear(H -> H); ``context_heads`` is
    Linear(H -> 3 d_c) with rows [W_f; W_i; W_c]; ``norm`` is LayerNorm(d_c). The count equals the seed's
    separate Linear layers exactly (fusing only stacks the rows).
    """

    def __init__(self, embed_dim: int, context_dim: int, hidden_size: int, num_layers: int, dropout: float = 0.1,
                 clip: float = 10.0, eps: float = 1e-5, impl: str = "fused"):
        super().__init__()
        if impl not in LOOP_IMPLS:
            raise ValueError(f"loop_impl must be one of {LOOP_IMPLS}, got '{impl}'")
        self.embed_dim, self.context_dim, self.hidden_size = embed_dim, context_dim, hidden_size
        self.dropout, self.clip, self.eps, self.impl = dropout, clip, eps, impl
        self.fnn = nn.ModuleList(
            [nn.Linear(embed_dim + context_dim, hidden_size)]
            + [nn.Linear(hidden_size, hidden_size) for _ in range(num_layers - 1)]
        )
        self.context_heads = nn.Linear(hidden_size, 3 * context_dim)
        self.norm = nn.LayerNorm(context_dim, eps=eps)

    def forward(self, embeds: torch.Tensor, context: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """embeds [B, T, d_e], context [B, d_c] (None: zeros), keep [B, T] bool -> (h [B, T, H], c_T)."""
        return context_loop(self, embeds, context, keep)


def context_loop(cell: ContextVectorCell, embeds: torch.Tensor, context: torch.Tensor | None = None,
                 keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast loop (see the module doc): hoisted embedding projection, fused heads."""
    b = embeds.shape[0]
    first = cell.fnn[0]
    w_e, w_c = first.weight[:, : cell.embed_dim], first.weight[:, cell.embed_dim :]
    pre = F.linear(embeds, w_e, first.bias)
    if context is None:
        context = pre.new_zeros(b, cell.context_dim)
    context = context.to(pre.dtype)
    rest = list(cell.fnn)[1:]
    if cell.impl == "fused":
        masks = None
        if cell.training and cell.dropout > 0:  # inverted dropout masks, drawn up front: [L, T, B, H]
            keep_p = 1.0 - cell.dropout
            shape = (len(cell.fnn), pre.shape[1], b, cell.hidden_size)
            masks = torch.empty(shape, device=pre.device, dtype=pre.dtype).bernoulli_(keep_p) / keep_p
        return fused_context_loop(pre, context, keep, masks, w_c, rest, cell)
    return _loop_body(pre, context, keep, w_c, [m.weight for m in rest], [m.bias for m in rest],
                cell.context_heads.weight, cell.context_heads.bias, cell.norm.weight, cell.norm.bias,
                float(cell.eps), float(cell.clip), float(cell.dropout), bool(cell.training))


def context_step(cell: ContextVectorCell, e_t: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token, written as the equations read: h_t = FNN([e_t; c_{t-1}]); gates; c_t = clip(LN(...))."""
    h = torch.cat([e_t, c_prev], dim=-1)
    for layer in cell.fnn:
        h = F.dropout(torch.relu(layer(h)), cell.dropout, cell.training)
    w_f, w_i, w_c = cell.context_heads.weight.chunk(3, 0)
    b_f, b_i, b_c = cell.context_heads.bias.chunk(3, 0)
    f = torch.sigmoid(F.linear(h, w_f, b_f))
    i = torch.sigmoid(F.linear(h, w_i, b_i))
    delta = F.linear(h, w_c, b_c)
    c = torch.clamp(cell.norm(f * c_prev + i * delta), -cell.clip, cell.clip)
    return h, c


def reference_loop(cell: ContextVectorCell, embeds: torch.Tensor,
                   context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``context_step`` over time (the readable reference the fast loop is tested against)."""
    c = embeds.new_zeros(embeds.shape[0], cell.context_dim) if context is None else context
    hs = []
    for t in range(embeds.shape[1]):
        h, c = context_step(cell, embeds[:, t], c)
        hs.append(h)
    return torch.stack(hs, 1), c


def fused_context_loop(pre: torch.Tensor, context: torch.Tensor, keep: torch.Tensor | None, masks: torch.Tensor | None,
                       w_first_c: torch.Tensor, rest: list[nn.Linear], cell: ContextVectorCell):
    """The loop as one autograd node (see ``_FusedLoop``); ``masks`` [L, T, B, H] are the dropout multipliers."""
    weights = [w_first_c, *(m.weight for m in rest), cell.context_heads.weight]
    biases = [*(m.bias for m in rest), cell.context_heads.bias]
    return _FusedLoop.apply(pre, context, keep, masks, float(cell.eps), float(cell.clip), len(rest),
                            cell.norm.weight, cell.norm.bias, *weights, *biases)


class _FusedLoop(torch.autograd.Function):
    """Forward: the loop of ``_loop_body`` saving what backward needs. Backward: BPTT by hand (module doc)."""

    @staticmethod
    def forward(ctx, pre, c, keep, masks, eps, clip, n_rest, ln_w, ln_b, *params):
        w_c1, rest_w, head_w = params[0], params[1 : 1 + n_rest], params[1 + n_rest]
        rest_b, head_b = params[2 + n_rest : 2 + 2 * n_rest], params[2 + 2 * n_rest]
        d_c, steps = c.shape[-1], pre.shape[1]
        acts: list[list[torch.Tensor]] = [[] for _ in range(n_rest + 1)]  # pre-activations a_l per step
        ins: list[list[torch.Tensor]] = [[] for _ in range(n_rest + 2)]  # layer inputs (c_prev, h_1, .., h_L)
        gates, normed, rstds, hs = [], [], [], []
        for t in range(steps):
            ins[0].append(c)
            a = pre[:, t] + c @ w_c1.T
            acts[0].append(a)
            h = torch.relu(a) if masks is None else torch.relu(a) * masks[0, t]
            for k in range(n_rest):
                ins[k + 1].append(h)
                a = torch.addmm(rest_b[k], h, rest_w[k].T)
                acts[k + 1].append(a)
                h = torch.relu(a) if masks is None else torch.relu(a) * masks[k + 1, t]
            ins[n_rest + 1].append(h)
            hs.append(h)
            heads = torch.addmm(head_b, h, head_w.T)
            f, i, delta = torch.sigmoid(heads[:, :d_c]), torch.sigmoid(heads[:, d_c : 2 * d_c]), heads[:, 2 * d_c :]
            u = f * c + i * delta
            mean, var = u.mean(-1, keepdim=True), u.var(-1, unbiased=False, keepdim=True)
            rstd = torch.rsqrt(var + eps)
            x_hat = (u - mean) * rstd
            new = (x_hat * ln_w + ln_b).clamp(-clip, clip)
            if keep is not None:
                new = torch.where(keep[:, t].unsqueeze(-1), new, c)
            gates.append(torch.cat([f, i, delta], -1))
            normed.append(x_hat)
            rstds.append(rstd)
            c = new
        stack = lambda xs: torch.stack(xs, 0)  # noqa: E731  [T, B, ...]
        ctx.save_for_backward(keep, masks, ln_w, ln_b, *params, stack(ins[0]),
                              *(stack(x) for x in ins[1:]), *(stack(a) for a in acts), stack(gates), stack(normed),
                              stack(rstds))
        ctx.meta = (n_rest, clip, steps)
        return torch.stack(hs, 1), c

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        n_rest, clip, steps = ctx.meta
        keep, masks, ln_w, ln_b, *saved = ctx.saved_tensors
        n_params = 2 * n_rest + 3
        params, saved = saved[:n_params], saved[n_params:]
        w_c1, rest_w, head_w = params[0], params[1 : 1 + n_rest], params[1 + n_rest]
        c_prev_all, layer_in, acts = saved[0], saved[1 : n_rest + 2], saved[n_rest + 2 : 2 * n_rest + 3]
        gates, normed, rstds = saved[2 * n_rest + 3 :]
        d_c = c_prev_all.shape[-1]
        dc = torch.zeros_like(c_prev_all[0]) if grad_c is None else grad_c
        grad_h = torch.zeros_like(layer_in[-1].transpose(0, 1)) if grad_h is None else grad_h
        d_acts = [torch.empty_like(a) for a in acts]  # [T, B, H] per layer
        d_gates = torch.empty_like(gates)
        d_new_all = torch.empty_like(normed)
        for t in range(steps - 1, -1, -1):
            c_prev, x_hat, rstd = c_prev_all[t], normed[t], rstds[t]
            carry = None
            if keep is not None:
                k = keep[:, t].unsqueeze(-1)
                carry, dc = torch.where(k, 0.0, dc), torch.where(k, dc, 0.0)
            y = x_hat * ln_w + ln_b
            d_new = dc * ((y >= -clip) & (y <= clip))
            d_new_all[t] = d_new
            dx = d_new * ln_w
            du = rstd * (dx - dx.mean(-1, keepdim=True) - x_hat * (dx * x_hat).mean(-1, keepdim=True))
            f, i, delta = gates[t, :, :d_c], gates[t, :, d_c : 2 * d_c], gates[t, :, 2 * d_c :]
            dg = torch.cat([du * c_prev * f * (1 - f), du * delta * i * (1 - i), du * i], -1)
            d_gates[t] = dg
            dc = du * f
            if carry is not None:
                dc = dc + carry
            dh = grad_h[:, t] + dg @ head_w
            for k_layer in range(n_rest, -1, -1):
                if masks is not None:
                    dh = dh * masks[k_layer, t]
                da = dh * (acts[k_layer][t] > 0)
                d_acts[k_layer][t] = da
                dh = da @ (rest_w[k_layer - 1] if k_layer > 0 else w_c1)
            dc = dc + dh  # the first layer's input is c_{t-1}
        flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
        d_w_c1 = flat(d_acts[0]).T @ flat(c_prev_all)
        d_rest_w = [flat(d_acts[k + 1]).T @ flat(layer_in[k]) for k in range(n_rest)]
        d_rest_b = [flat(d_acts[k + 1]).sum(0) for k in range(n_rest)]
        d_head_w = flat(d_gates).T @ flat(layer_in[n_rest])
        d_head_b = flat(d_gates).sum(0)
        d_ln_w = flat(d_new_all * normed).sum(0)
        d_ln_b = flat(d_new_all).sum(0)
        d_pre = d_acts[0].transpose(0, 1)
        return (d_pre, dc, None, None, None, None, None, d_ln_w, d_ln_b, d_w_c1, *d_rest_w, d_head_w, *d_rest_b,
                d_head_b)
