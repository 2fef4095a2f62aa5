"""Seed 001's GPT-2 variants as one Hugging Face model: GPT-2 plus switchable Drift, Diffusion, Parallel pairs,
Rotating heads and Duo-Predict (``archlab_gpt2``; the mechanisms as the public code behind the seed codes them,
its defects fixed, see the per-option notes).

Built on transformers' own GPT-2 (``GPT2Attention``, ``GPT2Block``, ``GPT2Model.forward``, ``GPT2LMHeadModel``):
with every option off the model *is* GPT-2 (same parameter names, same logits for the same weights).

- **Drift** (``drift``), on the per-head attention output ``o`` [B, T, H, d_h] before the head merge:
  ``sigmoid`` (as coded): ``o + σ(D) ⊙ (o − b)``, D, b ∈ R^{H×d_h}, D ~ N(0, 1), b ~ N(0, 1e-3²) (no ``b`` with
  ``drift_baseline: false``); ``scalar`` (the seed document's form, not its code): one gain per head,
  ``o + D_h (o − b)``, D ∈ R^{H×1} initialised N(0, 1)·0.02, no sigmoid.
- **Diffusion** (``diffusion``): ``o + G ⊙ ε``, G ∈ R^{H×d_h} ~ N(0, 1), ε ~ N(0, I) in training only
  (deterministic in eval). Combinable with drift (drift first, as coded).
- **Parallel** (``parallel``: mean / add / concat): the layers run in pairs on the same input; a pair's two
  blocks (full pre-LN GPT-2 blocks, residuals included) are merged by their mean, their sum, or one Linear
  2d→d over their concatenation (shared by the whole model as coded; ``parallel_per_pair`` gives each pair
  its own). An odd ``n_layer`` is a config error.
- **Rotating head** (``rotation``): a RoPE-style rotation of q and k by ``p·θ_{h,i}`` per head, on pairs of
  (even, odd) features, on top of the learned absolute positions (wpe kept): ``learned`` θ ∈ R^{H×d_h/2}
  ~ N(0, 1); ``geometric`` θ_{h,i} = s_h · 10000^{−2i/d_h} with s_h log-spaced 1 → 0.1 over heads (fixed);
  ``rotation_norm`` passes θ through a LayerNorm over the frequency index (per head) first.
- **Duo-Predict** (``duo_predict``): training sequences are interleaved with a mask slot after every token
  (:func:`duo_interleave`): ``a_0, M, a_1, M, …, a_{T−1}``, M after a_m at position m; the exact attention
  mask (a real token sees real tokens up to itself; the M after a_m sees a_<m, itself and a_{m+1}); the two
  targets written out (real a_m → a_{m+1}, M after a_m → a_m), **no second shift** (the public code shifts
  twice and so trains two copy tasks). Without ``labels`` the model runs the real stream only, which is an
  ordinary causal GPT-2 (real tokens never attend to M), so generation, caching and the next-token evals
  are the plain ones; the ``duo_predict`` eval scores both streams separately.
  Note: the mask hides a_m from its M slot in the first layer only: from the second layer on, a_{m+1}'s
  state, which the M reads, has attended to a_m, so the fill-the-gap target leaks through depth (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import GPT2Config
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.gpt2.modeling_gpt2 import (
    GPT2Attention,
    GPT2Block,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
    eager_attention_forward,
)

DRIFT_KINDS = ("none", "sigmoid", "scalar")
PARALLEL_MERGES = ("none", "mean", "add", "concat")
ROTATIONS = ("none", "learned", "geometric")
ROTATION_BASE = 10000.0
SCALAR_DRIFT_INIT = 0.02  # the document's per-head drift: a (H, 1, 1) parameter of N(0, 1) * 0.02
DRIFT_BASELINE_STD = 1e-3


@strict
class GPT2VariantsConfig(GPT2Config):
    """GPT-2's config (``n_layer``, ``n_embd``, ``n_head``, ``n_positions``, dropouts, ...) plus the variant
    switches; all off is GPT-2."""

    model_type = "archlab_gpt2"

    drift: str = "none"
    drift_baseline: bool = True
    diffusion: bool = False
    parallel: str = "none"
    parallel_per_pair: bool = False
    rotation: str = "none"
    rotation_norm: bool = False
    duo_predict: bool = False
    mask_token_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        for key, value, allowed in (("drift", self.drift, DRIFT_KINDS), ("parallel", self.parallel, PARALLEL_MERGES),
                                    ("rotation", self.rotation, ROTATIONS)):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {list(allowed)}, got '{value}'")
        for key in ("drift_baseline", "diffusion", "parallel_per_pair", "rotation_norm", "duo_predict"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.parallel != "none" and self.n_layer % 2:
            raise ValueError(f"parallel={self.parallel} runs the layers in pairs: n_layer must be even, got "
                             f"{self.n_layer}")
        if self.n_embd % self.n_head or (self.rotation != "none" and (self.n_embd // self.n_head) % 2):
            raise ValueError(f"n_embd {self.n_embd} / n_head {self.n_head} must give an (even, for rotation) head size")
        super().__post_init__(**kwargs)

    @property
    def duo_mask_id(self) -> int:
        """The mask slot's token: ``mask_token_id``, else the last id (where the tokenizer adds ``<|MASK|>``)."""
        return self.mask_token_id if self.mask_token_id is not None else self.vocab_size - 1

    def plan_problem(self, tokenizer, needs: set[str]) -> str | None:
        """Why a run of this config should not start (checked by ``archlab plan``): Duo-Predict's default mask
        slot, the last id, must be the tokenizer's mask token, not a token text uses (plain GPT-2's last id is
        ``<|endoftext|>``). An explicit ``mask_token_id`` is the user's choice."""
        if not self.duo_predict or self.mask_token_id is not None:
            return None
        mask = self.duo_mask_id
        if mask >= len(tokenizer) or mask == getattr(tokenizer, "mask_token_id", None):
            return None  # past the tokenizer's ids, text never holds it
        return (f"model.config.duo_predict puts its mask slot on the last id {mask}, which this tokenizer uses for "
                f"{tokenizer.convert_ids_to_tokens(mask)!r}; use data.tokenizer: gpt2+mask (seed 001's <|MASK|>), "
                f"data.add_mask_token: true, or set model.config.mask_token_id")


