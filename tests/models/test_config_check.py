"""model.config values are checked against the config class's annotations before anything is built."""

from __future__ import annotations

import pytest

from archlab.errors import ArchlabError
from archlab.models.spec import ModelConfig, build_model

TINY_HOPE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "cms_periods": [1, 2]}


def _hope(**config):
    return build_model(ModelConfig(arch="hope", config={**TINY_HOPE, **config}), vocab_size=64)


def test_yaml_number_strings_become_numbers():
    # YAML 1.1 reads 3e-4 as the string '3e-4'; the config must hold the number it means
    model = _hope(cms_lr="3e-4", titan_lr=1)
    assert model.config.cms_lr == pytest.approx(3e-4) and isinstance(model.config.cms_lr, float)
    assert model.config.titan_lr == 1.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cms_lr": "fast"}, "model.config.cms_lr: input should be a valid number, unable to parse string as a number "
                             "(got 'fast'); HopeConfig takes float"),
        ({"qk_l2_norm": 7}, "model.config.qk_l2_norm: input should be a valid boolean"),
        ({"cms_periods": [1.5, 4]}, "model.config.cms_periods[0]: input should be a valid integer, got a number "
                                    "with a fractional part"),
        ({"cms_periods": 4}, "model.config.cms_periods: input should be a valid list (got 4)"),
        ({"num_hidden_layers": True}, "model.config.num_hidden_layers: a boolean is not a number"),
        ({"cms_hidden_multiplier": 0}, "cms_hidden_multiplier 0 must be >= 1"),
        ({"titan_lr": -1e-3}, "titan_lr -0.001 must be >= 0: a negative inner step ascends the inner loss"),
    ],
)
def test_wrong_values_name_the_key(config, message):
    with pytest.raises(ArchlabError) as info:
        _hope(**config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_strict_transformers_config_error_is_one_line():
    with pytest.raises(ArchlabError) as info:
        build_model(ModelConfig(arch="gpt2_variants", config={"n_embd": "big"}), vocab_size=64)
    assert str(info.value) == "model.config.n_embd: expected int, got str (value: 'big')"
    with pytest.raises(ArchlabError) as info:
        build_model(ModelConfig(hf_config={"model_type": "qwen2", "num_hidden_layers": 1.5}), vocab_size=64)
    assert str(info.value).startswith("model.hf_config.num_hidden_layers: ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("arch", "config", "message"),
    [
        ("byte_latent", {"lnn_chunk_size": 0}, "lnn_chunk_size (0) must be >= 1"),
        ("byte_latent", {"lnn_decay_init": [1.5, -1]}, "must be two per-byte decays in (0, 1)"),
        ("byte_latent", {"hash_ngram_sizes": [0, -2]}, "hash_ngram_sizes [0, -2] must all be >= 1"),
        ("new_llm", {"dropout": 2.0}, "dropout 2.0 must be in [0, 1)"),
    ],
)
def test_out_of_range_sizes_fail_before_training(arch, config, message):
    with pytest.raises(ArchlabError) as info:
        build_model(ModelConfig(arch=arch, config=config), vocab_size=260)
    assert message in str(info.value)
