"""archlab's baseline decoder, a Hugging Face ``PreTrainedModel``.

Notable features:
- positions: learned absolute (GPT-2), RoPE (Llama) or none (NoPE);
- pre- or post-norm residual blocks, LayerNorm or RMSNorm;
- typed per-layer token mixers (``pattern`` / HF ``layer_types``; entries of ``archlab.nn.MIXERS``: attention,
  deltanet, gated_deltanet, ...) and an MLP slot, each with its own options class;
- GQA, sliding-window attention, tied embeddings, gradient checkpointing;
- one ``Cache`` carrying every layer's state (KV or recurrent) for ``generate``, copying, batching and beams.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from archlab.errors import did_you_mean
from archlab.nn import MIXERS, MLPS, build_norm
from archlab.nn.cache import cache_length
from archlab.nn.loss import causal_lm_loss
from archlab.nn.mixers import BlockDims
from archlab.nn.rope import RotaryEmbedding

POSITION_KINDS = ("learned", "rope", "none")


class ArchlabTransformerConfig(PretrainedConfig):
    """Configuration of :class:`ArchlabTransformerForCausalLM` (all sizes in units of features).

    The per-layer layout: ``pattern`` (archlab mixer names, repeated over the layers: ``[deltanet, deltanet,
    deltanet, attention]`` is a 3:1 hybrid), or Hugging Face's ``layer_types`` (``full_attention`` /
    ``sliding_attention`` -> the attention mixer, ``linear_attention`` -> ``linear_mixer``, as Qwen3-Next), or
    ``mixer`` for every layer. The resolved mixer of each layer is ``layer_mixers``; ``layer_types`` is always
    set (derived from the mixers) so ``DynamicCache(config=...)`` builds the right cache for each layer.
    ``mixer_options`` holds typed options per mixer name (``{deltanet: {conv_size: 4}}``), validated here.
    """

    model_type = "archlab_transformer"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 8192,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 1024,
        position_embedding: str = "learned",
        rope_theta: float = 10000.0,
        norm_type: str = "layernorm",
        norm_position: str = "pre",
        norm_eps: float = 1e-5,
        mixer: str = "attention",
        pattern: list[str] | None = None,
        layer_types: list[str] | None = None,
        linear_mixer: str = "gated_deltanet",
        mixer_options: dict[str, Any] | None = None,
        mlp: str = "gelu",
        mlp_options: dict[str, Any] | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        sliding_window: int | None = None,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        bos_token_id: int | None = None,
        eos_token_id: int | None = 0,
        pad_token_id: int | None = None,
        **kwargs: Any,
    ):
        if position_embedding not in POSITION_KINDS:
            raise ValueError(f"position_embedding must be one of {POSITION_KINDS}, got '{position_embedding}'")
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got '{norm_position}'")
        if num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers={num_hidden_layers}: a model needs at least one layer")
        kwargs.pop("layer_mixers", None)  # derived below; present in a saved config.json
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding = position_embedding
        self.rope_theta = rope_theta
        self.norm_type = norm_type
        self.norm_position = norm_position
        self.norm_eps = norm_eps
        self.mixer = mixer
        self.pattern = list(pattern) if pattern else None
        self.linear_mixer = linear_mixer
        self.mlp = mlp
        self.mlp_options = dict(mlp_options or {})
        self.bias = bias
        self.dropout = dropout
        self.sliding_window = sliding_window
        self.initializer_range = initializer_range
        self.layer_mixers = resolve_layer_mixers(num_hidden_layers, mixer, self.pattern, layer_types, linear_mixer)
        self.mixer_options = normalize_mixer_options(mixer_options, self.layer_mixers)
        self.layer_types = self._derive_layer_types()
        MLPS.get(mlp).parse_options(self.mlp_options, where="model.config.mlp_options")
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )

    def _derive_layer_types(self) -> list[str]:
        dims = BlockDims.from_config(self)
        out = []
        for name in self.layer_mixers:
            cls = MIXERS.get(name)
            out.append(cls.layer_type_for(dims, self.options_of(name)))
        return out

    def options_of(self, mixer: str):
        """The typed options of ``mixer`` (validated; unknown keys raise with the closest valid one)."""
        cls = MIXERS.get(mixer)
        return cls.parse_options(self.mixer_options.get(mixer), where=f"model.config.mixer_options.{mixer}")


def resolve_layer_mixers(num_layers: int, mixer: str, pattern: list[str] | None, layer_types: list[str] | None,
                         linear_mixer: str) -> list[str]:
    """One registered mixer name per layer, from ``pattern``, HF ``layer_types`` or ``mixer`` (in that order)."""
    if pattern:
        for name in dict.fromkeys(pattern):
            MIXERS.get(name)  # every entry, not only those the first num_layers layers use
        if len(pattern) > num_layers:  # a 3:1 pattern on 2 layers would silently build no attention layer
            raise ValueError(f"pattern has {len(pattern)} entries but num_hidden_layers is {num_layers}, so "
                             f"{pattern[num_layers:]} would never be used; shorten the pattern or add layers")
        if layer_types:  # both are layouts; a saved config has layer_types derived from the pattern
            derived = [pattern[i % len(pattern)] for i in range(num_layers)]
            if len(layer_types) != num_layers:
                raise ValueError(f"layer_types has {len(layer_types)} entries for {num_layers} layers")
            return derived
        names = [pattern[i % len(pattern)] for i in range(num_layers)]
    elif layer_types:
        if len(layer_types) != num_layers:
            raise ValueError(f"layer_types has {len(layer_types)} entries but num_hidden_layers is {num_layers}")
        attention = mixer if MIXERS.get(mixer).layer_type != "linear_attention" else "attention"
        kinds = {"full_attention": attention, "sliding_attention": attention, "linear_attention": linear_mixer}
        bad = [t for t in layer_types if t not in kinds]
        if bad:
            raise ValueError(f"layer_types entry '{bad[0]}' unknown{did_you_mean(bad[0], kinds)}; use "
                             f"full_attention, sliding_attention or linear_attention (or 'pattern' with mixer names)")
        names = [kinds[t] for t in layer_types]
    else:
        names = [mixer] * num_layers
    for name in dict.fromkeys(names):
        MIXERS.get(name)  # unknown names fail here, with "did you mean"
    return names


def normalize_mixer_options(options: dict[str, Any] | None, layer_mixers: list[str]) -> dict[str, dict[str, Any]]:
    """``{mixer name: {option: value}}``; a flat dict is accepted when every layer uses the same mixer."""
    options = dict(options or {})
    used = list(dict.fromkeys(layer_mixers))
    if options and not all(k in MIXERS for k in options):
        if len(used) > 1:
            raise ValueError(f"mixer_options must be keyed by mixer name when layers use several mixers ({used}), "
                             f"e.g. {{{used[0]}: {{...}}}}")
        options = {used[0]: options}
    unused = [k for k in options if k not in used]
    if unused:
        raise ValueError(f"mixer_options.{unused[0]} is given but no layer uses mixer '{unused[0]}' (layers: {used})")
    not_mappings = [k for k, v in options.items() if v is not None and not isinstance(v, dict)]
    if not_mappings:
        key = not_mappings[0]
        raise ValueError(f"mixer_options.{key} must be a mapping of that mixer's options (e.g. {{{key}: "
                         f"{{conv_size: 4}}}}), got {options[key]!r}")
    return {k: dict(v or {}) for k, v in options.items()}


class DecoderBlock(GradientCheckpointingLayer):
    """x + mixer(norm(x)); x + mlp(norm(x)) (pre-norm) or norm(x + mixer(x)) ... (post-norm)."""

    def __init__(self, config: ArchlabTransformerConfig, layer_idx: int):
        super().__init__()
        dims = BlockDims.from_config(config)
        self.pre_norm = config.norm_position == "pre"
        self.mixer_norm = build_norm(config.norm_type, config.hidden_size, config.norm_eps)
        self.mlp_norm = build_norm(config.norm_type, config.hidden_size, config.norm_eps)
        name = config.layer_mixers[layer_idx]
        self.mixer = MIXERS.get(name)(dims, config.options_of(name), layer_idx)
        mlp = MLPS.get(config.mlp)
        self.mlp = mlp(dims, mlp.parse_options(config.mlp_options, where="model.config.mlp_options"))
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, position_ids, attention_mask=None, cache=None) -> torch.Tensor:
        ctx = {"position_ids": position_ids, "attention_mask": attention_mask, "cache": cache}
        if self.pre_norm:
            x = x + self.resid_dropout(self.mixer(self.mixer_norm(x), **ctx))
            return x + self.mlp(self.mlp_norm(x))
        x = self.mixer_norm(x + self.resid_dropout(self.mixer(x, **ctx)))
        return self.mlp_norm(x + self.mlp(x))


class ArchlabTransformerPreTrainedModel(PreTrainedModel):
    config_class = ArchlabTransformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RotaryEmbedding):
            module.reset_parameters()


class ArchlabTransformerModel(ArchlabTransformerPreTrainedModel):
    def __init__(self, config: ArchlabTransformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding == "learned"
            else None
        )
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DecoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = build_norm(config.norm_type, config.hidden_size, config.norm_eps)
        self.has_final_norm = config.norm_position == "pre"
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Cache | None]:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, t = x.shape[:2]
        if use_cache is None:
            use_cache = cache is not None  # a cache handed in is used (and advanced), as in transformers' models
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache_length(cache) if use_cache else 0
        # Whether the mask pads anything is read off the tensor only in eager mode: under torch.compile that
        # read would break the graph, so a given mask is used as is (the same outputs; the trainer drops an
        # all-ones mask before the compiled call, which keeps SDPA's fast causal path).
        padded = attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all()))
        contiguous = position_ids is None and not padded  # positions past .. past + t - 1, known without a read
        if position_ids is None:
            if padded:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
            else:
                position_ids = torch.arange(past, past + t, device=x.device).expand(b, t)
        if self.embed_positions is not None:
            self._check_positions(position_ids, past + t if contiguous else None)
            x = x + self.embed_positions(position_ids)
        x = self.embed_dropout(x)
        mask = attention_mask if padded else None
        for layer in self.layers:
            x = layer(x, position_ids, mask, cache if use_cache else None)
        if self.has_final_norm:
            x = self.norm(x)
        return x, cache if use_cache else None

    def _check_positions(self, position_ids: torch.Tensor, length: int | None) -> None:
        """Positions past the learned table fail with one clear line. Contiguous positions (``length`` given)
        are bounded by the static sequence length, so no tensor is read; others are read in eager mode only (a
        read would break a compiled graph; there the embedding lookup itself fails on an out-of-range index)."""
        limit = self.config.max_position_embeddings
        if length is not None:
            bad = length - 1
        elif torch.compiler.is_compiling():
            return
        else:
            bad = int(position_ids.max())
        if bad >= limit:
            raise ValueError(f"sequence position {bad} exceeds max_position_embeddings ({limit}); raise it or "
                             f"use position_embedding='rope'")


class ArchlabTransformerForCausalLM(ArchlabTransformerPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: ArchlabTransformerConfig):
        super().__init__(config)
        self.model = ArchlabTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        hidden, cache = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)
