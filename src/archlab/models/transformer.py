"""archlab's baseline decoder, a Hugging Face ``PreTrainedModel``.

Notable features:
- positions: learned absolute (GPT-2), RoPE (Llama) or none (NoPE);
- pre- or post-norm residual blocks, LayerNorm or RMSNorm;
- a pluggable token-mixer slot (``mixer`` names an entry of ``archlab.nn.MIXERS``) and MLP slot;
- GQA, sliding-window attention, tied embeddings, gradient checkpointing, KV cache for ``generate``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from archlab.nn import MIXERS, MLPS, build_norm
from archlab.nn.rope import RotaryEmbedding

POSITION_KINDS = ("learned", "rope", "none")


class ArchlabTransformerConfig(PretrainedConfig):
    """Configuration of :class:`ArchlabTransformerForCausalLM` (all sizes in units of features)."""

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
        mixer_options: dict[str, Any] | None = None,
        mlp: str = "gelu",
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
        self.mixer_options = dict(mixer_options or {})
        self.mlp = mlp
        self.bias = bias
        self.dropout = dropout
        self.sliding_window = sliding_window
        self.initializer_range = initializer_range
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )


class DecoderBlock(GradientCheckpointingLayer):
    """x + mixer(norm(x)); x + mlp(norm(x)) (pre-norm) or norm(x + mixer(x)) ... (post-norm)."""

    def __init__(self, config: ArchlabTransformerConfig, layer_idx: int):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.mixer_norm = build_norm(config.norm_type, config.hidden_size, config.norm_eps)
        self.mlp_norm = build_norm(config.norm_type, config.hidden_size, config.norm_eps)
        options: dict[str, Any] = {"sliding_window": config.sliding_window} if config.mixer == "attention" else {}
        options.update(config.mixer_options)
        self.mixer = MIXERS.get(config.mixer)(
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            layer_idx=layer_idx,
            bias=config.bias,
            dropout=config.dropout,
            rope=config.position_embedding == "rope",
            rope_theta=config.rope_theta,
            **options,
        )
        self.mlp = MLPS.get(config.mlp)(
            config.hidden_size, config.intermediate_size, bias=config.bias, dropout=config.dropout
        )
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

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, t = x.shape[:2]
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None and not bool(attention_mask.all()):
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
            else:
                position_ids = torch.arange(past, past + t, device=x.device).expand(b, t)
        if self.embed_positions is not None:
            if int(position_ids.max()) >= self.config.max_position_embeddings:
                raise ValueError(
                    f"sequence position {int(position_ids.max())} exceeds max_position_embeddings "
                    f"({self.config.max_position_embeddings}); raise it or use position_embedding='rope'"
                )
            x = x + self.embed_positions(position_ids)
        x = self.embed_dropout(x)
        mask = attention_mask if attention_mask is not None and not bool(attention_mask.all()) else None
        for layer in self.layers:
            x = layer(x, position_ids, mask, cache if use_cache else None)
        if self.has_final_norm:
            x = self.norm(x)
        return x, cache if use_cache else None


class ArchlabTransformerForCausalLM(ArchlabTransformerPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: ArchlabTransformerConfig):
        super().__init__(config)
        self.model = ArchlabTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: DynamicCache | None = None,
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
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)
