"""Delta-rule memory branch for grafting onto a pretrained attention (TPTT / LiZA, seed 000).

The branch owns no projection weights: it receives the raw q/k/v projections of the attention it is grafted
onto, and its output goes through that attention's own output projection (done by the caller). Per token:

    beta_t = sigmoid(avg3(k_raw)_t)                 causal 3-tap average, reduced to one value per head
    q_t, k_t = l2norm(silu(q_raw_t)), l2norm(silu(k_raw_t))      (``feature_map``; no RoPE)
    k_t, v_t, beta_t = 0 at padding positions                     (padding never touches the state)
    (virtual tokens for n_h > 1, see ``virtual_tokens``)
    o_t = delta_rule / delta_product(q, k, v, beta)_t, heads merged, RMS-normalised without a weight,
          then (output_scale="attention") scaled to the RMS of the base attention's output at t

Legend: B batch, T tokens, H query heads, G key/value heads, N virtual tokens per token (n_h), D head dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from archlab.ops import delta_product, delta_rule
from archlab.registry import Registry

FEATURE_MAPS: Registry = Registry("feature map")
FEATURE_MAPS.register("silu_l2", lambda x: F.normalize(F.silu(x), dim=-1, eps=1e-6), help="SiLU then L2 norm (TPTT)")
FEATURE_MAPS.register("relu_l2", lambda x: F.normalize(F.relu(x), dim=-1, eps=1e-6), help="ReLU then L2 norm")
FEATURE_MAPS.register("l2", lambda x: F.normalize(x, dim=-1, eps=1e-6), help="L2 norm only (DeltaNet default)")



@dataclass(frozen=True)
class Operator:
    """A memory operator: householder steps per token, its virtual-token trick, its state non-linearity."""

    n_h: int
    trick: str | None = None
    state_nonlinearity: str | None = None
    default_chunk: int = 64


# The one table of allowed values: archlab.graft.GraftConfig validates against these registries.
OPERATORS: Registry[Operator] = Registry("graft operator")
OPERATORS.register("delta_rule", Operator(1), help="delta rule, one householder step per token (n_h=1)")
OPERATORS.register("delta_rule_gelu", Operator(1, None, "gelu_rownorm"),
                   help="delta rule + row-normalised GELU on the state between chunks (seed 000's + non-linearity)")
OPERATORS.register("delta_product", Operator(2, "derivative", None, 32),
                   help="DeltaProduct n_h=2, virtual tokens by the derivative (finite difference) trick")
OPERATORS.register("delta_product_rotation", Operator(2, "rotation", None, 32),
                   help="DeltaProduct n_h=2, virtual tokens by rotation")
OPERATORS.register("delta_product_derived_rotation", Operator(2, "combined", None, 32),
                   help="DeltaProduct n_h=2, derivative + rotation combined")


@dataclass(frozen=True)
class Choice:
    """A named setting with no data of its own (a registry entry; a bare string would read as "module:attr")."""

    name: str


BETA_MODES: Registry[Choice] = Registry("beta mode")
BETA_MODES.register("head", Choice("head"), help="sigmoid of the head-mean of the 3-tap averaged keys")
BETA_MODES.register("channel", Choice("channel"),
                    help="head-mean of the per-channel sigmoids of the 3-tap averaged keys")
BETA_MODES.register("constant", Choice("constant"), help="0.5")
OUTPUT_SCALES: Registry[Choice] = Registry("output scale")
OUTPUT_SCALES.register("attention", Choice("attention"), help="scaled to the base attention's per-token RMS")
OUTPUT_SCALES.register("unit", Choice("unit"), help="unit RMS (TPTT's default, which swamps small attention outputs)")
HISTORY = 2  # raw rows kept for decoding: the 3-tap beta average and the derivative look 2 / 1 tokens back


@dataclass
class MemoryState:
    """What incremental decoding carries per layer (all detached).

    Attributes:
        state: delta-rule state [B, G, D, D] (delta product: [B, H, D, D]) at the last chunk boundary (None
            before any full chunk).
        pending: (q, k, v, beta) rows since that boundary, only for operators whose chunk size is part of the
            model (state non-linearity), right-aligned per row (zero rows on the left); None otherwise.
        history: the last <= 2 raw (q, k, v, mask) rows, so beta pooling and virtual tokens see real context.
        pending_len: [B] how many of each row's pending rows are real (rows differ when padding differs).
    """

    state: torch.Tensor | None
    pending: tuple[torch.Tensor, ...] | None
    history: tuple[torch.Tensor, ...]
    pending_len: torch.Tensor | None = None

    PREFIX = "memory."

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat, batch-first tensors for a cache layer (``archlab.nn.cache``), which batches and reorders them."""
        out = {f"{self.PREFIX}state": self.state} if self.state is not None else {}
        out.update({f"{self.PREFIX}pending.{i}": z for i, z in enumerate(self.pending or ())})
        out.update({f"{self.PREFIX}history.{i}": z for i, z in enumerate(self.history)})
        if self.pending_len is not None:
            out[f"{self.PREFIX}pending_len"] = self.pending_len
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> MemoryState | None:
        """The state ``to_tensors`` stored, or None when the cache holds none yet."""
        def rows(kind: str) -> tuple[torch.Tensor, ...]:
            found, i = [], 0
            while f"{cls.PREFIX}{kind}.{i}" in tensors:
                found.append(tensors[f"{cls.PREFIX}{kind}.{i}"])
                i += 1
            return tuple(found)

        history, pending = rows("history"), rows("pending")
        if not history:
            return None
        return cls(tensors.get(f"{cls.PREFIX}state"), pending or None, history, tensors.get(f"{cls.PREFIX}pending_len"))


