"""Tiny randomly initialised models of every family the graft supports (built locally, no downloads)."""

from __future__ import annotations

import torch
from tests.conftest import tiny_decoder
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 61
# eos/bos/pad unset so greedy generation never stops early on a random model
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, eos_token_id=None, bos_token_id=None,
               pad_token_id=None)
FAMILY_CONFIGS = {
    "llama": dict(model_type="llama", **_COMMON),
    "qwen2": dict(model_type="qwen2", **_COMMON),
    "mistral": dict(model_type="mistral", sliding_window=5, **_COMMON),
    "olmoe": dict(model_type="olmoe", num_experts=4, num_experts_per_tok=2, **_COMMON),
    "phi3": dict(model_type="phi3", **_COMMON),
    "gpt2": dict(model_type="gpt2", vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                 eos_token_id=None, bos_token_id=None),
}
FAMILIES = [*FAMILY_CONFIGS, "archlab"]


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A 2-layer, width-32 causal LM of ``family`` in eval mode (dropout off), deterministic per seed."""
    torch.manual_seed(seed)
    if family == "archlab":
        return tiny_decoder(VOCAB, seed, num_key_value_heads=2, position_embedding="rope", max_position_embeddings=128)
    options = dict(FAMILY_CONFIGS[family])
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    return AutoModelForCausalLM.from_config(config).eval()


def set_mag_weight(model: torch.nn.Module, value: float) -> None:
    for module in model.modules():
        if "mag_weight" in getattr(module, "scheduled_attributes", ()):
            module.mag_weight = value


def tokens(batch: int = 2, length: int = 19, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
