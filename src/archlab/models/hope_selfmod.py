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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archlab.ops.dgd import dgd_chunked

MEMORIES = ("k", "v", "q", "eta", "alpha", "memory")


class ResidualMemory(nn.Module):
    def __init__(self, name: str, dim: int, period: int):
        super().__init__()
        self.name, self.period = name, period
        self.W1 = nn.Parameter(torch.empty(dim, dim))
        self.W2 = nn.Parameter(torch.empty(dim, dim))

    def reset_fast_parameters(self, std: float) -> None:
        nn.init.normal_(self.W1, mean=0.0, std=std)
        nn.init.normal_(self.W2, mean=0.0, std=std)

    def weights(self, st, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for key in ("W1", "W2"):
            meta = getattr(self, key)
            delta = st.values.get(f"sm.{self.name}.d.{key}")
            out.append(meta.unsqueeze(0).expand(batch, *meta.shape) + (delta if delta is not None else 0))
        return out[0], out[1]

    @staticmethod
    def apply(x: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.bmm(x, W2.transpose(1, 2))
        return x + torch.bmm(F.gelu(z), W1.transpose(1, 2)), z

    def forward(self, x: torch.Tensor, st) -> torch.Tensor:
        return self.apply(x, *self.weights(st, x.shape[0]))[0]

    def write(self, st, k, v, eta, alpha, precond: bool, momentum: float) -> None:
        """DGD over the buffered chunk (k, v, eta, alpha carry their graph within a call)."""
        W1, W2 = self.weights(st, k.shape[0])
        W1d, W2d = W1.detach(), W2.detach()
        target = self.apply(v, W1d, W2d)[0]
        pred, z = self.apply(k, W1d, W2d)
        e = pred - target
        u = torch.bmm(e, W1d) * _gelu_grad(z)
        s = F.gelu(z)
        # the write is stop-gradient w.r.t. the memory's own weights (detached) but keeps its graph w.r.t. the
        # data-dependent k, v, eta and alpha: the projection memories learn through what they write
        new1, new2 = dgd_chunked(W1d, W2d, k, u, e, s, eta, alpha, precond)
        for key, old, new in (("W1", W1d, new1), ("W2", W2d, new2)):
            step = new - old
            if momentum:
                mkey = f"sm.{self.name}.m.{key}"
                step = momentum * st.values.get(mkey, torch.zeros_like(step)) + step
                st.values[mkey] = step
            dkey = f"sm.{self.name}.d.{key}"
            st.values[dkey] = st.values[dkey] + step if dkey in st.values else step


def _gelu_grad(z: torch.Tensor) -> torch.Tensor:
    from archlab.ops.cms import gelu_grad
    return gelu_grad(z)


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
        self.norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.eta_scale = config.selfmod_lr
        self.use_alpha = config.selfmod_use_alpha
        self.precond = config.selfmod_rank1_precond
        self.momentum = config.selfmod_momentum

    def reset_fast_parameters(self, std: float) -> None:
        nn.init.constant_(self.alpha_readout.bias, 5.0)  # alpha ~ 0.993 at init: memories start by keeping

    def forward(self, x: torch.Tensor, st, position: int) -> torch.Tensor:
        b, t, d = x.shape
        prev = st.values.get("sm.conv")
        prev = prev if prev is not None else x.new_zeros(b, self.conv_size - 1, d)
        padded = torch.cat([prev, x], 1)
        st.values["sm.conv"] = padded[:, -(self.conv_size - 1):]
        c = self.conv(padded.transpose(1, 2)).transpose(1, 2)
        mem = self.memories
        k = F.normalize(mem["k"](c, st), dim=-1)
        v = mem["v"](c, st)
        q = F.normalize(mem["q"](c, st), dim=-1)
        eta = F.softplus(self.eta_readout(mem["eta"](c, st))).squeeze(-1) * self.eta_scale
        alpha = (torch.sigmoid(self.alpha_readout(mem["alpha"](c, st))).squeeze(-1) if self.use_alpha
                 else torch.ones_like(eta))
        o = mem["memory"](q, st)
        # k, v, eta, alpha keep their graph until the write (within a call): they are learned through the writes
        for key, value in (("k", k), ("v", v), ("eta", eta), ("alpha", alpha)):
            st.features.setdefault(f"sm.new.{key}", []).append(value)
        return self.norm(x + self.out(o))

    def write(self, st, delta, writes, position: int, telemetry, flush: bool = False) -> None:
        """Move the new tokens into every memory's chunk buffer; write the memories whose chunk is complete."""
        new = {key: st.features.pop(f"sm.new.{key}", None) for key in ("k", "v", "eta", "alpha")}
        if new["k"] is None:
            return
        for name, memory in self.memories.items():
            for key, parts in new.items():
                st.features.setdefault(f"sm.{name}.{key}", []).extend(parts)
            if position % memory.period == 0 or flush:
                buf = {key: torch.cat(st.features.pop(f"sm.{name}.{key}"), 1) for key in new}
                memory.write(st, buf["k"], buf["v"], buf["eta"], buf["alpha"], self.precond, self.momentum)
                telemetry["updates_applied"] += buf["k"].shape[0]