def causal_avg3(x_BTGD: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
    """Causal moving average over 3 tokens; the first token is replicated to the left (as TPTT).

    With a padding mask, a row's first real token is the one replicated (into its left padding too), so a
    left-padded row gets the averages of the unpadded one.
    """
    if mask_BT is not None:
        real = mask_BT.bool()
        first_real = real.to(torch.int8).argmax(dim=1)
        x_first = x_BTGD[torch.arange(x_BTGD.shape[0], device=x_BTGD.device), first_real]
        x_BTGD = torch.where(real[:, :, None, None], x_BTGD, x_first[:, None])
    first = x_BTGD[:, :1]
    padded = torch.cat([first, first, x_BTGD], dim=1)
    return (padded[:, 2:] + padded[:, 1:-1] + padded[:, :-2]) / 3.0


def finite_difference(x_BTHD: torch.Tensor, order: int) -> torch.Tensor:
    """Binomial finite difference ``sum_k (-1)^k C(m, k) x_{t-k} / 2^m`` (zeros before the first token)."""
    out = torch.zeros_like(x_BTHD)
    for lag in range(order + 1):
        if lag >= x_BTHD.shape[1]:
            break
        shifted = F.pad(x_BTHD, (0, 0, 0, 0, lag, 0))[:, : x_BTHD.shape[1]] if lag else x_BTHD
        out = out + ((-1) ** lag) * math.comb(order, lag) * shifted
    return out / 2**order


def rotate_pairs(x_BTHD: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate channel pairs (x_i, x_{i + D/2}) by ``angle`` (norm preserving, RoPE's pairing)."""
    half = x_BTHD.shape[-1] // 2
    a, b = x_BTHD[..., :half], x_BTHD[..., half : 2 * half]
    c, s = math.cos(angle), math.sin(angle)
    rotated = torch.cat([c * a - s * b, s * a + c * b], dim=-1)
    return torch.cat([rotated, x_BTHD[..., 2 * half :]], dim=-1)


def virtual_tokens(x_BTHD: torch.Tensor, n_h: int, trick: str) -> torch.Tensor:
    """The TPTT paper's virtual tokens [B, T, H, n_h, D]: token m is trick_m(x)_t.

    derivative: the m-th normalised finite difference; rotation: x_t rotated by 2*pi*m/n_h; combined: the
    rotation of the finite difference. Token 0 is always x_t itself.
    """
    rows = []
    for m in range(n_h):
        x = finite_difference(x_BTHD, m) if trick in ("derivative", "combined") else x_BTHD
        if trick in ("rotation", "combined"):
            x = rotate_pairs(x, 2 * math.pi * m / n_h)
        rows.append(x)
    return torch.stack(rows, dim=3)


def tptt_compat_tokens(x_BTHD: torch.Tensor, trick: str) -> torch.Tensor:
    """TPTT's coded n_h = 2 expansion (fabienfrfr/tptt's code, not its paper), reproduced on request only.

    derivative -> (-x_t / 2, x_{t-1} / 2); rotation -> (x_t, -x_t); combined -> their mean.
    """
    prev = F.pad(x_BTHD, (0, 0, 0, 0, 1, 0))[:, : x_BTHD.shape[1]]
    derivative = torch.stack([-0.5 * x_BTHD, 0.5 * prev], dim=3)
    rotation = torch.stack([x_BTHD, -x_BTHD], dim=3)
    return {"derivative": derivative, "rotation": rotation, "combined": (derivative + rotation) / 2}[trick]


class MemoryBranch(nn.Module):
    """The recurrent branch of one grafted attention, plus its memory-as-gate weight.

    ``mag_weight`` is a plain float (not a parameter, not saved): train.schedules.mag_weight sets it before
    every optimizer step through ``scheduled_attributes``.
    """

    scheduled_attributes = ("mag_weight",)
    scheduled_ranges = {"mag_weight": (0.0, 1.0)}  # a convex mix of attention and memory

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        operator: str = "delta_rule",
        chunk_size: int = 64,
        feature_map: str = "silu_l2",
        beta_mode: str = "head",
        bidirectional: bool = False,
        tptt_compat: bool = False,
        mag_weight: float = 0.5,
        output_scale: str = "attention",
        impl: str = "auto",
    ):
        """Args mirror ``archlab.graft.GraftConfig`` (see its field descriptions); head counts from the base."""
        super().__init__()
        spec = OPERATORS.get(operator)
        OUTPUT_SCALES.get(output_scale)
        BETA_MODES.get(beta_mode)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.feature = FEATURE_MAPS.get(feature_map)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.operator, self.chunk_size, self.impl = operator, chunk_size, impl
        self.n_h, self.trick, self.state_nonlinearity = spec.n_h, spec.trick, spec.state_nonlinearity
        self.beta_mode, self.bidirectional, self.tptt_compat = beta_mode, bidirectional, tptt_compat
        self.mag_weight = float(mag_weight)
        self.output_scale = output_scale

    def extra_repr(self) -> str:
        return (f"operator={self.operator}, heads={self.num_heads}/{self.num_kv_heads}, head_dim={self.head_dim}, "
                f"chunk_size={self.chunk_size}, beta={self.beta_mode}, bidirectional={self.bidirectional}")

    def mix(self, o_base: torch.Tensor, o_memory: torch.Tensor | None) -> torch.Tensor:
        """Memory-as-gate: (1 - mu) * o_base + mu * o_memory; exactly o_base when mu == 0."""
        mu = self.mag_weight
        if mu == 0 or o_memory is None:
            return o_base
        return torch.lerp(o_base, o_memory.to(o_base.dtype), mu)  # one pass instead of three

    # ------------------------------------------------------------------------------------ features
    def _features(self, q_raw, k_raw, v_raw, mask_BT):
        """Raw projections [B, T, *] -> q [B,T,H,D], k [B,T,H',N,D], v [B,T,H',N,D], beta [B,T,H',N].

        H' = G (key/value heads) for the delta rule, which reads grouped queries itself; H for the delta product.
        """
        b, t = q_raw.shape[:2]
        q = q_raw.view(b, t, self.num_heads, self.head_dim)
        k = k_raw.view(b, t, self.num_kv_heads, self.head_dim)
        v = v_raw.view(b, t, self.num_kv_heads, -1)
        if self.beta_mode == "constant":
            beta = k.new_full((b, t, self.num_kv_heads), 0.5)
        elif self.beta_mode == "head":
            beta = torch.sigmoid(causal_avg3(k, mask_BT).mean(-1))
        else:  # per-channel gates averaged to the one scalar per head an exact delta rule can take
            beta = torch.sigmoid(causal_avg3(k, mask_BT)).mean(-1)
        q, k = self.feature(q), self.feature(k)
        if mask_BT is not None:  # padding writes nothing, and lagged virtual tokens see zeros there
            keep = mask_BT.to(v.dtype)
            k, v = k * keep[:, :, None, None], v * keep[:, :, None, None]
            beta = beta * keep[:, :, None]
        groups = self.num_heads // self.num_kv_heads
        if groups > 1 and self.n_h > 1:  # delta_rule takes grouped queries itself (one state per kv head)
            k, v, beta = (z.repeat_interleave(groups, dim=2) for z in (k, v, beta))
        if self.n_h == 1:
            return q, k.unsqueeze(3), v.unsqueeze(3), beta.unsqueeze(3)
        if self.tptt_compat:
            kv_q = tptt_compat_tokens(q, self.trick)
            q_read = kv_q[:, :, :, -1]  # TPTT reads out at its last virtual token
            return q_read, tptt_compat_tokens(k, self.trick), tptt_compat_tokens(v, self.trick), \
                beta.unsqueeze(3).expand(-1, -1, -1, 2)
        # beta is repeated, not differenced: a finite difference of beta can be negative, which would make the
        # householder factor expansive (eigenvalue 1 + |beta|) and the state blow up.
        k_v, v_v = virtual_tokens(k, self.n_h, self.trick), virtual_tokens(v, self.n_h, self.trick)
        return q, k_v, v_v, beta.unsqueeze(3).expand(-1, -1, -1, self.n_h)

    # ----------------------------------------------------------------------------------- recurrence
    def _op(self, q, k, v, beta, initial_state, final: bool):
        opts = dict(initial_state=initial_state, output_final_state=final, impl=self.impl,
                    state_nonlinearity=self.state_nonlinearity, chunk_size=self.chunk_size)
        if self.n_h == 1:
            # squeeze, not [..., 0]: its backward is a view, a select's is a zero-filled copy
            return delta_rule(q, k.squeeze(3), v.squeeze(3), beta.squeeze(3), **opts)
        return delta_product(q, k, v, beta, **opts)

    def _run(self, rows, state: MemoryState | None, return_state: bool, mask_BT: torch.Tensor | None):
        """Outputs of ``rows`` (all new tokens) starting from ``state``; the next state when asked."""
        if self.bidirectional:
            o_fwd, _ = self._op(*rows, None, False)
            o_bwd, _ = self._op(*(z.flip(1) for z in rows), None, False)
            return (o_fwd + o_bwd.flip(1)) / 2, None
        if self.state_nonlinearity and (return_state or (mask_BT is not None and not bool(mask_BT.all()))):
            return self._run_by_row(rows, state, return_state, mask_BT)
        if not return_state:
            return self._op(*rows, None, False)[0], None
        o, final = self._op(*rows, state.state if state is not None else None, True)
        return o, MemoryState(final.detach(), None, ())

    def _run_by_row(self, rows, state: MemoryState | None, return_state: bool, mask_BT: torch.Tensor | None):
        """The state non-linearity sits at chunk boundaries counted from each row's first real token, so rows
        with different padding cannot share one chunk grid: each row runs alone, over whole chunks, and keeps
        the rest as pending rows (right-aligned, with their count) for the next call — exact decoding."""
        batch, t_new = rows[0].shape[:2]
        out = rows[2].new_zeros(batch, t_new, rows[0].shape[2], rows[2].shape[-1])  # [B, T, H, V]
        states, pendings = [], []
        for b in range(batch):
            real = mask_BT[b].bool() if mask_BT is not None else torch.ones(t_new, dtype=torch.bool)
            row = tuple(z[b : b + 1, real.to(z.device)] for z in rows)
            kept = 0
            if state is not None and state.pending is not None:
                kept = int(state.pending_len[b])
                row = tuple(torch.cat([p[b : b + 1, p.shape[1] - kept :], z], 1) for p, z in zip(state.pending, row,
                                                                                                  strict=True))
            start = state.state[b : b + 1] if state is not None and state.state is not None else None
            total = row[0].shape[1]
            done = (total // self.chunk_size) * self.chunk_size
            outs = []
            if done:
                o, start = self._op(*(z[:, :done] for z in row), start, True)
                outs.append(o)
            if done < total:
                outs.append(self._op(*(z[:, done:] for z in row), start, False)[0])
            if outs:
                out[b, real.to(out.device)] = torch.cat(outs, 1)[0, kept:].to(out.dtype)
            states.append(start if start is not None else None)
            pendings.append(tuple(z[:, done:] for z in row))
        if not return_state:
            return out, None
        template = next((s for s in states if s is not None), None)
        if template is None:  # no row has a whole chunk yet: the state is zero, which the op reads as none
            d_k, d_v = rows[1].shape[-1], rows[2].shape[-1]
            template = rows[1].new_zeros(1, rows[1].shape[2], d_k, d_v)
        stacked = torch.cat([s if s is not None else torch.zeros_like(template) for s in states]).detach()
        width = max(p[0].shape[1] for p in pendings)
        pending = tuple(torch.cat([F.pad(p[i], (0, 0) * (p[i].ndim - 2) + (width - p[i].shape[1], 0))
                                   for p in pendings]).detach() for i in range(len(rows)))
        lengths = torch.tensor([p[0].shape[1] for p in pendings], device=rows[0].device)
        return out, MemoryState(stacked, pending, (), lengths)

    def forward(
        self,
        q_raw: torch.Tensor,
        k_raw: torch.Tensor,
        v_raw: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        state: MemoryState | None = None,
        return_state: bool = False,
        attention_rms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MemoryState | None]:
        """Memory output before the output projection.

        Args:
            q_raw: raw query projection [B, T, H * D] (before RoPE/norms of the base attention).
            k_raw: raw key projection [B, T, G * D].
            v_raw: raw value projection [B, T, G * Dv].
            padding_mask: [B, T], 1 for real tokens, 0 for padding; None when nothing is padded.
            state: decoding state returned by the previous call (None for a fresh sequence).
            return_state: return the state to continue from (decoding); causal mode only.
            attention_rms: [B, T, 1] RMS of the base attention's output before its output projection; with
                ``output_scale="attention"`` the normalised memory output is scaled to it per token.

        Returns:
            ``(o, state)``: o [B, T, H * Dv] RMS-normalised (no weight; then scaled to ``attention_rms`` when
            given and ``output_scale="attention"``) in the input dtype; the new state or None.
        """
        if self.bidirectional and (state is not None or return_state):
            raise ValueError("a bidirectional memory sees the whole sequence; it cannot decode incrementally")
        t_new = q_raw.shape[1]
        mask = padding_mask if padding_mask is not None else q_raw.new_ones(q_raw.shape[:2])
        raw = (q_raw, k_raw, v_raw, mask)
        if state is not None and state.history:
            raw = tuple(torch.cat([h, r], dim=1) for h, r in zip(state.history, raw, strict=True))
        feats = self._features(*raw[:3], raw[3] if padding_mask is not None or state is not None else None)
        # sliced only after a decoding history: a full-length slice still costs a zero-filled copy in backward
        rows = tuple(z[:, -t_new:] for z in feats) if feats[0].shape[1] != t_new else feats
        mask_new = padding_mask[:, -t_new:] if padding_mask is not None else None
        o_BTHD, new_state = self._run(rows, state, return_state, mask_new)
        if new_state is not None:
            new_state.history = tuple(z[:, -HISTORY:].detach() for z in raw)
        o = o_BTHD.reshape(*o_BTHD.shape[:2], -1)
        o = F.rms_norm(o.float(), (o.shape[-1],), eps=1e-6)
        if self.output_scale == "attention" and attention_rms is not None:
            o = o * attention_rms.float()
        return o.to(q_raw.dtype), new_state