def geometric_frequencies(num_heads: int, head_dim: int, base: float = ROTATION_BASE) -> torch.Tensor:
    """[H, d_h/2]: θ_{h,i} = s_h · base^{−2i/d_h}, s_h log-spaced from 1 down to 0.1 over the heads."""
    scales = torch.logspace(0.0, -1.0, num_heads, dtype=torch.float64) if num_heads > 1 else torch.ones(1)
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return (scales[:, None].double() * inv[None]).float()


def rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate (even, odd) feature pairs of x [B, H, T, d_h] by angles [B, H, T, d_h/2]."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class GPT2VariantsAttention(GPT2Attention):
    """GPT-2 self-attention with the per-head rotation of q/k and drift/diffusion of the head outputs."""

    def __init__(self, config: GPT2VariantsConfig, layer_idx: int | None = None):
        super().__init__(config, is_cross_attention=False, layer_idx=layer_idx)
        h, d = self.num_heads, self.head_dim
        self.drift, self.diffusion, self.rotation = config.drift, config.diffusion, config.rotation
        if config.drift != "none":
            self.drift_gain = nn.Parameter(torch.empty(h, d if config.drift == "sigmoid" else 1))
            self.drift_baseline = nn.Parameter(torch.empty(h, d)) if config.drift_baseline else None
        if config.diffusion:
            self.diffusion_scale = nn.Parameter(torch.empty(h, d))
        if config.rotation == "learned":
            self.rotation_theta = nn.Parameter(torch.empty(h, d // 2))
        elif config.rotation == "geometric":  # fixed: a buffer rebuilt from the formula, never saved
            self.register_buffer("rotation_theta", geometric_frequencies(h, d), persistent=False)
        self.rotation_norm = nn.LayerNorm(d // 2) if config.rotation != "none" and config.rotation_norm else None
        self.reset_variant_parameters()

    @torch.no_grad()
    def reset_variant_parameters(self) -> None:
        if self.drift != "none":
            init.normal_(self.drift_gain, 0.0, 1.0 if self.drift == "sigmoid" else SCALAR_DRIFT_INIT)
            if self.drift_baseline is not None:
                init.normal_(self.drift_baseline, 0.0, DRIFT_BASELINE_STD)
        if self.diffusion:
            init.normal_(self.diffusion_scale, 0.0, 1.0)
        if self.rotation == "learned":
            init.normal_(self.rotation_theta, 0.0, 1.0)
        elif self.rotation == "geometric":
            init.copy_(self.rotation_theta, geometric_frequencies(self.num_heads, self.head_dim))

    def frequencies(self) -> torch.Tensor:
        """[H, d_h/2] rotation frequencies θ (after the optional LayerNorm over the frequency index)."""
        theta = self.rotation_theta
        if self.rotation == "geometric" and theta.dtype != torch.float32:  # a bf16 model: angles p·θ need fp32
            theta = geometric_frequencies(self.num_heads, self.head_dim).to(theta.device)
        return self.rotation_norm(theta) if self.rotation_norm is not None else theta

    def _rotate(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        theta = self.frequencies().float()  # angles in float32: p·θ grows with the position
        angles = position_ids.float()[:, None, :, None] * theta[None, :, None, :]  # [B, H, T, d_h/2]
        return rotate_pairs(x, angles)

    def _mix_heads(self, o: torch.Tensor) -> torch.Tensor:
        """Drift then diffusion on o [B, T, H, d_h]."""
        if self.drift == "sigmoid":
            gain = torch.sigmoid(self.drift_gain)
        elif self.drift == "scalar":
            gain = self.drift_gain
        if self.drift != "none":
            o = o + gain.to(o.dtype) * (o - self.drift_baseline.to(o.dtype) if self.drift_baseline is not None else o)
        if self.diffusion and self.training:
            o = o + self.diffusion_scale.to(o.dtype) * torch.randn_like(o)
        return o

    def forward(self, hidden_states, cache=None, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, output_attentions=False, position_ids=None, **kwargs):
        """GPT2Attention.forward (self-attention path) with the rotation and the head-output mixing inserted."""
        q, k, v = self.c_attn(hidden_states).split(self.split_size, dim=2)
        shape = (*q.shape[:-1], -1, self.head_dim)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if self.rotation != "none":
            if position_ids is None:
                raise ValueError("rotating heads need position_ids (GPT2Model passes them)")
            position_ids = position_ids.expand(q.shape[0], -1)
            q, k = self._rotate(q, position_ids), self._rotate(k, position_ids)  # k cached rotated, as RoPE
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx, kwargs=kwargs)
        eager = self.config._attn_implementation == "eager"
        if eager and self.reorder_and_upcast_attn:
            o, weights = self._upcast_and_reordered_attn(q, k, v, attention_mask)
        else:
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
            o, weights = attention(self, q, k, v, attention_mask, dropout=self.attn_dropout.p if self.training else 0.0,
                                   scaling=self.scaling, **kwargs)
        o = self._mix_heads(o)  # [B, T, H, d_h], before the head merge and c_proj
        o = self.c_proj(o.reshape(*o.shape[:-2], -1).contiguous())
        return self.resid_dropout(o), weights


class GPT2VariantsBlock(GPT2Block):
    def __init__(self, config: GPT2VariantsConfig, layer_idx: int | None = None):
        super().__init__(config, layer_idx=layer_idx)
        self.attn = GPT2VariantsAttention(config, layer_idx=layer_idx)


class ParallelPair(nn.Module):
    """Two GPT-2 blocks on the same input, merged by mean, add or a Linear 2d→d over their concatenation.

    Takes a block's call signature, so ``GPT2Model.forward`` runs pairs as it runs blocks. The shared
    bottleneck is owned by the model and only referenced here (not registered twice)."""

    def __init__(self, config: GPT2VariantsConfig, index: int, shared: nn.Linear | None):
        super().__init__()
        self.merge = config.parallel
        self.left = GPT2VariantsBlock(config, layer_idx=2 * index)
        self.right = GPT2VariantsBlock(config, layer_idx=2 * index + 1)
        self.proj = nn.Linear(2 * config.n_embd, config.n_embd) if self.merge == "concat" and shared is None else None
        self.__dict__["_shared_proj"] = shared  # a plain attribute: its parameters live on the model

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        left = self.left(hidden_states, *args, **kwargs)
        right = self.right(hidden_states, *args, **kwargs)
        if self.merge == "mean":
            return (left + right) / 2
        if self.merge == "add":
            return left + right
        proj = self.proj if self.proj is not None else self.__dict__["_shared_proj"]
        return proj(torch.cat((left, right), dim=-1))


class GPT2VariantsPreTrainedModel(GPT2PreTrainedModel):
    config: GPT2VariantsConfig
    config_class = GPT2VariantsConfig
    _no_split_modules = ["GPT2VariantsBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, GPT2VariantsAttention):
            module.reset_variant_parameters()


class GPT2VariantsModel(GPT2VariantsPreTrainedModel, GPT2Model):
    """GPT2Model with variant blocks (or parallel pairs); its forward is GPT2Model's."""

    def __init__(self, config: GPT2VariantsConfig):
        GPT2VariantsPreTrainedModel.__init__(self, config)
        self.embed_dim = config.hidden_size
        self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
        self.wpe = nn.Embedding(config.max_position_embeddings, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        if config.parallel == "none":
            self.h = nn.ModuleList(GPT2VariantsBlock(config, layer_idx=i) for i in range(config.n_layer))
        else:
            shared = None
            if config.parallel == "concat" and not config.parallel_per_pair:
                self.parallel_proj = shared = nn.Linear(2 * config.n_embd, config.n_embd)
            self.h = nn.ModuleList(ParallelPair(config, i, shared) for i in range(config.n_layer // 2))
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self._attn_implementation = config._attn_implementation
        self.post_init()


@dataclass
class DuoBatch:
    """An interleaved Duo-Predict batch: ``labels`` are explicit targets (position t predicts labels[t])."""

    input_ids: torch.Tensor  # [B, 2T-1]
    position_ids: torch.Tensor  # [B, 2T-1]
    allowed: torch.Tensor  # [B, 1, 2T-1, 2T-1] bool, True where a query may attend to a key
    labels: torch.Tensor  # [B, 2T-1], -100 where nothing is scored
    is_mask_slot: torch.Tensor  # [2T-1] bool


def duo_attention_pattern(length: int, device: torch.device | None = None) -> torch.Tensor:
    """[2T-1, 2T-1] bool for T real tokens: real a_m (row 2m) sees real a_0..a_m; the M after a_m (row 2m+1)
    sees real a_0..a_{m-1}, itself and real a_{m+1} -- never a_m, never another M."""
    n = 2 * length - 1
    idx = torch.arange(n, device=device)
    is_real = idx % 2 == 0
    m = idx // 2  # for a real token its index; for an M the index of the token before it
    q, k = idx[:, None], idx[None, :]
    real_q = is_real[:, None] & is_real[None, :] & (m[None, :] <= m[:, None])
    mask_q = ~is_real[:, None] & ((is_real[None, :] & ((m[None, :] < m[:, None]) | (m[None, :] == m[:, None] + 1)))
                                  | (q == k))
    return torch.where(is_real[:, None], real_q, mask_q)


def duo_interleave(input_ids: torch.Tensor, labels: torch.Tensor, mask_id: int,
                   attention_mask: torch.Tensor | None = None) -> DuoBatch:
    """The Duo-Predict collator: a_0, M, a_1, M, …, a_{T−1}; positions m, m, m+1, …; explicit targets.

    Targets (no further shift): real a_m → labels[m+1]; M after a_m → labels[m] (the token it fills in).
    Padding (``attention_mask`` 0) is never attended to and never scored; a slot always sees itself.
    """
    b, t = input_ids.shape
    n = 2 * t - 1
    device = input_ids.device
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    ids = torch.full((b, n), mask_id, dtype=input_ids.dtype, device=device)
    ids[:, 0::2] = input_ids
    positions = (torch.arange(n, device=device) // 2).expand(b, n)
    slot_valid = torch.zeros((b, n), dtype=torch.bool, device=device)
    slot_valid[:, 0::2] = valid
    slot_valid[:, 1::2] = valid[:, :-1] & valid[:, 1:]  # an M exists between two real tokens
    targets = torch.full((b, n), -100, dtype=labels.dtype, device=device)
    targets[:, 0:-1:2] = torch.where(valid[:, 1:], labels[:, 1:], -100)  # real a_m -> a_{m+1}
    targets[:, 1::2] = torch.where(slot_valid[:, 1::2], labels[:, :-1], -100)  # M after a_m -> a_m
    targets = torch.where(slot_valid, targets, -100)
    eye = torch.eye(n, dtype=torch.bool, device=device)
    allowed = (duo_attention_pattern(t, device)[None] & slot_valid[:, None, :]) | eye
    is_mask_slot = torch.arange(n, device=device) % 2 == 1
    return DuoBatch(ids, positions.contiguous(), allowed[:, None], targets, is_mask_slot)


def attention_bias(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4-D mask as the attention implementation takes it: bool for sdpa, additive for eager."""
    if implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                          torch.finfo(dtype).min)
    return allowed


class GPT2VariantsForCausalLM(GPT2VariantsPreTrainedModel, GPT2LMHeadModel):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2VariantsConfig):
        GPT2VariantsPreTrainedModel.__init__(self, config)
        self.transformer = GPT2VariantsModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, cache=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, labels=None,
                use_cache=None, logits_to_keep=0, **kwargs):
        duo = (self.config.duo_predict and labels is not None and input_ids is not None and cache is None
               and position_ids is None and (attention_mask is None or attention_mask.ndim == 2))
        if not duo:
            return super().forward(input_ids=input_ids, cache=cache, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                                   encoder_attention_mask=encoder_attention_mask, labels=labels, use_cache=use_cache,
                                   logits_to_keep=logits_to_keep, **kwargs)
        batch = duo_interleave(input_ids, labels, self.config.duo_mask_id, attention_mask)
        logits = self.duo_logits(batch)
        # both streams' targets, one mean (the seed's CE over all 2T-2 targets), aligned above: no shift here
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.labels.flatten(), ignore_index=-100)
        return CausalLMOutputWithCrossAttentions(loss=loss, logits=logits)

    def duo_logits(self, batch: DuoBatch) -> torch.Tensor:
        """Logits [B, 2T-1, V] of an interleaved batch under its exact mask."""
        dtype = self.transformer.wte.weight.dtype
        bias = attention_bias(batch.allowed, self.config._attn_implementation, dtype)
        out = super().forward(input_ids=batch.input_ids, attention_mask=bias, position_ids=batch.position_ids,
                              use_cache=False)
        return out.logits


def frequencies_of(model: nn.Module) -> list[torch.Tensor]:
    """The rotation frequencies of every rotating attention of ``model`` (for tests and inspection)."""
    return [m.frequencies() for m in model.modules() if isinstance(m, GPT2VariantsAttention) and m.rotation != "none"]


__all__ = [
    "DuoBatch",
    "GPT2VariantsConfig",
    "GPT2VariantsForCausalLM",
    "GPT2VariantsModel",
    "duo_attention_pattern",
    "duo_interleave",
    "frequencies_of",
    "geometric_frequencies",
]
