"""Layers of seed 004's byte latent model, each causal over bytes (or over patches), and BLT entropy patching.

Legend: B batch, T bytes, P patches, D channels, H heads, K head dim.

- ``CausalNgramConv``: a full Conv1d over byte embeddings, left-padded (kernel 4 sees bytes t-3..t only; the
  seed's symmetric padding showed the target).
- ``HashNgramEmbedding``: BLT's hash n-gram embeddings: for each n, a rolling polynomial hash of bytes
  t-n+1..t indexes a fixed table; the embeddings are summed.
- ``IntegralLNN``: causal gated EMA ``h_t = lambda * h_{t-1} + g_t * u_t`` with ``lambda = sigmoid(w)`` in (0, 1),
  ``g = sigmoid(conv_g x)``, ``u = tanh(conv_u x)`` from left-padded depthwise convs, by ``archlab.ops.gated_ema``;
  carries (conv window, h) so two calls with the carried state equal one.
- ``DilatedAttention``: patch attention over offsets {0, 1, 2, 4, ...} (``archlab.ops.dilated_attention``) with
  RoPE on q and k (the seed rotated the input embeddings instead).
- Patching: ``entropy_boundaries`` (BLT's rules), ``static_boundaries``, ``calibrate_threshold``,
  ``patch_ids`` and ``normalized_entropy``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archlab.nn.rope import RotaryEmbedding, apply_rotary
from archlab.ops import dilated_attention, dilated_offsets, gated_ema
from archlab.ops.dilated_attention import dilated_attention_step

LN256 = math.log(256.0)


# ------------------------------------------------------------------------------------------------ byte inputs
class CausalNgramConv(nn.Module):
    """``x + conv(x)`` with a full Conv1d of width ``kernel`` padded on the left only."""

    def __init__(self, dim: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(dim, dim, kernel)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x_BTD.transpose(1, 2), (self.kernel - 1, 0))
        return x_BTD + self.conv(padded).transpose(1, 2)

    def step(self, x_BTD: torch.Tensor, window_BWD: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` continuing after the inputs in ``window`` (the last ``kernel - 1``; None: the start)."""
        B, T, D = x_BTD.shape
        window = x_BTD.new_zeros(B, self.kernel - 1, D) if window_BWD is None else window_BWD.to(x_BTD.dtype)
        padded = torch.cat([window, x_BTD], 1)
        return x_BTD + self.conv(padded.transpose(1, 2)).transpose(1, 2), padded[:, padded.shape[1] - window.shape[1]:]


HASH_PRIME = 1_000_003


def rolling_hashes(ids_BT: torch.Tensor, n: int, buckets: int, before_BM: torch.Tensor | None = None) -> torch.Tensor:
    """Polynomial hash of bytes t-n+1..t (positions before 0 count as a pad symbol) modulo ``buckets``.

    ``before_BM`` (decoding): the bytes before ``ids`` as ``byte + 1`` (0: before the start), at least n - 1.
    """
    if before_BM is None:
        padded = F.pad(ids_BT.long() + 1, (n - 1, 0), value=0)  # +1 so a real byte 0 differs from the pad
    else:
        padded = torch.cat([before_BM[:, before_BM.shape[1] - (n - 1):].long(), ids_BT.long() + 1], 1)
    T = ids_BT.shape[1]
    h = torch.zeros_like(ids_BT, dtype=torch.long)
    for j in range(n):  # oldest byte first: h = (((x_{t-n+1}) P + x_{t-n+2}) P + ...) mod buckets
        h = (h * HASH_PRIME + padded[:, j : j + T]) % buckets
    return h


class HashNgramEmbedding(nn.Module):
    """Sum over n in ``sizes`` of ``table_n[hash_n(bytes t-n+1..t)]`` (BLT, n = 3..8)."""

    def __init__(self, dim: int, sizes: list[int], buckets: int):
        super().__init__()
        self.sizes, self.buckets = list(sizes), buckets
        self.tables = nn.ModuleList(nn.Embedding(buckets, dim) for _ in self.sizes)

    def forward(self, ids_BT: torch.Tensor, before_BM: torch.Tensor | None = None) -> torch.Tensor:
        """``before_BM``: the previous ``max(sizes) - 1`` bytes + 1 when decoding (see ``rolling_hashes``)."""
        return sum(table(rolling_hashes(ids_BT, n, self.buckets, before_BM))
                   for n, table in zip(self.sizes, self.tables, strict=True))


# ------------------------------------------------------------------------------------------------ IntegralLNN
class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, -1)
        return self.down(F.silu(gate) * up)


