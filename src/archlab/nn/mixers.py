"""Token mixers: the per-layer sequence-mixing slot of archlab's decoder, selected by name.

A mixer is an ``nn.Module`` registered in ``MIXERS`` with ``@register_mixer(name)``. It declares:

- ``Options``: a pydantic ``MixerOptions`` subclass (strict keys, "did you mean"); a plan's
  ``model.config.mixer_options.<name>`` is validated against it when the config is made, so a typo fails at
  ``archlab plan`` time;
- ``layer_type``: its entry in Hugging Face's ``config.layer_types`` vocabulary ("full_attention",
  "sliding_attention", "linear_attention"), which tells ``DynamicCache(config=...)`` what each layer stores;
- ``__init__(dims: BlockDims, options, layer_idx)`` and ``forward(x, *, position_ids, attention_mask, cache)``.

A recurrent mixer keeps its decoding state in the cache it is given (``archlab.nn.cache.states_of``), never on
itself. Registering is all it takes to get the generic tests (causality, cached decoding equals the full
forward, save/load, generate, gradients) in ``tests/models/test_mixers_generic.py``.

Legend: B batch, T new tokens, S tokens attended to (cache + new), H query heads, G kv heads, D head dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from archlab.config import Config
from archlab.nn.rope import RotaryEmbedding, apply_rotary
from archlab.registry import Registry

MIXERS: Registry[type[nn.Module]] = Registry("mixer")


@dataclass(frozen=True)
class BlockDims:
    """Model-wide sizes and switches every block part is built from (taken from the model config)."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    bias: bool = True
    dropout: float = 0.0
    position_embedding: str = "learned"
    rope_theta: float = 10000.0
    sliding_window: int | None = None
    norm_eps: float = 1e-5
    intermediate_size: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> BlockDims:
        return cls(
            hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads or config.num_attention_heads, bias=config.bias,
            dropout=config.dropout, position_embedding=config.position_embedding, rope_theta=config.rope_theta,
            sliding_window=config.sliding_window, norm_eps=config.norm_eps,
            intermediate_size=config.intermediate_size,
        )


class MixerOptions(Config):
    """Options of a token mixer (the base has none; each mixer subclasses it)."""


class TokenMixer(nn.Module):
    """Base of registered mixers: the typed options, the HF layer type, the build and count helpers."""

    Options: ClassVar[type[MixerOptions]] = MixerOptions
    layer_type: ClassVar[str] = "full_attention"

    @classmethod
    def parse_options(cls, options: dict[str, Any] | MixerOptions | None, where: str = "") -> MixerOptions:
        if isinstance(options, cls.Options):
            return options
        return cls.Options.parse(options or {}, where=where)

    @classmethod
    def layer_type_for(cls, dims: BlockDims, options: MixerOptions) -> str:
        """The ``layer_types`` entry of a layer built with these options (sliding attention differs)."""
        return cls.layer_type

    @classmethod
    def count_parameters(cls, dims: BlockDims, options: MixerOptions | dict | None = None) -> int:
        """Parameters of one such layer, counted by building it on the meta device (nothing is allocated)."""
        with torch.device("meta"):
            module = cls(dims, cls.parse_options(options), 0)
        return sum(p.numel() for p in module.parameters())


def register_mixer(name: str, *, help: str | None = None):
    """Class decorator: register a ``TokenMixer`` subclass under ``name``."""

    def add(cls: type[TokenMixer]) -> type[TokenMixer]:
        if not (isinstance(cls, type) and issubclass(cls, TokenMixer)):
            raise TypeError(f"mixer '{name}' must subclass archlab.nn.mixers.TokenMixer")
        MIXERS.register(name, cls, help=help)
        return cls

    return add


def causal_mask(
    t_new: int, t_total: int, attention_mask: torch.Tensor | None, sliding_window: int | None, device
) -> torch.Tensor | None:
    """Boolean [B|1, 1, T, S] mask (True = may attend), or None when plain causal SDPA suffices."""
    if attention_mask is None and sliding_window is None and t_new == t_total:
        return None
    q_pos = torch.arange(t_total - t_new, t_total, device=device)[:, None]
    k_pos = torch.arange(t_total, device=device)[None, :]
    allowed = k_pos <= q_pos
    if sliding_window is not None:
        allowed = allowed & (k_pos > q_pos - sliding_window)
    allowed = allowed[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, -t_total:].bool()
        # a fully masked row (a left-pad query) would give NaN; let it see itself
        allowed = allowed | (k_pos == q_pos)[None, None]
    return allowed


class AttentionOptions(MixerOptions):
    sliding_window: int | None = Field(None, ge=1, description="attend to the last N tokens only (None: the "
                                       "model's sliding_window)")
    rope: bool | None = Field(None, description="rotate q/k with RoPE (None: when position_embedding is rope)")


@register_mixer("attention", help="multi-head / grouped-query causal self-attention (SDPA), RoPE, sliding window")
class CausalSelfAttention(TokenMixer):
    """Multi-head / grouped-query causal self-attention (SDPA), optional RoPE and sliding window."""

    Options = AttentionOptions

    @staticmethod
    def _window(dims: BlockDims, options: AttentionOptions) -> int | None:
        return options.sliding_window if options.sliding_window is not None else dims.sliding_window

    @classmethod
    def layer_type_for(cls, dims: BlockDims, options: MixerOptions) -> str:
        # DynamicCache sizes a sliding layer from config.sliding_window; a per-layer window that differs keeps
        # every key (the mask still enforces the window)
        window = cls._window(dims, options)
        return "sliding_attention" if window is not None and window == dims.sliding_window else "full_attention"

    def __init__(self, dims: BlockDims, options: AttentionOptions, layer_idx: int = 0):
        super().__init__()
        num_heads, num_kv_heads = dims.num_heads, dims.num_kv_heads
        if dims.hidden_size % num_heads or num_heads % num_kv_heads:
            raise ValueError(
                f"hidden_size ({dims.hidden_size}) must divide by num_attention_heads ({num_heads}), "
                f"and that by num_key_value_heads ({num_kv_heads})"
            )
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dims.hidden_size // num_heads
        self.q_proj = nn.Linear(dims.hidden_size, num_heads * self.head_dim, bias=dims.bias)
        self.k_proj = nn.Linear(dims.hidden_size, num_kv_heads * self.head_dim, bias=dims.bias)
        self.v_proj = nn.Linear(dims.hidden_size, num_kv_heads * self.head_dim, bias=dims.bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dims.hidden_size, bias=dims.bias)
        rope = options.rope if options.rope is not None else dims.position_embedding == "rope"
        self.rotary = RotaryEmbedding(self.head_dim, dims.rope_theta) if rope else None
        self.sliding_window = self._window(dims, options)
        self.dropout = dims.dropout

    def forward(
        self,
        x: torch.Tensor,
        *,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q_BTHD = self.q_proj(x).view(b, t, self.num_heads, self.head_dim)
        k_BTGD = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        v_BTGD = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        if self.rotary is not None:
            cos, sin = self.rotary(position_ids)
            q_BTHD, k_BTGD = apply_rotary(q_BTHD, cos, sin), apply_rotary(k_BTGD, cos, sin)
        q, k, v = (z.transpose(1, 2) for z in (q_BTHD, k_BTGD, v_BTGD))  # [B, heads, T, D]
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        mask = causal_mask(t, k.shape[2], attention_mask, self.sliding_window, x.device)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))
