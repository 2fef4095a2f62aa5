"""Self-modifying Titans (the ``hope_selfmod`` block of :mod:`archlab.models.hope`; Nested Learning's HOPE core).

Every projection is a memory, a residual MLP ``M(x) = x + W1 gelu(W2 x)`` (hidden = dim) with per-context fast
weights: ``k = L2(M_k(c))``, ``v = M_v(c)``, ``q = L2(M_q(c))``, ``eta = softplus(r_eta . M_eta(c) + b) *
selfmod_lr``, ``alpha = sigmoid(r_alpha . M_alpha(c) + b)`` (1 without ``selfmod_use_alpha``), over a causal
depthwise conv (window 4) of the input ``c = conv(x)``; the output is ``LN(x + W_o M_memory(q))``.

Each memory generates its own target ``v_hat = M(v_t)`` (its own weights detached) and is written by DGD (``archlab.ops.dgd``)
on ``1/2 ||M(k_t) - v_hat||^2`` with all gradients at the chunk-start weights, every ``selfmod_chunk_size``
tokens (k, v, q, eta, alpha) or ``selfmod_chunk_size_memory`` tokens (memory); ``selfmod_rank1_precond``
switches the ``W2 (alpha I - eta k k^T)`` preconditioner, ``selfmod_momentum`` keeps an EMA of the chunk
writes. A write is stop-gradient w.r.t. the memory's own weights but keeps its graph through the data-dependent
``k, v, eta, alpha``, which are learned through their effect on later reads (as Titans' keys, values and
rates); reads use ``meta + delta`` (straight-through).

The five projection memories share their inputs and their period, so they are one stacked fast memory (weights
``[B, 5, D, D]``): one batched read and one batched DGD write per chunk instead of five (the module keeps one
``ResidualMemory`` per projection for the meta parameters). A context's weights are kept whole (not as a delta
from the meta weights), so a write is one DGD step, not a rebuild of ``meta + delta`` and a difference.
``ResidualMemory.apply`` and :func:`dgd_write` are the per-memory definition; the tests hold the stacked, chunked
layer equal to six separate memories written token by token (outputs and every gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archlab.models.hope import LayerNorm, exact, fp32, padding_keep, unpadded
from archlab.ops.dgd import dgd_chunked

MEMORIES = ("k", "v", "q", "eta", "alpha", "memory")
GROUP = MEMORIES[:-1]  # same inputs (the conv output), same period: stacked


class ResidualMemory(nn.Module):
    def __init__(self, name: str, dim: int, period: int):
        super().__init__()
        self.name, self.period = name, period
        self.W1 = nn.Parameter(torch.empty(dim, dim))
        self.W2 = nn.Parameter(torch.empty(dim, dim))

    def reset_fast_parameters(self, std: float) -> None:
        nn.init.normal_(self.W1, mean=0.0, std=std)
        nn.init.normal_(self.W2, mean=0.0, std=std)

    @staticmethod
    def apply(x: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.bmm(x, W2.transpose(1, 2))
        return x + torch.bmm(F.gelu(z), W1.transpose(1, 2)), z


def dgd_write(W1: torch.Tensor, W2: torch.Tensor, k, v, eta, alpha, precond: bool):
    """New weights after one chunk's DGD write toward the memory's own target ``M(v)``, gradients at ``W1, W2``.

    The write is stop-gradient w.r.t. the memory's own weights (detached) but keeps its graph w.r.t. the
    data-dependent k, v, eta and alpha: the projection memories learn through what they write.
    """
    W1d, W2d = W1.detach(), W2.detach()
    c = k.shape[1]
    z = torch.bmm(torch.cat([k, v], 1), W2d.transpose(1, 2))  # prediction M(k) and target M(v) in one read
    h = F.gelu(z)
    out = torch.bmm(h, W1d.transpose(1, 2))
    e = (k - v) + (out[:, :c] - out[:, c:])  # M(k) - M(v)
    u = torch.ops.aten.gelu_backward(torch.bmm(e, W1d), z[:, :c])  # (W1^T e) * gelu'(z), fused
    return dgd_chunked(W1d, W2d, k, u, e, h[:, :c], eta, alpha, precond)


class SelfModTitans(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.conv_size = 4
        self.conv = nn.Conv1d(d, d, self.conv_size, groups=d, bias=True)
        periods = {m: config.selfmod_chunk_size for m in MEMORIES}
        periods["memory"] = config.selfmod_chunk_size_memory
        self.memories = nn.ModuleDict({m: ResidualMemory(m, d, periods[m]) for m in MEMORIES})
        self.eta_readout = nn.Linear(d, 1)
        self.alpha_readout = nn.Linear(d, 1)
        self.out = nn.Linear(d, d)
        self.norm = LayerNorm(d, eps=config.norm_eps)
        self.eta_scale = config.selfmod_lr
        self.use_alpha = config.selfmod_use_alpha
        self.precond = config.selfmod_rank1_precond
        self.momentum = config.selfmod_momentum
        self.periods = {"g": config.selfmod_chunk_size, "memory": config.selfmod_chunk_size_memory}

    def reset_fast_parameters(self, std: float) -> None:
        nn.init.constant_(self.alpha_readout.bias, 5.0)  # alpha ~ 0.993 at init: memories start by keeping

    def _meta(self, name: str, key: str) -> torch.Tensor:
        if name == "g":
            return torch.stack([getattr(self.memories[m], key) for m in GROUP]).float()  # [G, D, D]
        return getattr(self.memories[name], key).float()

    def weights(self, st, name: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-context weights the open chunk reads, flattened to ``[B * G, D, D]`` for the group.

        Kept whole in the layer state (``sm.<name>.w.<key>``, batch first): the meta weights expanded over the batch
        until the first write, then each write's result, whose graph reaches the meta weights (straight-through)
        and every earlier write's k, v, eta and alpha (:class:`_Carried`).
        """
        cached = st.derived.get("sm." + name)
        if cached is None:
            out = []
            for key in ("W1", "W2"):
                w = st.values.get(f"sm.{name}.w.{key}")
                if w is None:
                    meta = self._meta(name, key)
                    w = st.values[f"sm.{name}.w.{key}"] = meta.unsqueeze(0).expand(batch, *meta.shape)
                out.append(w.reshape(-1, *w.shape[-2:]))
            cached = st.derived["sm." + name] = (out[0], out[1])
        return cached

    def forward(self, x: torch.Tensor, st, position: int, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        with exact(x):  # the memories, their reads and their features in fp32 (archlab.models.hope.exact)
            x = x.float()
            b, t, d = x.shape
            prev = st.values.get("sm.conv")
            prev = prev if prev is not None else x.new_zeros(b, self.conv_size - 1, d)
            padded = torch.cat([prev, unpadded(x, key_mask, position)], 1)
            st.values["sm.conv"] = padded[:, -(self.conv_size - 1):]
            c = F.conv1d(padded.transpose(1, 2), *fp32(self.conv), groups=d).transpose(1, 2)
            g = len(GROUP)
            cg = c.unsqueeze(1).expand(b, g, t, d).reshape(b * g, t, d)
            y = ResidualMemory.apply(cg, *self.weights(st, "g", b))[0].view(b, g, t, d).unbind(1)
            k, v, q = F.normalize(y[0], dim=-1), y[1], F.normalize(y[2], dim=-1)
            eta = F.softplus(F.linear(y[3], *fp32(self.eta_readout))).squeeze(-1) * self.eta_scale
            alpha = (torch.sigmoid(F.linear(y[4], *fp32(self.alpha_readout))).squeeze(-1) if self.use_alpha
                     else torch.ones_like(eta))
            keep = padding_keep(key_mask, position, t)
            if keep is not None:  # padding writes nothing: no step (eta 0), no decay (alpha 1)
                real = keep[..., 0].bool()
                eta, alpha = eta * real, torch.where(real, alpha, torch.ones_like(alpha))
            o = ResidualMemory.apply(q, *self.weights(st, "memory", b))[0]
        # k, v, eta, alpha keep their graph until the write (within a call): they are learned through the writes
        for key, value in (("k", k), ("v", v), ("eta", eta), ("alpha", alpha)):
            st.features.setdefault(f"sm.new.{key}", []).append(value)
        return self.norm(x + self.out(o))

    def write(self, st, delta, writes, position: int, telemetry, flush: bool = False) -> None:
        """Move the new tokens into every memory's chunk buffer; write the memories whose chunk is complete."""
        new = {key: st.features.pop(f"sm.new.{key}", None) for key in ("k", "v", "eta", "alpha")}
        if new["k"] is None:
            return
        for name, period in self.periods.items():
            for key, parts in new.items():
                st.features.setdefault(f"sm.{name}.{key}", []).extend(parts)
            if position % period == 0 or flush:
                buf = {key: st.take_features(f"sm.{name}.{key}") for key in new}
                self._write(st, name, buf)
                telemetry["updates_applied"] += buf["k"].shape[0] * (len(GROUP) if name == "g" else 1)

    def _write(self, st, name: str, buf: dict[str, torch.Tensor]) -> None:
        b = buf["k"].shape[0]
        groups = len(GROUP) if name == "g" else 1

        def tile(x):  # [B, C, ...] -> [B * G, C, ...]: every memory of the group writes the same tokens
            return x.unsqueeze(1).expand(b, groups, *x.shape[1:]).reshape(b * groups, *x.shape[1:])

        W1, W2 = self.weights(st, name, b)
        new1, new2 = dgd_write(W1, W2, *(tile(buf[key]) for key in ("k", "v", "eta", "alpha")), self.precond)
        for key, old, new in (("W1", W1, new1), ("W2", W2, new2)):
            shape = (b, groups, *old.shape[1:]) if name == "g" else old.shape  # batch first, as the cache reorders
            if self.momentum:
                mkey = f"sm.{name}.m.{key}"
                step = (new - old.detach()).view(shape)
                prev = st.values.get(mkey)
                step = st.values[mkey] = self.momentum * prev + step if prev is not None else step
                new = old.detach() + step.reshape(old.shape)
            carried = _Carried.apply(new, old) if torch.is_grad_enabled() and old.requires_grad else new
            st.values[f"sm.{name}.w.{key}"] = carried.view(shape)
        st.derived.pop("sm." + name, None)


class _Carried(torch.autograd.Function):
    """The written weights ``new`` read as ``new + (old - stopgrad(old))``: the gradient of a later read reaches the
    weights before the write unchanged (and through them the meta weights and the earlier writes), with no
    elementwise pass over the ``[B * G, D, D]`` weights in either direction."""

    @staticmethod
    def forward(ctx, new, old):
        return new.view_as(new)

    @staticmethod
    def backward(ctx, grad):
        return grad, grad