class IntegralLNN(nn.Module):
    """Pre-norm residual gated EMA: ``x + out((1 - lambda) * h)``, ``h_t = lambda h_{t-1} + g_t u_t``.

    The recurrence is the one the seed states; reading ``(1 - lambda) * h`` (a per-channel output scale) keeps
    slow channels (lambda near 1, which sum ~1/(1 - lambda) inputs) at the scale of fast ones. lambda starts
    spread over ``decay_init`` across channels (the seed started every channel at 0.1: a ~1-byte memory).
    """

    def __init__(self, dim: int, kernel: int = 7, decay_init: tuple[float, float] = (0.5, 0.99),
                 chunk_size: int = 32, eps: float = 1e-5):
        super().__init__()
        self.kernel, self.chunk_size = kernel, chunk_size
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.conv_g = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.conv_u = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.decay_init = decay_init
        self.decay_logit = nn.Parameter(torch.empty(dim))
        self.out = nn.Linear(dim, dim, bias=False)
        self.reset_decay()

    @torch.no_grad()
    def reset_decay(self) -> None:
        lo, hi = self.decay_init
        lam = torch.linspace(lo, hi, self.decay_logit.numel())
        self.decay_logit.copy_(torch.log(lam) - torch.log1p(-lam))

    def forward(self, x_BTD: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Returns the output and the state after the last byte ({"conv": [B, k-1, D], "h": [B, D]})."""
        B, T, D = x_BTD.shape
        xn = self.norm(x_BTD)
        window = xn.new_zeros(B, self.kernel - 1, D) if state is None else state["conv"].to(xn.dtype)
        padded = torch.cat([window, xn], 1)  # left context only: byte t sees bytes t-k+1..t
        g = torch.sigmoid(self.conv_g(padded.transpose(1, 2))).transpose(1, 2)
        u = torch.tanh(self.conv_u(padded.transpose(1, 2))).transpose(1, 2)
        log_lam = F.logsigmoid(self.decay_logit)
        h, h_last = gated_ema(g * u, log_lam, initial_state=None if state is None else state["h"],
                              output_final_state=True, chunk_size=self.chunk_size)
        y = x_BTD + self.out(h * (1 - log_lam.exp()))
        return y, {"conv": padded[:, padded.shape[1] - (self.kernel - 1):], "h": h_last}


class IntegralLNNBlock(nn.Module):
    """IntegralLNN then a pre-norm SwiGLU FFN (x 8/3, the seed's 2.67)."""

    def __init__(self, dim: int, kernel: int, decay_init: tuple[float, float], chunk_size: int, eps: float):
        super().__init__()
        self.lnn = IntegralLNN(dim, kernel, decay_init, chunk_size, eps)
        self.ffn_norm = nn.RMSNorm(dim, eps=eps)
        self.ffn = SwiGLU(dim, int(dim * 8 / 3))

    def forward(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        x, state = self.lnn(x, state)
        return x + self.ffn(self.ffn_norm(x)), state


# ------------------------------------------------------------------------------------------------ latent blocks
class DilatedAttention(nn.Module):
    def __init__(self, dim: int, heads: int, rope_theta: float = 10000.0, max_offset: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"latent_size {dim} must be divisible by num_attention_heads {heads}")
        self.heads, self.head_dim, self.max_offset = heads, dim // heads, max_offset
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, rope_theta)

    def forward(self, x_BPD: torch.Tensor, offsets: list[int] | None = None) -> torch.Tensor:
        """``offsets``: default ``dilated_offsets(P, max_offset)`` (a caller whose P is unbacked passes a bound's)."""
        B, P, D = x_BPD.shape
        q, k, v = self.qkv(x_BPD).view(B, P, 3, self.heads, self.head_dim).unbind(2)
        cos, sin = self.rotary(torch.arange(P, device=x_BPD.device).expand(B, P))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = dilated_attention(q, k, v, offsets=dilated_offsets(P, self.max_offset) if offsets is None else offsets)
        return self.o(out.reshape(B, P, D))

    def step(self, x_BD: torch.Tensor, keys_BPHK: torch.Tensor, values_BPHK: torch.Tensor,
             pos_B: torch.Tensor) -> torch.Tensor:
        """One new patch per row at position ``pos_B``; its key and value are written there in place.

        Writing for a row whose patch is not kept is harmless: the slot is its next one, rewritten when kept.
        """
        B, D = x_BD.shape
        q, k, v = self.qkv(x_BD).view(B, 1, 3, self.heads, self.head_dim).unbind(2)
        cos, sin = self.rotary(pos_B[:, None])
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        rows = torch.arange(B, device=x_BD.device)
        keys_BPHK[rows, pos_B] = k[:, 0].to(keys_BPHK.dtype)
        values_BPHK[rows, pos_B] = v[:, 0].to(values_BPHK.dtype)
        offsets = dilated_offsets(int(pos_B.max()) + 1, self.max_offset)
        out = dilated_attention_step(q[:, 0], keys_BPHK, values_BPHK, pos_B, offsets=offsets)
        return self.o(out.reshape(B, D))


class LatentBlock(nn.Module):
    def __init__(self, dim: int, heads: int, rope_theta: float, max_offset: int | None, eps: float):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim, eps=eps)
        self.attn = DilatedAttention(dim, heads, rope_theta, max_offset)
        self.ffn_norm = nn.RMSNorm(dim, eps=eps)
        self.ffn = SwiGLU(dim, int(dim * 8 / 3))

    def forward(self, x: torch.Tensor, offsets: list[int] | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), offsets)
        return x + self.ffn(self.ffn_norm(x))

    def step(self, x_BD: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pos_B: torch.Tensor) -> torch.Tensor:
        """``forward`` for one new patch per row (see ``DilatedAttention.step``)."""
        x_BD = x_BD + self.attn.step(self.attn_norm(x_BD), keys, values, pos_B)
        return x_BD + self.ffn(self.ffn_norm(x_BD))


