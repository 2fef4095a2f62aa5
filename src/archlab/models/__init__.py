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

# seed 004: the causal byte latent model (IntegralLNN local encoder/decoder, entropy patches, dilated latent attention)
from archlab.models.byte_latent import ByteLatentConfig, ByteLatentForCausalLM  # noqa: E402

AutoConfig.register(ByteLatentConfig.model_type, ByteLatentConfig, exist_ok=True)
AutoModelForCausalLM.register(ByteLatentConfig, ByteLatentForCausalLM, exist_ok=True)
ARCHITECTURES.register(
    "byte_latent",
    Architecture(ByteLatentConfig, ByteLatentForCausalLM,
                 tiny_config=dict(hidden_size=32, num_local_layers=1, num_latent_layers=2, num_attention_heads=4,
                                  lnn_chunk_size=8, patching="entropy", target_patch_size=3.0, eos_token_id=None,
                                  entropy_threshold=0.64, entropy_rel_threshold=0.05, hash_ngram_sizes=[3, 4],
                                  hash_buckets=64,
                                  entropy_config=dict(model_type="archlab_transformer", hidden_size=16,
                                                      num_hidden_layers=1, num_attention_heads=2,
                                                      position_embedding="rope", eos_token_id=None,
                                                      initializer_range=0.3))),  # varied entropies: mixed patches
    help="seed 004: causal byte latent model (IntegralLNN local layers, entropy patches, dilated attention)",
)
