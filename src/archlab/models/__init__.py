"""HF-native archlab architectures, registered with the Auto classes on import."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from archlab.models.registry import ARCHITECTURES, Architecture
from archlab.models.transformer import ArchlabTransformerConfig, ArchlabTransformerForCausalLM

AutoConfig.register(ArchlabTransformerConfig.model_type, ArchlabTransformerConfig, exist_ok=True)
AutoModelForCausalLM.register(ArchlabTransformerConfig, ArchlabTransformerForCausalLM, exist_ok=True)
ARCHITECTURES.register(
    "transformer",
    Architecture(ArchlabTransformerConfig, ArchlabTransformerForCausalLM,
                 tiny_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, eos_token_id=None)),
    help="baseline decoder: learned/RoPE/no positions, pre/post norm, LayerNorm/RMSNorm, pluggable mixer",
)

__all__ = ["ARCHITECTURES", "ArchlabTransformerConfig", "ArchlabTransformerForCausalLM", "Architecture"]