# ------------------------------------------------------------------------------------------------ patching
def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last axis, in units of ln 256 (1.0 = uniform over the 256 bytes)."""
    logp = F.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1) / LN256


def entropy_boundaries(H_BT1: torch.Tensor, threshold: float, rel_threshold: float | None = None,
                       max_patch_size: int = 8) -> torch.Tensor:
    """Patch starts from next-byte entropies by BLT's rules.

    Args:
        H_BT1: [B, T + 1] normalised entropies; ``H[:, j]`` is the entropy of the prediction of byte j (from
            bytes < j), so column T belongs to the byte after the sequence.
        threshold: global threshold theta_g: byte j starts a patch when ``H_j > theta_g``.
        rel_threshold: theta_r (None: off): byte j also starts a patch when ``H_j - H_{j-1} > theta_r``.
        max_patch_size: a patch never grows longer than this.

    Returns:
        [B, T + 1] bool: ``starts[:, j]`` says byte j begins a patch (always at j = 0); ``starts[:, 1:]``
        therefore says which bytes end a patch. Whether byte t ends a patch depends on bytes <= t only.
    """
    candidate = H_BT1 > threshold
    if rel_threshold is not None:
        rising = torch.zeros_like(candidate)
        rising[:, 1:] = (H_BT1[:, 1:] - H_BT1[:, :-1]) > rel_threshold
        candidate = candidate | rising
    starts = torch.zeros_like(candidate)
    length = torch.zeros(H_BT1.shape[0], dtype=torch.long, device=H_BT1.device)
    for j in range(H_BT1.shape[1]):  # the max-size rule depends on where the previous patch started
        start = (j == 0) | candidate[:, j] | (length >= max_patch_size)
        starts[:, j] = start
        length = torch.where(start, torch.ones_like(length), length + 1)
    return starts


def static_boundaries(batch: int, length: int, patch_size: int, device=None) -> torch.Tensor:
    """[B, T + 1] starts of fixed-size patches (every ``patch_size`` bytes)."""
    j = torch.arange(length + 1, device=device)
    return (j % patch_size == 0).expand(batch, length + 1).clone()


def mean_patch_length(starts_BT1: torch.Tensor) -> float:
    """Bytes per patch over the T real bytes (a patch counts when one of its bytes is in the sequence)."""
    T = starts_BT1.shape[1] - 1
    return starts_BT1.shape[0] * T / max(int(starts_BT1[:, :T].sum()), 1)


def calibrate_threshold(H_BT1: torch.Tensor, target: float, rel_threshold: float | None = None,
                        max_patch_size: int = 8, iters: int = 30) -> float:
    """theta_g whose patches have mean length closest to ``target`` on these entropies (bisection).

    A higher threshold gives fewer boundaries, so longer patches; the max-size rule caps the mean at
    ``max_patch_size``.
    """
    lo, hi = 0.0, float(H_BT1.max()) + 1e-3
    for _ in range(iters):
        mid = (lo + hi) / 2
        if mean_patch_length(entropy_boundaries(H_BT1, mid, rel_threshold, max_patch_size)) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def patch_ids(starts_BT1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per byte: its patch index, the index of the last patch complete at it (-1: none), and the patch count.

    Returns:
        pid [B, T], read [B, T] (``pid`` where byte t ends its patch, else ``pid - 1``), counts [B].
    """
    T = starts_BT1.shape[1] - 1
    pid = starts_BT1[:, :T].long().cumsum(1) - 1
    ends = starts_BT1[:, 1:]
    read = torch.where(ends, pid, pid - 1)
    return pid, read, pid[:, -1] + 1 if T else pid.new_zeros(starts_BT1.shape[0])
