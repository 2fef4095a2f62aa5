"""DeltaNet and Gated DeltaNet token mixers, built as flash-linear-attention builds them (``fla/layers/
delta_net.py``, ``gated_deltanet.py``), on archlab's ``delta_rule`` op (fla's Triton kernel on CUDA).

Per layer, for input x [B, T, hidden]::

    q, k, v = SiLU(conv4(W_q x)), SiLU(conv4(W_k x)), SiLU(conv4(W_v x))   short causal depthwise convs
    q, k    = l2norm(q), l2norm(k)                                          per head
    beta    = sigmoid(W_b x)               (x 2 with allow_neg_eigval: beta in (0, 2))
    g       = -exp(A) * softplus(W_a x + dt_bias)                            Gated DeltaNet only (Mamba-2 decay)
    o       = delta_rule(q, k, v, beta, g)                                   S <- exp(g) S; S += beta k (v - S^T k)^T
    y       = W_o (RMSNorm(o) * SiLU(W_g x))                                 (output gate; RMSNorm only without it)

Decoding keeps, in the layer's cache entry (``archlab.nn.cache``), the last ``conv_size - 1`` projected
inputs of each conv and the delta-rule state [B, H, K, V]. Padding positions (attention_mask == 0) write
nothing: their conv inputs, keys and write strengths are zeroed and they do not decay the state, so a
left-padded row gives the outputs of the unpadded one.

Legend: B batch, T tokens, H heads, K key head dim, V value head dim, C channels.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from archlab.nn.cache import states_of
from archlab.nn.mixers import BlockDims, MixerOptions, TokenMixer, register_mixer
from archlab.ops import delta_rule


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """``F.softplus`` (threshold 20) spelt in elementwise ops: AOTAutograd mis-predicts the strides of
    ``softplus_backward`` for the non-contiguous gradient the chunked op sends back, which fails the compiled
    backward (a ``view`` on a non-viewable tensor); the same values and gradients otherwise."""
    return torch.where(x > 20, x, torch.log1p(torch.exp(x.clamp(max=20))))


class ShortConvolution(nn.Conv1d):
    """Depthwise causal conv over time (left padded, kernel K, no bias), then SiLU; fla's ShortConvolution."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__(channels, channels, kernel_size, groups=channels, bias=False)

    def forward(self, x_BTC: torch.Tensor, window: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns SiLU(conv(x)) [B, T, C] and the last K - 1 inputs (the window to continue from)."""
        k = self.kernel_size[0]
        if window is None:
            window = x_BTC.new_zeros(x_BTC.shape[0], k - 1, x_BTC.shape[2])
        full = torch.cat([window.to(x_BTC.dtype), x_BTC], dim=1)
        y = F.conv1d(full.transpose(1, 2), self.weight, groups=self.groups).transpose(1, 2)
        return F.silu(y), full[:, full.shape[1] - (k - 1):]


class DeltaNetOptions(MixerOptions):
    num_heads: int | None = Field(None, ge=1, description="heads of this layer (None: the model's "
                                  "num_attention_heads)")
    head_dim: int | None = Field(None, ge=1, description="key/query head dim (None: hidden_size * expand_k / "
                                 "num_heads)")
    expand_k: float = Field(1.0, gt=0, description="key width = expand_k * hidden_size (when head_dim is None)")
    expand_v: float = Field(1.0, gt=0, description="value head dim = expand_v * key head dim")
    use_short_conv: bool = Field(True, description="short causal depthwise conv (with SiLU) on q, k and v")
    conv_size: int = Field(4, ge=2, description="kernel of the short convs")
    use_gate: bool = Field(True, description="output gate: RMSNorm(o) * SiLU(W_g x) (fla's DeltaNet default "
                           "is off, Gated DeltaNet's on)")
    allow_neg_eigval: bool = Field(False, description="beta in (0, 2): the transition can have negative "
                                   "eigenvalues (state tracking, DeltaProduct paper)")
    chunk_size: int = Field(64, ge=1, description="chunk of the chunked delta rule (speed only)")
    impl: Literal["auto", "chunk", "naive"] = Field("auto", description="op implementation: auto = fla's "
                                                    "Triton kernel on CUDA bf16/fp16 when installed, else chunk")


class GatedDeltaNetOptions(DeltaNetOptions):
    expand_v: float = Field(2.0, gt=0, description="value head dim = expand_v * key head dim (fla default 2)")
    dt_min: float = Field(0.001, gt=0, description="smallest initial time step of the decay")
    dt_max: float = Field(0.1, gt=0, description="largest initial time step of the decay")
    a_init_max: float = Field(16.0, gt=0, description="A is initialised uniform in (0, a_init_max)")


@register_mixer("deltanet", help="DeltaNet (Yang et al. 2024): short convs, L2 q/k, sigmoid beta, delta rule")
class DeltaNet(TokenMixer):
    """DeltaNet: a delta-rule fast-weight memory with short convolutions and an output gate."""

    Options = DeltaNetOptions
    layer_type = "linear_attention"
    gated = False

    def __init__(self, dims: BlockDims, options: DeltaNetOptions, layer_idx: int = 0):
        super().__init__()
        self.layer_idx = layer_idx
        self.options = options
        self.num_heads = options.num_heads or dims.num_heads
        head_k = options.head_dim or int(dims.hidden_size * options.expand_k) // self.num_heads
        head_v = int(head_k * options.expand_v)
        if head_k < 1 or head_v < 1:
            raise ValueError(f"deltanet: head dims must be >= 1 (got key {head_k}, value {head_v})")
        self.head_k_dim, self.head_v_dim = head_k, head_v
        key_dim, value_dim = self.num_heads * head_k, self.num_heads * head_v
        hidden = dims.hidden_size
        self.q_proj = nn.Linear(hidden, key_dim, bias=False)
        self.k_proj = nn.Linear(hidden, key_dim, bias=False)
        self.v_proj = nn.Linear(hidden, value_dim, bias=False)
        self.b_proj = nn.Linear(hidden, self.num_heads, bias=False)
        if options.use_short_conv:
            self.q_conv = ShortConvolution(key_dim, options.conv_size)
            self.k_conv = ShortConvolution(key_dim, options.conv_size)
            self.v_conv = ShortConvolution(value_dim, options.conv_size)
        if self.gated:
            self._init_decay(options)
        self.g_proj = nn.Linear(hidden, value_dim, bias=False) if options.use_gate else None
        self.o_norm = nn.RMSNorm(head_v, eps=dims.norm_eps)
        self.o_proj = nn.Linear(value_dim, hidden, bias=False)

    def _init_decay(self, options: GatedDeltaNetOptions) -> None:
        """Mamba-2's decay parameters, initialised as fla's Gated DeltaNet does."""
        self.a_proj = nn.Linear(self.q_proj.in_features, self.num_heads, bias=False)
        a = torch.empty(self.num_heads).uniform_(0, options.a_init_max).clamp(min=1e-4)
        self.A_log = nn.Parameter(torch.log(a))
        dt = torch.exp(torch.rand(self.num_heads) * (math.log(options.dt_max) - math.log(options.dt_min))
                       + math.log(options.dt_min)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def _project(self, x: torch.Tensor, keep: torch.Tensor | None, states) -> tuple[torch.Tensor, ...]:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if keep is not None:  # padding must not enter the conv windows
            q, k, v = q * keep, k * keep, v * keep
        if self.options.use_short_conv:
            convs = {"q": self.q_conv, "k": self.k_conv, "v": self.v_conv}
            out = []
            for name, z in zip(convs, (q, k, v), strict=True):
                window = states.get(f"conv_{name}") if states is not None else None
                y, window = convs[name](z, window)
                if states is not None:
                    states.set(f"conv_{name}", window)
                out.append(y)
            q, k, v = out
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        states = states_of(cache, self.layer_idx) if cache is not None else None
        mask_BT = attention_mask[:, -t:].to(x.dtype) if attention_mask is not None else None
        keep = mask_BT[..., None] if mask_BT is not None else None
        q, k, v = self._project(x, keep, states)
        q = F.normalize(q.view(b, t, self.num_heads, self.head_k_dim), dim=-1, eps=1e-6)
        k = F.normalize(k.view(b, t, self.num_heads, self.head_k_dim), dim=-1, eps=1e-6)
        v = v.view(b, t, self.num_heads, self.head_v_dim)
        beta = torch.sigmoid(self.b_proj(x).float())
        if self.options.allow_neg_eigval:
            beta = beta * 2
        g = None
        if self.gated:
            g = -self.A_log.float().exp() * _softplus(self.a_proj(x).float() + self.dt_bias.float())
        if mask_BT is not None:
            beta = beta * mask_BT.float()[..., None]
            g = g * mask_BT.float()[..., None] if g is not None else None
        o, final = delta_rule(
            q, k, v, beta.to(q.dtype), g=g, initial_state=states.get("state") if states is not None else None,
            output_final_state=states is not None, chunk_size=self.options.chunk_size, impl=self.options.impl,
        )
        if states is not None:
            states.set("state", final)
            states.seen_tokens += t
        o = self.o_norm(o)
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x).view(b, t, self.num_heads, self.head_v_dim))
        return self.o_proj(o.reshape(b, t, -1))


@register_mixer("gated_deltanet", help="Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024): DeltaNet + Mamba-2 decay")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet: DeltaNet whose state decays by exp(g_t) before each write (g from a Mamba-2 gate)."""

    Options = GatedDeltaNetOptions
    gated = True
