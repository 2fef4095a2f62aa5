"""New-LLM (seed 002): an attention-free LM whose only memory is one context vector, as an HF model.

token embedding e_t (no positions) -> h_t = FNN_L([e_t; c_{t-1}]) -> logits_t = W_out h_t, and the gated,
normalised, clipped context update c_t (``archlab.nn.context_vector``). Training is plain BPTT through the
window. The context after the last token lives in the HF ``Cache`` (``states_of(cache, 0)['context']``), so
``generate`` and cached scoring continue from it and equal one full forward.

Sizes as the seed's public code: embedding 256, context 256, FNN width 512, vocab 1000; ``num_hidden_layers``
is the FNN depth L (the seed's "layers" sweep). L=6 has 2,739,432 parameters (the seed's "2.74M"), L=1
1,426,152, the "advanced" d_c=512, L=12 model 4,840,936 (the seed's "4.84M").
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from archlab.nn.cache import states_of
from archlab.nn.context_vector import LOOP_IMPLS, ContextVectorCell
from archlab.nn.loss import causal_lm_loss


class NewLLMConfig(PretrainedConfig):
    """Configuration of :class:`NewLLMForCausalLM`.

    Args:
        embed_dim: token embedding width d_e (seed: 256).
        context_dim: context vector width d_c (seed: 256; "advanced": 512).
        hidden_size: FNN width H (seed: 512).
        num_hidden_layers: FNN depth L (the seed's layer sweep: 1, 4, 5, 6, 7; "advanced": 12).
        dropout: after every FNN layer (seed: 0.1).
        context_clip: c_t is clipped to [-clip, clip] after the LayerNorm (seed: 10).
        loop_impl: how the time loop runs (``archlab.nn.context_vector.LOOP_IMPLS``; the math is the same).
    """

    model_type = "archlab_new_llm"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(self, vocab_size: int = 1000, embed_dim: int = 256, context_dim: int = 256, hidden_size: int = 512,
                 num_hidden_layers: int = 6, dropout: float = 0.1, context_clip: float = 10.0,
                 layer_norm_eps: float = 1e-5, loop_impl: str = "eager", tie_word_embeddings: bool = False,
                 pad_token_id: int | None = None, bos_token_id: int | None = None, eos_token_id: int | None = None,
                 **kwargs: Any):
        if num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers={num_hidden_layers}: the FNN needs at least one layer")
        if loop_impl not in LOOP_IMPLS:
            raise ValueError(f"loop_impl must be one of {LOOP_IMPLS}, got '{loop_impl}'")
        if context_clip <= 0:
            raise ValueError(f"context_clip must be > 0, got {context_clip}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout {dropout} must be in [0, 1)")
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.context_dim = context_dim
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.dropout = dropout
        self.context_clip = context_clip
        self.layer_norm_eps = layer_norm_eps
        self.loop_impl = loop_impl
        super().__init__(tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id,
                         bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)


def default_init(module: nn.Module) -> None:
    """PyTorch's own default initialisation (the seed's code keeps it), written with ``nn.init`` so HF can
    skip it for weights loaded by ``from_pretrained``."""
    if isinstance(module, nn.Linear):
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            bound = 1 / math.sqrt(module.weight.shape[1])
            nn.init.uniform_(module.bias, -bound, bound)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class NewLLMPreTrainedModel(PreTrainedModel):
    config_class = NewLLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["ContextVectorCell"]

    def _init_weights(self, module: nn.Module) -> None:
        default_init(module)


class NewLLMForCausalLM(NewLLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: NewLLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embed_dim)
        self.cell = ContextVectorCell(config.embed_dim, config.context_dim, config.hidden_size,
                                      config.num_hidden_layers, config.dropout, config.context_clip,
                                      config.layer_norm_eps, config.loop_impl)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]
        if use_cache is None:
            use_cache = cache is not None
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        states = states_of(cache, 0) if use_cache else None
        context = states.get("context") if states is not None else None
        keep = None
        # under compile a given mask is always applied: reading whether it pads would break the graph
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            keep = attention_mask[:, -t:].bool()  # padded positions carry the context unchanged
        hidden, final = self.cell(x, context, keep)
        if states is not None:
            states.set("context", final)
            states.seen_tokens += t
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)
