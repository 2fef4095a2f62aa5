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

# seed 002: the New-LLM context-vector model
from archlab.models.new_llm import NewLLMConfig, NewLLMForCausalLM  # noqa: E402

AutoConfig.register(NewLLMConfig.model_type, NewLLMConfig, exist_ok=True)
AutoModelForCausalLM.register(NewLLMConfig, NewLLMForCausalLM, exist_ok=True)
ARCHITECTURES.register(
    "new_llm",
    Architecture(NewLLMConfig, NewLLMForCausalLM,
                 tiny_config=dict(embed_dim=16, context_dim=8, hidden_size=32, num_hidden_layers=2, dropout=0.1)),
    help="seed 002 New-LLM: one context vector c_t = clip(LN(f*c + i*W_c h)), h = FNN([e_t; c_{t-1}]); no attention",
)
__all__ += ["NewLLMConfig", "NewLLMForCausalLM"]

# seed 002's recurrent baseline: an LSTM LM
from archlab.models.lstm import LSTMLMConfig, LSTMLMForCausalLM  # noqa: E402

AutoConfig.register(LSTMLMConfig.model_type, LSTMLMConfig, exist_ok=True)
AutoModelForCausalLM.register(LSTMLMConfig, LSTMLMForCausalLM, exist_ok=True)
ARCHITECTURES.register(
    "lstm",
    Architecture(LSTMLMConfig, LSTMLMForCausalLM,
                 tiny_config=dict(embed_dim=16, hidden_size=24, num_hidden_layers=2, dropout=0.1)),
    help="LSTM language model (nn.LSTM; state in the Cache): seed 002's recurrent baseline",
)
__all__ += ["LSTMLMConfig", "LSTMLMForCausalLM"]

# seed 003: HOPE / Nested Learning (CMS, Titans memory, self-modifier), the TITAN baseline (archlab.models.hope)
from archlab.models.hope import HopeConfig, HopeForCausalLM  # noqa: E402

AutoConfig.register(HopeConfig.model_type, HopeConfig, exist_ok=True)
AutoModelForCausalLM.register(HopeConfig, HopeForCausalLM, exist_ok=True)
_HOPE_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, cms_periods=[2, 4], titan_period=2,
                  cms_hidden_multiplier=2, titan_hidden_multiplier=2, cms_lr=0.05, titan_lr=0.05, teach_scale=1.0,
                  qk_l2_norm=True, attn_conv_size=4, eos_token_id=None)
ARCHITECTURES.register("hope", Architecture(HopeConfig, HopeForCausalLM, tiny_config=dict(_HOPE_TINY)),
                       help="seed 003 HOPE hybrid: NoPE post-norm attention -> Titans memory -> CMS (online teach signal)")
ARCHITECTURES.register("hope_attention",
                       Architecture(HopeConfig, HopeForCausalLM, tiny_config=dict(_HOPE_TINY, block_type="hope_attention")),
                       help="seed 003 HOPE-attention: attention -> CMS")
ARCHITECTURES.register("titan",
                       Architecture(HopeConfig, HopeForCausalLM, tiny_config=dict(_HOPE_TINY, block_type="titan")),
                       help="seed 003 TITAN baseline: LayerNorm(a + TitanMemory(a)), no CMS")
__all__ += ["HopeConfig", "HopeForCausalLM"]
ARCHITECTURES.register("hope_selfmod",
                       Architecture(HopeConfig, HopeForCausalLM,
                                    tiny_config=dict(_HOPE_TINY, block_type="hope_selfmod", selfmod_chunk_size=2,
                                                     selfmod_chunk_size_memory=4, selfmod_lr=0.5,
                                                     selfmod_momentum=0.5)),
                       help="seed 003 HOPE: self-modifying Titans (six DGD-written memories) -> CMS, no attention")

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
