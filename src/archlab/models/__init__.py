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

from archlab.models.gpt2_variants import GPT2VariantsConfig, GPT2VariantsForCausalLM  # noqa: E402

AutoConfig.register(GPT2VariantsConfig.model_type, GPT2VariantsConfig, exist_ok=True)
AutoModelForCausalLM.register(GPT2VariantsConfig, GPT2VariantsForCausalLM, exist_ok=True)
ARCHITECTURES.register(
    "gpt2_variants",
    Architecture(GPT2VariantsConfig, GPT2VariantsForCausalLM,
                 tiny_config=dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=None,
                                  eos_token_id=None, drift="sigmoid", diffusion=True, rotation="learned",
                                  rotation_norm=True)),
    help="seed 001: GPT-2 with Drift / Diffusion / Parallel pairs / Rotating heads / Duo-Predict switches "
         "(all off = GPT-2)",
)

__all__ = ["ARCHITECTURES", "ArchlabTransformerConfig", "ArchlabTransformerForCausalLM", "Architecture"]
